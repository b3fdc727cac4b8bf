"""The event-log upload over C12.22, end to end in memory: a MeterNode whose signed event log
(EventLog + SoftwareModule) is served as manufacturer table MT1, a head-end C1222Client under
UKMF keys from a real PANA security context, the EventLogReader fetching the export in
partial reads and the intake verifying it on arrival into a real repository. A later fetch
extends the accepted head; a tampered export is alarmed and stores nothing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.unit.c1222.c1222_harness import (
    HEADEND_ADDR,
    HEADEND_TITLE,
    METER_ADDR,
    METER_TITLE,
    T0,
    make_ctx,
)

from amistack.c1222.endpoint import C1222Client, EndpointConfig
from amistack.c1222.eventlog_table import EVENT_LOG_HEADER, EVENT_LOG_TABLE
from amistack.c1222.security import ring_key_lookup, ring_send_key
from amistack.c1222.services import ReadResult
from amistack.c1222.tables import GeneralConfig, Table
from amistack.crypto import seeded_random
from amistack.eventlog import CheckpointPolicy, EventLog, EventType, FsyncPolicy, LogConfig
from amistack.eventlog.verify import Reason
from amistack.headend.eventlog_intake import (
    ALARM_KIND,
    EventLogFetched,
    EventLogFetchFailed,
    EventLogIntake,
    EventLogReader,
)
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.node import MeterNode, MeterNodeConfig
from amistack.securemodule import SoftwareModule

METER = "meter-1"
CONFIG = LogConfig(
    checkpoint=CheckpointPolicy(every_entries=10, every_seconds=None), fsync=FsyncPolicy.NEVER
)


class Tampering:
    """The meter's export as an attacker on the meter would alter it (one entry edited)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.on = False

    def export_lines(self) -> Iterable[str]:
        for line in self.log.export_lines():
            if self.on and line.startswith("E 3 "):
                line = line.rsplit(" ", 1)[0] + " 99\n"
            yield line


@dataclass
class Rig:
    node: MeterNode
    client: C1222Client
    reader: EventLogReader
    repo: SqliteRepository
    log: EventLog
    source: Tampering
    now: float = T0

    def pump(self, rounds: int = 200) -> list[object]:
        out: list[object] = []
        for _ in range(rounds):
            moved = False
            for data, _addr in self.client.datagrams_to_send(self.now):
                self.node.receive_datagram(data, HEADEND_ADDR, self.now)
                moved = True
            for data, _addr in self.node.datagrams_to_send(self.now):
                self.client.receive_datagram(data, METER_ADDR, self.now)
                moved = True
            while self.node.next_event() is not None:
                pass
            while (ev := self.client.next_event()) is not None:
                if not self.reader.handle_event(ev, self.now):
                    out.append(ev)
            while (fe := self.reader.next_event()) is not None:
                out.append(fe)
            if not moved:
                break
        return out

    def fetch(self) -> EventLogFetched | EventLogFetchFailed:
        assert self.reader.fetch(METER, METER_ADDR, METER_TITLE, self.now)
        got = [e for e in self.pump() if isinstance(e, EventLogFetched | EventLogFetchFailed)]
        assert len(got) == 1, got
        return got[0]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    module = SoftwareModule.create(tmp_path / "meter.pem", f"{METER}/eventlog")
    log = EventLog.open(tmp_path / "meter.evlog", METER, module, T0, CONFIG)
    source = Tampering(log)
    meter_ring = KeyRing(b"meter-1", PurposeRegistry(), overlap=30.0)
    headend_ring = KeyRing(b"meter-1", PurposeRegistry(), overlap=30.0)
    node = MeterNode(
        MeterNodeConfig(METER_TITLE, HEADEND_TITLE),
        MeterModel(1, MeterConfig(install_time=T0 - 40 * DAY_S, outage_rate_per_year=0.0)),
        meter_ring,
        seeded_random(3),
        event_log=log,
        event_log_source=source,
    )
    client = C1222Client(
        EndpointConfig(HEADEND_TITLE),
        ring_key_lookup(headend_ring),
        ring_send_key(headend_ring),
        seeded_random(4),
    )
    ctx = make_ctx(key_id=1)
    node.key_events(meter_ring.install(ctx, 86400.0, T0), T0)  # logs a KEY_ROTATED event
    headend_ring.install(ctx, 86400.0, T0)
    repo = SqliteRepository(tmp_path / "headend")
    repo.register_meter(
        METER, "2.16.124.113620.1.22.0.7.1", "c1", "cell", T0, eventlog_key=module.public_key_pem()
    )
    reader = EventLogReader(client, EventLogIntake(repo), chunk=200)
    yield Rig(node, client, reader, repo, log, source)
    repo.close()
    log.close()
    module.close()


