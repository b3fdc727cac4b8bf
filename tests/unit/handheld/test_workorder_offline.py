"""Offline run and sync (claims 7-8): no WAN; the handheld is key server and collector for one
work order's meters (`OfflineRun`, the engine of `amistack workorder run`: real sans-IO PAA +
EAP-PSK + UKMF, C12.22 over the mesh on the virtual clock); each meter that joins is read at
once, its readings sealed and signed on the handheld; synced once at the office, then
destroyed. The technician's role narrows what the order allows; the run ends with its keys."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ec
from tests.unit.meter.conftest import init_token

from amistack.access import AccessStore, AuditTrail, Principal, Role
from amistack.crypto import pkcs11_token
from amistack.handheld.offline import (
    ROTATION_DUE,
    Collected,
    ReadingsSealed,
    SealedReadings,
    mark_for_rotation,
    sync,
)
from amistack.handheld.offline_run import MeterCollected, OfflineRun
from amistack.handheld.session import NotPermitted
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
from amistack.securemodule.software import SoftwareModule
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
    run: OfflineRun
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
    try:
        yield Offline(built.area, built.run, readings, module, kek, keystore, path)
    finally:
        built.run.end("test over", built.area.net.now)
        readings.close()
        module.close()
        kek.close()
        users.close()
        desk.audit.close()
        keystore.close()
        pkcs11_token.close_all()


def collected(o: Offline, *meters: int, within: float = 900.0) -> list[ReadingsSealed]:
    """Run until `meters` are collected; the readings sealed for them."""
    net, hh = o.area.net, o.area.handheld_addr
    want = {area_meter_id(i) for i in meters}

    def done() -> set[str]:
        return {e.meter_id for e in net.events_of(hh, MeterCollected)}

    assert net.run_while(lambda: not want <= done(), within), net.events[hh][-5:]
    return [e for e in net.events_of(hh, ReadingsSealed) if e.meter_id in want]


def test_offline_run_authenticates_the_orders_meters_and_seals_signed_readings(
    offline: Offline, tmp_path: Path
) -> None:
    o = offline
    office = o.run.office
    sealed = collected(o, *range(1, N))
    assert sorted(e.stored for e in sealed) == [4] * (N - 1)
    # meter N is not in the work order: the handheld holds no PSK for it, it never joins
    o.area.net.run_while(lambda: N not in o.area.relay_ready(), o.area.net.now + 300.0)
    assert N not in o.area.relay_ready()
    failed = {e.peer_id for e in o.area.net.events_of(o.area.handheld_addr, AuthenticationFailed)}
    assert area_meter_id(N).encode() in failed
    assert sorted(o.run.joined) == [area_meter_id(i) for i in range(1, N)]
    # no PANA session (and so no key derived from it) outlives the work order
    assert office.store.session_lifetime(area_meter_id(1)) == office.order.not_after
    # collected again on the technician's request: the newest intervals, each stored once
    net = o.area.net
    o.run.collect_again(net.now)
    net.service(o.area.handheld_addr)
    assert net.run_while(lambda: len(net.events_of(o.area.handheld_addr, ReadingsSealed))
                         < 2 * (N - 1), net.now + 300.0)  # fmt: skip
    assert o.readings.counts()[0] >= 4 * (N - 1)
    held = o.readings.export()
    records = held.readings
    assert len(records) == o.readings.counts()[0] and not held.unopened
    # at rest: no reading value in the clear
    raw = (tmp_path / "hh" / "readings.db").read_bytes()
    for rec in records:
        assert rec.body not in raw
    # an OPERATOR may switch, but this order does not allow it
    with pytest.raises(WorkOrderError, match="does not allow 'disconnect'"):
        o.run.command(area_meter_id(1), "disconnect", o.area.net.now)
    # reads outside the order are refused before anything is sent
    with pytest.raises(WorkOrderError, match="not in WO-9"):
        office.read(area_meter_id(N), ("::1", 1153), ap_title_for(area_meter_id(N)), 1,
                    o.area.net.now)  # fmt: skip

    # -- back at the office: sync twice, no duplicates; then the handheld's copies go ----------
    head = SqliteRepository(tmp_path / "headend")
    pem = o.module.public_key_pem()
    first = sync(office.order, held, pem, head, 10 * HOUR)
    assert (first.inserted, first.duplicates) == (len(records), 0)
    assert not first.refused and not first.conflicts
    again = sync(o.run.order, o.readings.export(), pem, head, 11 * HOUR)
    assert (again.inserted, again.duplicates) == (0, len(records))
    assert head.count_readings() == len(records)
    marked = mark_for_rotation(o.keystore, o.run.order, 11 * HOUR)
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
    collected(o, 1)
    good, victim = o.readings.export().readings[:2]
    forged = replace(
        victim, reading=replace(victim.reading, forward_wh=victim.reading.forward_wh + 1)
    )
    head = SqliteRepository(tmp_path / "headend")
    pem = o.module.public_key_pem()
    report = sync(o.run.order, Collected([good, forged]), pem, head, 10 * HOUR)
    assert report.inserted == 1 and len(report.refused) == 1
    assert "signature does not verify" in report.refused[0]
    assert head.count_readings() == 1
    # a genuine record, but the head-end already holds other values there: a conflict, kept out
    head.store_readings([replace(victim.reading, forward_wh=victim.reading.forward_wh + 5)], 0.0)
    report = sync(o.run.order, Collected([good, victim]), pem, head, 11 * HOUR)
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
    assert not opened.readings and len(opened.unopened) == sum(o.readings.counts()[:1])
    assert "does not open" in opened.unopened[0]
    report = sync(o.run.order, opened, pem, head, 12 * HOUR)
    assert report.refused == opened.unopened and report.inserted == 0
    head.close()


def test_at_the_end_of_validity_the_run_ends_and_drops_the_credentials(
    offline: Offline,
) -> None:
    o = offline
    office, end = o.run.office, o.run.order.not_after
    assert o.area.net.run_while(lambda: 1 not in o.area.relay_ready(), 900.0)
    assert o.run.get_timer() is not None and o.run.get_timer() <= end
    o.run.handle_timer(end)  # what the driver does when the timer falls due
    assert office.expired and office.closed and o.run.ended
    assert o.run.get_timer() is None
    assert o.run.session.root is None  # the DODAG and its link keys are gone
    with pytest.raises(WorkOrderError, match="expired"):
        office.read(area_meter_id(1), ("::1", 1153), ap_title_for(area_meter_id(1)), 1, end)
    o.run.end("again", end)  # idempotent


def test_a_technician_role_narrows_the_order_and_outsiders_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keystore = CredentialStore(":memory:", FileKek(os.urandom(32), os.urandom))
    for i in range(1, N + 1):
        keystore.enroll(area_meter_id(i), area_meter_psk(1, i), -HOUR)
    users = AccessStore(tmp_path / "access", hasher=CHEAP)
    users.add_user("vic", PASSWORD, [Role.VIEWER], -HOUR)
    users.add_user("rob", PASSWORD, [Role.RBACMNT], -HOUR)
    desk = TechnicianDesk(users, AuditTrail.open(tmp_path, -HOUR), HANDHELD)
    secadm = Principal("sam", frozenset({Role.SECADM}), "session")
    kek = FileKek(os.urandom(32), os.urandom)
    module = SoftwareModule(ec.generate_private_key(ec.SECP256R1()), "hh/sign")
    meters = [area_meter_id(1)]
    try:
        for who in ("vic", "rob"):
            order = issue(secadm, f"WO-{who}", HANDHELD, who, meters,
                          ["read", "disconnect"], 0.0, HOUR, -HOUR)  # fmt: skip
            path = tmp_path / f"{who}.order"
            provision(order, keystore, kek, PASSWORD, path, os.urandom, FAST_KDF)
            opened = open_work_order(path, kek, desk, who, PASSWORD, 0.0)
            readings = SealedReadings(tmp_path / "r.db", kek, module, order, opened.seal_key)
            if who == "rob":  # a role without the read right does no work at all
                with pytest.raises(NotPermitted):
                    build_offline_field(opened, readings, 1)
                readings.close()
                continue
            built = build_offline_field(opened, readings, 2)
            # a VIEWER reads (read) but may not switch (disconnect), whatever the order says
            assert built.run.allowed_operations == {"read"}
            assert list(built.run.config.meters) == meters  # meter 2: not in the order
            collected_one = built.area.net.run_while(
                lambda b=built: not b.run.done.get(area_meter_id(1)), 900.0
            )
            assert collected_one and readings.counts() == (4, 0)
            with pytest.raises(NotPermitted, match="control"):
                built.run.command(area_meter_id(1), "disconnect", built.area.net.now)
            built.run.end("logout", built.area.net.now)
            readings.close()
            with pytest.raises(WorkOrderError, match="not in work order"):
                OfflineRun(opened, readings, replace(built.run.config, meters={
                    area_meter_id(2): meter_eui(2)}), os.urandom, 0.0)  # fmt: skip
    finally:
        users.close()
        desk.audit.close()
        keystore.close()
