"""`amistack hems` in-process against a real ECHONET Lite smart-meter node (EchonetDriver on its
own event loop in a thread) over loopback UDP 3610, unicast (--meter): nothing is multicast.
Addresses: 127.0.10.0/24 (this helper's range)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from tests.cli import run_cli as run
from tests.conftest import IN_CI

from amistack.cli.hems import EnergyScale, current_amps, history, signed
from amistack.crypto.rand import seeded_random
from amistack.echonet.frame import Eoj
from amistack.echonet.node import EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.meter.model import MeterModel
from amistack.runtime.echonet import EchonetDriver
from amistack.runtime.loop import new_event_loop

METER_HOST = "127.0.10.21"
HEMS_HOST = "127.0.10.22"
NOBODY_HOST = "127.0.10.23"
METER = Eoj(0x02, 0x88, 0x01)


class MeterThread:
    """Our smart-meter node served on METER_HOST:3610 by an event loop in a thread."""

    def __init__(self) -> None:
        self.meter = SmartMeterObject(MeterModel(5))
        self.node = EchonetNode(
            NodeProfile([]), [self.meter], seeded_random(5), NodeConfig(multicast_groups=())
        )
        self.loop = new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10.0)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.driver = EchonetDriver(self.node, wall_clock=True, loop=self.loop)

        async def open_() -> None:
            await self.driver.open(ipv4=METER_HOST, multicast=False)

        try:
            self.loop.run_until_complete(open_())
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        def stop() -> None:
            self.driver.close()
            self.loop.stop()

        if self.error is None:
            self.loop.call_soon_threadsafe(stop)
            self.thread.join(5.0)
        self.loop.close()


@pytest.fixture
def meter() -> Iterator[MeterThread]:
    m = MeterThread()
    if m.error is not None:
        m.close()
        if IN_CI or not isinstance(m.error, OSError) or m.error.errno != errno.EADDRINUSE:
            raise m.error
        pytest.skip(f"cannot bind {METER_HOST}:3610: {m.error}")
    try:
        yield m
    finally:
        m.close()


def test_polls_power_current_energy_and_history_as_json(
    capsys: pytest.CaptureFixture[str], meter: MeterThread
) -> None:
    code, out, err = run(
        capsys,
        "hems", "--meter", METER_HOST, "--bind", HEMS_HOST, "--count", "2", "--interval", "0.1",
        "--history-day", "1", "--json", "--timeout", "3",
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:
        obj = json.loads(line)
        assert obj["meter"] == METER_HOST and obj["eoj"] == "028801"
        assert obj["power_w"] is None or isinstance(obj["power_w"], int)
        assert set(obj["current_a"]) == {"r", "t"}
        assert isinstance(obj["energy_kwh"], float) and obj["energy_kwh"] > 0
        assert obj["history"]["day"] == 1 and len(obj["history"]["kwh"]) == 48
    assert meter.meter.history_day == 1  # E5 was set on the meter


def test_polls_as_lines(capsys: pytest.CaptureFixture[str], meter: MeterThread) -> None:
    code, out, err = run(
        capsys, "hems", "--meter", METER_HOST, "--bind", HEMS_HOST, "--count", "1", "--timeout", "3"
    )
    assert code == 0, err
    [line] = out.splitlines()
    assert f" {METER_HOST} power " in line and " kWh" in line and "current R " in line


def test_no_meter_is_a_one_line_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "hems", "--meter", NOBODY_HOST, "--bind", HEMS_HOST, "--count", "1",
        "--timeout", "0.6",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err == (
        f"amistack hems: error: no smart meter (class 0x0288) found at {NOBODY_HOST} within 0.6 s\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--history-day", "100"], "--history-day must be 0..99"),
        (["--timeout", "0"], "--timeout > 0"),
        (["--meter", "::1", "--bind", "127.0.10.22"], "one family"),
    ],
)
def test_option_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _, err = run(capsys, "hems", *argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_value_decoding() -> None:
    assert signed(b"\x00\x00\x01\x00", 0x7FFFFFFE) == 256
    assert signed(b"\xff\xff\xff\x9c", 0x7FFFFFFE) == -100  # reverse flow
    assert signed(b"\x7f\xff\xff\xfe", 0x7FFFFFFE) is None
    assert current_amps(b"\x00\x7b\x7f\xfe") == (12.3, None)
    scale = EnergyScale(coefficient=10, unit_tenths_wh=1_000)  # D3=10, E1=0x01 (0.1 kWh)
    assert scale.kwh(12345) == 12345.0 and scale.kwh(None) is None
    edt = b"\x00\x01" + b"\x00\x00\x00\x0a" + b"\xff\xff\xff\xfe" * 47
    day, values = history(edt, EnergyScale())
    assert day == 1 and values[0] == 1.0 and values[1:] == [None] * 47
    assert history(b"\x00\x01", EnergyScale()) == (None, [])


def _hems_process(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "amistack.cli.main", "hems", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_polls_forever_until_sigterm(meter: MeterThread) -> None:
    proc = _hems_process("--meter", METER_HOST, "--bind", HEMS_HOST, "--interval", "0.1")
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]  # blocks until three polls printed
        assert all(f" {METER_HOST} power " in line for line in lines), lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.communicate()


def _wait_bound(host: str, port: int, timeout: float = 15.0) -> None:
    """Until a UDP socket is bound to host:port (as /proc/net/udp shows it)."""
    packed = socket.inet_aton(host)
    local = f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"
    deadline = time.monotonic() + timeout
    while True:
        with open("/proc/net/udp") as f:
            if any(line.split()[1] == local for line in f.readlines()[1:]):
                return
        assert time.monotonic() < deadline, f"nothing bound {host}:{port}"
        time.sleep(0.05)


def test_ctrl_c_while_looking_for_the_meter() -> None:
    proc = _hems_process("--meter", NOBODY_HOST, "--bind", HEMS_HOST, "--timeout", "60")
    try:
        _wait_bound(HEMS_HOST, 3610)  # its loop runs (signal handlers are set before binding)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
    finally:
        proc.kill()
        proc.communicate()
