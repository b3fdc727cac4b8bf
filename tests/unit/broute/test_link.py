"""The B-route link frame: an 802.15.4 data frame with 6LoWPAN inside (the frame, its auxiliary
security header and IPHC read back by the mesh codecs), round trips, the replay window,
tampering, and the per-key frame counter."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from amistack.addr import Eui64, ShortAddr
from amistack.broute.link import (
    BROUTE_PAN,
    HEADER_LENGTH,
    KEY_INDEX,
    MAX_FRAME_COUNTER,
    MAX_FRAME_LENGTH,
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
from amistack.crypto.ccm_star import CcmStar, SecurityLevel
from amistack.keymgmt.ukmf import KeyId
from amistack.mesh.frame import Frame, FrameType, KeyIdMode
from amistack.mesh.ipv6 import UdpDatagram
from amistack.mesh.lowpan import compress, decompress

KEY = bytes(range(16))
KID = KeyId(0x12345678, 1)
METER = bytes.fromhex("02000000000000aa")
HEMS = bytes.fromhex("02000000000000bb")
EL = Plaintext(3610, 3610, bytes.fromhex("1081000105ff010288016201e700"))


def test_secured_frame_is_an_802154_data_frame_with_6lowpan_inside() -> None:
    frame = seal(KEY, KID, 7, METER, EL, destination=HEMS)
    raw = frame.encode()
    mac = Frame.decode(raw, max_length=MAX_FRAME_LENGTH)
    assert mac.frame_type == FrameType.DATA and mac.pan_id_compression
    assert mac.dst_pan == BROUTE_PAN and mac.dst == Eui64(HEMS) and mac.src == Eui64(METER)
    assert mac.security is not None
    assert mac.security.level == 6 and mac.security.counter == 7
    assert mac.security.key_id_mode == 3 and mac.security.key_source == KID.encode()
    assert mac.security.key_index == KEY_INDEX
    assert len(raw) - len(mac.payload) == HEADER_LENGTH
    assert EL.payload not in raw  # encrypted
    decoded = decode_frame(raw)
    assert decoded == frame
    assert isinstance(decoded, SecuredFrame)
    assert open_frame(decoded, KEY) == EL
    assert frame.nonce() == METER + bytes((0, 0, 0, 7, 6))  # level 6: ENC-MIC-64
    # the plaintext is IPHC: link-local addresses from the MAC ones, UDP ports and checksum
    body = CcmStar(KEY, SecurityLevel.ENC_MIC_64).open(frame.nonce(), mac.header(), mac.payload)
    packet = decompress(body, Eui64(METER), Eui64(HEMS))
    assert str(packet.src) == str(Eui64(METER).link_local())
    assert str(packet.dst) == str(Eui64(HEMS).link_local())
    assert UdpDatagram.decode(packet) == UdpDatagram(3610, 3610, EL.payload)


def test_multicast_goes_to_the_broadcast_address_and_ff02_1() -> None:
    announce = replace(EL, multicast=True)
    frame = seal(KEY, KID, 1, METER, announce, destination=HEMS)
    mac = Frame.decode(frame.encode(), max_length=MAX_FRAME_LENGTH)
    assert mac.dst == ShortAddr(0xFFFF) and frame.destination is None
    assert open_frame(frame, KEY) == announce


def test_pana_frames_are_carried_in_the_clear() -> None:
    message = bytes(16)
    raw = PanaFrame(message, HEMS, METER).encode()
    mac = Frame.decode(raw)
    assert mac.security is None and mac.src == Eui64(HEMS) and mac.dst == Eui64(METER)
    packet = decompress(mac.payload, Eui64(HEMS), Eui64(METER))
    assert UdpDatagram.decode(packet) == UdpDatagram(716, 716, message)
    assert decode_frame(raw) == PanaFrame(message, HEMS, METER)
    assert decode_frame(PanaFrame(message, HEMS).encode()) == PanaFrame(message, HEMS)


@pytest.mark.parametrize("where", [0, 1, 4, 7, 13, 20, 22, 27, 34, HEADER_LENGTH + 1, -1])
def test_any_flipped_bit_is_refused(where: int) -> None:
    raw = bytearray(seal(KEY, KID, 1, METER, EL, HEMS).encode())
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


def _secured_with(**changes: object) -> bytes:
    mac = Frame.decode(seal(KEY, KID, 1, METER, EL, HEMS).encode(), max_length=MAX_FRAME_LENGTH)
    return replace(mac, **changes).encode()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", DropReason.TRUNCATED),
        (b"\x41", DropReason.TRUNCATED),
        (b"\x41\xcc\x00" + b"\x00" * 8, DropReason.MALFORMED),  # addresses truncated
        (bytes(2100), DropReason.MALFORMED),  # longer than a SUN PHY frame
        (PanaFrame(b"x", HEMS).encode()[:-3], DropReason.MALFORMED),  # UDP length
        (_secured_with(frame_type=FrameType.COMMAND), DropReason.MALFORMED),
        (_secured_with(payload=b"\x00" * 4), DropReason.TRUNCATED),  # no room for the MIC
    ],
)
def test_malformed_frames_raise_the_typed_error(data: bytes, kind: DropReason) -> None:
    with pytest.raises(LinkDecodeError) as err:
        decode_frame(data)
    assert err.value.kind is kind
    assert err.value.offset >= 0 and err.value.reason


def test_other_security_and_unsecured_non_pana_are_refused() -> None:
    mac = Frame.decode(seal(KEY, KID, 1, METER, EL, HEMS).encode(), max_length=MAX_FRAME_LENGTH)
    assert mac.security is not None
    mode1 = replace(mac.security, key_id_mode=KeyIdMode.INDEX, key_source=b"")
    with pytest.raises(LinkDecodeError, match="8-octet key source"):
        decode_frame(replace(mac, security=mode1).encode())
    src = Eui64(HEMS)
    udp = UdpDatagram(3610, 3610, b"in the clear").packet(
        ipaddress.IPv6Address(str(src.link_local())), ipaddress.IPv6Address("ff02::1")
    )
    clear = replace(mac, security=None, payload=compress(udp, src, ShortAddr(0xFFFF)))
    clear = replace(clear, src=src, dst=ShortAddr(0xFFFF))
    with pytest.raises(LinkDecodeError, match="unsecured frame to UDP port 3610"):
        decode_frame(clear.encode())


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
    forged = SecuredFrame(KID, 50, METER, None, frames[1].sealed)
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
