"""Link security as an attacker sees it: forged, replayed, stale, reflected, unknown-key,
downgraded and unsecured frames are refused and counted; counters per (sender, key index);
send counters reserved ahead so a restart never reuses a nonce."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.addr import Eui64, PanId, ShortAddr
from amistack.crypto.ccm_star import SecurityLevel
from amistack.mesh.errors import MeshDecodeError, MeshSecurityError
from amistack.mesh.frame import AuxSecurityHeader, Frame, FrameType, KeyIdMode
from amistack.mesh.security import (
    MAX_FRAME_COUNTER,
    CounterExhausted,
    FileCounterStore,
    LinkSecurity,
    LinkSecurityConfig,
    MemoryCounterStore,
)

KEY = bytes(range(16))
KEY2 = bytes(range(16, 32))
PAN = PanId(0xFACE)
METER = Eui64.parse("02:00:00:00:00:00:00:01")
RELAY = Eui64.parse("02:00:00:00:00:00:00:02")
EVE = Eui64.parse("02:00:00:00:00:00:00:0e")


def node(own: Eui64, **cfg: object) -> LinkSecurity:
    sec = LinkSecurity(own, MemoryCounterStore(), LinkSecurityConfig(**cfg))  # type: ignore[arg-type]
    sec.install_key(1, KEY)
    sec.install_key(2, KEY2)
    return sec


def data(src: Eui64, payload: bytes = b"\x41\x60hello mesh", seq: int = 1) -> Frame:
    return Frame(FrameType.DATA, seq, PAN, RELAY, None, src, payload, pan_id_compression=True)


def refused(rx: LinkSecurity, frame: Frame, kind: str) -> None:
    before = rx.counters[kind]
    with pytest.raises(MeshSecurityError) as err:
        rx.unprotect(Frame.decode(frame.encode()))
    assert err.value.kind == kind and rx.counters[kind] == before + 1
    assert isinstance(err.value, MeshDecodeError)


def test_enc_mic_64_by_default_and_round_trip_over_the_wire() -> None:
    tx, rx = node(METER), node(RELAY)
    sent = tx.protect(data(METER), 1)
    assert sent.security == AuxSecurityHeader(SecurityLevel.ENC_MIC_64, 0, KeyIdMode.INDEX, 1)
    raw = sent.encode()
    assert b"hello mesh" not in raw and len(raw) == len(data(METER).encode()) + 6 + 8
    got = rx.unprotect(Frame.decode(raw))
    assert got.payload == data(METER).payload and rx.counters["accepted"] == 1


@pytest.mark.parametrize("level", list(SecurityLevel)[1:])
def test_every_level_including_mic_only(level: SecurityLevel) -> None:
    tx = node(METER, level=level)
    rx = node(RELAY, min_level=SecurityLevel.MIC_32)
    sent = tx.protect(data(METER), 2)
    assert (b"hello mesh" in sent.encode()) == (not level.encrypts)
    if level == SecurityLevel.ENC:  # no MIC: accepted only by a receiver that allows it
        refused(rx, sent, "level-too-low")
        return
    assert rx.unprotect(Frame.decode(sent.encode())).payload == data(METER).payload


def test_attacks_are_refused_and_counted() -> None:
    tx, rx = node(METER), node(RELAY)
    good = tx.protect(data(METER), 1)
    # forged: any flipped bit in header or payload breaks the MIC
    raw = bytearray(good.encode())
    raw[-3] ^= 1
    refused(rx, Frame.decode(bytes(raw)), "forged")
    seq_flip = Frame.decode(good.encode()).with_payload(good.payload, good.security)
    refused(rx, Frame(FrameType.DATA, 9, PAN, RELAY, None, METER, good.payload, good.security,
                      True), "forged")  # fmt: skip
    rx.unprotect(Frame.decode(seq_flip.encode()))  # the original is still good after the forgery
    refused(rx, good, "replayed")  # the same counter again
    newer = tx.protect(data(METER), 1)
    older_never_seen = node(METER)  # a second sender with the same address, counter 0 again
    rx.unprotect(Frame.decode(newer.encode()))
    refused(rx, older_never_seen.protect(data(METER), 1), "stale")
    # an attacker with no key
    eve = LinkSecurity(EVE, MemoryCounterStore())
    eve.install_key(1, bytes(16))
    refused(rx, eve.protect(data(EVE), 1), "forged")
    eve.install_key(5, KEY)
    refused(rx, eve.protect(data(EVE), 5), "unknown-key")
    # reflection: a frame claiming the receiver's own address
    refused(rx, node(RELAY).protect(data(RELAY), 1), "own-source")
    # unsecured, downgraded, short-address source, other key id modes, exhausted counter
    refused(rx, data(METER), "unsecured")
    assert rx.unprotect(data(METER), allow_unsecured=True) == data(METER)
    strict = node(RELAY, min_level=SecurityLevel.ENC_MIC_32)
    refused(strict, node(METER, level=SecurityLevel.MIC_128).protect(data(METER), 1),
            "level-too-low")  # fmt: skip
    short = Frame(FrameType.DATA, 1, PAN, RELAY, None, ShortAddr(7), b"x",
                  AuxSecurityHeader(SecurityLevel.ENC_MIC_64, 1), True)  # fmt: skip
    refused(rx, short, "no-source")
    implicit = data(METER).with_payload(
        b"x" * 9, AuxSecurityHeader(SecurityLevel.ENC_MIC_64, 1, KeyIdMode.IMPLICIT, 0)
    )
    refused(rx, implicit, "bad-key-id-mode")
    maxed = data(METER).with_payload(
        b"x" * 9, AuxSecurityHeader(SecurityLevel.ENC_MIC_64, 2**32 - 1)
    )
    refused(rx, maxed, "counter-exhausted")
    assert rx.counters["accepted"] == 2


def test_counters_are_per_sender_and_key_index_and_strictly_monotonic() -> None:
    a, b, rx = node(METER), node(EVE), node(RELAY)
    f1 = a.protect(data(METER), 1)  # counter 0 under index 1
    f2 = a.protect(data(METER), 2)  # counter 0 under index 2: its own sequence
    g1 = b.protect(data(EVE), 1)  # counter 0 from another sender
    for f in (f1, f2, g1):
        rx.unprotect(Frame.decode(f.encode()))
    skipped = [a.protect(data(METER), 1) for _ in range(3)]  # counters 1, 2, 3
    rx.unprotect(Frame.decode(skipped[2].encode()))  # 3 arrives first
    refused(rx, skipped[0], "stale")  # strictly monotonic: 1 < 3 is refused
    windowed = node(RELAY, window=8)
    windowed.unprotect(Frame.decode(skipped[2].encode()))
    assert windowed.unprotect(Frame.decode(skipped[0].encode())).payload  # reordering allowed


def test_command_frames_keep_their_command_id_in_the_clear() -> None:
    tx, rx = node(METER), node(RELAY)
    cmd = Frame(FrameType.COMMAND, 3, PAN, RELAY, None, METER, b"\x04secret", None, True)
    sent = tx.protect(cmd, 1)
    assert sent.payload[0] == 0x04 and b"secret" not in sent.payload
    assert rx.unprotect(Frame.decode(sent.encode())).payload == b"\x04secret"


def test_bounded_windows_forget_the_least_recent_sender() -> None:
    rx = node(RELAY, max_senders=2)
    senders = [node(Eui64(bytes([2, 0, 0, 0, 0, 0, 1, i]))) for i in range(3)]
    frames = [s.protect(data(s.own), 1) for s in senders]
    for f in frames:
        rx.unprotect(Frame.decode(f.encode()))
    rx.unprotect(Frame.decode(frames[0].encode()))  # forgotten, so accepted once more
    refused(rx, frames[2], "replayed")


def test_send_counter_is_reserved_ahead_and_survives_a_restart() -> None:
    store = MemoryCounterStore()
    tx = LinkSecurity(METER, store, LinkSecurityConfig(reserve=10))
    tx.install_key(1, KEY)
    used = [tx.protect(data(METER), 1).security.counter for _ in range(25)]  # type: ignore[union-attr]
    assert used == list(range(25))
    assert store.limits == {1: 30} and store.writes == 3  # written at 0, 10 and 20
    again = LinkSecurity(METER, store, LinkSecurityConfig(reserve=10))  # "reboot"
    again.install_key(1, KEY)
    assert again.next_counter(1) == 30 > max(used)
    again.install_key(1, KEY2)  # a new key at the same index keeps the counter going
    assert again.protect(data(METER), 1).security.counter == 30  # type: ignore[union-attr]


def test_counter_exhaustion() -> None:
    store = MemoryCounterStore()
    store.limits = {1: MAX_FRAME_COUNTER}
    tx = LinkSecurity(METER, store)
    tx.install_key(1, KEY)
    assert tx.protect(data(METER), 1).security.counter == MAX_FRAME_COUNTER  # type: ignore[union-attr]
    with pytest.raises(CounterExhausted):
        tx.protect(data(METER), 1)


def test_bad_use_is_refused() -> None:
    tx = node(METER)
    with pytest.raises(ValueError):
        tx.install_key(0, KEY)
    with pytest.raises(ValueError):
        tx.install_key(1, bytes(15))
    with pytest.raises(KeyError):
        tx.protect(data(METER), 3)
    with pytest.raises(ValueError):
        tx.protect(data(EVE), 1)  # not our address
    with pytest.raises(ValueError):
        tx.protect(tx.protect(data(METER), 1), 1)
    with pytest.raises(ValueError):
        LinkSecurityConfig(level=SecurityLevel.NONE)
    tx.remove_key(2)
    assert tx.key_indexes() == [1] and "00" not in repr(tx).split("keys")[1]


def test_file_store_round_trips(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "counters.json"
    store = FileCounterStore(path)
    assert store.load() == {}
    store.save({1: 1000, 2: 5})
    assert FileCounterStore(path).load() == {1: 1000, 2: 5}


@settings(max_examples=50)
@given(st.binary(max_size=60))
def test_fuzzed_secured_payloads_never_escape_the_error_family(junk: bytes) -> None:
    rx = node(RELAY)
    frame = data(METER).with_payload(junk, AuxSecurityHeader(SecurityLevel.ENC_MIC_64, 1))
    with pytest.raises(MeshSecurityError):
        rx.unprotect(Frame.decode(frame.encode()))
