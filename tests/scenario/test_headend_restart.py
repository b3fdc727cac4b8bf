"""A head-end restart (kill -9 mid-collection) is invisible to meters.

The meters' PANA sessions and C12.22 keys live on across a head-end restart, and so do their
replay windows for the head-end. A head-end that started its invocation ids at 1 again was
refused as stale (or replayed) until its ids caught up, and every refusal became an
AUTH_FAILURE in the meter's signed log. The head-end runs as a real process (runtime, UDP on
loopback, SQLite); the meter is the sans-IO `MeterNode` on a real socket in this process,
pushing interval data; the head-end is killed with SIGKILL while pushes are in flight and
restarted on the same data directory and port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.contexts import make_ctx

from amistack.c1222.acse import ApTitle
from amistack.c1222.events import ResponseReceived
from amistack.c1222.tables import LoadProfile
from amistack.crypto import seeded_random
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.meter.events import AuthFailure
from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.node import MeterNode, MeterNodeConfig
from amistack.pana.keys import PanaSecurityContext
from amistack.runtime.headend import DEFAULT_TITLE, INVOCATION_ID_FILE

REPO = Path(__file__).resolve().parents[2]
TITLE = ApTitle((0, 7), relative=True)
HEADEND_TITLE = ApTitle.parse(DEFAULT_TITLE)

CHILD = """
import asyncio, sys
from amistack.headend.collector import CollectorConfig, Mode
from amistack.headend.keys import DirectorySource
from amistack.keymgmt.keyring import KeyRingDirectory
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.runtime.headend import run_headend
from tests.scenario.test_headend_restart import context

directory = KeyRingDirectory(PurposeRegistry())
directory.install(b"m-7", context(), 3600.0, float(sys.argv[3]))

def ready(rt):
    print("READY", flush=True)

asyncio.run(run_headend(sys.argv[1], listen=[("127.0.0.1", int(sys.argv[2]))], api=None,
    key_source=DirectorySource(directory), collector=CollectorConfig(mode=Mode.PUSHED),
    ready=ready))
"""


def context() -> PanaSecurityContext:
    """The meter's PANA session (both processes derive the same C12.22 key from it)."""
    return make_ctx(0x77, 1, seed=7)


def _start(data_dir: Path, port: int, t_keys: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'src'}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir), str(port), repr(t_keys)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


class Meter:
    def __init__(self, headend: tuple[str, int], t_keys: float) -> None:
        ring = KeyRing(b"m-7", PurposeRegistry())
        ring.install(context(), 3600.0, t_keys)
        self.node = MeterNode(
            MeterNodeConfig(TITLE, HEADEND_TITLE),
            MeterModel(7, MeterConfig(install_time=t_keys - 40 * DAY_S)),
            ring,
            seeded_random(8),
        )
        self.headend = headend
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.01)
        self.acked: set[int] = set()
        self.auth_failures: list[AuthFailure] = []

    def push(self) -> int:
        now = time.time()
        full = self.node.tables.load_profile(15, now)
        data = LoadProfile(15, full.end_time, full.intervals[-2:]).encode()
        rid = self.node.server.push(self.headend, HEADEND_TITLE, 64, data, now)
        self.pump(0.0)
        return rid

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            now = time.time()
            timer = self.node.get_timer()
            if timer is not None and timer <= now:
                self.node.handle_timer(now)
            for data, addr in self.node.datagrams_to_send(now):
                self.sock.sendto(data, addr)
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                pass
            else:
                self.node.receive_datagram(data, addr, time.time())
            while (ev := self.node.next_event()) is not None:
                if isinstance(ev, ResponseReceived) and ev.ok:
                    self.acked.add(ev.request_id)
                elif isinstance(ev, AuthFailure):
                    self.auth_failures.append(ev)
            if time.monotonic() >= end:
                return

    def wait_acked(self, rid: int, timeout: float) -> float:
        t0 = time.monotonic()
        while rid not in self.acked:
            assert time.monotonic() - t0 < timeout, f"push {rid} not acknowledged"
            self.pump(0.05)
        return time.monotonic() - t0


@pytest.mark.slow  # ~9 s: two process starts and the meter's 5 s retransmission
def test_headend_kill9_mid_collection_is_invisible_to_meters(tmp_path: Path) -> None:
    t_keys = time.time()
    repo = SqliteRepository(tmp_path)
    repo.register_meter("m-7", str(TITLE.absolute()), "c", "cell", t_keys)
    repo.commission_meter("m-7", t_keys)
    repo.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    meter = Meter(("127.0.0.1", port), t_keys)
    proc = _start(tmp_path, port, t_keys)
    try:
        for _ in range(10):
            meter.wait_acked(meter.push(), 5.0)
        in_flight = [meter.push() for _ in range(3)]
        os.kill(proc.pid, signal.SIGKILL)  # pushes in flight, acks possibly on their way
        proc.wait(timeout=10)
        proc = _start(tmp_path, port, t_keys)
        # the meter's own retransmissions (5 s timeout) bring the in-flight pushes through
        for rid in in_flight:
            meter.wait_acked(rid, 15.0)
        took = [meter.wait_acked(meter.push(), 5.0) for _ in range(5)]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    server = meter.node.server.counters
    assert server["stale"] == 0 and server["replayed"] == 0
    assert meter.auth_failures == [] and meter.node.counters["auth-failures"] == 0
    assert max(took) < 2.0  # at once, not after the meter's 5 s retransmission timeout
    assert (tmp_path / INVOCATION_ID_FILE).exists()
