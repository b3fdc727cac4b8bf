"""The demo's handheld chapter: an isolated area served by a field technician's handheld, on the
virtual clock, with the real engines (docs/handheld.md, docs/handheld-offline.md).

The story, each step checked: six meters no concentrator hears stay unauthenticated; technician
tina logs in on the handheld (its access store and audit trail in DATA_DIR/handheld/), the handheld
authenticates itself and becomes DODAG root and PANA relay, and the meters join with the real key
server engine through it (EAP-PSK end to end: no meter key passes the handheld); the head-end
reads every meter over C12.22 through it and disconnects and reconnects one; tina logs out and
every file of the handheld's data dir is searched for each PSK, MSK, PANA key, C12.22 key and
reading; the handheld, back at work, is reported lost and revoked: the time from revocation to
its shut-out is measured, and it is refused afterwards. Then offline: the security administrator
issues a work order for the area, it is provisioned to the handheld, tina opens it with her
password, the handheld is key server and collector for its meters, seals and signs the
readings, and at the office they are synced once (a second sync adds nothing), the meters
marked for PSK rotation and the handheld's copies destroyed. The handheld's KEK and signing key
are the software variants here (`FileKek` in RAM, `SoftwareModule`); on a device they live in a
PKCS#11 token (SoftHSM2 in tests/unit/handheld/test_workorder_offline.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from amistack.access import AccessStore, AuditTrail, Principal, Role
from amistack.addr import Addr, Engine
from amistack.c1222.endpoint import C1222Client, EndpointConfig
from amistack.c1222.events import ResponseReceived
from amistack.c1222.services import ResponseCode
from amistack.c1222.tables import Table, remote_switch
from amistack.crypto import seeded_random
from amistack.handheld import WAN_ADDR, Operation, WorkSession, WorkState
from amistack.handheld.offline import (
    ReadingsSealed,
    SealedReadings,
    mark_for_rotation,
    sync,
)
from amistack.handheld.offline_run import MeterCollected, OfflineRun
from amistack.handheld.technician import TechnicianDesk
from amistack.handheld.workorder import destroy_file, issue, open_work_order, provision
from amistack.headend.keys import HeadendKeys
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.groupkeys import gtk_kek
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.server import KeyServer
from amistack.mesh.node import radio_addr
from amistack.meter.node import ap_title_for
from amistack.securemodule import SoftwareModule
from amistack.sim.handheld_area import (
    AreaConfig,
    area_meter_id,
    area_meter_psk,
    handheld_eui,
    meter_eui,
)
from amistack.sim.handheld_field import (
    HANDHELD_ID,
    HEADEND_TITLE,
    Field,
    build_field,
    build_offline_field,
    global_of,
)

__all__ = ["HandheldReport", "chapter_handheld"]

METERS = 6
TECHNICIAN, PASSWORD = "tina", "tina's long field passphrase"
HOUR = 3600.0
HANDHELD = radio_addr(handheld_eui())


@dataclass
class HandheldReport:
    isolated: str = ""
    login: str = ""
    joined: str = ""
    read: str = ""
    disconnect: str = ""
    reconnect: str = ""
    logout: str = ""
    data_dir: str = ""
    revoked: str = ""
    shut_out_s: float | None = None
    revoked_again: str = ""
    offline: str = ""
    synced: str = ""
    destroyed: str = ""

    def ok(self) -> bool:
        return (
            self.isolated.startswith("no meter")
            and self.joined.startswith(f"{METERS}/{METERS}")
            and self.read.startswith(f"{METERS}/{METERS}")
            and self.disconnect.startswith("confirmed")
            and self.reconnect.startswith("confirmed")
            and self.data_dir.startswith("none found")
            and self.revoked.startswith("shut out")
            and self.revoked_again.startswith("refused")
            and self.synced.startswith("stored")
            and self.destroyed.startswith("gone")
        )

    def lines(self) -> list[str]:
        return [
            f"  {METERS} meters the concentrator cannot hear: {self.isolated}",
            f"  technician {TECHNICIAN} on {HANDHELD_ID}: {self.login}",
            f"  meters joined through the handheld (PANA relayed to the key server): {self.joined}",
            f"  the head-end reads them over C12.22 through the handheld: {self.read}",
            f"  remote disconnect of one meter: {self.disconnect}",
            f"  remote reconnect: {self.reconnect}",
            f"  logout: {self.logout}",
            f"  the handheld's data dir searched for every PSK, key and reading: {self.data_dir}",
            f"  the handheld reported lost and revoked: {self.revoked}",
            f"  the revoked handheld starts a new work session: {self.revoked_again}",
            f"  offline work order: {self.offline}",
            f"  synced at the office: {self.synced}",
            f"  the handheld's copies: {self.destroyed}",
            "  (the handheld's KEK and signing key: software variants in this demo; PKCS#11 on a "
            "device, SoftHSM2 in the tests)",
        ]


def _headend(clients: list[C1222Client]) -> Callable[[KeyServer], Engine]:
    def build(ks: KeyServer) -> C1222Client:
        titles = {
            ap_title_for(area_meter_id(i)).device_id: area_meter_id(i) for i in range(1, METERS + 1)
        }
        keys = HeadendKeys(titles.get, ks)
        clients.append(
            C1222Client(EndpointConfig(HEADEND_TITLE), keys.lookup, keys.send_key, seeded_random(7))
        )
        return clients[-1]

    return build


def _meter_addr(i: int) -> Addr:
    return (global_of(meter_eui(i).interface_id()), 1153)


def _ask(field: Field, request_id: int) -> ResponseReceived | None:
    net = field.area.net
    net.service(WAN_ADDR)

    def answer() -> ResponseReceived | None:
        return next(
            (e for e in net.events_of(WAN_ADDR, ResponseReceived) if e.request_id == request_id),
            None,
        )

    net.run_while(lambda: answer() is None, net.now + 60.0)
    return answer()


def _switch(
    field: Field, client: C1222Client, session: WorkSession, i: int, seq: int, connect: bool
) -> str:
    net = field.area.net
    op = Operation.CONNECT if connect else Operation.DISCONNECT
    session.authorize(op, net.now)
    rid = client.procedure(
        _meter_addr(i), ap_title_for(area_meter_id(i)), remote_switch(seq, connect), net.now
    )
    got = _ask(field, rid)
    state = field.area.c1222[i - 1].model.switch_state.value
    if got is None or got.responses[0].code != ResponseCode.OK:
        return f"NOT confirmed (relay {state})"
    session.record_result(area_meter_id(i), op, state, net.now)
    return f"confirmed for {area_meter_id(i)}, relay {state}"


def _secrets(field: Field) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {
        "PSK": [],
        "MSK": [],
        "PANA key": [],
        "group-key KEK": [],
        "C12.22 key": [],
    }
    for i, meter in enumerate(field.area.meters, 1):
        found["PSK"].append(area_meter_psk(field.area.config.seed, i))
        if meter.pac is not None and meter.pac.context is not None:
            found["MSK"].append(meter.pac.context.msk)
            found["group-key KEK"].append(gtk_kek(meter.pac.context))
            if meter.pac.auth_key is not None:
                found["PANA key"].append(meter.pac.auth_key)
        ring = field.area.c1222[i - 1].ring
        found["C12.22 key"] += [k.key for k in ring.keys() if k.purpose.name == "c1222"]  # noqa: SIM118
    return found


def _search(directory: Path, secrets: dict[str, list[bytes]]) -> str:
    files = [p for p in sorted(directory.rglob("*")) if p.is_file()]
    blobs = [p.read_bytes() for p in files]
    hits = [
        f"{kind} in {p.name}"
        for kind, values in secrets.items()
        for v in values
        for p, blob in zip(files, blobs, strict=True)
        if v in blob
    ]
    counted = ", ".join(f"{len(v)} {k}s" for k, v in secrets.items())
    where = f"{len(files)} files, {sum(map(len, blobs))} bytes searched for {counted}"
    return f"none found ({where})" if not hits else f"FOUND {', '.join(hits)} ({where})"


def _online(hh_dir: Path, report: HandheldReport) -> Field:
    clients: list[C1222Client] = []
    field = build_field(
        AreaConfig(meters=METERS, headend_title=HEADEND_TITLE), headend=_headend(clients)
    )
    area, net = field.area, field.area.net
    net.run_until(60.0)
    report.isolated = (
        "no meter authenticated in 60 s (virtual) without the handheld"
        if not area.authenticated()
        else f"HEARD: {area.authenticated()}"
    )
    users = AccessStore(hh_dir)
    audit = AuditTrail.open(hh_dir, net.now)
    try:
        users.add_user(TECHNICIAN, PASSWORD, [Role.OPERATOR], net.now)
        desk = TechnicianDesk(users, audit, HANDHELD_ID)
        tech = desk.login(TECHNICIAN, PASSWORD, net.now)
        report.login = (
            f"logged in (roles {', '.join(r.name.lower() for r in tech.principal.roles)})"
        )
        session = field.start_work(technician=tech.principal)
        t0 = net.now
        joined = field.run_until_joined(set(range(1, METERS + 1)))
        hops = max((len(p) for p in session.route_table(net.now).values()), default=0)
        report.joined = (
            f"{len(area.relay_ready())}/{METERS} in {net.now - t0:.1f} s (virtual), "
            f"up to {hops} hops from the handheld"
            if joined
            else "NOT all joined"
        )
        client = clients[0]
        readings: list[bytes] = []
        for i in range(1, METERS + 1):
            session.authorize(Operation.READ, net.now)
            rid = client.read(
                _meter_addr(i), ap_title_for(area_meter_id(i)), Table.CURRENT_REGISTER_DATA, net.now
            )
            got = _ask(field, rid)
            if got is not None and got.responses[0].code == ResponseCode.OK:
                readings.append(got.responses[0].data)
                session.record_result(area_meter_id(i), Operation.READ, "ok", net.now)
        report.read = f"{len(readings)}/{METERS} register reads answered (EAX')"
        report.disconnect = _switch(field, client, session, METERS, 1, connect=False)
        report.reconnect = _switch(field, client, session, METERS, 2, connect=True)
        secrets = _secrets(field)
        secrets["reading"] = [r for r in readings if len(r) >= 8]
        session.end("logout", net.now)
        net.service(HANDHELD)
        net.run_until(net.now + 5.0)
        area.detach()
        desk.logout(tech, net.now)
        gone = not list(field.keyserver.agent.sessions_for_peer(HANDHELD_ID.encode()))
        report.logout = (
            "work session ended, the handheld's PANA session closed at the key "
            "server, the login token revoked"
            if gone
            else "PANA session STILL OPEN"
        )
    finally:
        users.close()
        audit.close()
    report.data_dir = _search(hh_dir, secrets)
    return field


def _lost(field: Field, report: HandheldReport) -> None:
    net = field.area.net
    technician = Principal(TECHNICIAN, frozenset({Role.OPERATOR}), "session")
    session = field.start_work(technician=technician, work_order="WO-2")
    field.run_until_joined(set(range(1, METERS + 1)))
    t_revoke = net.now
    field.keyserver.revoke(HANDHELD_ID, t_revoke, reason="handheld reported lost")
    net.service(WAN_ADDR)
    net.run_while(lambda: session.state is not WorkState.ENDED, t_revoke + 60.0)
    if session.state is WorkState.ENDED and session.root is None:
        report.shut_out_s = net.now - t_revoke
        report.revoked = (
            f"shut out {report.shut_out_s * 1000:.0f} ms (virtual) after the "
            "revocation: its PANA session ended, it is no DODAG root or relay"
        )
    else:
        report.revoked = "STILL SERVING"
    field.area.detach()
    again = field.start_work(technician=technician, work_order="WO-3")
    net.run_until(net.now + 60.0)
    report.revoked_again = (
        "refused by the key server, never root"
        if again.state is WorkState.ENDED and again.root is None
        else "ACCEPTED"
    )
    field.area.detach()


def _offline(field: Field, data_dir: Path, report: HandheldReport) -> None:
    hh_dir = data_dir / "handheld"
    users = AccessStore(hh_dir)
    audit = AuditTrail.open(hh_dir, 0.0)
    kek = FileKek(os.urandom(32), os.urandom)  # in RAM only: the demo's stand-in for the token
    module = SoftwareModule(ec.generate_private_key(ec.SECP256R1()), f"{HANDHELD_ID}/sign")
    readings: SealedReadings | None = None
    run: OfflineRun | None = None
    head = SqliteRepository(data_dir / "headend-offline")
    try:
        desk = TechnicianDesk(users, audit, HANDHELD_ID)
        secadm = Principal("sam", frozenset({Role.SECADM}), "session")
        meters = [area_meter_id(i) for i in range(1, METERS + 1)]
        order = issue(
            secadm, "WO-4", HANDHELD_ID, TECHNICIAN, meters, ["read"], 0.0, 8 * HOUR, -HOUR
        )
        path = hh_dir / "orders" / "WO-4.order"
        provision(order, field.store, kek, PASSWORD, path, os.urandom)
        opened = open_work_order(path, kek, desk, TECHNICIAN, PASSWORD, 0.0)
        readings = SealedReadings(hh_dir / "readings.db", kek, module, order, opened.seal_key)
        built = build_offline_field(opened, readings, METERS)
        area, run = built.area, built.run
        net, hh = area.net, area.handheld_addr

        net.run_while(lambda: len(net.events_of(hh, MeterCollected)) < METERS, 900.0)
        sealed = sum(e.stored for e in net.events_of(hh, ReadingsSealed))
        report.offline = (
            f"{order.order_id} issued by the security administrator for {METERS} "
            f"meters, opened by {TECHNICIAN}'s password; the handheld was key "
            f"server and collector (the engine of `amistack workorder run`): "
            f"{len(run.joined)}/{METERS} meters joined, {sealed} intervals sealed under "
            "the token's and the technician's keys and signed"
        )
        run.end("logout", net.now)
        collected = readings.export()
        records = collected.readings
        pem = module.public_key_pem()
        first = sync(order, collected, pem, head, 10 * HOUR)
        again = sync(order, readings.export(), pem, head, 11 * HOUR)
        marked = mark_for_rotation(field.store, order, 11 * HOUR)
        ok = first.inserted == len(records) > 0 and again.inserted == 0 and not first.refused
        report.synced = (
            f"{'stored' if ok else 'NOT stored'} {first.inserted} readings, "
            f"signatures checked; a second sync added {again.inserted} "
            f"({again.duplicates} duplicates); {len(marked)} meters marked for "
            "PSK rotation"
        )
        readings.destroy()
        destroy_file(path)
        left = [p.name for p in (hh_dir / "readings.db", path) if p.exists()]
        psks = [area_meter_psk(field.area.config.seed, i) for i in range(1, METERS + 1)]
        searched = _search(hh_dir, {"PSK": psks, "reading": [r.body for r in records]})
        report.destroyed = (
            f"gone: the sealed readings and the work order destroyed; the data "
            f"dir searched again: {searched}"
            if not left
            else f"LEFT: {', '.join(left)}"
        )
    finally:
        if run is not None:
            run.end("demo over", 0.0)
        if readings is not None:
            readings.close()
        module.close()
        head.close()
        users.close()
        audit.close()


def chapter_handheld(data_dir: Path) -> HandheldReport:
    """Run the chapter; the handheld's files go to DATA_DIR/handheld/."""
    report = HandheldReport()
    hh_dir = data_dir / "handheld"
    hh_dir.mkdir(parents=True, exist_ok=True)
    field = _online(hh_dir, report)
    _lost(field, report)
    _offline(field, data_dir, report)
    return report
