"""`amistack demo`: the whole story on one machine, over real loopback UDP.

Chapter 1, network access and keys: a key server and N meters; every meter authenticates with
PANA + EAP-PSK, its keys rotate twice in accelerated time (short session lifetime) and both ends
hold the same application keys; a meter with the wrong PSK is refused; a meter revoked while
online loses its session at once and is refused afterwards. The devices are enrolled and the
stolen one revoked by the demo's security administrator `demo-secadm` (a SECADM role
certificate from the demo's PKI) over the key server's admin endpoint (mutual TLS), each action
in the signed operator audit trail first (`amistack keys --server`). One more meter
authenticates with EAP-TLS and its device certificate (the demo's own PKI) to the same key
server, rotates its keys the same way, and an EAP-PSK attempt under its identity (a downgrade)
is refused.
Chapter 2, metering: meters push interval data over ANSI C12.22 (EAX') to the head-end, which
runs demand response and a remote disconnect/reconnect. The head-end's REST API runs with access
control on: the demo creates an installer and an operator (as `amistack users add` does), they
log in, register and commission the meters and send the commands through the API; an anonymous
disconnect is refused, and every action is in the operator audit trail.
Chapter 3, event logs: three meters log their key rotations and events under signed Merkle tree
heads; the MDMS accepts each log only as an extension of the last one it accepted, and refuses
an edited entry and a rollback.
Chapter 4, the B route: a HEMS authenticates to the meter with PANA (the meter is the PAA),
reads the instantaneous power over ECHONET Lite in AES-CCM* link frames, sets E5 and reads
yesterday's history (E2); a wrong B-route password is refused (`demo_broute`).
Chapters 5-7 run on the virtual clock: the fleet (`demo_fleet`), the RPL mesh (`demo_mesh`) and a
handheld serving an isolated area, lost and revoked, then offline (`demo_handheld`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amistack.addr import Addr
from amistack.c1222.security import key_id_byte
from amistack.cli.common import CliError, open_store
from amistack.cli.demo_broute import BrouteReport, chapter_broute
from amistack.cli.demo_fleet import FleetReport, chapter_fleet
from amistack.cli.demo_handheld import HandheldReport, chapter_handheld
from amistack.cli.demo_mesh import MeshReport, chapter_mesh
from amistack.keymgmt import C1222, LINK, KeyId, KeyRing, PurposeRegistry
from amistack.meter.events import AccessGranted
from amistack.runtime.keyserver import KeyServerRuntime, run_keyserver
from amistack.runtime.loop import run
from amistack.runtime.meter import MeterResult, run_meter
from amistack.runtime.pcap import PcapWriter

MARKER = ".amistack-demo"
TLS_METER = "meter-tls-0001"  # chapter 1's EAP-TLS meter


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole system on this machine and print a report",
        description="Run the amistack story over real loopback UDP (IPv4 and IPv6) with the "
        "embedded SQLite store: a key server and N meters authenticate with PANA + EAP-PSK "
        "(and one more with EAP-TLS and a device certificate), "
        "keys rotate twice in accelerated time, a wrong PSK and a revoked meter are refused; "
        "meters push interval data over C12.22 to the head-end, which runs demand response and "
        "remote disconnect; signed event logs are verified and tampering caught; a HEMS reads "
        "the smart meter over the PANA-secured B route with ECHONET Lite; a simulated fleet and "
        "a 50-meter RPL mesh joining through relays and a handheld serving an isolated area "
        "(online, lost and revoked, offline work order) run on the virtual clock. "
        "The data directory is the demo's own: it is emptied at the start of each run.",
    )
    p.add_argument("--meters", type=int, default=20, help="number of meters (default 20)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("./amistack-data/demo"),
        metavar="DIR",
        help="the demo's data directory (default ./amistack-data/demo)",
    )
    p.add_argument(
        "--lifetime",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="PANA session lifetime, accelerated (default 3 s; re-authentication at 75%%)",
    )
    p.add_argument("--pcap", type=Path, metavar="DIR", help="write the traffic as pcap files here")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    p.add_argument(
        "--serve",
        nargs="?",
        const=0,
        type=int,
        metavar="PORT",
        help="after the report keep the key server, the head-end and its meters running with "
        "the web dashboard on 127.0.0.1:PORT (any free port without one); prints its URL and "
        "the demo operator's login; Ctrl-C ends it",
    )
    p.set_defaults(handler=_run)


@dataclass
class MeterLog:
    device_id: str
    rotations: list[str] = field(default_factory=list)  # key ids, in order
    keys_match: list[bool] = field(default_factory=list)  # meter's C12.22/link key == server's


@dataclass
class Report:
    meters: int
    lifetime: float
    addresses: list[str] = field(default_factory=list)
    logs: dict[str, MeterLog] = field(default_factory=dict)
    wrong_psk: str = ""
    revoked_live: str = ""
    revoked_again: str = ""
    audit: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    pcap: str | None = None
    c1222_captures: dict[str, tuple[str, str]] = field(default_factory=dict)  # pcap, key table
    metering_meters: int = 0
    headend_port: int = 0
    readings: dict[str, int] = field(default_factory=dict)
    dr: str = ""
    disconnect: str = ""
    reconnect: str = ""
    api_anonymous: str = ""  # an anonymous disconnect through the API
    api_audit: int = 0  # operator audit trail entries the API wrote
    key_admin: str = ""  # what the security administrator did over the admin endpoint
    key_admin_audit: int = 0  # operator audit trail entries of the key server's admin
    eventlog: dict[str, str] = field(default_factory=dict)
    tampered: str = ""
    rollback: str = ""
    broute: BrouteReport = field(default_factory=BrouteReport)
    fleet: FleetReport = field(default_factory=FleetReport)
    mesh: MeshReport = field(default_factory=MeshReport)
    handheld: HandheldReport = field(default_factory=HandheldReport)
    tls: MeterLog = field(default_factory=lambda: MeterLog(TLS_METER))
    tls_downgrade: str = ""
    elapsed: float = 0.0
    pushing: dict[str, bytes] = field(default_factory=dict, repr=False)  # PSKs, for --serve

    def ok(self) -> bool:
        return (
            all(len(m.rotations) >= 3 and all(m.keys_match) for m in self.logs.values())
            and self.wrong_psk.startswith("refused")
            and self.revoked_live.startswith("session ended")
            and self.revoked_again.startswith("refused")
            and self.key_admin_audit > 0
            and bool(self.readings)
            and min(self.readings.values()) >= 4
            and self.dr.startswith("confirmed")
            and self.disconnect == "confirmed, relay read back open"
            and self.reconnect == "confirmed, relay read back closed"
            and self.api_anonymous == "refused (401)"
            and self.api_audit > 0
            and bool(self.eventlog)
            and all(v == "accepted" for v in self.eventlog.values())
            and self.tampered == "edited-entry"
            and self.rollback == "rollback"
            and self.broute.ok()
            and self.fleet.ok()
            and self.mesh.ok()
            and self.handheld.ok()
            and len(self.tls.rotations) >= 3
            and all(self.tls.keys_match)
            and self.tls_downgrade.startswith("refused")
        )


class _Api:
    """The head-end's REST API as the demo's people use it (stdlib HTTP, off the event loop)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def _request(self, method: str, path: str, token: str | None, body: object) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    async def status(self, method: str, path: str, body: object = None) -> int:
        return (await asyncio.to_thread(self._request, method, path, None, body))[0]

    async def call(
        self, method: str, path: str, token: str, body: object = None, *, expect: int
    ) -> Any:
        status, doc = await asyncio.to_thread(self._request, method, path, token, body)
        if status != expect:
            raise CliError(f"head-end API {method} {path}: {status} {doc}")
        return doc

    async def login(self, name: str, password: str) -> str:
        body = {"username": name, "password": password}
        status, doc = await asyncio.to_thread(self._request, "POST", "/auth/login", None, body)
        if status != 200:
            raise CliError(f"head-end API login of {name}: {status} {doc}")
        return str(doc["token"])


