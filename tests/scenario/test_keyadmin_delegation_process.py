"""The dashboard's SECADM actions between real processes, as an operator sets them up:
`amistack keyserver --admin-listen ... --admin-delegate headend-dashboard` and `amistack headend
--key-admin ...` with the delegator certificate; a SECADM logs in to the head-end's dashboard,
confirms a revocation with the password, and the key server revokes the meter, its own trail
naming the SECADM and the head-end's certificate."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from tests.scenario.test_keyserver_process import ENV, PY, free_port

from amistack.access import AccessStore, AuditTrail, Role
from amistack.access.certroles import user_roles_extension
from amistack.cli.common import open_store
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt import pki
from amistack.meter.node import ap_title_for

PASSWORD = "correct horse battery staple"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def start(log: Path, *argv: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [PY, "-m", "amistack.cli.main", *argv], stdout=out, stderr=subprocess.STDOUT, env=ENV
        )


def wait_for(proc: subprocess.Popen[bytes], log: Path, text: bytes) -> None:
    deadline = time.monotonic() + 20
    while text not in log.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


@pytest.mark.slow  # two services start (~2 s each on a shared 2-core machine)
def test_a_secadm_revokes_from_the_dashboard_of_a_running_head_end(tmp_path: Path) -> None:
    ks, he = tmp_path / "ks", tmp_path / "he"
    pki.init_ca(ks)
    pki.issue_server(ks, "keyserver", ["127.0.0.1"])
    pki.issue_client(ks, "headend", ["c1222"], meters=["*"])
    viewer = [user_roles_extension({Role.VIEWER})]
    pki.issue_client(ks, "headend-dashboard", [], extensions=viewer)
    shutil.copytree(ks / "pki", he / "pki")  # the head-end's copy: the CA and its two certs
    with open_store(ks, create=True) as store:
        store.enroll("meter-1", bytes(range(1, 17)), time.time())
    for d in (ks, he):  # sam is a SECADM of the head-end and of the key server
        people = AccessStore(d, hasher=CHEAP)
        people.add_user("sam", PASSWORD, {Role.SECADM}, time.time())
        people.close()
    repo = SqliteRepository(he)
    repo.register_meter("meter-1", str(ap_title_for("meter-1").absolute()), "c", "c", time.time())
    repo.close()
    admin, keydist, api = free_port(), free_port(), free_port()
    ks_log, he_log = tmp_path / "ks.log", tmp_path / "he.log"
    ks_proc = start(ks_log, "keyserver", "--data-dir", str(ks), "--listen",
                    f"127.0.0.1:{free_port()}", "--admin-listen", f"127.0.0.1:{admin}",
                    "--keydist-listen", f"127.0.0.1:{keydist}",
                    "--admin-delegate", "headend-dashboard")  # fmt: skip
    he_proc = start(he_log, "headend", "--data-dir", str(he), "--keyserver",
                    f"127.0.0.1:{keydist}", "--listen", f"127.0.0.1:{free_port()}",
                    "--api", f"127.0.0.1:{api}", "--key-admin", f"127.0.0.1:{admin}")  # fmt: skip
    try:
        wait_for(ks_proc, ks_log, b"headend-dashboard may revoke and rotate PSKs")
        wait_for(he_proc, he_log, b"REST API on")
        base = f"http://127.0.0.1:{api}"
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())

        def post(path: str, form: dict[str, str]) -> str:
            body = urllib.parse.urlencode(form).encode()
            req = urllib.request.Request(base + path, body, headers={"Origin": base})
            with browser.open(req, timeout=20) as answer:
                return str(answer.read().decode())

        post("/ui/login", {"username": "sam", "password": PASSWORD})
        with browser.open(f"{base}/ui/keys/meter-1/revoke", timeout=10) as page:
            found = re.search(r'name="confirm" value="([^"]+)"', page.read().decode())
        assert found is not None
        done = post("/ui/keys/meter-1/revoke", {"confirm": found.group(1), "password": PASSWORD})
        assert "meter-1 revoked" in done
    finally:
        for proc in (he_proc, ks_proc):
            proc.terminate()
            proc.wait(15)
    with open_store(ks, create=False) as store:
        assert [d.revoked_at is not None for d in store.list_devices()] == [True]
    trail = AuditTrail.open(ks, time.time())
    try:
        entries = [(e.who, e.via, e.action, e.outcome) for e in trail.entries(limit=100)]
    finally:
        trail.close()
    revoke = [e for e in entries if e[2] == "keys.revoke"]
    assert [(w, a, o) for w, _, a, o in revoke] == [
        ("sam", "keys.revoke", "requested"),
        ("sam", "keys.revoke", "ok"),
    ]
    assert revoke[0][1].startswith("delegated by headend-dashboard (cert:")
