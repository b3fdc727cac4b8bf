"""The technician's screen in a real browser (Debian's headless Chromium through chromedriver) at
phone width (390 px), against real processes on loopback: the key server, the head-end, the
handheld gateway and `amistack handheld run --screen --headend-api` with its simulated isolated
area of 6 meters pushing C12.22 to the head-end through the handheld. An OPERATOR logs in,
starts a work session, watches the meters join and the route table fill live (SSE), reads a
meter, disconnects and reconnects it from the screen (the head-end reaches the meter back
through the handheld, the results table shows each command confirmed with the relay's
read-back), is offered no commission, and logs out; then a VIEWER finds no switching button and
a forged disconnect is refused by the screen's server. The page never scrolls sideways. With
AMISTACK_SCREENSHOTS=DIR the screen's screenshot lands there (docs/img holds the committed
one)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.browser.chrome import headless_chromium
from tests.scenario.test_handheld_headend import provision
from tests.scenario.test_handheld_processes import ENV, HANDHELD, HANDHELD_PSK, PASSWORD, stop_all
from tests.scenario.test_keyserver_process import free_port

from amistack.access import Role
from amistack.sim.handheld_area import area_meter_id

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
    """The office (key server, head-end, gateway) and a handheld serving its screen: the
    screen's URL."""
    tmp = tmp_path_factory.mktemp("screen")
    off, he, hdir = tmp / "office", tmp / "headend", tmp / "handheld"
    token = provision(tmp, METERS, {"tina": Role.OPERATOR, "vic": Role.VIEWER})
    ks, kd, gw, c1222, api = (free_port() for _ in range(5))
    screen_port = tcp_port()
    procs = start_all([
        (["keyserver", "--data-dir", str(off), "--listen", f"127.0.0.1:{ks}", "--relay",
          "127.0.0.1", "--mesh-pan", "0x0f1e", "--keydist-listen", f"127.0.0.1:{kd}"],
         tmp / "ks.log", b"PANA on 127.0.0.1", ENV),
        (["headend", "--data-dir", str(he), "--keyserver", f"127.0.0.1:{kd}", "--listen",
          f"127.0.0.1:{c1222}", "--api", f"127.0.0.1:{api}"], tmp / "he.log", b"127.0.0.1", ENV),
        (["handheld", "gateway", "--listen", f"127.0.0.1:{gw}", "--keyserver", f"127.0.0.1:{ks}",
          "--headend", f"127.0.0.1:{c1222}", "--data-dir", str(off)], tmp / "gw.log",
         b"handheld gateway: on", ENV),
        (["handheld", "run", "--device", HANDHELD, "--gateway", f"127.0.0.1:{gw}", "--data-dir",
          str(hdir), "--meters", str(METERS), "--screen", f"127.0.0.1:{screen_port}",
          "--headend-api", f"http://127.0.0.1:{api}", "--time-scale", "900"],
         tmp / "handheld.log", b"control socket",
         {**ENV, "AMISTACK_PSK": HANDHELD_PSK, "AMISTACK_HEADEND_TOKEN": token}),
    ])  # fmt: skip
    try:
        yield f"http://127.0.0.1:{screen_port}"
    finally:
        stop_all(procs)


def start_all(specs: list[tuple[list[str], Path, bytes, dict[str, str]]]) -> list[Any]:
    """`start` for independent processes, all at once (start-up is most of this test's time):
    each is launched, then each awaited."""
    procs = []
    for argv, log, _, env in specs:
        out = open(log, "ab")  # noqa: SIM115 - closed by stop_all
        cmd = [sys.executable, "-m", "amistack.cli.main", "-v", *argv]
        procs.append((subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env), out))
    deadline = time.monotonic() + 90.0  # a bound for a stuck start, not a timing claim
    try:
        for (proc, _), (_, log, ready, _) in zip(procs, specs, strict=True):
            while ready not in log.read_bytes():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
    except BaseException:
        stop_all(procs)
        raise
    return procs


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
    row = f'tr[data-meter="{first}"]'

    def answer(op: str) -> str:
        """The results table's newest row for `first` and `op` ("" until there is one)."""
        rows = d.find_elements(
            By.CSS_SELECTOR, f'#results tr[data-meter="{first}"][data-op="{op}"]'
        )
        return str(rows[0].find_element(By.CSS_SELECTOR, ".outcome").text) if rows else ""

    # a read until the head-end has the meter's first push (it learns the meter's address there)
    deadline = time.monotonic() + 20.0
    while not re.match(r"[1-9]\d* readings", answer("read")):
        assert time.monotonic() < deadline, answer("read")
        d.find_element(By.CSS_SELECTOR, f'{row} button[data-op="read"]').click()
        wait.until(lambda d: f"read {first}" in text_of(d, "#result"))
        time.sleep(0.5)
    assert "Wh" in answer("read")  # the newest reading, as the head-end returned it
    # disconnect, then connect: the head-end reaches the meter through the handheld and reads
    # the relay back; the table shows each command's outcome
    for op, relay in (("disconnect", "open"), ("connect", "closed")):
        d.find_element(By.CSS_SELECTOR, f'{row} button[data-op="{op}"]').click()
        wait.until(lambda d, op=op: answer(op) != "")
        assert answer(op) == f"confirmed, relay read back {relay}", answer(op)
    assert [
        r.get_attribute("data-op") for r in d.find_elements(By.CSS_SELECTOR, "#results tr.answer")
    ][:2] == ["connect", "disconnect"]  # newest first
    width = d.execute_script("return document.documentElement.scrollWidth")
    assert width <= PHONE[0], f"the screen scrolls sideways at {PHONE[0]} px: {width}"
    if shots := os.environ.get("AMISTACK_SCREENSHOTS"):  # the results table
        d.execute_script("document.getElementById('results').scrollIntoView()")
        d.save_screenshot(str(Path(shots) / "handheld-screen.png"))

    d.find_element(By.CSS_SELECTOR, "header form button").click()
    wait.until(lambda d: d.current_url.endswith("/login"))
    d.get(screen + "/work")
    assert d.current_url.endswith("/login")  # the session ended with the logout

    # a VIEWER: no switching button, and a forged disconnect is refused by the screen's server
    d.find_element(By.ID, "username").send_keys("vic")
    d.find_element(By.ID, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(lambda d: d.current_url.endswith("/work"))
    ops = {b.get_attribute("data-op") for b in d.find_elements(By.CSS_SELECTOR, "#meters button")}
    assert ops == {"read"}
    forged = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/meters/{first}/disconnect', {{method: 'POST'}})"
        ".then(r => r.text().then(t => done([r.status, t])));"
    )
    assert forged[0] == 403 and "your roles do not allow disconnect" in forged[1], forged
    d.find_element(By.CSS_SELECTOR, "header form button").click()
    wait.until(lambda d: d.current_url.endswith("/login"))
