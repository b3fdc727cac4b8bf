"""The dashboard in a real browser (Debian's headless Chromium through chromedriver) against a
real system on loopback: a key server, the head-end (uvicorn, SQLite) and a meter that
authenticates with PANA/EAP-PSK and pushes interval data over C12.22 every second (a quarter
hour of its time). Each role logs in; a VIEWER sees the reading arrive live and is refused a
disconnect by the server; an OPERATOR disconnects and sees the relay read back open, reads the
registers on demand, then acknowledges an alarm; a SECAUD finds it in the audit trail; the mesh
view draws 1,000 nodes (its render time is printed); a SECADM revokes a meter on the Keys page,
confirming with the password, through the key server's admin endpoint (mutual TLS, the
head-end's delegator certificate), whose audit trail names the SECADM. With
AMISTACK_SCREENSHOTS=DIR each page's screenshot lands there (docs/img holds the committed
ones)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.browser.chrome import headless_chromium

from amistack.access import AccessStore, AuditTrail, Role
from amistack.access.certroles import user_roles_extension
from amistack.access.keyadmin import KeyAdminService
from amistack.crypto import system_random
from amistack.headend.collector import CollectorConfig, Mode
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt import pki
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.store import CredentialStore
from amistack.meter.node import ap_title_for
from amistack.runtime.headend import HeadEndRuntime, run_headend
from amistack.runtime.keydist import KeyAdminClient, TlsFiles, start_keyadmin
from amistack.runtime.keyserver import build_key_server, start_keyserver
from amistack.runtime.loop import new_event_loop
from amistack.runtime.meter_node import run_meter_node

# the dev extras bring selenium; without it the `browser` fixture skips (fails under CI=true)
with contextlib.suppress(ImportError):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.slow
DEVICE = "meter-0001"
REVOKED = "meter-0002"  # enrolled and registered; the SECADM revokes it
DELEGATOR = "headend-dashboard"  # the head-end's certificate at the key server's admin endpoint
PSK = bytes.fromhex("00112233445566778899aabbccddeeff")
PASSWORD = "correct horse battery staple"
USERS = {role.name.lower(): role for role in Role}  # one user per role, named after it
MESH_NODES = 1000  # meters under one concentrator, drawn by the mesh view


def _bulk_meters(data_dir: Path, n: int, now: float) -> None:
    """n registered meters under concentrator `conc-big`, inserted as one bulk load would (the
    API registers one meter per durable transaction: 1,000 of them take seconds)."""
    SqliteRepository(data_dir).close()  # the schema
    with sqlite3.connect(data_dir / "headend.db") as db:
        db.executemany(
            "INSERT INTO meters (meter_id, ap_title, concentrator, cell, state, installed_at) "
            "VALUES (?, ?, 'conc-big', 'cell-9', 'installed', ?)",
            [(f"mesh-{i:04d}", f"2.16.124.113620.1.22.9.{i}", now) for i in range(n)],
        )


def _reported_dodag(data_dir: Path, n: int, now: float) -> None:
    """A DODAG of n meters that concentrator `conc-tree` reported: each node i's parent is node
    (i - 1) // 4 (node 0 the root), ranks 256 per hop, every tenth node not authenticated."""

    def eui(i: int) -> str:
        return ":".join(f"{b:02x}" for b in (0x02, 0, 0, 0, 0, 0, i >> 8, i & 0xFF))

    nodes: list[dict[str, Any]] = [
        {"eui64": eui(0), "role": "concentrator", "rank": 256, "hops": 0, "joined": True}
    ]
    for i in range(1, n + 1):
        hops = nodes[(i - 1) // 4]["hops"] + 1
        nodes.append({"eui64": eui(i), "meter_id": f"tree-{i:04d}", "parent": eui((i - 1) // 4),
                      "rank": 256 * (hops + 1), "hops": hops, "etx": 1.0 + (i % 7) / 4,
                      "link_quality": 40 + (i * 37) % 215, "joined": True,
                      "authenticated": i % 10 != 0})  # fmt: skip
    repo = SqliteRepository(data_dir)
    repo.put_topology("conc-tree", json.dumps(nodes), now)
    repo.close()


class System:
    """Key server, head-end and one pushing meter on a loop in a thread of their own."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.loop = new_event_loop()
        self.ready = threading.Event()
        self.he: HeadEndRuntime | None = None
        self.error: BaseException | None = None
        self.stop: asyncio.Event | None = None
        self.store: CredentialStore | None = None
        self.ks_trail: AuditTrail | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start()
            self.error = exc
            self.ready.set()
        finally:
            self.loop.close()

    async def _main(self) -> None:
        now = time.time()
        self.stop = asyncio.Event()
        store = CredentialStore(self.dir / "keys.db", FileKek(os.urandom(32), system_random))
        store.enroll(DEVICE, PSK, now)
        store.enroll(REVOKED, PSK, now)
        keyserver = build_key_server(store, session_lifetime=60.0)
        ks = await start_keyserver(keyserver, ["127.0.0.1"], 0)
        # the key server's admin endpoint; the head-end's certificate may act for its SECADMs
        pki_dir = self.dir / "pki"
        pki.init_ca(pki_dir)
        pki.issue_server(pki_dir, "keyserver", ["127.0.0.1"])
        ext = [user_roles_extension({Role.VIEWER}, ("*",))]
        pki.issue_client(pki_dir, DELEGATOR, [], extensions=ext)
        ks_users = AccessStore(self.dir / "keyserver-access")
        ks_users.add_user("secadm", PASSWORD, {Role.SECADM}, now)
        trail = AuditTrail.open(self.dir / "keyserver-audit", now)
        admin = KeyAdminService(store, trail, users=ks_users, delegators=frozenset({DELEGATOR}))
        admin_server = await start_keyadmin(
            admin, TlsFiles.server(pki_dir), ["127.0.0.1"], 0, clock=time.time
        )
        key_admin = KeyAdminClient(
            "127.0.0.1", admin_server.addresses[0][1], TlsFiles.client(pki_dir, DELEGATOR),
            DELEGATOR,
        )  # fmt: skip
        self.store, self.ks_trail = store, trail
        headend_dir = self.dir / "headend"
        headend_dir.mkdir(mode=0o700)
        users = AccessStore(headend_dir)
        for name, role in USERS.items():
            users.add_user(name, PASSWORD, {role}, now)
        users.close()
        _bulk_meters(headend_dir, MESH_NODES, now)
        _reported_dodag(headend_dir, MESH_NODES, now)
        ready: asyncio.Future[HeadEndRuntime] = asyncio.get_running_loop().create_future()
        headend = asyncio.create_task(
            run_headend(
                headend_dir,
                listen=[("127.0.0.1", 0)],
                api=("127.0.0.1", 0),
                key_source=keyserver,
                collector=CollectorConfig(mode=Mode.PUSHED),
                stop=self.stop,
                ready=ready.set_result,
                key_admin=key_admin,
            )
        )
        he = await asyncio.wait_for(ready, 10)
        he.repo.register_meter(
            DEVICE, str(ap_title_for(DEVICE).absolute()), "conc-1", "cell-1", now
        )
        he.repo.commission_meter(DEVICE, now)
        he.repo.register_meter(
            REVOKED, str(ap_title_for(REVOKED).absolute()), "conc-1", "cell-1", now
        )
        meter = asyncio.create_task(
            run_meter_node(
                DEVICE, PSK, ks.pana_addresses[0], he.udp[0], push=True, time_scale=900.0,
                stop=self.stop,
            )
        )  # fmt: skip
        self.he = he
        self.ready.set()
        await self.stop.wait()
        await asyncio.wait_for(meter, 10)
        await asyncio.wait_for(headend, 15)
        ks.close()
        await admin_server.close()
        trail.close()
        ks_users.close()
        store.close()

    def start(self) -> str:
        self.thread.start()
        self.ready.wait(30)
        if self.error is not None:
            raise self.error
        assert self.he is not None and self.he.api is not None
        return f"http://{self.he.api[0]}:{self.he.api[1]}"

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the system's loop thread (the repository is used from there too)."""
        done: asyncio.Future[Any] = asyncio.run_coroutine_threadsafe(_call(fn), self.loop)  # type: ignore[assignment]
        return done.result(10)

    def close(self) -> None:
        if self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


async def _call(fn: Callable[[], Any]) -> Any:
    return fn()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, str]]:
    s = System(tmp_path_factory.mktemp("dashboard"))
    try:
        yield s, s.start()
    finally:
        s.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from headless_chromium(1280, 900)