def _prepare(data_dir: Path) -> None:
    if data_dir.exists() and any(data_dir.iterdir()) and not (data_dir / MARKER).exists():
        raise CliError(f"{data_dir} is not empty and not a demo directory; choose --data-dir")
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    (data_dir / MARKER).write_text("written by 'amistack demo'; emptied on every run\n")


SECADM = "demo-secadm"  # the demo's security administrator (a role certificate)

AdminCall = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _demo_pki(data_dir: Path) -> None:
    """The demo's PKI: the CA, the key server's certificate (PANA's EAP-TLS and the admin
    endpoint) and the security administrator's role certificate (IEC 62351-8 SECADM)."""
    from amistack.access import Role
    from amistack.access.certroles import user_roles_extension
    from amistack.keymgmt import pki

    pki.init_ca(data_dir)
    pki.issue_server(data_dir, "keyserver", ["127.0.0.1", "::1"])
    pki.issue_client(data_dir, SECADM, [], extensions=[user_roles_extension({Role.SECADM})])


def _admin(data_dir: Path, port: int) -> AdminCall:
    """Requests to the key server's admin endpoint as `demo-secadm` (what `amistack keys
    --server 127.0.0.1:PORT --cert demo-secadm` sends)."""
    from amistack.runtime.keydist import TlsFiles, admin_request

    files = TlsFiles.client(data_dir, SECADM)

    async def call(request: dict[str, Any]) -> dict[str, Any]:
        body = {**request, "at": time.time(), "nonce": secrets.token_hex(16)}
        return await admin_request("127.0.0.1", port, files, body)

    return call


