"""The on-disk log store: signing policy, reopen, torn tails repaired (attacks on the store:
test_store_attacks.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.unit.eventlog.conftest import METER, T0, config, fill

from amistack.eventlog import (
    CheckpointPolicy,
    EventLog,
    EventType,
    FsyncPolicy,
    HeadKind,
    LogConfig,
    LogStoreError,
    Mode,
    verify_lines,
)
from amistack.eventlog.record import range_hasher, range_update
from amistack.securemodule import SoftwareModule, verify_digest


def test_specified_events_and_every_n_entries_trigger_signatures(
    tmp_path: Path, module: SoftwareModule
) -> None:
    with EventLog.open(tmp_path / "s", METER, module, T0, config(every=4)) as lg:
        fill(lg, 3)
        res = lg.append(EventType.COVER_OPEN, b"", T0 + 3)  # a specified event
        assert res.head is not None and res.head.size == 4
        fill(lg, 3, start=4)
        assert lg.heads[-1].size == 4
        res = lg.append(EventType.POWER_FAIL, b"", T0 + 7)  # the 4th since the last head
        assert res.head is not None and res.head.size == 8
        assert [h.size for h in lg.heads] == [4, 8]
        head = lg.heads[-1]
        assert head.root == lg.root()
        assert verify_digest(module.public_key_pem(), head.digest(METER), head.signature)


def test_every_t_seconds_triggers_a_signature(tmp_path: Path, module: SoftwareModule) -> None:
    cfg = LogConfig(
        checkpoint=CheckpointPolicy(sign_on=frozenset(), every_entries=None, every_seconds=60),
        fsync=FsyncPolicy.NEVER,
    )
    with EventLog.open(tmp_path / "s", METER, module, T0, cfg) as lg:
        assert lg.append(EventType.POWER_FAIL, b"", T0).head is None
        assert lg.append(EventType.POWER_FAIL, b"", T0 + 59).head is None
        head = lg.append(EventType.POWER_FAIL, b"", T0 + 60).head
        assert head is not None and head.size == 3
        assert lg.append(EventType.POWER_FAIL, b"", T0 + 61).head is None


def test_reopen_restores_tree_and_sequence(tmp_path: Path, module: SoftwareModule) -> None:
    path = tmp_path / "s"
    with EventLog.open(path, METER, module, T0, config()) as lg:
        fill(lg, 12)
        root, heads = lg.root(), list(lg.heads)
    with EventLog.open(path, METER, module, T0, config()) as lg:
        assert lg.size == 12 and lg.root() == root and lg.heads == heads
        assert lg.append(EventType.POWER_FAIL, b"", T0 + 12).record.seq == 12
        assert verify_lines(list(lg.export_lines()), module.public_key_pem()).ok


def test_store_belongs_to_one_meter_and_one_mode(tmp_path: Path, module: SoftwareModule) -> None:
    path = tmp_path / "s"
    EventLog.open(path, METER, module, T0, config()).close()
    with pytest.raises(LogStoreError, match="belongs to meter"):
        EventLog.open(path, "meter-0002", module, T0, config())
    with pytest.raises(LogStoreError, match="merkle-mode"):
        EventLog.open(path, METER, module, T0, config(Mode.PATENT))
    with pytest.raises(LogStoreError, match="no event log"):
        EventLog.open(tmp_path / "none", METER, module, T0, config(), create=False)


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_torn_tail_is_cut_and_recorded(tmp_path: Path, module: SoftwareModule, cut: int) -> None:
    path = tmp_path / "s"
    with EventLog.open(path, METER, module, T0, config(every=None)) as lg:
        fill(lg, 6)
    size = path.stat().st_size
    os.truncate(path, size - cut)  # the last entry's frame was half written
    with EventLog.open(path, METER, module, T0 + 10, config(every=None)) as lg:
        assert lg.torn_bytes > 0
        assert lg.size == 6  # 5 survivors + the LOG_TAIL_REPAIRED evidence
        items = list(lg.items())
        assert items[5].type == EventType.LOG_TAIL_REPAIRED  # type: ignore[union-attr]
        assert lg.heads[-1].size == 6  # repairing is a signing event by default


def test_zero_filled_tail_after_power_cut_is_a_torn_tail(
    tmp_path: Path, module: SoftwareModule
) -> None:
    path = tmp_path / "s"
    with EventLog.open(path, METER, module, T0, config()) as lg:
        fill(lg, 3)
    with open(path, "ab") as f:
        f.write(bytes(4096))
    with EventLog.open(path, METER, None, T0, config()) as lg:
        assert lg.size == 3 and lg.torn_bytes == 4096


def test_patent_mode_signs_the_whole_range_on_specified_events(
    tmp_path: Path, module: SoftwareModule
) -> None:
    with EventLog.open(tmp_path / "s", METER, module, T0, config(Mode.PATENT, every=2)) as lg:
        fill(lg, 5)
        assert lg.heads == []  # the patent signs on specified events only
        head = lg.append(EventType.CLOCK_ADJUSTED, b"\x01", T0 + 5).head
        assert head is not None and head.kind is HeadKind.RANGE and head.size == 6
        expected = range_hasher()
        for item in lg.items():
            if not hasattr(item, "kind"):
                range_update(expected, item.encode())
        assert head.root == expected.digest()
        assert verify_digest(module.public_key_pem(), head.digest(METER), head.signature)


def test_read_only_store_cannot_sign(tmp_path: Path, module: SoftwareModule) -> None:
    path = tmp_path / "s"
    EventLog.open(path, METER, module, T0, config()).close()
    with EventLog.open(path, METER, None, T0, config()) as lg:
        lg.append(EventType.POWER_FAIL, b"", T0)  # not a signing event: fine
        with pytest.raises(LogStoreError, match="read-only"):
            lg.append(EventType.COVER_OPEN, b"", T0)


def test_fsync_always_and_limits(tmp_path: Path, module: SoftwareModule) -> None:
    cfg = LogConfig(fsync=FsyncPolicy.ALWAYS)
    with EventLog.open(tmp_path / "s", METER, module, T0, cfg) as lg:
        lg.append(EventType.POWER_FAIL, b"x", T0)
        with pytest.raises(LogStoreError):
            lg.append(EventType.POWER_FAIL, bytes(70000), T0)
        with pytest.raises(LogStoreError):
            lg.append(0x10000, b"", T0)
        assert lg.size == 1
    assert (tmp_path / "s").stat().st_mode & 0o077 == 0


def test_crash_while_writing_the_header(tmp_path: Path, module: SoftwareModule) -> None:
    path = tmp_path / "s"
    EventLog.open(path, METER, module, T0, config()).close()
    os.truncate(path, 5)
    with EventLog.open(path, METER, module, T0, config()) as lg:
        fill(lg, 2)
    with EventLog.open(path, METER, module, T0, config()) as lg:
        assert lg.size == 2