def _fill(log: EventLog, n: int, t: float) -> None:
    for _ in range(n):
        i = log.size
        log.append(EventType.POWER_FAIL if i % 2 else EventType.POWER_RESTORE, bytes([i]), t + i)


def test_the_headend_fetches_the_signed_log_in_pieces_and_verifies_it(rig: Rig) -> None:
    assert rig.log.size == 1 and rig.log.heads  # KEY_ROTATED is a signing event
    _fill(rig.log, 30, T0)  # heads at 11, 21, 31 (every 10 entries after the first head)
    text_len = sum(len(ln) for ln in rig.log.export_lines())

    got = rig.fetch()
    assert isinstance(got, EventLogFetched)
    assert got.verdict.ok and got.size == text_len
    assert got.reads == 1 + -(-(text_len - 200) // 200) > 5  # arrived in 200-byte pieces
    last = rig.log.heads[-1]
    head = rig.repo.eventlog_head(METER)
    assert head is not None and head.size == last.size == got.verdict.last_head.size  # type: ignore[union-attr]
    events = rig.repo.events(meter_id=METER, limit=1000)
    assert [e.seq for e in events] == list(range(last.size))
    assert events[0].kind == "KEY_ROTATED"

    # the meter goes on; the next fetch extends the accepted head and stores only the new ones
    rig.now += 60
    _fill(rig.log, 12, T0 + 100)
    rig.log.checkpoint(T0 + 200)
    again = rig.fetch()
    assert isinstance(again, EventLogFetched) and again.verdict.ok
    assert rig.repo.eventlog_head(METER).size == rig.log.size  # type: ignore[union-attr]
    assert len(rig.repo.events(meter_id=METER, limit=1000)) == rig.log.size
    assert rig.repo.alarms(meter_id=METER) == []


def test_a_tampered_export_is_alarmed_and_nothing_is_stored(rig: Rig) -> None:
    _fill(rig.log, 30, T0)
    rig.source.on = True
    got = rig.fetch()
    assert isinstance(got, EventLogFetched)
    assert got.verdict.reason is Reason.EDITED_ENTRY
    alarms = rig.repo.alarms(meter_id=METER)
    assert [a.kind for a in alarms] == [ALARM_KIND]
    assert alarms[0].detail.startswith("edited-entry: ")
    assert rig.repo.events(meter_id=METER) == [] and rig.repo.eventlog_head(METER) is None
    # the meter is repaired (the tampering gone): the honest log is accepted
    rig.source.on = False
    rig.now += 10
    fixed = rig.fetch()
    assert isinstance(fixed, EventLogFetched) and fixed.verdict.ok


def test_mt1_is_listed_in_st0_and_a_read_past_the_end_is_refused(rig: Rig) -> None:
    rid = rig.client.read(METER_ADDR, METER_TITLE, Table.GENERAL_CONFIG, rig.now)
    ans = [e for e in rig.pump() if getattr(e, "request_id", None) == rid]
    st0 = GeneralConfig.decode(ReadResult.decode(ans[0].responses[0].data).data)  # type: ignore[attr-defined]
    assert EVENT_LOG_TABLE & 0x7FF in st0.mfg_tables
    rid = rig.client.read(
        METER_ADDR, METER_TITLE, EVENT_LOG_TABLE, rig.now, offset=EVENT_LOG_HEADER + 10**6, count=8
    )
    ans = [e for e in rig.pump() if getattr(e, "request_id", None) == rid]
    assert len(ans) == 1 and not ans[0].ok  # type: ignore[attr-defined]


def test_a_fetch_that_times_out_is_reported_without_a_verdict(rig: Rig) -> None:
    assert rig.reader.fetch(METER, METER_ADDR, METER_TITLE, rig.now)
    assert not rig.reader.fetch(METER, METER_ADDR, METER_TITLE, rig.now)  # one at a time
    rig.client.datagrams_to_send(rig.now)  # lost on the way
    failed: list[object] = []
    for _ in range(50):
        t = rig.client.get_timer()
        if t is None:
            break
        rig.now = t
        rig.client.handle_timer(rig.now)
        rig.client.datagrams_to_send(rig.now)  # the retries are lost too
        while (ev := rig.client.next_event()) is not None:
            rig.reader.handle_event(ev, rig.now)
        while (fe := rig.reader.next_event()) is not None:
            failed.append(fe)
        if failed:
            break
    assert len(failed) == 1 and isinstance(failed[0], EventLogFetchFailed)
    assert failed[0].reason == "timed out"
    assert rig.repo.alarms(meter_id=METER) == []  # a lost transfer is not a forged log
    assert rig.reader.fetch(METER, METER_ADDR, METER_TITLE, rig.now)  # and may be retried