async def _enroll(admin: AdminCall, n: int) -> dict[str, bytes]:
    psks = {f"meter-{i:04d}": secrets.token_bytes(16) for i in range(1, n + 1)}
    psks["meter-stolen"] = secrets.token_bytes(16)  # revoked while online
    psks["meter-impostor"] = secrets.token_bytes(16)  # someone tries it with a wrong PSK
    for device, psk in psks.items():
        await admin({"op": "enroll", "device": device, "psk": psk.hex()})
    await admin({"op": "enroll", "device": TLS_METER, "method": "tls"})
    return psks


def _tls_meter(data_dir: Path, store: Any) -> tuple[list[Any], Any]:
    """The EAP-TLS meter's certificate: (key server methods, meter config)."""
    from amistack.eap.tls import TlsPeerConfig
    from amistack.keymgmt import pki
    from amistack.keymgmt.eap_tls import eap_tls_method, tls_server_config

    issued = pki.issue_device(data_dir, TLS_METER)
    peer = TlsPeerConfig.build(
        pki.load_certificate(issued.cert_path),
        pki.load_private_key(issued.key_path),
        [pki.load_certificate(pki.PkiLayout.of(data_dir).ca_cert)],
    )
    return [eap_tls_method(tls_server_config(data_dir, store), time.time)], peer


