"""The B-route link frame: CCM* known answers (IEEE 802.15.4 Annex C), frame round trips,
the replay window, tampering, and the per-key frame counter."""

from __future__ import annotations

import pytest

from amistack.broute.link import (
    HEADER_LENGTH,
    MAX_FRAME_COUNTER,
    CounterExhausted,
    DropReason,
    LinkDecodeError,
    LinkKey,
    PanaFrame,
    Plaintext,
    SecuredFrame,
    decode_frame,
    open_frame,
    seal,
)
from amistack.keymgmt.ukmf import KeyId

KEY = bytes(range(16))
KID = KeyId(0x12345678, 1)
METER = bytes.fromhex("02000000000000aa")
HEMS = bytes.fromhex("02000000000000bb")
EL = Plaintext(3610, 3610, bytes.fromhex("1081000105ff010288016201e700"))


def test_secured_frame_layout_and_round_trip() -> None:
    frame = seal(KEY, KID, 7, METER, EL, multicast=True)
    raw = frame.encode()
    assert raw[0] == 0x02 and raw[1] == 0x01  # type, multicast flag
    assert raw[2:10] == KID.encode()
    assert raw[10:14] == (7).to_bytes(4, "big")
    assert raw[14:22] == METER
    assert len(raw) == HEADER_LENGTH + 4 + len(EL.payload) + 8
    assert EL.payload not in raw  # encrypted
    decoded = decode_frame(raw)
    assert decoded == frame
    assert isinstance(decoded, SecuredFrame)
    assert open_frame(decoded, KEY) == EL
    assert frame.nonce() == METER + bytes((0, 0, 0, 7, 6))  # level 6: ENC-MIC-64


def test_pana_frames_are_carried_in_the_clear() -> None:
    f = decode_frame(b"\x01" + b"\x00" * 16)
    assert f == PanaFrame(b"\x00" * 16)
    assert f.encode() == b"\x01" + b"\x00" * 16


@pytest.mark.parametrize("where", [1, 2, 9, 10, 13, 14, 21, HEADER_LENGTH, -1])
def test_any_flipped_bit_is_refused(where: int) -> None:
    raw = bytearray(seal(KEY, KID, 1, METER, EL).encode())
    raw[where] ^= 0x04
    receiver = LinkKey(KID, KEY, HEMS)
    with pytest.raises(LinkDecodeError) as err:
        f = decode_frame(bytes(raw))
        assert isinstance(f, SecuredFrame)
        receiver.unprotect(f)
    assert err.value.kind in (
        DropReason.FORGED,
        DropReason.MALFORMED,
        DropReason.UNKNOWN_KEY_ID,
    )


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", DropReason.TRUNCATED),
        (b"\x02" + b"\x00" * 20, DropReason.TRUNCATED),
        (b"\x03abc", DropReason.MALFORMED),
        (b"\x02\x80" + b"\x00" * 40, DropReason.MALFORMED),  # reserved flag bit
        (b"\x02\x00" + b"\x00" * 8 + b"\xff" * 4 + b"\x00" * 30, DropReason.MALFORMED),
    ],
)
def test_malformed_frames_raise_the_typed_error(data: bytes, kind: DropReason) -> None:
    with pytest.raises(LinkDecodeError) as err:
        decode_frame(data)
    assert err.value.kind is kind
    assert err.value.offset >= 0 and err.value.reason


def test_link_key_drops_replays_forgeries_and_own_source() -> None:
    meter = LinkKey(KID, KEY, METER)
    hems = LinkKey(KID, KEY, HEMS)
    frames = [meter.protect(EL) for _ in range(3)]
    assert [f.counter for f in frames] == [0, 1, 2]
    assert hems.unprotect(frames[2]) == EL
    assert hems.unprotect(frames[0]) == EL  # reordered, within the window
    with pytest.raises(LinkDecodeError) as err:
        hems.unprotect(frames[0])
    assert err.value.kind is DropReason.REPLAYED
    # a forged frame with a fresh counter is refused and does not move the window
    forged = SecuredFrame(KID, 50, METER, False, frames[1].sealed)
    with pytest.raises(LinkDecodeError) as err:
        hems.unprotect(forged)
    assert err.value.kind is DropReason.FORGED
    assert hems.unprotect(frames[1]) == EL
    # a frame that claims the receiver's own address would reuse its nonces
    own = LinkKey(KID, KEY, HEMS).protect(EL)
    with pytest.raises(LinkDecodeError) as err:
        hems.unprotect(own)
    assert err.value.kind is DropReason.OWN_SOURCE
    other = LinkKey(KeyId(KID.session_id, 2), KEY, METER).protect(EL)
    with pytest.raises(LinkDecodeError) as err:
        hems.unprotect(other)
    assert err.value.kind is DropReason.UNKNOWN_KEY_ID


def test_frame_counter_is_never_reused_and_ends_before_0xffffffff() -> None:
    k = LinkKey(KID, KEY, METER)
    k.next_counter = MAX_FRAME_COUNTER
    last = k.protect(EL)
    assert last.counter == MAX_FRAME_COUNTER and k.exhausted
    with pytest.raises(CounterExhausted):
        k.protect(EL)
    with pytest.raises(CounterExhausted):
        seal(KEY, KID, MAX_FRAME_COUNTER + 1, METER, EL)
    # a new key (re-authentication) starts again at 0
    assert LinkKey(KeyId(KID.session_id, 2), KEY, METER).protect(EL).counter == 0
