"""Offline mode (claims 7-8): the key server and the head-end's collector run on the handheld.

`OfflineOffice` is the engine a work session's channel reaches (`handheld.WAN_ADDR`) when there
is no WAN (`handheld.offline_run.OfflineRun` joins the two): it routes IPv6 packets to two hosts
on the handheld itself,

- the key server: the real sans-IO `KeyServer` (PAA + EAP-PSK + UKMF) over a `CredentialStore`
  kept in memory only (under a KEK that lives only in RAM), holding the opened work order's
  meters and nothing else; each meter's PANA session lifetime ends at the order's `not_after`,
  so no key it derives outlives the order, and at `not_after` (its timer) the meters are revoked
  in that store: PSKs destroyed, sessions ended, keys cut;
- the collector: a `C1222Client` with `HeadendKeys` over that key server, reading the meters'
  load profile (`read`) where the order allows "read", and fetching their signed event logs
  (`fetch_events`, the head-end's `EventLogReader`) where it allows "events", only for its
  meters.

Everything collected is sealed at once into a `SealedReadings` file: each reading and each
event-log export AES-GCM under the order's technician seal key, that again under the handheld's
PKCS#11 KEK (associated data: order, meter, interval or export hash), and signed (ECDSA P-256
over a domain-separated SHA-256 of a body naming the order and the technician) by the
handheld's secure module. `sync` (at the office, with its copy of the seal key) checks each
signature against the handheld's registered public key, stores each reading once in the
head-end's repository (its primary key makes a second sync a no-op), hands each event log to
the head-end's `EventLogIntake` (which verifies the meter's signed heads), reports conflicts and
refusals, and marks the order's meters for PSK rotation in the key server's store; the caller
then destroys the handheld's copies (`SealedReadings.destroy`, `workorder.destroy_file`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222Client, EndpointConfig
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.events import RequestTimedOut, ResponseReceived
from amistack.c1222.services import Read, ReadResult
from amistack.c1222.tables import (
    LP_INTERVALS,
    LoadProfile,
    ProcedureResponse,
    ProcedureResult,
    Table,
    decode_intervals,
    remote_switch,
)
from amistack.crypto import RandomSource
from amistack.eventlog.record import LogFormatError, parse_header
from amistack.eventlog.verify import Reason, Verdict
from amistack.handheld.workorder import OpenedWorkOrder, WorkOrder, WorkOrderError, destroy_file
from amistack.headend.collector import parse_lp_header
from amistack.headend.eventlog_intake import (
    EventLogFetched,
    EventLogFetchFailed,
    EventLogIntake,
    EventLogReader,
)
from amistack.headend.keys import HeadendKeys
from amistack.headend.registry import HeadendError
from amistack.headend.schema import IntervalReading
from amistack.headend.storage import ReadingRepository
from amistack.keymgmt.groupkeys import GroupKeyManager
from amistack.keymgmt.kek import FileKek, KekError, KeyEncryptionKey, record_aad
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import CredentialStore
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.ipv6 import Ipv6Packet, UdpDatagram
from amistack.mesh.wan import Ipv6Host
from amistack.pana.paa import PaaConfig
from amistack.securemodule.base import SecureModule, verify_digest

__all__ = [
    "OfflineOffice",
    "ReadingsSealed",
    "SealedReadings",
    "SignedReading",
    "SyncReport",
    "mark_for_rotation",
    "sync",
]

_SIGN_DOMAIN = b"amistack-offline-reading-v1"
_LOG_SIGN_DOMAIN = b"amistack-offline-eventlog-v1"
READINGS_FILE = "offline-readings.db"  # in the handheld's data dir
ROTATION_DUE = "psk_rotation_due"  # the key server's audit kind marking a meter for rotation
_NONCE = 12  # AES-GCM (SP 800-38D §8.2.2: random 96-bit IVs, far fewer than 2^32 per key)
MAX_EVENT_LOG = 16 * 1024 * 1024  # MT1's reach (c1222.eventlog_table.MAX_EVENT_LOG_TEXT)


def _body(order_id: str, technician: str, r: IntervalReading) -> bytes:
    return json.dumps(
        [order_id, technician, r.meter_id, r.interval_start, r.length_min, r.forward_wh,
         r.reverse_wh, r.status, r.key_id], separators=(",", ":"),
    ).encode()  # fmt: skip


def _digest(body: bytes) -> bytes:
    return hashlib.sha256(_SIGN_DOMAIN + record_aad("reading", body)).digest()


def _log_body(
    order_id: str, technician: str, meter_id: str, fetched_at: float, export: bytes
) -> bytes:
    sha = hashlib.sha256(export).hexdigest()
    return json.dumps([order_id, technician, meter_id, fetched_at, sha],
                      separators=(",", ":")).encode()  # fmt: skip


def _log_digest(body: bytes) -> bytes:
    return hashlib.sha256(_LOG_SIGN_DOMAIN + record_aad("eventlog", body)).digest()


@dataclass(frozen=True)
class SignedReading:
    order_id: str
    technician: str  # who had the order open: bound by the seal key and the signature
    reading: IntervalReading
    signature: bytes  # raw r || s over _digest(body)

    @property
    def body(self) -> bytes:
        return _body(self.order_id, self.technician, self.reading)


@dataclass(frozen=True)
class SignedEventLog:
    """A meter's event-log export (docs/event-log.md) as the handheld fetched it over C12.22."""

    order_id: str
    technician: str
    meter_id: str
    fetched_at: float
    export: bytes
    signature: bytes  # raw r || s over _log_digest(body)

    @property
    def body(self) -> bytes:
        return _log_body(self.order_id, self.technician, self.meter_id, self.fetched_at,
                         self.export)  # fmt: skip


