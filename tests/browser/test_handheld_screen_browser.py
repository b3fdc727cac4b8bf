"""The technician's screen in a real browser (Debian's headless Chromium through chromedriver) at
phone width (390 px), against real processes on loopback: the key server, the handheld gateway
and `amistack handheld run --screen` with its simulated isolated area of 6 meters. An OPERATOR
logs in, starts a work session, watches the meters join and the route table fill live (SSE),
reads a meter, is offered no commission, and logs out; the page never scrolls sideways. With
AMISTACK_SCREENSHOTS=DIR the screen's screenshot lands there (docs/img holds the committed one)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from tests.browser.chrome import headless_chromium
from tests.scenario.test_handheld_processes import (
    ENV,
    HANDHELD,
    HANDHELD_PSK,
    PASSWORD,
    start,
    stop_all,
)
from tests.scenario.test_keyserver_process import free_port

from amistack.access import AccessStore, Role
from amistack.cli.common import open_store
from amistack.keymgmt import pki
from amistack.sim.handheld_area import area_meter_id, area_meter_psk

# the dev extras bring selenium; without it the `browser` fixture skips (fails under CI=true)
with contextlib.suppress(ImportError):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.slow
METERS = 6
PHONE = (390, 844)


def tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The office (key server, gateway) and a handheld serving its screen: the screen's URL."""
    tmp = tmp_path_factory.mktemp("screen")
    off, hdir = tmp / "office", tmp / "handheld"
    with open_store(off, create=True) as store:
        store.enroll(HANDHELD, bytes.fromhex(HANDHELD_PSK), time.time())
        for i in range(1, METERS + 1):
            store.enroll(area_meter_id(i), area_meter_psk(1, i), time.time())
    pki.init_ca(off)
    pki.issue_server(off, "handheld-gateway", ["127.0.0.1"])
    pki.issue_client(off, HANDHELD, ["handheld"], meters=["field-meter-*"])
    (hdir / "pki" / "clients").mkdir(parents=True, mode=0o700)
    for rel in ("ca.crt", f"clients/{HANDHELD}.crt", f"clients/{HANDHELD}.key"):
        shutil.copy2(off / "pki" / rel, hdir / "pki" / rel)
    users = AccessStore(hdir, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    users.add_user("tina", PASSWORD, [Role.OPERATOR], time.time())
    users.close()
    ks_port, gw_port, screen_port = free_port(), free_port(), tcp_port()
    procs = [
        start(["keyserver", "--data-dir", str(off), "--listen", f"127.0.0.1:{ks_port}",
               "--relay", "127.0.0.1", "--mesh-pan", "0x0f1e"], tmp / "ks.log",
              b"PANA on 127.0.0.1"),
        start(["handheld", "gateway", "--listen", f"127.0.0.1:{gw_port}", "--keyserver",
               f"127.0.0.1:{ks_port}", "--data-dir", str(off)], tmp / "gw.log",
              b"handheld gateway: on"),
        start(["handheld", "run", "--device", HANDHELD, "--gateway", f"127.0.0.1:{gw_port}",
               "--data-dir", str(hdir), "--meters", str(METERS),
               "--screen", f"127.0.0.1:{screen_port}"], tmp / "handheld.log",
              b"control socket", {**ENV, "AMISTACK_PSK": HANDHELD_PSK}),
    ]  # fmt: skip
    try:
        yield f"http://127.0.0.1:{screen_port}"
    finally:
        stop_all(procs)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from headless_chromium(*PHONE)


def text_of(d: Any, css: str) -> str:
    return str(d.find_element(By.CSS_SELECTOR, css).text)


def test_a_technician_works_an_isolated_area_from_the_phone_sized_screen(
    browser: Any, screen: str
) -> None:
    d = browser
    wait = WebDriverWait(d, 30, poll_frequency=0.1)
    d.get(screen + "/")
    assert d.current_url.endswith("/login")
    d.find_element(By.ID, "username").send_keys("tina")
    d.find_element(By.ID, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(lambda d: d.current_url.endswith("/work"))
    assert "tina" in text_of(d, "header .who")
    wait.until(lambda d: text_of(d, "#live") == "live")

    d.find_element(By.ID, "start").click()
    wait.until(lambda d: "WO-1 started" in text_of(d, "#result"))
    # the meters join through the handheld; the page learns it from the stream alone
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#routes tr.route")) == METERS)
    wait.until(lambda d: text_of(d, "#meters").count("joined") - text_of(d, "#meters").count(
        "not joined") == METERS)  # fmt: skip
    assert text_of(d, "#state") == "serving"
    assert " hops" in text_of(d, "#meters")  # some meters are several hops from the handheld
    ops = {b.get_attribute("data-op") for b in d.find_elements(By.CSS_SELECTOR, "#meters button")}
    assert ops == {"read", "disconnect", "connect"}  # an OPERATOR: no commission offered

    first = area_meter_id(1)
    d.find_element(By.CSS_SELECTOR, f'tr[data-meter="{first}"] button[data-op="read"]').click()
    wait.until(lambda d: f"read {first}" in text_of(d, "#result"))
    width = d.execute_script("return document.documentElement.scrollWidth")
    assert width <= PHONE[0], f"the screen scrolls sideways at {PHONE[0]} px: {width}"
    if shots := os.environ.get("AMISTACK_SCREENSHOTS"):
        d.save_screenshot(str(Path(shots) / "handheld-screen.png"))

    d.find_element(By.CSS_SELECTOR, "header form button").click()
    wait.until(lambda d: d.current_url.endswith("/login"))
    d.get(screen + "/work")
    assert d.current_url.endswith("/login")  # the session ended with the logout
