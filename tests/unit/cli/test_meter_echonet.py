"""`amistack meter --echonet`: the meter's ECHONET Lite node as a real process on loopback UDP
3610, unicast only (--no-multicast: nothing is ever multicast on a real interface), and the
option checks in-process. Addresses: 127.0.50.0/24 (this helper's range)."""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import IN_CI

from amistack.cli.main import main
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import NODE_PROFILE
from amistack.echonet.propmap import decode_propmap

HEMS = Eoj(0x05, 0xFF, 0x01)
METER = Eoj(0x02, 0x88, 0x01)
PY = sys.executable
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


class MeterProcess:
    def __init__(self, host: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "amistack.cli.main", "meter", "--echonet", "--echonet-bind", host,
             "--no-multicast", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=ENV,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.output = b""
        deadline = time.monotonic() + 20.0
        while b"ECHONET Lite: smart meter" not in self.output:
            if self.proc.poll() is not None:
                self.output += self.proc.stdout.read()
                text = self.output.decode(errors="replace")
                if not IN_CI and "Address already in use" in text:
                    pytest.skip(f"{host}:3610 is busy: {text}")
                pytest.fail(f"meter exited {self.proc.returncode}: {text}")
            assert time.monotonic() < deadline, self.output
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                self.output += os.read(self.proc.stdout.fileno(), 4096)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            assert self.proc.stdout is not None
            self.proc.stdout.close()


class Controller:
    """Sends from an ephemeral port, hears answers on port 3610 (where the node replies)."""

    def __init__(self, host: str, meter: str) -> None:
        self.meter = meter
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.bind((host, 0))
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.rx.bind((host, 3610))
        except OSError as exc:
            self.close()
            if IN_CI or exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                raise
            pytest.skip(f"cannot bind {host}:3610: {exc}")
        self.rx.settimeout(3.0)
        self.tid = 0

    def ask(self, deoj: Eoj, esv: Esv, props: tuple[Property, ...]) -> Frame:
        self.tid += 1
        self.tx.sendto(Frame(self.tid, HEMS, deoj, esv, props).encode(), (self.meter, 3610))
        while True:
            reply = Frame.decode(self.rx.recv(2048))
            if reply.tid == self.tid:
                return reply

    def close(self) -> None:
        self.tx.close()
        self.rx.close()


@pytest.fixture
def two_way() -> Iterator[tuple[MeterProcess, Controller]]:
    meter = MeterProcess("127.0.50.1", "--seed", "3")
    hems = Controller("127.0.50.2", "127.0.50.1")
    try:
        yield meter, hems
    finally:
        hems.close()
        meter.stop()


def test_serves_get_e7_standalone_and_stops_on_sigterm(
    two_way: tuple[MeterProcess, Controller],
) -> None:
    meter, hems = two_way
    assert b"028801 (two-way) on 127.0.50.1:3610; multicast off" in meter.output
    r = hems.ask(METER, Esv.GET, (Property(0xE7),))
    assert r.esv == Esv.GET_RES and r.seoj == METER and len(r.props[0].edt) == 4
    watts = int.from_bytes(r.props[0].edt, "big", signed=True)
    assert -20_000 < watts < 20_000  # a household's load, not a no-data code
    r = hems.ask(METER, Esv.GET, (Property(0xE0), Property(0xE1), Property(0x9F)))
    assert r.esv == Esv.GET_RES and r.props[1].edt == b"\x01"
    assert {0xE3, 0xE4, 0xEB} <= decode_propmap(r.props[2].edt)
    r = hems.ask(NODE_PROFILE, Esv.GET, (Property(0xD6),))
    assert r.props == (Property(0xD6, b"\x01" + METER.encode()),)
    assert meter.stop() == 0


def test_one_way_meter_has_no_reverse_epcs() -> None:
    meter = MeterProcess("127.0.50.3", "--one-way")
    hems = Controller("127.0.50.4", "127.0.50.3")
    try:
        assert b"(one-way)" in meter.output
        r = hems.ask(METER, Esv.GET, (Property(0xE3),))
        assert r.esv == Esv.GET_SNA and r.props == (Property(0xE3),)
    finally:
        hems.close()
        assert meter.stop() == 0


def test_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "meter")
    assert code == 2 and "--echonet alone" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "meter", "--echonet", "--id", "m1")
    assert code == 2 and "missing --psk, --keyserver" in err
    code, _, err = run(capsys, "meter", "--id", "m1", "--psk", "00" * 16, "--keyserver",
                       "127.0.50.9", "--one-way")  # fmt: skip
    assert code == 2 and "go with --echonet" in err
    code, _, err = run(capsys, "meter", "--echonet", "--once")
    assert code == 2 and "--once" in err
    code, _, err = run(capsys, "meter", "--echonet", "--echonet-bind", "nonsense")
    assert code == 2 and "not an IPv4 or IPv6 address" in err
    code, out, _ = run(capsys, "meter", "--help")
    assert code == 0
    for opt in ("--echonet", "--echonet-bind", "--interface", "--one-way", "--seed"):
        assert opt in out


def test_beside_the_full_meter_network_access_and_echonet_both_run(tmp_path: Path) -> None:
    """--echonet with --id/--psk/--keyserver: the PaC authenticates to a real key server
    process while the ECHONET Lite node answers on the LAN; SIGTERM stops both (exit 0)."""
    psk = "00112233445566778899aabbccddeeff"
    data = tmp_path / "ks"
    enroll = subprocess.run(
        [PY, "-m", "amistack.cli.main", "keys", "enroll", "meter-e", "--psk", psk,
         "--data-dir", str(data)],
        capture_output=True, text=True, timeout=30, env=ENV,
    )  # fmt: skip
    assert enroll.returncode == 0, enroll.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.50.6", 0))
        port = s.getsockname()[1]
    log = tmp_path / "keyserver.log"
    with open(log, "wb") as out:
        keyserver = subprocess.Popen(
            [PY, "-m", "amistack.cli.main", "keyserver", "--data-dir", str(data), "--listen",
             f"127.0.50.6:{port}"],
            stdout=out, stderr=subprocess.STDOUT, env=ENV,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20.0
        while b"PANA on 127.0.50.6" not in log.read_bytes():
            assert keyserver.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "key server did not start"
            time.sleep(0.05)
        meter = MeterProcess(
            "127.0.50.7", "--id", "meter-e", "--psk", psk, "--keyserver", f"127.0.50.6:{port}"
        )
        hems = Controller("127.0.50.8", "127.0.50.7")
        try:
            r = hems.ask(METER, Esv.GET, (Property(0xE7),))
            assert r.esv == Esv.GET_RES and len(r.props[0].edt) == 4
            assert meter.proc.stdout is not None
            deadline = time.monotonic() + 20.0
            while b"meter-e: authenticated" not in meter.output:
                assert time.monotonic() < deadline, meter.output
                ready, _, _ = select.select([meter.proc.stdout], [], [], 0.1)
                if ready:
                    meter.output += os.read(meter.proc.stdout.fileno(), 4096)
        finally:
            hems.close()
            assert meter.stop() == 0
    finally:
        keyserver.terminate()
        keyserver.wait(10)
