"""Claim 3 and C12.22 through the handheld with the real head-end: the isolated meters (in an
area process of their own, the handheld's radio over loopback UDP) push their interval data
through the handheld's DODAG root and the channel to the real head-end process, which fetches
their C12.22 keys from the real key server over mutual TLS; the technician's read and
disconnect go to the head-end's REST API (audited there as the technician's, via the handheld)
and the head-end reaches the meter back through the handheld. The readings and the keys never
touch the handheld's data dir or log, and no meter key or PSK is in the handheld process's
memory."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from tests.conftest import IN_CI
from tests.scenario.test_handheld_processes import ENV, PASSWORD, start, stop_all
from tests.scenario.test_keyserver_process import free_port

from amistack.access import AccessStore, AuditTrail, Role
from amistack.access.users import HANDHELD_TOKEN
from amistack.cli.common import open_store
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt import pki
from amistack.meter.node import ap_title_for
from amistack.runtime.handheld import SOCKET_NAME, control
from amistack.runtime.keydist import KeyDistClient, TlsFiles
from amistack.sim.handheld_area import area_meter_id, area_meter_psk

METERS = 3
HANDHELD = "handheld-7"
PSK = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"

pytestmark = pytest.mark.slow


def ask(d: Path, **req: Any) -> dict[str, Any]:
    return asyncio.run(control(d / SOCKET_NAME, req, timeout=60.0))


def provision(tmp: Path, meters: int, technicians: dict[str, Role]) -> str:
    """The office (TMP/office: key server store, PKI), the head-end (TMP/headend: the meters
    registered and commissioned, the handheld's user) and the handheld (TMP/handheld: its
    certificate, the technicians): the handheld's head-end token (`users token --handheld`)."""
    off, he, hdir = tmp / "office", tmp / "headend", tmp / "handheld"
    now = time.time()
    with open_store(off, create=True) as store:
        store.enroll(HANDHELD, bytes.fromhex(PSK), now)
        for i in range(1, meters + 1):
            store.enroll(area_meter_id(i), area_meter_psk(1, i), now)
    pki.init_ca(off)
    pki.issue_server(off, "handheld-gateway", ["127.0.0.1"])
    pki.issue_server(off, "keyserver", ["127.0.0.1"])
    pki.issue_client(off, HANDHELD, ["handheld"], meters=["field-meter-*"])
    pki.issue_client(off, "headend", ["c1222"], meters=["field-meter-*"])
    for where, name in ((hdir, HANDHELD), (he, "headend")):
        (where / "pki" / "clients").mkdir(parents=True, mode=0o700)
        for rel in ("ca.crt", f"clients/{name}.crt", f"clients/{name}.key"):
            shutil.copy2(off / "pki" / rel, where / "pki" / rel)
    os.chmod(he, 0o700)
    repo = SqliteRepository(he)
    for i in range(1, meters + 1):
        mid = area_meter_id(i)
        repo.register_meter(mid, str(ap_title_for(mid).absolute()), "handheld", "field", now)
        repo.commission_meter(mid, now)
    repo.close()
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    he_users = AccessStore(he, hasher=cheap)
    he_users.add_user(HANDHELD, PASSWORD, [Role.OPERATOR], now)  # the handheld at the head-end
    token = he_users.issue_token(HANDHELD, now, kind=HANDHELD_TOKEN).token  # --handheld
    he_users.close()
    users = AccessStore(hdir, hasher=cheap)
    for name, role in technicians.items():
        users.add_user(name, PASSWORD, [role], now)
    users.close()
    return token


@pytest.fixture(scope="module")
def handheld(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, Path, Path, int, int]]:
    tmp = tmp_path_factory.mktemp("hh-he")
    off, he, hdir = tmp / "office", tmp / "headend", tmp / "handheld"
    token = provision(tmp, METERS, {"tina": Role.OPERATOR})
    ks, kd, gw, c1222, api, radio = (free_port() for _ in range(6))
    procs = [
        start(["keyserver", "--data-dir", str(off), "--listen", f"127.0.0.1:{ks}", "--relay",
               "127.0.0.1", "--mesh-pan", "0x0f1e", "--keydist-listen", f"127.0.0.1:{kd}"],
              tmp / "ks.log", b"PANA on 127.0.0.1"),
        start(["headend", "--data-dir", str(he), "--keyserver", f"127.0.0.1:{kd}", "--listen",
               f"127.0.0.1:{c1222}", "--api", f"127.0.0.1:{api}"], tmp / "he.log",
              b"127.0.0.1"),
        start(["handheld", "gateway", "--listen", f"127.0.0.1:{gw}", "--keyserver",
               f"127.0.0.1:{ks}", "--headend", f"127.0.0.1:{c1222}", "--data-dir", str(off)],
              tmp / "gw.log", b"handheld gateway: on"),
        start(["handheld", "area", "--listen", f"127.0.0.1:{radio}", "--meters", str(METERS),
               "--headend", "--time-scale", "60"], tmp / "area.log", b"isolated area:"),
        start(["handheld", "run", "--device", HANDHELD, "--gateway", f"127.0.0.1:{gw}",
               "--data-dir", str(hdir), "--area", f"127.0.0.1:{radio}", "--headend-api",
               f"http://127.0.0.1:{api}"], tmp / "handheld.log", b"control socket",
              {**ENV, "AMISTACK_PSK": PSK, "AMISTACK_HEADEND_TOKEN": token}),
    ]  # fmt: skip
    try:
        yield hdir, tmp, off, kd, procs[-1][0].pid
    finally:
        stop_all(procs)


