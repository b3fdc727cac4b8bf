"""`amistack meter --echonet`: the meter's ECHONET Lite node as a real process on loopback UDP
3610, unicast only (--no-multicast: nothing is ever multicast on a real interface), beside the
full meter, and the option checks in-process. Addresses: 127.0.50.0/24 (this helper's range).
Multicast runs only inside a pair of network namespaces the test creates and deletes."""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from tests.cli import keys_argv
from tests.cli import run_cli as run
from tests.conftest import IN_CI
from tests.netns import NetnsPair, in_netns, ip, make_netns_pair

from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import NODE_PROFILE
from amistack.echonet.propmap import decode_propmap
from amistack.runtime.meter_echonet import default_ipv6_interface

HEMS = Eoj(0x05, 0xFF, 0x01)
METER = Eoj(0x02, 0x88, 0x01)
PY = sys.executable
T = TypeVar("T")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


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


def test_a_second_meter_or_a_hems_on_the_meters_address_is_refused(
    two_way: tuple[MeterProcess, Controller],
) -> None:
    """Issue 10: a second node on the same host and address used to bind UDP 3610 beside the
    first (SO_REUSEADDR) and steal its unicast traffic; now it exits 2 with one line naming
    the address, and the first meter keeps answering."""
    _, hems = two_way
    for argv in (
        ["meter", "--echonet", "--echonet-bind", "127.0.50.1", "--no-multicast"],
        ["meter", "--echonet", "--echonet-bind", "127.0.50.1"],
        ["hems", "--meter", "127.0.50.1", "--bind", "127.0.50.1", "--count", "1"],
    ):
        done = subprocess.run(
            [PY, "-m", "amistack.cli.main", *argv], capture_output=True, env=ENV, timeout=30
        )
        err = done.stderr.decode()
        assert done.returncode == 2, err
        assert err.count("\n") == 1 and "UDP 127.0.50.1:3610 is already in use" in err, err
    r = hems.ask(METER, Esv.GET, (Property(0xE7),))
    assert r.esv == Esv.GET_RES


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
    assert code == 2 and "--echonet or --broute alone" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "meter", "--echonet", "--id", "m1")
    assert code == 2 and "missing --psk, --keyserver" in err
    code, _, err = run(capsys, "meter", "--id", "m1", "--psk", "00" * 16, "--keyserver",
                       "127.0.50.9", "--one-way")  # fmt: skip
    assert code == 2 and "goes with --echonet" in err
    code, _, err = run(capsys, "meter", "--echonet", "--once")
    assert code == 2 and "--once" in err
    code, _, err = run(capsys, "meter", "--echonet", "--echonet-bind", "nonsense")
    assert code == 2 and "not an IPv4 or IPv6 address" in err
    code, _, err = run(capsys, "meter", "--echonet", "--echonet-bind", "fe80::1")
    assert code == 2 and "link-local address needs --interface" in err
    code, _, err = run(
        capsys, "meter", "--echonet", "--echonet-bind", "::1", "--echonet-bind", "::"
    )
    assert code == 2 and "at most one IPv4 and one IPv6" in err
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
        [PY, "-m", "amistack.cli.main", *keys_argv(data, "enroll", "meter-e", "--psk", psk)],
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


# -- multicast, only inside a network-namespace pair this test builds ------------------------


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    # no group routes: the case without --interface adds one, the case with it proves it is used
    yield from make_netns_pair("amime", group_routes=False)