async def _chapter_access(
    args: argparse.Namespace, report: Report, pcap: PcapWriter | None
) -> None:
    from amistack.access import AuditTrail
    from amistack.access.keyadmin import KeyAdminConfig, KeyAdminService
    from amistack.runtime.keydist import TlsFiles

    store = open_store(args.data_dir, create=True)
    _demo_pki(args.data_dir)
    tls_methods, tls_peer = _tls_meter(args.data_dir, store)
    trail = AuditTrail.open(args.data_dir, time.time())
    # the fleet is enrolled in one go: a budget of its size (the default is for a person)
    admin_service = KeyAdminService(store, trail, config=KeyAdminConfig(burst=args.meters + 20))
    started: asyncio.Future[KeyServerRuntime] = asyncio.get_running_loop().create_future()
    stop_server = asyncio.Event()
    # only the key server captures: it sees every PANA datagram once (in or out); a meter
    # capturing too would record each one a second time
    capture = pcap.capture if pcap else None
    server = asyncio.create_task(
        run_keyserver(
            store,
            ["127.0.0.1", "::1"],
            0,
            capture=capture,
            stop=stop_server,
            ready=started.set_result,
            session_lifetime=args.lifetime,
            revocation_poll=0.2,
            extra_methods=tls_methods,
            admin=(TlsFiles.server(args.data_dir), ["127.0.0.1"], 0, admin_service),
            now=time.time(),
        )
    )
    rt = await asyncio.wait_for(started, 10)
    admin = _admin(args.data_dir, rt.admin_addresses[0][1])
    psks = await _enroll(admin, args.meters)
    report.addresses = [f"{h} port {p}" for h, p in rt.pana_addresses]
    v4, v6 = rt.pana_addresses[0], rt.pana_addresses[-1]
    loop = asyncio.get_running_loop()
    stop_meters = asyncio.Event()

    def watcher(device: str, ring: KeyRing, log: MeterLog | None = None) -> Any:
        log = log or report.logs.setdefault(device, MeterLog(device))

        def on_rotation(rot: AccessGranted) -> None:
            kid = KeyId(rot.session_id, rot.key_id)
            log.rotations.append(str(kid))
            for purpose in (C1222, LINK):
                mine = ring.lookup(kid, purpose, loop.time())
                theirs = rt.engine.key_for(kid, purpose, rt.pana.now())
                log.keys_match.append(
                    mine is not None and theirs is not None and mine.key == theirs.key
                )

        return on_rotation

    meters = []
    for i, device in enumerate(d for d in psks if d.startswith("meter-0")):
        ring = KeyRing(device.encode(), PurposeRegistry())
        meters.append(
            run_meter(
                device,
                psks[device],
                v6 if i % 2 else v4,  # half the fleet over IPv6
                stop=stop_meters,
                on_rotation=watcher(device, ring),
                keyring=ring,
            )
        )
    tls_ring = KeyRing(TLS_METER.encode(), PurposeRegistry())
    meters.append(
        run_meter(
            TLS_METER,
            tls_peer,  # its device certificate instead of a PSK: EAP-TLS
            v4,
            stop=stop_meters,
            on_rotation=watcher(TLS_METER, tls_ring, report.tls),
            keyring=tls_ring,
        )
    )
    fleet = asyncio.gather(*meters)

    # the stolen meter is online; the security administrator revokes it over the admin
    # endpoint ('amistack keys revoke meter-stolen --server ... --cert demo-secadm')
    stolen_rotations: list[AccessGranted] = []
    stolen_stop = asyncio.Event()
    stolen = asyncio.create_task(
        run_meter(
            "meter-stolen",
            psks["meter-stolen"],
            v4,
            stop=stolen_stop,
            on_rotation=stolen_rotations.append,
            retry_backoff=(0.5, 0.5),
        )
    )
    wrong = await run_meter("meter-impostor", secrets.token_bytes(16), v4, once=True, timeout=5)
    report.wrong_psk = _outcome(wrong)
    downgrade = await run_meter(TLS_METER, secrets.token_bytes(16), v4, once=True, timeout=5)
    report.tls_downgrade = _outcome(downgrade)

    deadline = loop.time() + args.lifetime * 2 + 5
    while loop.time() < deadline and not (
        len(report.logs) == args.meters
        and all(len(m.rotations) >= 3 for m in [*report.logs.values(), report.tls])
    ):
        await asyncio.sleep(0.1)

    await admin({"op": "revoke", "device": "meter-stolen", "reason": "reported stolen"})
    revoked_at = loop.time()
    while loop.time() < revoked_at + 3 and rt.engine.agent.sessions_for_peer(b"meter-stolen"):
        await asyncio.sleep(0.05)
    took = loop.time() - revoked_at
    sessions_left = rt.engine.agent.sessions_for_peer(b"meter-stolen")
    key_left = rt.engine.current_key(b"meter-stolen", C1222, rt.pana.now())
    report.revoked_live = (
        f"session ended and keys destroyed {took:.1f} s after 'keys revoke' by {SECADM}"
        if not sessions_left and key_left is None and stolen_rotations
        else f"NOT ended: sessions {sessions_left}, key {'kept' if key_left else 'gone'}"
    )
    stolen_stop.set()
    await stolen
    again = await run_meter("meter-stolen", psks["meter-stolen"], v4, once=True, timeout=5)
    report.revoked_again = _outcome(again)

    stop_meters.set()
    await fleet
    await _chapter_metering(args, report, rt, psks, v4)
    await asyncio.sleep(0.2)  # let the PTRs of the last terminations land
    report.counters = {k: v for k, v in sorted(rt.engine.counters.items()) if v}
    stop_server.set()
    await server
    for entry in store.audit_log(100_000):
        report.audit[entry.kind] = report.audit.get(entry.kind, 0) + 1
    store.close()
    done = [e for e in trail.entries(limit=100_000) if e.action.startswith("keys.")]
    trail.close()
    report.key_admin_audit = len(done)
    ok = [e.action for e in done if e.who == SECADM and e.outcome == "ok"]
    report.key_admin = (
        f"{SECADM} (role certificate, SECADM) enrolled {ok.count('keys.enroll')} devices and "
        f"revoked {ok.count('keys.revoke')} over the admin endpoint (mutual TLS)"
    )