def test_the_head_end_reads_and_disconnects_an_isolated_meter_through_the_handheld(
    handheld: tuple[Path, Path, Path, int, int],
) -> None:
    d, tmp, off, kd, pid = handheld
    assert ask(d, op="login", user="tina", password=PASSWORD)["ok"]
    assert ask(d, op="start", work_order="WO-1")["ok"]
    far = area_meter_id(METERS)
    deadline = time.monotonic() + 90.0
    while True:  # the meters join, push, and the head-end stores their readings
        read = ask(d, op="read", meter=far)
        if read.get("ok") and read.get("result", {}).get("readings", 0) > 0:
            break
        assert time.monotonic() < deadline, (read, (tmp / "he.log").read_text()[-3000:])
        time.sleep(1.0)
    newest = read["result"]["newest"]
    assert newest["meter_id"] == far and newest["forward_wh"] >= 0
    switched = ask(d, op="command", meter=far, kind="disconnect")
    assert switched["ok"] and switched["result"]["state"] == "confirmed", switched
    view = ask(d, op="meters")
    assert view["results"][far]["disconnect"]["state"] == "confirmed"
    # the head-end's audit trail names the technician, and the handheld she acted through
    trail = AuditTrail.open(tmp / "headend", time.time())
    rows = [(e.who, e.via, e.target) for e in trail.entries(limit=1000)
            if e.action == "command.create"]  # fmt: skip
    trail.close()
    assert rows and set(rows) == {("tina", f"handheld:{HANDHELD}", far)}, rows
    assert ask(d, op="logout")["ok"]
    # the meters' C12.22 keys, as the head-end fetches them from the key server
    keys = asyncio.run(_c1222_keys(off, kd))
    assert len(keys) == METERS
    # what the head-end returned was shown, not stored; no key, no PSK: not in the data dir or
    # the log
    secrets = keys + [area_meter_psk(1, i) for i in range(1, METERS + 1)]
    marks = [f'"interval_start": {newest["interval_start"]}'.encode(),
             f'"forward_wh": {newest["forward_wh"]}'.encode()]  # fmt: skip
    marks += [f for k in secrets for f in (k, k.hex().encode(), base64.b64encode(k))]
    for path in [p for p in d.rglob("*") if p.is_file()] + [tmp / "handheld.log"]:
        data = path.read_bytes()
        assert not [m for m in marks if m in data], path
    # and the handheld process's memory holds no meter key or PSK (the meters run in the area's
    # process): every readable mapping searched
    try:
        memory = _memory(pid)
    except PermissionError:  # a kernel that forbids even a parent to read its child (Yama 2/3)
        if IN_CI:
            raise
        pytest.skip("cannot read the handheld's /proc/PID/mem here")
    assert len(memory) > 10_000_000  # the interpreter and its heap were read
    assert bytes.fromhex(PSK) in memory  # the search finds a key that is there: its own PSK
    assert not [k for k in secrets if k in memory]


async def _c1222_keys(office: Path, port: int) -> list[bytes]:
    tls = TlsFiles.client(office, "headend")
    client = KeyDistClient("127.0.0.1", port, tls.ca, tls.cert, tls.key)
    try:
        return [(await client.current_key(area_meter_id(i), "c1222")).key
                for i in range(1, METERS + 1)]  # fmt: skip
    finally:
        await client.close()


def _memory(pid: int) -> bytes:
    """Every readable private or anonymous mapping of process `pid` (as /proc/PID/mem shows)."""
    chunks: list[bytes] = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            lo, hi = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(lo)
                chunks.append(mem.read(hi - lo))
            except (OSError, ValueError, OverflowError):
                continue  # [vvar] and the like
    return b"".join(chunks)
