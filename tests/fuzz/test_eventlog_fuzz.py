"""Untrusted input into the event-log parsers and verifier: only the typed errors escape.

The line parser and record/head decoders raise only LogFormatError; the store scanner never
raises (it reports a torn tail or the damage); opening a damaged store with its module always
succeeds and records what it found, signed; the verifier never raises on a file's content, it
returns a Verdict (MALFORMED or a tampering reason)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amistack.eventlog import (
    CheckpointPolicy,
    EventLog,
    EventType,
    FsyncPolicy,
    LogConfig,
    LogFormatError,
    LogStoreError,
    Reason,
    TrustedHead,
    verify_lines,
)
from amistack.eventlog.log import _scan
from amistack.eventlog.record import EventRecord, SignedHead, parse_header, parse_line
from amistack.eventlog.verify import InclusionProof
from amistack.securemodule import SoftwareModule

_STATE: dict[str, object] = {}


def _sample() -> tuple[list[str], bytes, bytes]:
    """One real signed export and its store bytes, made once per session."""
    if "lines" not in _STATE:
        import tempfile

        d = Path(tempfile.mkdtemp())
        module = SoftwareModule.create(d / "k.pem", "fuzz")
        cfg = LogConfig(
            checkpoint=CheckpointPolicy(every_entries=3, every_seconds=None),
            fsync=FsyncPolicy.NEVER,
        )
        with EventLog.open(d / "s", "fuzz-meter", module, 1.7e9, cfg) as lg:
            for i in range(10):
                lg.append(EventType(1 + i % 12), bytes([i]) * (i % 3), 1.7e9 + i)
            lg.checkpoint(1.7e9 + 10)
            _STATE["lines"] = list(lg.export_lines())
        _STATE["store"] = (d / "s").read_bytes()
        _STATE["pem"] = module.public_key_pem()
    return _STATE["lines"], _STATE["store"], _STATE["pem"]  # type: ignore[return-value]


line_text = st.text(
    alphabet=st.sampled_from("EHP 0123456789abcdefTZ:.-_XYZ" + "AMISTCKVNOGLR\n\t\x00é"),
    max_size=200,
)


@given(line_text)
@settings(max_examples=400)
def test_line_parser_raises_only_its_error(text: str) -> None:
    for parse in (lambda: parse_line(text, 2), lambda: parse_header(text)):
        with contextlib.suppress(LogFormatError):
            parse()


@given(st.binary(max_size=200))
def test_binary_decoders_raise_only_their_error(data: bytes) -> None:
    for decode in (EventRecord.decode, SignedHead.decode, InclusionProof.decode):
        with contextlib.suppress(LogFormatError):
            decode(data)


@given(st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_export_is_refused_with_a_reason_never_an_exception(data: st.DataObject) -> None:
    lines, _, pem = _sample()
    text = "".join(lines)
    pos = data.draw(st.integers(0, len(text) - 1))
    op = data.draw(st.sampled_from(["flip", "delete", "insert", "dupline", "dropline"]))
    if op == "flip":
        ch = data.draw(st.sampled_from("0123456789abcdef EH\n-Z:"))
        mutated = text[:pos] + ch + text[pos + 1 :]
    elif op == "delete":
        mutated = text[:pos] + text[pos + data.draw(st.integers(1, 40)) :]
    elif op == "insert":
        mutated = text[:pos] + data.draw(line_text) + text[pos:]
    else:
        ls = list(lines)
        i = data.draw(st.integers(1, len(ls) - 1))
        if op == "dupline":
            ls.insert(i, ls[i])
        else:
            del ls[i]
        mutated = "".join(ls)
    verdict = verify_lines(mutated.splitlines(keepends=True), pem)
    assert isinstance(verdict.reason, Reason)
    if mutated != text and verdict.ok:
        # only changes the format ignores (blank/comment lines, equivalent spellings) may pass
        assert verdict.entries == 10


@given(st.binary(max_size=300))
def test_trusted_head_parser(data: bytes) -> None:
    with contextlib.suppress(LogFormatError):
        TrustedHead.from_text(data.decode("latin-1"))


def _mutated_store(data: st.DataObject) -> bytes:
    _, store, _ = _sample()
    raw = bytearray(store)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    return bytes(raw)


@given(st.data())
@settings(max_examples=300)
def test_store_scanner_never_raises(data: st.DataObject) -> None:
    raw = _mutated_store(data)
    scan = _scan(raw, Path("fuzz"))
    assert scan.good_end + scan.torn_bytes <= len(raw)
    assert scan.damage is None or scan.torn_bytes == 0


@given(st.data())
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_damaged_store_opens_with_its_module_and_says_so(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    raw = _mutated_store(data)
    d = tmp_path_factory.mktemp("store")
    module = SoftwareModule.create(d / "k.pem", "fuzz")
    (d / "s").write_bytes(raw)
    try:
        lg = EventLog.open(d / "s", "fuzz-meter", module, 1.8e9)
    except LogStoreError as exc:  # only a header naming another meter or mode, intact
        assert "belongs to meter" in str(exc) or "-mode log" in str(exc)
        return
    with lg:
        items = list(lg.items())
        assert lg.size == sum(isinstance(i, EventRecord) for i in items)
    with EventLog.open(d / "s", "fuzz-meter", module, 1.8e9 + 1) as again:  # now quiet
        assert again.size == lg.size and again.torn_bytes == 0


def _anchor_files() -> st.SearchStrategy[bytes]:
    from amistack.securemodule.software import SLOT_SIZE, _slot

    valid = _slot(2, b"a" * 40) + _slot(1, b"b" * 40)[:SLOT_SIZE]
    mutated = st.lists(st.tuples(st.integers(0, 2 * SLOT_SIZE - 1), st.integers(0, 255))).map(
        lambda edits: bytes(_apply(bytearray(valid), edits))
    )
    truncated = st.integers(0, len(valid)).map(lambda n: valid[:n])
    return st.one_of(st.binary(max_size=1100), mutated, truncated)


def _apply(raw: bytearray, edits: list[tuple[int, int]]) -> bytearray:
    for i, v in edits:
        raw[i] = v
    return raw


@given(_anchor_files())
@settings(max_examples=200, deadline=None)
def test_anchor_file_reader_raises_only_its_error(data: bytes) -> None:
    """The software module's anchor file (two CRC'd slots) from arbitrary or damaged bytes: a
    value, None, or SecureModuleError -- never anything else."""
    import tempfile

    from amistack.securemodule import SecureModuleError
    from amistack.securemodule.software import _read_slots

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "module.pem.anchor"
        path.write_bytes(data)
        path.chmod(0o600)
        with contextlib.suppress(SecureModuleError):
            found = _read_slots(path)
            assert found is None or found[1] in (b"a" * 40, b"b" * 40)  # never a corrupt value
