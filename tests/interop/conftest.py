"""Fixtures for interop tests against real peers: hostapd as a RADIUS EAP server, and our own
RadiusEapServer on a real UDP socket in a thread. Processes are always killed on teardown."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import require_tool

from amistack.radius.server import RadiusEapServer

RADIUS_SECRET = b"amistack-interop"
PSK_HEX = "0123456789abcdef0123456789abcdef"
PSK_IDENTITY = b"psk.user@example.com"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def udp_port_bound(port: int) -> bool:
    """Whether some socket is bound to UDP `port` (Linux /proc), i.e. the daemon is listening."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local = line.split()[1]
            if int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass(frozen=True)
class HostapdRadius:
    addr: tuple[str, int]
    secret: bytes
    identity: bytes
    psk: bytes
    log: Path


def _start_hostapd(
    hostapd: str, tmp_path: Path, port: int, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes] | None:
    """hostapd listening on `port`, or None when it could not bind (the port was taken).
    `extra`: more hostapd.conf lines (the EAP-TLS server's certificates)."""
    conf = tmp_path / f"hostapd-{port}.conf"
    conf.write_text(
        "\n".join(
            [
                "driver=none",
                f"interface=amias{port}",  # no real interface is used with driver=none
                "logger_stdout=-1",
                "logger_stdout_level=0",
                "eap_server=1",
                f"eap_user_file={tmp_path / 'eap_user'}",
                f"radius_server_clients={tmp_path / 'radius_clients'}",
                f"radius_server_auth_port={port}",
                "server_id=hostapd",
                *extra,
                "",
            ]
        )
    )
    log = tmp_path / "hostapd.log"
    with (tmp_path / "hostapd.stdout").open("ab") as out:
        proc = subprocess.Popen(
            [hostapd, "-dd", "-f", str(log), str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while not udp_port_bound(port):
            if proc.poll() is not None:
                return None
            if time.monotonic() > deadline:
                pytest.fail(f"hostapd did not bind UDP {port}")
            time.sleep(0.05)
    except BaseException:
        stop_process(proc)
        raise
    return proc


@pytest.fixture
def hostapd_radius(tmp_path: Path) -> Iterator[HostapdRadius]:
    """hostapd 2.x with driver=none as an EAP-PSK RADIUS server on a free loopback port."""
    hostapd = require_tool("hostapd")
    (tmp_path / "eap_user").write_text(f'"{PSK_IDENTITY.decode()}" PSK {PSK_HEX}\n')
    (tmp_path / "radius_clients").write_text(f"127.0.0.1/32 {RADIUS_SECRET.decode()}\n")
    for _ in range(3):  # another process may grab the free port before hostapd binds it
        port = free_udp_port()
        proc = _start_hostapd(hostapd, tmp_path, port)
        if proc is not None:
            break
    else:
        log = tmp_path / "hostapd.log"
        detail = log.read_text()[-2000:] if log.exists() else ""
        pytest.fail(f"hostapd would not start: {detail}")
    try:
        yield HostapdRadius(
            ("127.0.0.1", port),
            RADIUS_SECRET,
            PSK_IDENTITY,
            bytes.fromhex(PSK_HEX),
            tmp_path / "hostapd.log",
        )
    finally:
        stop_process(proc)


class ThreadedRadiusServer:
    """Our sans-IO RadiusEapServer behind a plain blocking UDP socket loop in a thread."""

    def __init__(self, server: RadiusEapServer) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="radius-server", daemon=True)
        self.errors: list[BaseException] = []

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data, addr = self.sock.recvfrom(4096)
                except TimeoutError:
                    self.server.handle_timer(time.monotonic())
                    continue
                answer = self.server.handle_datagram(data, (addr[0], addr[1]), time.monotonic())
                if answer is not None:
                    self.sock.sendto(answer, addr)
        except BaseException as exc:  # surfaced by the test through `errors`
            self.errors.append(exc)

    def __enter__(self) -> ThreadedRadiusServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def threaded_radius_server() -> Iterator[Callable[[RadiusEapServer], ThreadedRadiusServer]]:
    started: list[ThreadedRadiusServer] = []

    def start(server: RadiusEapServer) -> ThreadedRadiusServer:
        runner = ThreadedRadiusServer(server).__enter__()
        started.append(runner)
        return runner

    try:
        yield start
    finally:
        for runner in started:
            runner.__exit__()
