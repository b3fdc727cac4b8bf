"""Offline mode (claims 7-8): the key server and the head-end's collector run on the handheld.

`OfflineOffice` is the engine a work session's channel reaches (`handheld.WAN_ADDR`) when there
is no WAN: it routes IPv6 packets to two hosts on the handheld itself,

- the key server: the real sans-IO `KeyServer` (PAA + EAP-PSK + UKMF) over a `CredentialStore`
  kept in memory only (under a KEK that lives only in RAM), holding the opened work order's
  meters and nothing else; each meter's PANA session lifetime ends at the order's `not_after`,
  so no key it derives outlives the order, and at `not_after` (its timer) the meters are revoked
  in that store: PSKs destroyed, sessions ended, keys cut;
- the collector: a `C1222Client` with `HeadendKeys` over that key server, reading the meters'
  load profile (`read`) only where the order allows "read" and only for its meters.

Every interval read is sealed at once into a `SealedReadings` file: each record AES-GCM under the
handheld's PKCS#11 KEK (associated data: order, meter, interval) and signed (ECDSA P-256 over a
domain-separated SHA-256) by the handheld's secure module. `sync` (at the office) checks each
signature against the handheld's registered public key, stores each reading once in the
head-end's repository (its primary key makes a second sync a no-op), reports conflicts and
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

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222Client, EndpointConfig
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.events import ResponseReceived
from amistack.c1222.services import Read, ReadResult
from amistack.c1222.tables import LP_INTERVALS, LoadProfile, Table, decode_intervals
from amistack.crypto import RandomSource
from amistack.handheld.workorder import OpenedWorkOrder, WorkOrder, WorkOrderError, destroy_file
from amistack.headend.collector import parse_lp_header
from amistack.headend.keys import HeadendKeys
from amistack.headend.schema import IntervalReading
from amistack.headend.storage import ReadingRepository
from amistack.keymgmt.groupkeys import GroupKeyManager
from amistack.keymgmt.kek import FileKek, KekError, KeyEncryptionKey, record_aad
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import CredentialStore
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.ipv6 import Ipv6Packet
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
READINGS_FILE = "offline-readings.db"  # in the handheld's data dir
ROTATION_DUE = "psk_rotation_due"  # the key server's audit kind marking a meter for rotation


def _body(order_id: str, r: IntervalReading) -> bytes:
    return json.dumps(
        [order_id, r.meter_id, r.interval_start, r.length_min, r.forward_wh, r.reverse_wh,
         r.status, r.key_id], separators=(",", ":"),
    ).encode()  # fmt: skip


def _digest(body: bytes) -> bytes:
    return hashlib.sha256(_SIGN_DOMAIN + record_aad("reading", body)).digest()


@dataclass(frozen=True)
class SignedReading:
    order_id: str
    reading: IntervalReading
    signature: bytes  # raw r || s over _digest(_body(...))

    @property
    def body(self) -> bytes:
        return _body(self.order_id, self.reading)


class SealedReadings:
    """The handheld's reading store: one SQLite file (0600), each record encrypted and signed."""

    def __init__(self, path: Path, kek: KeyEncryptionKey, module: SecureModule) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.path = path
        self.kek = kek
        self.module = module
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS readings (order_id TEXT NOT NULL, meter_id TEXT NOT NULL,"
            " interval_start INTEGER NOT NULL, length_min INTEGER NOT NULL, sealed BLOB NOT NULL,"
            " signature BLOB NOT NULL, PRIMARY KEY (order_id, meter_id, interval_start,"
            " length_min))"
        )

    @staticmethod
    def _aad(order_id: str, meter_id: str, start: int, length: int) -> bytes:
        return record_aad("offline-reading", order_id, meter_id, start, length)

    def add(self, order_id: str, readings: Iterable[IntervalReading]) -> int:
        """Seal and sign each reading not already held; returns how many were new."""
        new = 0
        for r in readings:
            body = _body(order_id, r)
            sealed = self.kek.wrap(body, self._aad(order_id, *r.key))
            signature = self.module.sign_digest(_digest(body))
            cur = self._db.execute(
                "INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?, ?)",
                (order_id, *r.key, sealed, signature),
            )
            new += cur.rowcount
        return new

    def export(self) -> list[SignedReading]:
        """Every record, opened; a record that does not unwrap raises WorkOrderError."""
        out = []
        for order_id, meter, start, length, sealed, signature in self._db.execute(
            "SELECT * FROM readings ORDER BY meter_id, interval_start"
        ):
            try:
                body = self.kek.unwrap(sealed, self._aad(order_id, meter, start, length))
                fields = json.loads(body)
            except (KekError, ValueError):
                raise WorkOrderError(
                    "tampered", f"sealed reading {meter}@{start} does not open"
                ) from None
            out.append(SignedReading(str(fields[0]), IntervalReading(*fields[1:]), signature))
        return out

    def close(self) -> None:
        self._db.close()

    def destroy(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            destroy_file(self.path.with_name(self.path.name + suffix))


@dataclass(frozen=True)
class ReadingsSealed:
    """Event: a read's intervals are sealed on the handheld."""

    meter_id: str
    request_id: int
    stored: int


class _Router:
    def __init__(self, hosts: Sequence[Ipv6Host]) -> None:
        self.hosts = {h.address[0]: h for h in hosts}

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            dst = str(Ipv6Packet.decode(data).dst)
        except MeshDecodeError:
            return
        host = self.hosts.get(dst)
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
        self._reads: dict[int, tuple[str, int, int | None]] = {}  # rid -> (meter, k, n)
        self._events: list[object] = []
        self.counters: dict[str, int] = {}
        self.expired = False

    def read(self, meter: str, addr: Addr, ap_title: ApTitle, intervals: int, now: float) -> int:
        """Read the newest `intervals` intervals of `meter` (the header first, then them)."""
        if "read" not in self.order.operations:
            raise WorkOrderError("refused", f"work order {self.order.order_id} allows no reads")
        if meter not in self.order.meters:
            raise WorkOrderError("refused", f"meter {meter} is not in {self.order.order_id}")
        if self.expired or not self.order.valid_at(now):
            raise WorkOrderError("expired", f"work order {self.order.order_id} expired")
        rid = self.client.request(addr, ap_title, [Read(self.lp_table, 0, LoadProfile.HEADER)],
                                  now)  # fmt: skip
        self._reads[rid] = (meter, intervals, None)
        return rid

    def _on_response(self, ev: ResponseReceived, now: float) -> None:
        meter, k, n = self._reads.pop(ev.request_id)
        if not ev.ok:
            self._count("read-failed")
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
            return
        if minutes != LP_INTERVALS[self.lp_table]:
            self._count("decode-error")
            return
        step = minutes * 60
        first = n - k
        readings = [
            IntervalReading(meter, int(end) - (n_now - (first + j)) * step, minutes,
                            iv.value_wh, 0, iv.status, 0)
            for j, iv in enumerate(ivs)
        ]  # fmt: skip
        stored = self.readings.add(self.order.order_id, readings)
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
                if isinstance(ev, ResponseReceived) and ev.request_id in self._reads:
                    self._on_response(ev, now)
                else:
                    self._events.append(ev)

    def next_event(self) -> object | None:
        return self._events.pop(0) if self._events else None

    def close(self) -> None:
        """End of the offline run: the in-memory credentials go with the store."""
        self.store.close()


@dataclass
class SyncReport:
    order_id: str
    inserted: int = 0
    duplicates: int = 0
    refused: list[str] = field(default_factory=list)  # bad signature, wrong order or meter
    conflicts: list[str] = field(default_factory=list)  # same interval, other values
    marked_for_rotation: list[str] = field(default_factory=list)


def sync(
    order: WorkOrder,
    records: Iterable[SignedReading],
    handheld_public_key_pem: bytes,
    repo: ReadingRepository,
    now: float,
) -> SyncReport:
    """Store the handheld's readings in the head-end once each; see the module docstring."""
    report = SyncReport(order.order_id)
    accepted: list[IntervalReading] = []
    for rec in records:
        r = rec.reading
        where = f"{r.meter_id}@{r.interval_start}"
        if not verify_digest(handheld_public_key_pem, _digest(rec.body), rec.signature):
            report.refused.append(f"{where}: signature does not verify")
            continue
        if rec.order_id != order.order_id or r.meter_id not in order.meters:
            report.refused.append(f"{where}: not a meter of {order.order_id}")
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
    return report


def mark_for_rotation(store: CredentialStore, order: WorkOrder, now: float) -> list[str]:
    """Mark every meter of `order` for PSK rotation in the key server's audit trail (its PSK
    was on a handheld); returns the meters marked."""
    for meter in order.meters:
        store.audit(ROTATION_DUE, meter, f"PSK was on work order "
                    f"{order.order_id} ({order.handheld})", now)  # fmt: skip
    return list(order.meters)