async def _chapter_metering(
    args: argparse.Namespace,
    report: Report,
    rt: KeyServerRuntime,
    psks: dict[str, bytes],
    keyserver: tuple[str, int],
) -> None:
    """Meters push interval data over C12.22 to the head-end; commands run and are confirmed."""
    from amistack.access import AccessStore, Role
    from amistack.headend.collector import CollectorConfig, Mode
    from amistack.headend.schema import CommandKind, CommandState
    from amistack.meter.node import ap_title_for
    from amistack.runtime.headend import HeadEndRuntime, run_headend
    from amistack.runtime.meter_node import run_meter_node

    loop = asyncio.get_running_loop()
    headend_dir = args.data_dir / "headend"
    # The people who use the API, as `amistack users add` makes them (random demo passwords).
    people = {"ian": Role.INSTALLER, "olga": Role.OPERATOR, "sue": Role.SECAUD}
    passwords = {name: secrets.token_urlsafe(16) for name in people}
    access_store = AccessStore(headend_dir)
    for name, role in people.items():
        access_store.add_user(name, passwords[name], {role}, time.time())
    access_store.close()
    c1222_pcap = C1222Captures(args.pcap) if args.pcap else None
    capture = c1222_pcap.capture if c1222_pcap else None  # the head-end's: each datagram once
    ready: asyncio.Future[HeadEndRuntime] = loop.create_future()
    stop_headend = asyncio.Event()
    headend = asyncio.create_task(
        run_headend(
            headend_dir,
            listen=[("127.0.0.1", 0)],
            api=("127.0.0.1", 0),
            key_source=rt.engine,  # in-process key distribution (docs/key-distribution.md)
            collector=CollectorConfig(mode=Mode.PUSHED),
            capture=capture,
            stop=stop_headend,
            ready=ready.set_result,
        )
    )
    he = await asyncio.wait_for(ready, 10)
    report.headend_port = he.udp[0][1]
    assert he.api is not None
    api = _Api(f"http://{he.api[0]}:{he.api[1]}")
    tokens = {name: await api.login(name, passwords[name]) for name in people}
    devices = sorted(d for d in psks if d.startswith("meter-0"))[: min(8, args.meters)]
    report.pushing = {d: psks[d] for d in devices}
    for device in devices:
        body = {"meter_id": device, "ap_title": str(ap_title_for(device).absolute()),
                "concentrator": "conc-1", "cell": "cell-1"}  # fmt: skip
        await api.call("POST", "/meters", tokens["ian"], body, expect=201)
        await api.call("POST", f"/meters/{device}/commission", tokens["ian"], expect=200)

    def remember_key(rot: AccessGranted) -> None:  # for the Wireshark decryption tables
        kid = KeyId(rot.session_id, rot.key_id)
        issued = rt.engine.key_for(kid, C1222, rt.pana.now())
        if issued is not None and c1222_pcap is not None:
            c1222_pcap.add_key(rot.device_id, kid, issued.key)

    stop_nodes = asyncio.Event()
    nodes = asyncio.gather(
        *(
            run_meter_node(
                device,
                psks[device],
                keyserver,
                he.udp[0],
                push=True,
                time_scale=900.0,  # a 15-minute interval every second
                stop=stop_nodes,
                on_rotation=remember_key,
                on_ready=c1222_pcap.meter_ready(device) if c1222_pcap else None,
            )
            for device in devices
        )
    )
    deadline = loop.time() + 30
    while loop.time() < deadline and min(he.repo.count_readings(d) for d in devices) < 4:
        await asyncio.sleep(0.2)
    report.metering_meters = len(devices)

    async def execute(device: str, kind: CommandKind, params: dict[str, float]) -> str:
        body = {"meter_id": device, "kind": kind.value, "params": params}
        cmd = await api.call("POST", "/commands", tokens["olga"], body, expect=201)
        until = loop.time() + 20
        while loop.time() < until:
            got = await api.call("GET", f"/commands/{cmd['id']}", tokens["olga"], expect=200)
            if got["state"] in (CommandState.CONFIRMED.value, CommandState.FAILED.value):
                relay = f", relay read back {got['relay_state']}" if got["relay_state"] else ""
                return f"{got['state']}{relay}"
            await asyncio.sleep(0.1)
        return "no confirmation within 20 s"

    status = await api.status("POST", "/commands", {"meter_id": devices[-1], "kind": "disconnect"})
    report.api_anonymous = f"refused ({status})" if status == 401 else f"answered {status}"

    report.dr = await execute(devices[0], CommandKind.DEMAND_RESPONSE, {"curtail_s": 1.0})
    report.disconnect = await execute(devices[-1], CommandKind.DISCONNECT, {})
    report.reconnect = await execute(devices[-1], CommandKind.RECONNECT, {})
    report.readings = {d: he.repo.count_readings(d) for d in devices}
    audit = await api.call("GET", "/audit?limit=10000", tokens["sue"], expect=200)
    report.api_audit = len(audit["items"])
    stop_nodes.set()
    await nodes
    stop_headend.set()
    await headend
    if c1222_pcap is not None:
        report.c1222_captures = c1222_pcap.close()


