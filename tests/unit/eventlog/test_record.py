"""Event records, signed heads and the export line format: canonical bytes and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amistack.eventlog.record import (
    EventRecord,
    EventType,
    HeadKind,
    LogFormatError,
    LogHeader,
    Mode,
    SignedHead,
    iso_ms,
    parse_header,
    parse_iso_ms,
    parse_line,
)

records = st.builds(
    EventRecord,
    st.integers(0, 2**64 - 1),
    st.integers(0, 253402300799999),  # up to 9999-12-31T23:59:59.999Z
    st.integers(0, 0xFFFF),
    st.binary(max_size=64),
)


def test_canonical_encoding_is_fixed() -> None:
    rec = EventRecord(5, 1_790_000_000_123, EventType.COVER_OPEN, b"\xab")
    assert rec.encode().hex() == ("0000000000000005000001a0c4506c7b000300000001ab")
    assert rec.to_line() == "E 5 2026-09-21T14:13:20.123Z COVER_OPEN ab"


@given(records)
def test_record_bytes_and_line_round_trip(rec: EventRecord) -> None:
    assert EventRecord.decode(rec.encode()) == rec
    assert parse_line(rec.to_line(), 2) == rec


@given(
    st.sampled_from(list(HeadKind)),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 253402300799999),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=64, max_size=64),
)
def test_head_round_trips(
    kind: HeadKind, size: int, root: bytes, t: int, kid: bytes, sig: bytes
) -> None:
    head = SignedHead(kind, size, root, t, kid, sig)
    assert SignedHead.decode(head.encode()) == head
    assert parse_line(head.to_line(), 3) == head


def test_signed_bytes_bind_meter_and_kind() -> None:
    h = SignedHead(HeadKind.MERKLE, 3, b"r" * 32, 1000, b"k" * 32, b"s" * 64)
    p = SignedHead(HeadKind.RANGE, 3, b"r" * 32, 1000, b"k" * 32, b"s" * 64)
    assert h.digest("m1") != h.digest("m2")
    assert h.digest("m1") != p.digest("m1")
    # the signature is not part of what is signed
    assert h.tbs("m1") == SignedHead(HeadKind.MERKLE, 3, b"r" * 32, 1000, b"k" * 32, b"").tbs("m1")


def test_unknown_type_numbers_survive_as_type_n() -> None:
    rec = EventRecord(0, 0, 0x9001, b"")
    assert rec.to_line().split()[3] == "TYPE_36865"
    assert parse_line(rec.to_line(), 2) == rec


def test_header_round_trip_and_errors() -> None:
    h = LogHeader("meter-7", Mode.PATENT)
    assert parse_header(h.to_line()) == h
    for bad in (
        "",
        "AMISTACK-EVENTLOG 2 m merkle",
        "AMISTACK-EVENTLOG 1 m other",
        "X 1 m merkle",
        "AMISTACK-EVENTLOG 1 ../x merkle",
    ):
        with pytest.raises(LogFormatError):
            parse_header(bad)


@pytest.mark.parametrize(
    "line",
    [
        "E 1 2026-01-01T00:00:00.000Z POWER_FAIL",
        "E x 2026-01-01T00:00:00.000Z POWER_FAIL -",
        "E 1 2026-01-01 POWER_FAIL -",
        "E 1 2026-01-01T00:00:00.000Z NO_SUCH_TYPE -",
        "E 1 2026-01-01T00:00:00.000Z TYPE_70000 -",
        "E 1 2026-01-01T00:00:00.000Z POWER_FAIL zz",
        "E 99999999999999999999999 2026-01-01T00:00:00.000Z POWER_FAIL -",
        "H 1 00 2026-01-01T00:00:00.000Z 00 00",
        "Q what",
        "E 1 1000-01-01T00:00:00.000Z POWER_FAIL -",  # before 1970: found by the fuzzer
    ],
)
def test_bad_lines_raise_the_typed_error(line: str) -> None:
    with pytest.raises(LogFormatError):
        parse_line(line, 4)


def test_time_format() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert parse_iso_ms("2026-11-21T12:00:00.250Z") == 1_795_262_400_250
    with pytest.raises(ValueError):
        parse_iso_ms("2026-11-21T12:00:00Z")
