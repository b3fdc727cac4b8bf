"""Offline run and sync (claims 7-8): no WAN; the handheld is key server and collector for one
work order's meters (real sans-IO PAA + EAP-PSK + UKMF, C12.22 over the mesh on the virtual
clock); readings sealed and signed on the handheld; synced once at the office, then destroyed."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from tests.unit.handheld.harness import global_of
from tests.unit.meter.conftest import init_token

from amistack.access import AccessStore, AuditTrail, Principal, Role
from amistack.crypto import pkcs11_token
from amistack.handheld import WAN_ADDR, WorkSession
from amistack.handheld.offline import (
    ROTATION_DUE,
    Collected,
    OfflineOffice,
    ReadingsSealed,
    SealedReadings,
    mark_for_rotation,
    sync,
)
from amistack.handheld.technician import TechnicianDesk
from amistack.handheld.workorder import (
    KdfParams,
    WorkOrderError,
    destroy_file,
    issue,
    open_work_order,
    provision,
)
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.kek_pkcs11 import Pkcs11Kek
from amistack.keymgmt.store import CredentialStore
from amistack.meter.node import ap_title_for
from amistack.pana.events import AuthenticationFailed
from amistack.securemodule.pkcs11_module import Pkcs11Module
from amistack.sim.handheld_area import (
    Area,
    area_meter_id,
    area_meter_psk,
    meter_eui,
)
from amistack.sim.handheld_field import build_offline_field

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
FAST_KDF = KdfParams(time_cost=1, memory_kib=64, parallelism=1)
PASSWORD = "tina's long field passphrase"
HANDHELD = "handheld-7"
N = 3  # meters in the area; the order names 1..N-1, meter N stays out
HOUR = 3600.0


@dataclass
class Offline:
    area: Area
    office: OfflineOffice
    session: WorkSession
    readings: SealedReadings
    module: Pkcs11Module
    kek: Pkcs11Kek
    keystore: CredentialStore
    order_path: Path


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Offline]:
    (tmp_path / "tok").mkdir()
    token = init_token(tmp_path / "tok", monkeypatch)
    keystore = CredentialStore(tmp_path / "keys.db", FileKek(os.urandom(32), os.urandom))
    for i in range(1, N + 1):
        keystore.enroll(area_meter_id(i), area_meter_psk(1, i), -HOUR)
    users = AccessStore(tmp_path / "hh" / "access", hasher=CHEAP)
    users.add_user("tina", PASSWORD, [Role.OPERATOR], -HOUR)
    desk = TechnicianDesk(users, AuditTrail.open(tmp_path / "hh", -HOUR), HANDHELD)
    secadm = Principal("sam", frozenset({Role.SECADM}), "session")
    in_order = [area_meter_id(i) for i in range(1, N)]
    order = issue(secadm, "WO-9", HANDHELD, "tina", in_order, ["read"], 0.0, 8 * HOUR, -HOUR)
    kek = Pkcs11Kek.open(token.library, token.label, token.pin, "hh/kek", os.urandom, create=True)
    module = Pkcs11Module.open(token.library, token.label, token.pin, "hh/sign", create=True)
    path = tmp_path / "hh" / "orders" / "WO-9.order"
    provision(order, keystore, kek, PASSWORD, path, os.urandom, FAST_KDF)
    opened = open_work_order(path, kek, desk, "tina", PASSWORD, 0.0)
    readings = SealedReadings(tmp_path / "hh" / "readings.db", kek, module, order, opened.seal_key)
    built = build_offline_field(opened, readings, N)
    area, office, session = built.area, built.office, built.session
    try:
        yield Offline(area, office, session, readings, module, kek, keystore, path)
    finally:
        office.close()
        readings.close()
        module.close()
        kek.close()
        users.close()
        desk.audit.close()
        keystore.close()
        pkcs11_token.close_all()


def collect(o: Offline, meter: int, intervals: int = 4) -> ReadingsSealed:
    net = o.area.net
    addr = (global_of(meter_eui(meter).interface_id()), 1153)
    rid = o.office.read(area_meter_id(meter), addr, ap_title_for(area_meter_id(meter)),
                        intervals, net.now)  # fmt: skip
    net.service(WAN_ADDR)

    def sealed() -> list[ReadingsSealed]:
        return [
            e for e in net.events_of(WAN_ADDR, ReadingsSealed) if e.meter_id == area_meter_id(meter)
        ]

    net.run_while(lambda: not sealed(), net.now + 120.0)
    got = sealed()
    assert got, net.events[WAN_ADDR][-5:]
    assert got[0].request_id != rid  # the second read (header + intervals) carried them
    return got[0]


def test_offline_run_authenticates_the_orders_meters_and_seals_signed_readings(
    offline: Offline, tmp_path: Path
) -> None:
    o = offline
    assert o.area.net.run_while(lambda: not {1, N - 1} <= set(o.area.relay_ready()), 900.0)
    # meter N is not in the work order: the handheld holds no PSK for it, it never joins
    o.area.net.run_while(lambda: N not in o.area.relay_ready(), o.area.net.now + 300.0)
    assert N not in o.area.relay_ready()
    failed = {e.peer_id for e in o.area.net.events_of(WAN_ADDR, AuthenticationFailed)}
    assert area_meter_id(N).encode() in failed
    # no PANA session (and so no key derived from it) outlives the work order
    assert o.office.store.session_lifetime(area_meter_id(1)) == o.office.order.not_after
    for meter in range(1, N):
        assert collect(o, meter).stored == 4
    collected = o.readings.export()
    records = collected.readings
    assert len(records) == 4 * (N - 1) and not collected.unopened
    # at rest: no reading value in the clear
    raw = (tmp_path / "hh" / "readings.db").read_bytes()
    for rec in records:
        assert rec.body not in raw
    # reads outside the order are refused before anything is sent
    with pytest.raises(WorkOrderError, match="not in WO-9"):
        o.office.read(area_meter_id(N), ("::1", 1153), ap_title_for(area_meter_id(N)), 1,
                      o.area.net.now)  # fmt: skip

    # -- back at the office: sync twice, no duplicates; then the handheld's copies go ----------
    head = SqliteRepository(tmp_path / "headend")
    pem = o.module.public_key_pem()
    first = sync(o.office.order, collected, pem, head, 10 * HOUR)
    assert (first.inserted, first.duplicates) == (len(records), 0)
    assert not first.refused and not first.conflicts
    again = sync(o.office.order, o.readings.export(), pem, head, 11 * HOUR)
    assert (again.inserted, again.duplicates) == (0, len(records))
    assert head.count_readings() == len(records)
    marked = mark_for_rotation(o.keystore, o.office.order, 11 * HOUR)
    assert marked == [area_meter_id(i) for i in range(1, N)]
    assert {e.device_id for e in o.keystore.audit_log() if e.kind == ROTATION_DUE} == {
        area_meter_id(i).encode() for i in range(1, N)
    }
    o.readings.destroy()
    destroy_file(o.order_path)
    assert not (tmp_path / "hh" / "readings.db").exists() and not o.order_path.exists()
    head.close()


def test_a_tampered_or_forged_reading_is_refused_and_reported(
    offline: Offline, tmp_path: Path
) -> None:
    o = offline
    o.area.net.run_while(lambda: 1 not in o.area.relay_ready(), 900.0)
    collect(o, 1, intervals=2)
    good, victim = o.readings.export().readings
    forged = replace(
        victim, reading=replace(victim.reading, forward_wh=victim.reading.forward_wh + 1)
    )
    head = SqliteRepository(tmp_path / "headend")
    pem = o.module.public_key_pem()
    report = sync(o.office.order, Collected([good, forged]), pem, head, 10 * HOUR)
    assert report.inserted == 1 and len(report.refused) == 1
    assert "signature does not verify" in report.refused[0]
    assert head.count_readings() == 1
    # a genuine record, but the head-end already holds other values there: a conflict, kept out
    head.store_readings([replace(victim.reading, forward_wh=victim.reading.forward_wh + 5)], 0.0)
    report = sync(o.office.order, Collected([good, victim]), pem, head, 11 * HOUR)
    assert (report.inserted, report.duplicates, len(report.conflicts)) == (0, 1, 1)
    assert "other values" in report.conflicts[0]
    # a record altered in the handheld's file does not even open
    db = sqlite3.connect(tmp_path / "hh" / "readings.db")
    for rowid, sealed in db.execute("SELECT rowid, sealed FROM readings").fetchall():
        flipped = sealed[:20] + bytes([sealed[20] ^ 1]) + sealed[21:]
        db.execute("UPDATE readings SET sealed = ? WHERE rowid = ?", (flipped, rowid))
    db.commit()
    db.close()
    opened = o.readings.export()
    assert not opened.readings and len(opened.unopened) == 2
    assert "does not open" in opened.unopened[0]
    report = sync(o.office.order, opened, pem, head, 12 * HOUR)
    assert report.refused == opened.unopened and report.inserted == 0
    head.close()


def test_at_the_end_of_validity_the_offline_key_server_drops_the_credentials(
    offline: Offline,
) -> None:
    o = offline
    assert o.area.net.run_while(lambda: 1 not in o.area.relay_ready(), 900.0)
    assert o.office.get_timer() is not None and o.office.get_timer() <= o.office.order.not_after
    o.office.handle_timer(o.office.order.not_after)  # what the driver does when the timer falls due
    assert o.office.expired
    for i in range(1, N):
        assert o.office.store.get_psk(area_meter_id(i)) is None
    with pytest.raises(WorkOrderError, match="expired"):
        o.office.read(area_meter_id(1), ("::1", 1153), ap_title_for(area_meter_id(1)), 1,
                      o.office.order.not_after)  # fmt: skip
