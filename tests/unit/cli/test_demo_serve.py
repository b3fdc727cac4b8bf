"""`amistack demo --serve`'s serving phase (cli/demo_serve.py) on a demo-like data directory:
the key server, the head-end with the dashboard and a meter come up, the printed operator
login works through the dashboard's form, the meter's readings arrive, the SECADM's Keys page
offers Revoke through the key server's admin endpoint (the demo's PKI), and it stops cleanly."""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from amistack.cli.common import open_store
from amistack.cli.demo_serve import PEOPLE, serve_dashboard
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt import pki
from amistack.meter.node import ap_title_for
from amistack.runtime.loop import new_event_loop

DEVICE = "meter-0001"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _login(url: str, name: str, password: str) -> int:
    body = urllib.parse.urlencode({"username": name, "password": password}).encode()
    origin = url.split("/ui/")[0]
    req = urllib.request.Request(f"{origin}/ui/login", body, headers={"Origin": origin})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _keys_page(url: str, name: str, password: str) -> str:
    """The Keys page as `name`, logged in through the form (the session cookie kept)."""
    origin = url.split("/ui/")[0]
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    body = urllib.parse.urlencode({"username": name, "password": password}).encode()
    opener.open(urllib.request.Request(f"{origin}/ui/login", body, headers={"Origin": origin}))
    with opener.open(f"{origin}/ui/keys", timeout=10) as r:
        return str(r.read().decode())


@pytest.mark.slow
def test_serve_dashboard(tmp_path: Path) -> None:
    psk = secrets.token_bytes(16)
    store = open_store(tmp_path, create=True)
    store.enroll(DEVICE, psk, time.time())
    store.close()
    pki.init_ca(tmp_path)  # as the demo's access chapter leaves it
    pki.issue_server(tmp_path, "keyserver", ["127.0.0.1"])
    (tmp_path / "headend").mkdir(mode=0o700)
    repo = SqliteRepository(tmp_path / "headend")
    repo.register_meter(DEVICE, str(ap_title_for(DEVICE).absolute()), "conc-1", "c", time.time())
    repo.commission_meter(DEVICE, time.time())
    got: dict[str, object] = {}

    async def main() -> None:
        stop = asyncio.Event()
        up = asyncio.Event()

        def ready(url: str, passwords: dict[str, str]) -> None:
            got.update(url=url, passwords=passwords)
            up.set()

        task = asyncio.create_task(serve_dashboard(tmp_path, {DEVICE: psk}, stop=stop, ready=ready))
        await asyncio.wait_for(up.wait(), 20)
        url = str(got["url"])
        passwords = got["passwords"]
        assert isinstance(passwords, dict) and set(passwords) == set(PEOPLE)
        status = await asyncio.to_thread(_login, url, "operator", passwords["operator"])
        assert status == 303
        assert await asyncio.to_thread(_login, url, "operator", "not it at all") == 401
        keys = await asyncio.to_thread(_keys_page, url, "secadm", passwords["secadm"])
        assert f'href="/ui/keys/{DEVICE}/revoke"' in keys  # enabled: the delegation is there
        deadline = time.monotonic() + 20
        while repo.count_readings(DEVICE) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert repo.count_readings(DEVICE) > 0
        stop.set()
        await asyncio.wait_for(task, 30)

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        repo.close()