@dataclass
class Collected:
    """What `SealedReadings.export` opened, and what did not open (tampered at rest)."""

    readings: list[SignedReading] = field(default_factory=list)
    event_logs: list[SignedEventLog] = field(default_factory=list)
    unopened: list[str] = field(default_factory=list)


class SealedReadings:
    """The handheld's store of what one work order collected: one SQLite file (0600, shared by
    the orders a handheld runs), each record sealed twice and signed:

    - inner: AES-256-GCM under the order's technician seal key (`OpenedWorkOrder.seal_key`,
      which only the technician's unlock of the order yields; the office keeps a copy);
    - outer: the handheld's token KEK (`KeyEncryptionKey.wrap`);
    - the token's ECDSA P-256 signature over a domain-separated digest of the record, which
      names the order and the technician.

    Each is written in its own committed transaction before it is reported, so what was
    reported survives the process being killed."""

    def __init__(
        self,
        path: Path,
        kek: KeyEncryptionKey,
        module: SecureModule,
        order: WorkOrder,
        seal_key: bytes,
        rng: RandomSource = os.urandom,
    ) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.path = path
        self.kek = kek
        self.module = module
        self.order = order
        self._seal = AESGCM(seal_key)
        self._rng = rng
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS readings (order_id TEXT NOT NULL, meter_id TEXT NOT NULL,"
            " interval_start INTEGER NOT NULL, length_min INTEGER NOT NULL, sealed BLOB NOT NULL,"
            " signature BLOB NOT NULL, PRIMARY KEY (order_id, meter_id, interval_start,"
            " length_min))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS event_logs (order_id TEXT NOT NULL, meter_id TEXT NOT"
            " NULL, sha256 BLOB NOT NULL, fetched_at REAL NOT NULL, sealed BLOB NOT NULL,"
            " signature BLOB NOT NULL, PRIMARY KEY (order_id, meter_id, sha256))"
        )

    @staticmethod
    def _aad(order_id: str, meter_id: str, start: int, length: int) -> bytes:
        return record_aad("offline-reading", order_id, meter_id, start, length)

    @staticmethod
    def _log_aad(order_id: str, meter_id: str, sha: bytes, fetched_at: float) -> bytes:
        return record_aad("offline-eventlog", order_id, meter_id, sha, fetched_at)

    def _wrap(self, plain: bytes, aad: bytes) -> bytes:
        nonce = self._rng(_NONCE)
        return self.kek.wrap(nonce + self._seal.encrypt(nonce, plain, aad), aad)

    def _unwrap(self, sealed: bytes, aad: bytes) -> bytes:
        inner = self.kek.unwrap(sealed, aad)
        return self._seal.decrypt(inner[:_NONCE], inner[_NONCE:], aad)

    def add(self, readings: Iterable[IntervalReading]) -> int:
        """Seal and sign each reading not already held; returns how many were new."""
        order_id, tech = self.order.order_id, self.order.technician
        new = 0
        for r in readings:
            body = _body(order_id, tech, r)
            sealed = self._wrap(body, self._aad(order_id, *r.key))
            signature = self.module.sign_digest(_digest(body))
            cur = self._db.execute(
                "INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?, ?)",
                (order_id, *r.key, sealed, signature),
            )
            new += cur.rowcount
        return new

    def add_event_log(self, meter_id: str, export: bytes, fetched_at: float) -> bool:
        """Seal and sign a meter's event-log export; False if this very export is held."""
        order_id, tech = self.order.order_id, self.order.technician
        sha = hashlib.sha256(export).digest()
        sealed = self._wrap(export, self._log_aad(order_id, meter_id, sha, fetched_at))
        signature = self.module.sign_digest(
            _log_digest(_log_body(order_id, tech, meter_id, fetched_at, export))
        )
        cur = self._db.execute(
            "INSERT OR IGNORE INTO event_logs VALUES (?, ?, ?, ?, ?, ?)",
            (order_id, meter_id, sha, fetched_at, sealed, signature),
        )
        return cur.rowcount == 1

    def export(self) -> Collected:
        """The order's records, opened; one that does not open is named in `unopened`."""
        out = Collected()
        order_id, tech = self.order.order_id, self.order.technician
        for meter, start, length, sealed, signature in self._db.execute(
            "SELECT meter_id, interval_start, length_min, sealed, signature FROM readings"
            " WHERE order_id = ? ORDER BY meter_id, interval_start", (order_id,)
        ):  # fmt: skip
            try:
                body = self._unwrap(sealed, self._aad(order_id, meter, start, length))
                fields = json.loads(body)
                reading = IntervalReading(*fields[2:])
            except (KekError, InvalidTag, ValueError, TypeError):
                out.unopened.append(f"{meter}@{start}: sealed reading does not open")
                continue
            out.readings.append(SignedReading(str(fields[0]), str(fields[1]), reading, signature))
        for meter, sha, fetched_at, sealed, signature in self._db.execute(
            "SELECT meter_id, sha256, fetched_at, sealed, signature FROM event_logs"
            " WHERE order_id = ? ORDER BY fetched_at", (order_id,)
        ):  # fmt: skip
            try:
                export = self._unwrap(sealed, self._log_aad(order_id, meter, sha, fetched_at))
            except (KekError, InvalidTag, ValueError):
                out.unopened.append(f"{meter} event log: sealed export does not open")
                continue
            out.event_logs.append(
                SignedEventLog(order_id, tech, meter, fetched_at, export, signature)
            )
        return out

    def _count(self, table: str, order_id: str | None) -> int:
        where, args = ("", ()) if order_id is None else (" WHERE order_id = ?", (order_id,))
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}{where}", args).fetchone()[0])

    def counts(self) -> tuple[int, int]:
        """(readings, event logs) held for the order."""
        oid = self.order.order_id
        return self._count("readings", oid), self._count("event_logs", oid)

    def close(self) -> None:
        self._db.close()

    def destroy(self) -> None:
        """Erase the order's records (secure_delete overwrites them); the file goes too once
        no other order's records are in it."""
        for table in ("readings", "event_logs"):
            self._db.execute(f"DELETE FROM {table} WHERE order_id = ?", (self.order.order_id,))
        left = self._count("readings", None) + self._count("event_logs", None)
        self.close()
        if not left:
            for suffix in ("", "-wal", "-shm", "-journal"):
                destroy_file(self.path.with_name(self.path.name + suffix))


