"""`amistack meter --broute`: the meter's B route as a real process on loopback UDP (IPv4 and
IPv6), reached by a HEMS (`BrouteController` over real UDP) that authenticates with the B-route
ID and password and reads E7; a wrong password is refused; and the option checks."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from tests.cli import run_cli as run

from amistack.broute import AttemptFailed, BrouteCredentials, BrouteHems, LinkUp
from amistack.broute.controller import BrouteController
from amistack.crypto import seeded_random
from amistack.echonet.controller import ControllerConfig, EchonetController
from amistack.echonet.frame import Eoj, Esv
from amistack.runtime.echonet_controller import ControllerDriver
from amistack.runtime.loop import new_event_loop
from amistack.runtime.meter_echonet import default_model
from amistack.runtime.udp import EngineDriver

RBID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "PASSWORD1234"
SMART_METER = Eoj(0x02, 0x88, 0x01)


def _seed_without_outage_now() -> int:
    """A model seed whose seeded supply failures miss the next ten minutes of wall time: the
    process meters the real clock, and an outage (E7 = no data) may fall on any day."""
    now = time.time()
    return next(
        seed for seed in range(1, 100)
        if not default_model(seed, now).outages_between(now - 60, now + 600)
    )  # fmt: skip


def _start_meter(bind: str) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AMISTACK_BROUTE_PASSWORD": PASSWORD}
    proc = subprocess.Popen(
        [sys.executable, "-m", "amistack.cli.main", "meter", "--broute", bind,
         "--broute-id", RBID, "--seed", str(_seed_without_outage_now())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + 20.0
    while (m := re.search(rb"on \[?([0-9a-f.:]+)\]?:(\d+) \(PANA PAA", out)) is None:
        if proc.poll() is not None:
            pytest.fail(f"meter exited {proc.returncode}: {out.decode(errors='replace')}")
        assert time.monotonic() < deadline, out
        if select.select([proc.stdout], [], [], 0.1)[0]:
            out += os.read(proc.stdout.fileno(), 4096)
    return proc, (m.group(1).decode(), int(m.group(2)))


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()


async def _read_e7(meter: tuple[str, int], host: str) -> bytes:
    config = ControllerConfig(multicast_groups=(), rediscover_interval=None)
    hems = BrouteController(
        BrouteHems(BrouteCredentials(RBID, PASSWORD), meter, seeded_random(1)),
        EchonetController(config, seeded_random(2)),
    )
    driver = ControllerDriver(hems)
    try:
        await driver.bind(host, 0)
        driver.start()
        assert await driver.wait_for_node(SMART_METER.class_code, timeout=10) is not None
        answer = await driver.get(hems.meter, SMART_METER, [0xE7], timeout=10)
        assert answer.esv == Esv.GET_RES
        return answer.props[0].edt
    finally:
        driver.close()


async def _refused(meter: tuple[str, int], host: str) -> str:
    events: asyncio.Queue[Any] = asyncio.Queue()
    wrong = BrouteHems(BrouteCredentials(RBID, "WRONGPASS123"), meter, seeded_random(3))
    driver = EngineDriver(wrong, events=events)
    try:
        await driver.bind(host, 0)
        wrong.start(driver.now())
        driver.kick()
        while True:
            ev = await asyncio.wait_for(events.get(), 10)
            assert not isinstance(ev, LinkUp), "a wrong password was accepted"
            if isinstance(ev, AttemptFailed):
                return ev.reason
    finally:
        driver.close()


@pytest.mark.parametrize("bind,host", [("127.0.50.20:0", "127.0.50.21"), ("[::1]:0", "::1")])
def test_hems_reads_the_meter_process_over_the_broute(bind: str, host: str) -> None:
    proc, addr = _start_meter(bind)
    loop = new_event_loop()
    try:
        reason = loop.run_until_complete(_refused(addr, host))
        assert "authentication failed" in reason
        edt = loop.run_until_complete(_read_e7(addr, host))
        assert len(edt) == 4 and edt != b"\x7f\xff\xff\xfe"  # a live power value
    finally:
        loop.close()
        assert _stop(proc) == 0


def test_broute_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "meter", "--broute", "127.0.50.22:0")
    assert code == 2 and "--broute needs --broute-id and --broute-password" in err
    code, _, err = run(
        capsys, "meter", "--broute", "127.0.50.22:0", "--broute-id", "short",
        "--broute-password", PASSWORD,
    )  # fmt: skip
    assert code == 2 and err.startswith("amistack") and "32" in err
    code, _, err = run(capsys, "meter", "--echonet", "--broute-id", RBID)
    assert code == 2 and "go with --broute" in err


def test_amistack_hems_over_the_broute(capsys: pytest.CaptureFixture[str]) -> None:
    """`amistack hems --broute` against `amistack meter --broute`: one poll with history."""
    proc, (host, port) = _start_meter("127.0.50.23:0")
    try:
        os.environ["AMISTACK_BROUTE_PASSWORD"] = PASSWORD
        code, out, _ = run(
            capsys, "hems", "--broute", f"{host}:{port}", "--broute-id", RBID, "--count", "1",
            "--history-day", "1", "--json",
        )  # fmt: skip
    finally:
        os.environ.pop("AMISTACK_BROUTE_PASSWORD", None)
        assert _stop(proc) == 0
    assert code == 0
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["meter"] == host and isinstance(doc["power_w"], int)
    assert doc["history"]["day"] == 1 and len(doc["history"]["kwh"]) == 48


def test_amistack_hems_broute_wrong_password(capsys: pytest.CaptureFixture[str]) -> None:
    """The meter's refusal is final: one line at once, not retries until --timeout."""
    proc, (host, port) = _start_meter("127.0.50.24:0")
    try:
        t0 = time.monotonic()
        code, _, err = run(
            capsys, "hems", "--broute", f"{host}:{port}", "--broute-id", RBID,
            "--broute-password", "WRONGPASS123", "--timeout", "20",
        )  # fmt: skip
        took = time.monotonic() - t0
    finally:
        assert _stop(proc) == 0
    assert code == 2 and "refused the B-route ID/password" in err and err.count("\n") == 1
    assert took < 5.0