@pytest.mark.parametrize("with_interface", [True, False])
def test_startup_inf_and_multicast_get_in_a_netns_pair(
    netns_pair: NetnsPair, with_interface: bool
) -> None:
    """The command with its defaults (0.0.0.0 and ::) inside netns A, with --interface or
    without (then IPv4 multicast follows the route and IPv6 takes the only interface with a
    link-local address): B hears the §4.2 startup INF of D5 on 224.0.23.0 and ff02::1, and a
    multicast Get of D6 from B is answered unicast to B's port 3610 (after the §2.4 delay)."""
    ns_a, ns_b, if_a, if_b = netns_pair.ns_a, netns_pair.ns_b, netns_pair.if_a, netns_pair.if_b
    if not with_interface:
        ip("-n", ns_a, "route", "add", "224.0.0.0/4", "dev", if_a)

    def sockets() -> tuple[socket.socket, socket.socket, socket.socket, socket.socket]:
        index = socket.if_nametoindex(if_b)
        g4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        g4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        g4.bind(("224.0.23.0", 3610))
        mreqn = struct.pack("4s4si", socket.inet_aton("224.0.23.0"), bytes(4), index)
        g4.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        g6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        g6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        g6.bind(("ff02::1", 3610, 0, index))
        mreq6 = socket.inet_pton(socket.AF_INET6, "ff02::1") + struct.pack("@I", index)
        g6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("192.0.2.2", 3610))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind(("192.0.2.2", 0))
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("192.0.2.2"))
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        return g4, g6, rx, tx

    g4, g6, rx, tx = in_netns(ns_b, sockets)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns_a, PY, "-m", "amistack.cli.main", "meter", "--echonet",
         "--seed", "9", *(["--interface", if_a] if with_interface else [])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV,
    )  # fmt: skip
    try:
        for sock in (g4, g6, rx):
            sock.settimeout(6.0)
        infs = []
        for sock in (g4, g6):
            data, src = sock.recvfrom(2048)
            infs.append((Frame.decode(data), src[:2]))
        for inf, _ in infs:
            assert (inf.seoj, inf.deoj, inf.esv) == (NODE_PROFILE, NODE_PROFILE, Esv.INF)
            assert inf.props == (Property(0xD5, b"\x01" + METER.encode()),)
        assert infs[0][1] == ("192.0.2.1", 3610) and infs[1][1][0].startswith("fe80::a")

        get = Frame(0x0D6D, HEMS, NODE_PROFILE, Esv.GET, (Property(0xD6),))
        tx.sendto(get.encode(), ("224.0.23.0", 3610))
        sent = time.monotonic()
        data, src = rx.recvfrom(2048)
        reply = Frame.decode(data)
        assert (reply.tid, reply.esv) == (0x0D6D, Esv.GET_RES) and src == ("192.0.2.1", 3610)
        assert reply.props == (Property(0xD6, b"\x01" + METER.encode()),)
        assert time.monotonic() - sent < 2.0  # within the 1 s §2.4 bound (+ scheduling)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        assert "multicast 224.0.23.0, ff02::1" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        for sock in (g4, g6, rx, tx):
            sock.close()


def test_default_ipv6_interface_from_the_default_route_or_the_only_link_local(
    tmp_path: Path,
) -> None:
    routes, addrs = tmp_path / "ipv6_route", tmp_path / "if_inet6"
    zero = "0" * 32
    routes.write_text(
        f"fe80{'0' * 28} 40 {zero} 00 {zero} 00000100 00000002 00000000 00000001     eth1\n"
        f"{zero} 00 {zero} 00 fd{'0' * 29}1 00000400 00000003 00000000 00000003     eth0\n"
    )
    addrs.write_text(f"fe80{'0' * 27}a 04 40 20 80     eth1\n{'0' * 31}1 01 80 10 80       lo\n")
    assert default_ipv6_interface(str(routes), str(addrs)) == "eth0"
    routes.write_text("")
    assert default_ipv6_interface(str(routes), str(addrs)) == "eth1"
    addrs.write_text(addrs.read_text() + f"fe80{'0' * 27}b 05 40 20 80     eth2\n")
    assert default_ipv6_interface(str(routes), str(addrs)) is None  # two links: ambiguous
    assert default_ipv6_interface(str(tmp_path / "none"), str(addrs)) is None