@dataclass(frozen=True)
class ReadingsSealed:
    """Event: a read's intervals are sealed on the handheld."""

    meter_id: str
    request_id: int
    stored: int


@dataclass(frozen=True)
class EventLogSealed:
    """Event: a meter's event-log export is sealed on the handheld (`new`: not held before)."""

    meter_id: str
    size: int
    new: bool


@dataclass(frozen=True)
class CollectFailed:
    """Event: a read or an event-log fetch of a meter failed (timeout, refused, bad data)."""

    meter_id: str
    what: str  # "read" | "events"
    reason: str


@dataclass(frozen=True)
class SwitchDone:
    """Event: a meter answered a remote connect or disconnect (C12.19 MP, ST7/ST8)."""

    meter_id: str
    operation: str  # "connect" | "disconnect"
    ok: bool
    detail: str


class _SealedExports:
    """The `ExportSink` of the handheld's event-log reader: each export is sealed for the
    office, which verifies it (the handheld holds no meter's event-log key); only the export's
    header is checked here, so another meter's log is not kept under this meter's name."""

    def __init__(self, readings: SealedReadings) -> None:
        self.readings = readings
        self.new = False  # whether the last export was not held yet

    def receive(self, meter_id: str, export: bytes, now: float) -> Verdict:
        first = export.split(b"\n", 1)[0]
        try:
            header = parse_header(first.decode("ascii"))
        except (LogFormatError, UnicodeDecodeError):
            return Verdict(Reason.MALFORMED, "export header does not parse", 1, meter_id)
        if header.meter_id != meter_id or len(export) > MAX_EVENT_LOG:
            return Verdict(Reason.WRONG_METER, f"log of {header.meter_id}", 1, meter_id)
        self.new = self.readings.add_event_log(meter_id, export, now)
        return Verdict(Reason.OK, "sealed on the handheld; verified at the office", 0, meter_id)


