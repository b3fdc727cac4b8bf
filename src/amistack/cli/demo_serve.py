"""`amistack demo --serve`: after the report, the demo's system stays up with the dashboard.

The key server is served again on the demo's credential store, the head-end on the demo's
database (the metering chapter's readings, commands and audit trail), and chapter 2's meters
authenticate again and push a quarter hour of data a second. Three people are added for the
dashboard (random passwords, printed once): `operator` (OPERATOR), `auditor` (SECAUD) and
`secadm` (SECADM, a user of the key server too). With the demo's PKI the key server's admin
endpoint is served as well, and the head-end holds the delegator certificate
`headend-dashboard` (VIEWER) the key server lets act for its SECADMs: `secadm` revokes or
rotates a PSK on the dashboard's Keys page (docs/dashboard.md "SECADM actions").
Ctrl-C (or SIGTERM) ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from amistack.access import AccessStore, AuditTrail, Role
from amistack.access.certroles import user_roles_extension
from amistack.access.keyadmin import KeyAdminService
from amistack.cli.common import open_store, stop_on_signals
from amistack.headend.collector import CollectorConfig, Mode
from amistack.keymgmt import pki
from amistack.keymgmt.pki import PkiLayout
from amistack.runtime.headend import HeadEndRuntime, run_headend
from amistack.runtime.keydist import KeyAdminClient, KeyDistServer, TlsFiles, start_keyadmin
from amistack.runtime.keyserver import KeyServerRuntime, run_keyserver
from amistack.runtime.meter_node import run_meter_node

PEOPLE = {"operator": Role.OPERATOR, "auditor": Role.SECAUD, "secadm": Role.SECADM}
DELEGATOR = "headend-dashboard"  # the head-end's certificate at the key server's admin endpoint
SESSION_LIFETIME = 120.0  # seconds: keys rotate now and then while one watches


async def serve_dashboard(
    data_dir: Path,
    psks: dict[str, bytes],
    port: int = 0,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[str, dict[str, str]], None] | None = None,
) -> None:
    """Serve until `stop` is set (default: until SIGINT/SIGTERM); `ready(url, passwords)`."""
    stop = stop or stop_on_signals()
    store = open_store(data_dir, create=False)
    headend_dir = data_dir / "headend"
    passwords = {name: secrets.token_urlsafe(12) for name in PEOPLE}
    people = AccessStore(headend_dir)
    for name, role in PEOPLE.items():
        if people.get_user(name) is None:
            people.add_user(name, passwords[name], {role}, time.time())
    people.close()
    admin = await _key_admin(data_dir, store, passwords["secadm"])
    loop = asyncio.get_running_loop()
    ks_ready: asyncio.Future[KeyServerRuntime] = loop.create_future()
    he_ready: asyncio.Future[HeadEndRuntime] = loop.create_future()
    keyserver = asyncio.create_task(
        run_keyserver(
            store,
            ["127.0.0.1"],
            0,
            stop=stop,
            ready=ks_ready.set_result,
            session_lifetime=SESSION_LIFETIME,
            now=time.time(),
        )
    )
    ks = await asyncio.wait_for(ks_ready, 10)
    headend = asyncio.create_task(
        run_headend(
            headend_dir,
            listen=[("127.0.0.1", 0)],
            api=("127.0.0.1", port),
            key_source=ks.engine,
            collector=CollectorConfig(mode=Mode.PUSHED),
            stop=stop,
            ready=he_ready.set_result,
            key_admin=None if admin is None else admin[1],
        )
    )
    he = await asyncio.wait_for(he_ready, 10)
    assert he.api is not None
    meters = [
        asyncio.create_task(
            run_meter_node(
                device,
                psks[device],
                ks.pana_addresses[0],
                he.udp[0],
                push=True,
                time_scale=900.0,
                stop=stop,
            )
        )
        for device in psks
    ]
    if ready is not None:
        ready(f"http://{he.api[0]}:{he.api[1]}/ui/", passwords)
    try:
        await stop.wait()
    finally:
        stop.set()
        for task in (*meters, headend, keyserver):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
        if admin is not None:
            await admin[0].close()
            admin[2].close()
            admin[3].close()
        store.close()


async def _key_admin(
    data_dir: Path, store: object, password: str
) -> tuple[KeyDistServer, KeyAdminClient, AuditTrail, AccessStore] | None:
    """With the demo's PKI: the key server's admin endpoint on loopback, `secadm` a user of
    the key server, and the head-end's delegator certificate (issued once)."""
    if not PkiLayout.of(data_dir).ca_cert.exists():
        return None
    if not TlsFiles.client(data_dir, DELEGATOR).cert.exists():
        ext = [user_roles_extension({Role.VIEWER})]
        pki.issue_client(data_dir, DELEGATOR, [], extensions=ext)
    users = AccessStore(data_dir)
    if users.get_user("secadm") is None:
        users.add_user("secadm", password, {Role.SECADM}, time.time())
    trail = AuditTrail.open(data_dir, time.time())
    service = KeyAdminService(store, trail, users=users, delegators=frozenset({DELEGATOR}))
    server = await start_keyadmin(
        service, TlsFiles.server(data_dir), ["127.0.0.1"], 0, clock=time.time
    )
    client = KeyAdminClient(
        "127.0.0.1", server.addresses[0][1], TlsFiles.client(data_dir, DELEGATOR), DELEGATOR
    )
    return server, client, trail, users


def print_login(url: str, passwords: dict[str, str]) -> None:
    print(f"\ndashboard: {url}  (Ctrl-C ends the demo)")
    for name, role in PEOPLE.items():
        print(f"  log in as {name!r} ({role.name}) with password {passwords[name]!r}", flush=True)
