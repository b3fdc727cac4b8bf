"""Log lines for engine events read as text: hex session ids, device ids as text, addresses as
host:port, no dataclass reprs, no key material."""

from __future__ import annotations

from amistack.broute.events import HemsAuthFailed, HemsConnected
from amistack.keymgmt.events import KeysInstalled
from amistack.keymgmt.ukmf import KeyId
from amistack.radius.events import AccessAccepted
from amistack.runtime.eventtext import event_text, text_or_hex


def test_session_ids_are_hex_never_mojibake() -> None:
    sid = bytes.fromhex("30ff81a2c3d4e5f60718293a4b5c6d7e8f")  # an EAP Session-Id
    line = event_text(AccessAccepted(("192.0.2.1", 1812), b"meter-0001", b"meter-0001", sid))
    assert line == (
        "AccessAccepted nas=192.0.2.1:1812 user_name=meter-0001 peer_id=meter-0001 "
        f"session_id={sid.hex()}"
    )
    assert "\ufffd" not in line


def test_broute_events_read_as_sentences_not_reprs() -> None:
    connected = HemsConnected(0x1234ABCD, "00112233445566778899AABBCCDDEEFF", ("::1", 716),
                              KeyId(0x1234ABCD, 1), False)  # fmt: skip
    line = event_text(connected)
    assert "HemsConnected(" not in line and "KeyId(" not in line
    assert "session_id=0x1234abcd" in line and "addr=[::1]:716" in line
    assert "key_id=1234abcd.00000001" in line
    failed = event_text(HemsAuthFailed(7, ("fe80::1", 716), "EAP failure"))
    assert failed == "HemsAuthFailed session_id=0x00000007 addr=[fe80::1]:716 reason='EAP failure'"


def test_device_ids_and_binary() -> None:
    assert text_or_hex(b"meter-0001") == "meter-0001"
    assert text_or_hex(b"\x00\xffab") == "00ff6162"
    line = event_text(KeysInstalled(b"meter-1", KeyId(1, 2), ("c1222",), 0.0, 3600.5, None))
    assert "peer_id=meter-1" in line and "b'" not in line
    assert "purposes=c1222 " in line and "not_after=3600.5" in line


def test_an_event_that_says_it_itself() -> None:
    from amistack.meter.events import RetryScheduled

    assert event_text(RetryScheduled("meter-1", 2.5)) == "meter-1: new session in 2.5 s"