class _Router:
    """IPv6 packets to the host at their destination address and UDP port (the key server and
    the head-end may share an address, as on one office host)."""

    def __init__(self, hosts: Sequence[Ipv6Host]) -> None:
        self.hosts = {(h.address[0], h.address[1]): h for h in hosts}

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            packet = Ipv6Packet.decode(data)
            port = UdpDatagram.decode(packet).dst_port
        except MeshDecodeError:
            return
        host = self.hosts.get((str(packet.dst), port))
        if host is not None:
            host.receive_datagram(data, addr, now)


class OfflineOffice:
    """See the module docstring. `handheld_radio`: the handheld's radio address (the WAN hosts'
    gateway); `relays`: the IPv6 addresses allowed to relay PANA (the handheld, the meters);
    `pans`: the mesh PANs whose group keys the key server hands out (the handheld's)."""

    def __init__(
        self,
        opened: OpenedWorkOrder,
        readings: SealedReadings,
        *,
        handheld_id: str,
        handheld_psk: bytes,
        handheld_radio: Addr,
        keyserver_addr: Addr,
        headend_addr: Addr,
        headend_title: ApTitle,
        titles: dict[bytes, str],  # AP title device id -> the meter's device id
        relays: frozenset[str],
        pans: Sequence[int],
        rng: RandomSource,
        now: float,
        paa_config: PaaConfig | None = None,
        lp_table: Table = Table.LOAD_PROFILE_1,
    ) -> None:
        order = opened.order
        if not order.valid_at(now):
            raise WorkOrderError("expired", f"work order {order.order_id} is not valid now")
        self.order = order
        self.readings = readings
        self.lp_table = lp_table
        # In memory only, under a KEK that exists only in this process.
        self.store = CredentialStore(":memory:", FileKek(rng(32), rng))
        lifetime = order.not_after - now
        self.store.enroll(handheld_id, handheld_psk, now, session_lifetime=lifetime)
        for device, psk in opened.psks.items():
            self.store.enroll(device, psk, now, session_lifetime=lifetime)
        config = paa_config or PaaConfig()
        config = dataclasses.replace(config, allowed_relays=relays)
        self.keyserver = KeyServer(self.store, rng=rng, paa_config=config,
                                   session_lifetime=lifetime, now=now)  # fmt: skip
        self.keyserver.enable_group_keys(GroupKeyManager(list(pans), rng=rng, now=now))
        keys = HeadendKeys(titles.get, self.keyserver)
        self.client = C1222Client(EndpointConfig(headend_title), keys.lookup, keys.send_key, rng)
        self._hosts = [
            Ipv6Host(self.keyserver, keyserver_addr, handheld_radio),
            Ipv6Host(self.client, headend_addr, handheld_radio),
        ]
        self._router = _Router(self._hosts)
        self._exports = _SealedExports(readings)
        self.eventlogs = EventLogReader(self.client, self._exports)
        self._reads: dict[int, tuple[str, int, int | None]] = {}  # rid -> (meter, k, n)
        self._switches: dict[int, tuple[str, str]] = {}  # rid -> (meter, operation)
        self._sequence = 0  # ST7 SEQ_NBR of the last procedure
        self._events: list[object] = []
        self.counters: dict[str, int] = {}
        self.expired = False
        self.closed = False

    def _allow(self, operation: str, meter: str, now: float) -> None:
        order = self.order
        if operation not in order.operations:
            raise WorkOrderError("refused", f"work order {order.order_id} does not allow "
                                 f"{operation!r}")  # fmt: skip
        if meter not in order.meters:
            raise WorkOrderError("refused", f"meter {meter} is not in {order.order_id}")
        if self.expired or not order.valid_at(now):
            raise WorkOrderError("expired", f"work order {order.order_id} expired")

    def fetch_events(self, meter: str, addr: Addr, ap_title: ApTitle, now: float) -> bool:
        """Fetch `meter`'s signed event log (MT1, in partial reads) and seal it; False if a
        fetch of it is already under way. Only where the order allows "events"."""
        self._allow("events", meter, now)
        return self.eventlogs.fetch(meter, addr, ap_title, now)

    def switch(self, meter: str, addr: Addr, ap_title: ApTitle, connect: bool, now: float) -> int:
        """Remote connect or disconnect of `meter`'s switch (ST7 procedure, ST8 outcome); only
        where the order allows that operation."""
        operation = "connect" if connect else "disconnect"
        self._allow(operation, meter, now)
        self._sequence = (self._sequence + 1) & 0xFF
        rid = self.client.procedure(addr, ap_title, remote_switch(self._sequence, connect), now)
        self._switches[rid] = (meter, operation)
        return rid

    def _on_switch(self, ev: ResponseReceived | RequestTimedOut) -> None:
        meter, operation = self._switches.pop(ev.request_id)
        if isinstance(ev, RequestTimedOut):
            self._events.append(SwitchDone(meter, operation, False, "timed out"))
            return
        if not ev.ok:
            codes = ",".join(r.code.name for r in ev.responses) or "none"
            self._events.append(SwitchDone(meter, operation, False, f"refused ({codes})"))
            return
        try:
            result = ProcedureResponse.decode(ReadResult.decode(ev.responses[1].data).data).result
        except (C1222DecodeError, IndexError):
            self._events.append(SwitchDone(meter, operation, False, "undecodable outcome"))
            return
        ok = result is ProcedureResult.COMPLETED
        self._events.append(SwitchDone(meter, operation, ok, result.name.lower()))

    def read(self, meter: str, addr: Addr, ap_title: ApTitle, intervals: int, now: float) -> int:
        """Read the newest `intervals` intervals of `meter` (the header first, then them)."""
        self._allow("read", meter, now)
        rid = self.client.request(addr, ap_title, [Read(self.lp_table, 0, LoadProfile.HEADER)],
                                  now)  # fmt: skip
        self._reads[rid] = (meter, intervals, None)
        return rid

    def _on_response(self, ev: ResponseReceived, now: float) -> None:
        meter, k, n = self._reads.pop(ev.request_id)
        if not ev.ok:
            self._count("read-failed")
            codes = ",".join(r.code.name for r in ev.responses) or "none"
            self._events.append(CollectFailed(meter, "read", f"refused ({codes})"))
            return
        try:
            if n is None:  # the header: how many intervals, then the newest k of them
                _, n_hdr, _ = parse_lp_header(ReadResult.decode(ev.responses[0].data).data)
                k = min(k, n_hdr)
                first = n_hdr - k
                rid = self.client.request(ev.addr, ev.peer, [
                    Read(self.lp_table, 0, LoadProfile.HEADER),
                    Read(self.lp_table, LoadProfile.HEADER + first * LoadProfile.INTERVAL_SIZE,
                         k * LoadProfile.INTERVAL_SIZE),
                ], now)  # fmt: skip
                self._reads[rid] = (meter, k, n_hdr)
                return
            minutes, n_now, end = parse_lp_header(ReadResult.decode(ev.responses[0].data).data)
            ivs = decode_intervals(ReadResult.decode(ev.responses[1].data).data)
        except C1222DecodeError:
            self._count("decode-error")
            self._events.append(CollectFailed(meter, "read", "undecodable load profile"))
            return
        if minutes != LP_INTERVALS[self.lp_table]:
            self._count("decode-error")
            self._events.append(CollectFailed(meter, "read", "unexpected interval length"))
            return
        step = minutes * 60
        first = n - k
        readings = [
            IntervalReading(meter, int(end) - (n_now - (first + j)) * step, minutes,
                            iv.value_wh, 0, iv.status, 0)
            for j, iv in enumerate(ivs)
        ]  # fmt: skip
        stored = self.readings.add(readings)
        self._events.append(ReadingsSealed(meter, ev.request_id, stored))

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # -- the Engine interface ------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self._router.receive_datagram(data, addr, now)
        self._drain(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return [d for h in self._hosts for d in h.datagrams_to_send(now)]

    def get_timer(self) -> float | None:
        timers = [t for h in self._hosts if (t := h.get_timer()) is not None]
        if not self.expired:
            timers.append(self.order.not_after)
        return min(timers, default=None)

    def handle_timer(self, now: float) -> None:
        if not self.expired and now >= self.order.not_after:
            self._expire(now)
        for h in self._hosts:
            if (t := h.get_timer()) is not None and t <= now:
                h.handle_timer(now)
        self._drain(now)

    def _expire(self, now: float) -> None:
        """The order's validity ended mid-run: every meter's PSK is destroyed in the in-memory
        store, its sessions end and its keys are cut now (the key server's revocation)."""
        self.expired = True
        for meter in self.order.meters:
            self.keyserver.revoke(meter, now, reason=f"work order {self.order.order_id} expired")

    def _drain(self, now: float) -> None:
        for host in self._hosts:
            while (ev := host.next_event()) is not None:
                if isinstance(ev, ResponseReceived | RequestTimedOut):
                    if self.eventlogs.handle_event(ev, now):
                        continue
                    if ev.request_id in self._switches:
                        self._on_switch(ev)
                        continue
                    if ev.request_id in self._reads:
                        if isinstance(ev, ResponseReceived):
                            self._on_response(ev, now)
                        else:
                            meter = self._reads.pop(ev.request_id)[0]
                            self._events.append(CollectFailed(meter, "read", "timed out"))
                        continue
                self._events.append(ev)
        while (fetched := self.eventlogs.next_event()) is not None:
            if isinstance(fetched, EventLogFetched) and fetched.verdict.ok:
                self._events.append(
                    EventLogSealed(fetched.meter_id, fetched.size, self._exports.new)
                )
            else:
                why = (fetched.reason if isinstance(fetched, EventLogFetchFailed)
                       else fetched.verdict.reason.value)  # fmt: skip
                self._events.append(CollectFailed(fetched.meter_id, "events", why))

    def next_event(self) -> object | None:
        return self._events.pop(0) if self._events else None

    def close(self) -> None:
        """End of the offline run: the in-memory credentials go with the store."""
        if not self.closed:
            self.closed = True
            self.store.close()


@dataclass
class SyncReport:
    order_id: str
    inserted: int = 0
    duplicates: int = 0
    event_logs: int = 0  # exports the head-end verified and accepted
    events_stored: int = 0  # events new to the head-end
    refused: list[str] = field(default_factory=list)  # unopened, bad signature, wrong order...
    conflicts: list[str] = field(default_factory=list)  # same interval, other values
    marked_for_rotation: list[str] = field(default_factory=list)


def _foreign(order: WorkOrder, order_id: str, technician: str, meter: str) -> str | None:
    """Why a record is not this order's (None: it is)."""
    if order_id != order.order_id:
        return f"recorded under order {order_id}"
    if technician != order.technician:
        return f"recorded by {technician}, not the order's technician {order.technician}"
    if meter not in order.meters:
        return f"not a meter of {order.order_id}"
    return None


def sync(
    order: WorkOrder,
    collected: Collected,
    handheld_public_key_pem: bytes,
    repo: ReadingRepository,
    now: float,
) -> SyncReport:
    """Store what the handheld collected in the head-end once each; see the module docstring.
    Readings: signature, order, technician and meter checked, conflicts kept out. Event logs:
    the same checks, then the head-end's `EventLogIntake` verifies each against the meter's
    registered key and its accepted head (refusals raise its alarm)."""
    report = SyncReport(order.order_id, refused=list(collected.unopened))
    accepted: list[IntervalReading] = []
    for rec in collected.readings:
        r = rec.reading
        where = f"{r.meter_id}@{r.interval_start}"
        if not verify_digest(handheld_public_key_pem, _digest(rec.body), rec.signature):
            report.refused.append(f"{where}: signature does not verify")
            continue
        if (why := _foreign(order, rec.order_id, rec.technician, r.meter_id)) is not None:
            report.refused.append(f"{where}: {why}")
            continue
        held = repo.readings(r.meter_id, r.interval_start, r.interval_start + 1)
        same = [h for h in held if h.length_min == r.length_min]
        if same and (same[0].forward_wh, same[0].reverse_wh, same[0].status) != (
            r.forward_wh, r.reverse_wh, r.status,
        ):  # fmt: skip
            report.conflicts.append(f"{where}: the head-end holds other values")
            continue
        accepted.append(r)
    if accepted:
        result = repo.store_readings(accepted, now)
        report.inserted, report.duplicates = result.inserted, result.duplicates
    intake = EventLogIntake(repo)
    for log_rec in collected.event_logs:
        where = f"{log_rec.meter_id} event log"
        if not verify_digest(handheld_public_key_pem, _log_digest(log_rec.body),
                             log_rec.signature):  # fmt: skip
            report.refused.append(f"{where}: signature does not verify")
            continue
        why = _foreign(order, log_rec.order_id, log_rec.technician, log_rec.meter_id)
        if why is not None:
            report.refused.append(f"{where}: {why}")
            continue
        try:
            verdict, stored = intake.receive_counted(log_rec.meter_id, log_rec.export, now)
        except HeadendError as exc:
            report.refused.append(f"{where}: {exc.message}")
            continue
        if not verdict.ok:
            report.refused.append(f"{where}: {verdict}")
            continue
        report.event_logs += 1
        report.events_stored += stored
    return report


def mark_for_rotation(store: CredentialStore, order: WorkOrder, now: float) -> list[str]:
    """Mark every meter of `order` for PSK rotation in the key server's audit trail (its PSK
    was on a handheld); returns the meters marked."""
    for meter in order.meters:
        store.audit(ROTATION_DUE, meter, f"PSK was on work order "
                    f"{order.order_id} ({order.handheld})", now)  # fmt: skip
    return list(order.meters)