class C1222Captures:
    """The head-end's C12.22 traffic (it sees every datagram once, in or out): all of it in
    `DIR/c1222.pcap`, and each meter's own in `DIR/c1222/<meter>.pcap` beside
    `DIR/c1222/<meter>-keys.csv`, the Wireshark C12.22 decryption table for it. Wireshark keys
    that table by the one-byte key id, and every meter's ids count 1, 2, 3... from the same
    start, so no one table decrypts several meters; one capture per meter does (docs/c1222.md).
    The key tables are written owner-only (0600): they hold the keys."""

    def __init__(self, pcap_dir: Path) -> None:
        self.dir = pcap_dir / "c1222"
        self.dir.mkdir(parents=True, exist_ok=True)
        # an earlier version's one table for all meters (0644, and it could not work): gone
        (pcap_dir / "c1222-keys.csv").unlink(missing_ok=True)
        self.all = PcapWriter(pcap_dir / "c1222.pcap")
        self.ports: dict[int, str] = {}  # a meter's C12.22 port -> the meter
        self.writers: dict[str, PcapWriter] = {}
        self.keys: dict[str, dict[KeyId, bytes]] = {}

    def meter_ready(self, device: str) -> Callable[[Any, list[Addr]], None]:
        """`run_meter_node(on_ready=...)`: where the meter's C12.22 socket is."""

        def ready(_node: Any, addresses: list[Addr]) -> None:
            for _, port in addresses:
                self.ports[port] = device

        return ready

    def capture(self, payload: bytes, src: Addr, dst: Addr) -> None:
        self.all.capture(payload, src, dst)
        device = self.ports.get(src[1]) or self.ports.get(dst[1])
        if device is not None:
            if device not in self.writers:
                self.writers[device] = PcapWriter(self.dir / f"{device}.pcap")
            self.writers[device].capture(payload, src, dst)

    def add_key(self, device: str, kid: KeyId, key: bytes) -> None:
        self.keys.setdefault(device, {})[kid] = key

    def close(self) -> dict[str, tuple[str, str]]:
        """Close the captures, write the key tables; {meter: (its pcap, its key table)}."""
        self.all.close()
        files = {}
        for device, writer in sorted(self.writers.items()):
            writer.close()
            table = self.dir / f"{device}-keys.csv"
            # one UAT record a line: "key id",key (the id byte as two hex digits, quoted)
            lines = [
                f'"{key_id_byte(kid):02x}",{key.hex()}'
                for kid, key in self.keys.get(device, {}).items()
            ]
            _write_owner_only(table, "".join(line + "\n" for line in lines))
            files[device] = (str(self.dir / f"{device}.pcap"), str(table))
        return files