def shot(driver: Any, name: str) -> None:
    where = os.environ.get("AMISTACK_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(where) / f"dashboard-{name}.png"))


def wait(driver: Any, what: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll until `what()` is truthy; a swapped (stale) element just means look again."""

    def probe(_: Any) -> Any:
        try:
            return what()
        except StaleElementReferenceException:
            return False

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(probe)


def login(driver: Any, base: str, name: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/ui/login")
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver, lambda: "/ui/login" not in driver.current_url)


def text(driver: Any, css: str) -> str:
    """The element's text; a live swap may replace it between finding and reading: again."""
    for _ in range(20):
        try:
            return str(driver.find_element(By.CSS_SELECTOR, css).text)
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"{css} keeps being replaced")


def post_from_page(driver: Any, path: str, body: str) -> int:
    """What a hand-made request from the page gets (the button is not there to press)."""
    status: int = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: 'POST', body: arguments[1], credentials: 'same-origin',"
        " headers: {'Content-Type': 'application/x-www-form-urlencoded'}})"
        ".then(r => done(r.status));",
        path,
        body,
    )
    return status


def test_the_dashboard_in_a_browser(system: tuple[System, str], browser: Any) -> None:
    sysm, base = system
    d = browser
    t_start = time.monotonic()
    d.get(f"{base}/ui/login")
    shot(d, "login")

    # every role logs in; RBACMNT (no read right) is refused the pages by the server
    for name, role in USERS.items():
        login(d, base, name)
        if role is Role.RBACMNT:
            wait(d, lambda: "Refused" in d.page_source)
            continue
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "table.fleet"))
        has_audit = bool(d.find_elements(By.CSS_SELECTOR, "nav a[href='/ui/audit']"))
        assert has_audit == (role is Role.SECAUD), name

    # VIEWER: the meter's readings arrive live (no reload), no buttons, the server refuses
    login(d, base, "viewer")
    d.get(f"{base}/ui/fleet?q=meter-")  # (the 1,000 mesh meters sort first)
    wait(d, lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-meter='{DEVICE}'] td.last"))
    first = text(d, f"tr[data-meter='{DEVICE}'] td.last")
    wait(d, lambda: text(d, f"tr[data-meter='{DEVICE}'] td.last") not in (first, "none"), 30)
    assert text(d, "#live") == "live"
    shot(d, "fleet")
    d.get(f"{base}/ui/meters/{DEVICE}")
    before = text(d, "#last-reading")
    wait(d, lambda: text(d, "#last-reading") != before, 30)
    assert not d.find_elements(By.ID, "cmd-disconnect")
    status = post_from_page(d, f"/ui/meters/{DEVICE}/commands", "kind=disconnect")
    assert status == 403
    assert sysm.call(lambda: sysm.he.repo.commands(meter_id=DEVICE)) == []
    wait(d, lambda: d.execute_script("return document.querySelectorAll('#profile canvas').length"))

    # OPERATOR: disconnect, and the relay read back shows up live
    login(d, base, "operator")
    d.get(f"{base}/ui/meters/{DEVICE}")
    wait(d, lambda: text(d, "#live") == "live")
    d.find_element(By.ID, "cmd-disconnect").click()
    wait(d, lambda: "queued as command" in text(d, "#command-result"))
    wait(d, lambda: "confirmed" in text(d, "tr[data-command] td.state"), 30)
    assert text(d, "tr[data-command] td.readback") == "open"
    wait(d, lambda: "open" in text(d, "#relay"))
    d.find_element(By.ID, "cmd-read").click()  # on-demand read: the registers appear live
    wait(d, lambda: d.find_elements(By.ID, "registers"), 30)
    assert "Wh imported" in text(d, "#registers")
    assert d.execute_script("return document.documentElement.scrollWidth") <= 1280
    shot(d, "meter")

    # an alarm (the verification failure the MDMS would raise) is acknowledged into the audit
    alarm = sysm.call(
        lambda: sysm.he.repo.raise_alarm(
            DEVICE, "eventlog_verification_failed", "entry 3 does not match the signed head",
            time.time(),
        )
    )  # fmt: skip
    d.get(f"{base}/ui/events")
    button = f"#ack-{alarm.id} button"
    wait(d, lambda: d.find_elements(By.CSS_SELECTOR, button))
    d.find_element(By.CSS_SELECTOR, button).click()
    # the answer ("acknowledged ... by operator"), soon replaced by the live table's time
    wait(d, lambda: text(d, f"#ack-{alarm.id}").startswith(("acknowledged", "20")))
    shot(d, "events")
    acked = sysm.call(lambda: sysm.he.repo.alarms(meter_id=DEVICE))
    assert acked[-1].acknowledged_at is not None

    # the keyboard alone: the first Tab reaches the skip link, then the navigation
    from selenium.webdriver.common.keys import Keys

    d.get(f"{base}/ui/events")
    d.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert d.switch_to.active_element.text == "Skip to content"
    d.switch_to.active_element.send_keys(Keys.TAB)
    d.switch_to.active_element.send_keys(Keys.TAB)  # past "Fleet" to "Events & alarms"
    d.switch_to.active_element.send_keys(Keys.TAB)
    assert d.switch_to.active_element.text == "Keys & sessions"
    d.switch_to.active_element.send_keys(Keys.ENTER)
    wait(d, lambda: d.current_url.endswith("/ui/keys"))

    # SECAUD: the acknowledgement is in the audit trail; a VIEWER may not see the trail
    login(d, base, "secaud")
    d.get(f"{base}/ui/audit")
    wait(d, lambda: "alarm.acknowledge" in text(d, "table.audit"))
    assert "command.create" in text(d, "table.audit")
    shot(d, "audit")

    # the mesh view: 1,000 meters under one concentrator, drawn with cytoscape.js
    d.get(f"{base}/ui/mesh?concentrator=conc-big")
    wait(d, lambda: d.find_element(By.ID, "mesh").get_attribute("data-render-ms"), 30)
    nodes = int(d.find_element(By.ID, "mesh").get_attribute("data-nodes"))
    render_ms = int(d.find_element(By.ID, "mesh").get_attribute("data-render-ms"))
    assert nodes == MESH_NODES + 1  # the concentrator too
    print(f"\nmesh view: {nodes} nodes rendered in {render_ms} ms")
    shot(d, "mesh")
    # a reported DODAG of 1,000 meters: drawn as its tree, a node's details on selection
    d.get(f"{base}/ui/mesh?concentrator=conc-tree")
    wait(d, lambda: d.find_element(By.ID, "mesh").get_attribute("data-render-ms"), 30)
    nodes = int(d.find_element(By.ID, "mesh").get_attribute("data-nodes"))
    render_ms = int(d.find_element(By.ID, "mesh").get_attribute("data-render-ms"))
    assert nodes == MESH_NODES + 1
    print(f"mesh view (reported DODAG): {nodes} nodes rendered in {render_ms} ms")
    d.find_element(By.ID, "find").send_keys("tree-0007")
    d.find_element(By.ID, "find-go").click()
    wait(d, lambda: "02:00:00:00:00:00:00:01" in text(d, "#node"))  # its parent: node 1
    assert "DODAG of conc-tree" in d.page_source
    shot(d, "mesh-dodag")
    d.get(f"{base}/ui/keys?q=meter-")
    wait(d, lambda: "Key generations in use" in d.page_source)
    wait(d, lambda: DEVICE in text(d, "main table") and "(" in text(d, "main table"))
    shot(d, "keys")

    # SECADM: revoke a meter on the Keys page, confirmed with the password again; the key
    # server (its admin endpoint, mutual TLS, the head-end's delegator certificate) does it
    login(d, base, "secadm")
    d.get(f"{base}/ui/keys?q={REVOKED}")
    revoke = f"a[href='/ui/keys/{REVOKED}/revoke']"
    wait(d, lambda: d.find_elements(By.CSS_SELECTOR, revoke))
    d.find_element(By.CSS_SELECTOR, revoke).click()
    wait(d, lambda: d.find_elements(By.ID, "confirm-action"))
    d.find_element(By.ID, "password").send_keys(PASSWORD)
    shot(d, "keys-confirm")
    d.find_element(By.ID, "confirm-action").click()
    wait(d, lambda: f"{REVOKED} revoked" in text(d, "h1"))
    shot(d, "keys-revoked")
    d.find_element(By.LINK_TEXT, "Back to keys and sessions").click()
    wait(d, lambda: "revoke" in text(d, "#key-actions"))

    def revoked() -> bool:
        assert sysm.store is not None
        return any(
            x.device_id == REVOKED.encode() and x.revoked_at is not None
            for x in sysm.store.list_devices()
        )

    assert sysm.call(revoked)
    assert sysm.ks_trail is not None
    named = sysm.call(lambda: [(e.who, e.via, e.action, e.target, e.outcome)
                               for e in sysm.ks_trail.entries(-1, 100)])  # fmt: skip
    via = named[-1][1]
    assert via.startswith(f"delegated by {DELEGATOR}")
    assert named[-2:] == [("secadm", via, "keys.revoke", REVOKED, "requested"),
                          ("secadm", via, "keys.revoke", REVOKED, "ok")]  # fmt: skip

    # phone width: the handheld reuses the pages
    d.set_window_size(390, 844)
    d.get(f"{base}/ui/meters/{DEVICE}")
    wait(d, lambda: text(d, "#live") == "live")
    width = d.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, width  # no sideways scrolling of the page itself
    shot(d, "phone")
    d.set_window_size(1280, 900)
    # no script error and no CSP violation (the refusals above are logged as network errors)
    log = d.get_log("browser")
    assert not [e for e in log if e["level"] == "SEVERE" and e["source"] != "network"], log
    print(f"browser test body: {time.monotonic() - t_start:.1f} s")