def _write_owner_only(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when the file was there (a previous run) with another mode
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def _chapter_eventlog(data_dir: Path, report: Report) -> None:
    """Meters log their key rotations and events; the MDMS verifies, and catches tampering."""
    from amistack.cli.log import log_path, meter_dir, module_path
    from amistack.eventlog.log import EventLog
    from amistack.eventlog.record import EventType
    from amistack.eventlog.verify import HeadStore, verify_file
    from amistack.securemodule import SoftwareModule

    mdms = HeadStore(data_dir / "mdms" / "trusted-heads")
    now = time.time()
    for device in sorted(report.logs)[:3]:
        meter_dir(data_dir, device).mkdir(parents=True, mode=0o700)
        module = SoftwareModule.open_or_create(module_path(data_dir, device))
        pem = module.public_key_pem()
        log = EventLog.open(log_path(data_dir, device), device, module, now)
        for kid in report.logs[device].rotations:
            log.append(EventType.KEY_ROTATED, kid.encode(), now)
        log.append(EventType.POWER_FAIL, b"", now + 60)
        log.append(EventType.POWER_RESTORE, b"", now + 95)
        first = log_path(data_dir, device).with_name("export-1.log")
        log.checkpoint(now + 100)  # an export ends at a signed head, as 'amistack log export'
        log.export(first)  # the MDMS collects ...
        accepted = mdms.verify_and_accept(first, device, pem).ok
        log.append(EventType.COVER_OPEN, b"\x01", now + 200)  # specified: signed at once
        second = first.with_name("export-2.log")
        log.export(second)  # ... and collects again later
        accepted = accepted and mdms.verify_and_accept(second, device, pem).ok
        log.close()
        module.close()
        report.eventlog[device] = "accepted" if accepted else "REFUSED (should have held)"
        if len(report.eventlog) == 1:  # an attacker edits an entry, then rolls the log back
            lines = second.read_text().splitlines(keepends=True)
            at = next(i for i, line in enumerate(lines) if "POWER_FAIL" in line)
            lines[at] = lines[at].replace("POWER_FAIL", "POWER_RESTORE")
            edited = second.with_name("export-edited.log")
            edited.write_text("".join(lines))
            report.tampered = verify_file(edited, pem, meter_id=device).reason.value
            report.rollback = mdms.verify_and_accept(first, device, pem).reason.value


def _outcome(result: MeterResult) -> str:
    if result.ok:
        return f"ACCEPTED (should have been refused): {result}"
    return f"refused: {result.reason}"


def _print(report: Report) -> None:
    rot = [len(m.rotations) for m in report.logs.values()]
    matched = sum(all(m.keys_match) for m in report.logs.values())
    print("amistack demo — chapter 1: network access authentication and key management")
    print(f"  key server (PANA) on {', '.join(report.addresses)}")
    print(f"  session lifetime {report.lifetime:g} s (accelerated); {report.meters} meters")
    print(
        f"  meters authenticated: {sum(r >= 1 for r in rot)}/{report.meters}; "
        f"key generations per meter: min {min(rot, default=0)}, max {max(rot, default=0)} "
        f"(3 = two rotations)"
    )
    print(f"  C12.22 and link keys identical at meter and key server: {matched}/{report.meters}")
    tls = report.tls
    print(
        f"  EAP-TLS meter {tls.device_id} (device certificate, same key server): "
        f"{len(tls.rotations)} key generations, keys identical: "
        f"{'yes' if tls.keys_match and all(tls.keys_match) else 'NO'}"
    )
    print(f"  EAP-PSK under the EAP-TLS meter's identity (downgrade): {report.tls_downgrade}")
    print(f"  wrong PSK: {report.wrong_psk}")
    print(f"  revoked while online: {report.revoked_live}")
    print(f"  revoked meter tries again: {report.revoked_again}")
    print(
        f"  key administration: {report.key_admin}; {report.key_admin_audit} entries in the "
        "signed operator audit trail, each written before its action"
    )
    print(f"  audit trail: {', '.join(f'{k} {v}' for k, v in sorted(report.audit.items()))}")
    if report.pcap:
        port = report.addresses[0].rsplit(" ", 1)[-1] if report.addresses else "PORT"
        print(f"  pcap: {report.pcap}  (tshark -r {report.pcap} -d udp.port=={port},pana)")
    print("amistack demo — chapter 2: metering over ANSI C12.22 (EAX') to the head-end")
    counts = list(report.readings.values())
    print(
        f"  {report.metering_meters} meters push 15-minute intervals at randomized offsets "
        f"(900x time); the head-end stored {sum(counts)} readings "
        f"(per meter {min(counts, default=0)}-{max(counts, default=0)}), each acknowledged "
        f"only once durable"
    )
    print(f"  demand response (curtailment by the remote switch): {report.dr}")
    print(f"  remote disconnect: {report.disconnect}")
    print(f"  remote reconnect: {report.reconnect}")
    print(
        "  REST API with access control: installer ian registered and commissioned the meters, "
        f"operator olga sent the commands; an anonymous disconnect was {report.api_anonymous}; "
        f"{report.api_audit} entries in the signed operator audit trail"
    )
    if report.pcap and report.c1222_captures:
        c = Path(report.pcap).with_name("c1222.pcap")
        device, (one, keys) = next(iter(report.c1222_captures.items()))
        print(
            f"  pcap: {c} (all meters); one capture and one Wireshark C12.22 decryption table "
            f"per meter in {Path(one).parent}/ (docs/c1222.md), e.g. {device}:"
        )
        print(
            f"    tshark -r {one} -d udp.port=={report.headend_port},c1222 -o c1222.decrypt:TRUE "
            f"-o c1222.baseoid:2.16.124.113620.1.22 "
            f"$(sed 's/^/-o uat:c1222_decryption_table:/' {keys})"
        )
    print("amistack demo — chapter 3: tamper-evident event logs (signed Merkle tree heads)")
    for device, verdict in report.eventlog.items():
        print(
            f"  {device}: log with key rotations and events, collected twice by the MDMS: {verdict}"
        )
    print(f"  an edited entry: refused, {report.tampered}")
    print(f"  the older export presented again: refused, {report.rollback}")
    print("  logs: DATA_DIR/meters/ID/ (amistack log verify FILE --pubkey PEM)")
    print("amistack demo — chapter 4: the HEMS on the B route (PANA, then ECHONET Lite)")
    for line in report.broute.lines():
        print(line)
    print("amistack demo — chapter 5: a utility in a box (the fleet simulator, virtual clock)")
    for line in report.fleet.lines():
        print(line)
    print("amistack demo — chapter 6: the field network (RPL mesh, joins through relays)")
    for line in report.mesh.lines():
        print(line)
    print("amistack demo — chapter 7: the handheld in an isolated area (online, lost, offline)")
    for line in report.handheld.lines():
        print(line)
    print(f"  {'OK' if report.ok() else 'FAILED'} in {report.elapsed:.1f} s")


def _run(args: argparse.Namespace) -> int:
    if args.meters < 1:
        raise CliError("--meters must be >= 1")
    if args.lifetime < 1:
        raise CliError("--lifetime must be >= 1 s")
    if args.serve is not None and not 0 <= args.serve <= 65535:
        raise CliError("--serve PORT must be 0..65535")
    if not args.verbose:  # refusals are part of the story: the report tells them
        logging.getLogger("amistack").setLevel(logging.ERROR)
    _prepare(args.data_dir)
    report = Report(args.meters, args.lifetime)
    pcap = None
    if args.pcap:
        args.pcap.mkdir(parents=True, exist_ok=True)
        pcap = PcapWriter(args.pcap / "pana.pcap")
        report.pcap = str(args.pcap / "pana.pcap")
    t0 = time.monotonic()
    try:
        run(lambda: _chapter_access(args, report, pcap))
        _chapter_eventlog(args.data_dir, report)
        report.broute = run(lambda: chapter_broute(args.pcap))
        report.fleet = chapter_fleet(args.data_dir)
        report.mesh = chapter_mesh(args.pcap)
        report.handheld = chapter_handheld(args.data_dir)
    finally:
        if pcap is not None:
            pcap.close()
    report.elapsed = time.monotonic() - t0
    _print(report)
    if args.json:
        doc = {
            "ok": report.ok(),
            "meters": report.meters,
            "key_generations": {d: m.rotations for d, m in report.logs.items()},
            "keys_match": {d: all(m.keys_match) for d, m in report.logs.items()},
            "wrong_psk": report.wrong_psk,
            "tls_meter": dataclasses.asdict(report.tls),
            "tls_downgrade": report.tls_downgrade,
            "revoked_live": report.revoked_live,
            "revoked_again": report.revoked_again,
            "key_admin": report.key_admin,
            "key_admin_audit_entries": report.key_admin_audit,
            "audit": report.audit,
            "key_server_counters": report.counters,
            "metering_readings": report.readings,
            "headend_port": report.headend_port,
            "c1222_captures": {
                d: {"pcap": pcap, "keys": keys} for d, (pcap, keys) in report.c1222_captures.items()
            },
            "demand_response": report.dr,
            "disconnect": report.disconnect,
            "reconnect": report.reconnect,
            "api_anonymous_disconnect": report.api_anonymous,
            "api_audit_entries": report.api_audit,
            "eventlog": report.eventlog,
            "eventlog_edited_entry": report.tampered,
            "eventlog_rollback": report.rollback,
            "broute": dataclasses.asdict(report.broute),
            "fleet": dataclasses.asdict(report.fleet),
            "mesh": dataclasses.asdict(report.mesh),
            "handheld": dataclasses.asdict(report.handheld),
        }
        args.json.write_text(json.dumps(doc, indent=1))
    if args.serve is not None:
        from amistack.cli.demo_serve import print_login, serve_dashboard
        from amistack.runtime.api_server import BindError

        try:
            run(
                lambda: serve_dashboard(
                    args.data_dir, report.pushing, args.serve, ready=print_login
                )
            )
        except BindError as exc:
            raise CliError(str(exc)) from None
    return 0 if report.ok() else 1
