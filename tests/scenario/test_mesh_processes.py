"""A mesh of separate processes over the UDP radio (runtime/mesh.py): the real key server and
head-end, `amistack concentrator` and three `amistack meter --mesh` in a line (meter 3 hears
only meter 2, which hears only meter 1 and 3, which hears the concentrator), plus a meter with
a wrong PSK beside meter 1.

Every meter authenticates through its relays and gets the group keys, the head-end stores
meter 3's readings pushed over C12.22 through the mesh, the wrong PSK is refused by the key
server through meter 1. The head-end starts reads too: an operator's on-demand READ commands
(REST API) reach every meter once it has registered (C12.22 Registration, granted by the
head-end, bound by the concentrator), meters 1 and 2 (which never push) through the
concentrator's C12.22 relay (`--c1222-listen`; `amistack headend --concentrator conc-1=...`);
the head-end sends datagrams of at most 64 octets (`--c1222-datagram`), so every request and
every grant is segmented: the relay reassembles them to read the ApTitle. A meter that never
joined the mesh is not reachable: neither the wrong-PSK one (no key) nor one that
authenticated directly to the key server (`--once`: the head-end has its key, the
concentrator knows no such ApTitle). Then meter 3 killed with SIGKILL
while sending and started again rejoins and never reuses a frame counter: a listening socket
that meter 3 counts as a neighbour records every frame it transmits, before and after the
restart; and every meter is read again after it. The concentrator reports its DODAG to the
head-end's REST API (`--report-to`, an ENGINEER's token), which stores it with each meter's
parent."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from amistack.access import AccessStore, Role
from amistack.cli.common import open_store
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt import pki
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.frame import Frame
from amistack.meter.node import ap_title_for
from amistack.runtime.mesh import eui_for

pytestmark = pytest.mark.slow  # six processes join a three-hop mesh: about 30 s

PY = sys.executable
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
PSK = "000102030405060708090a0b0c0d0e0f"
WRONG = "f0e0d0c0b0a090807060504030201000"
METERS = ("mesh-m1", "mesh-m2", "mesh-m3")


def free_ports(n: int, kind: int = socket.SOCK_DGRAM) -> list[int]:
    socks = [socket.socket(socket.AF_INET, kind) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.runs: dict[str, int] = {}

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.{self.runs.get(name, 0)}.log"

    def start(self, name: str, *args: str) -> None:
        self.start_in(None, name, *args)

    def start_in(self, netns: str | None, name: str, *args: str) -> None:
        """`amistack ARGS` as `name`, inside network namespace `netns` when given."""
        inside = [] if netns is None else ["ip", "netns", "exec", netns]
        self.start_argv(name, [*inside, PY, "-m", "amistack.cli.main", *args])

    def start_argv(self, name: str, argv: list[str]) -> None:
        self.runs[name] = self.runs.get(name, -1) + 1
        with open(self.log(name), "wb") as out:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ENV)

    def wait_for(self, name: str, text: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while text.encode() not in self.log(name).read_bytes():
            assert self.procs[name].poll() is None, self.log(name).read_text()
            assert time.monotonic() < deadline, f"{name}: no {text!r}\n{self.log(name).read_text()}"
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def secured_counters(sniffer: socket.socket) -> list[int]:
    """The frame counters of the secured frames waiting on `sniffer`."""
    out = []
    while True:
        try:
            data = sniffer.recv(2048)
        except BlockingIOError:
            return out
        try:
            frame = Frame.decode(data)
        except MeshDecodeError:
            continue
        if frame.security is not None:
            out.append(frame.security.counter)


def create_read(http: httpx.Client, meter: str) -> int:
    """An operator's on-demand READ of `meter` (the head-end's REST API): the command id."""
    made = http.post("/commands", json={"meter_id": meter, "kind": "read"})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def command(http: httpx.Client, cid: int, *, until: tuple[str, ...] = ("pending", "sent")) -> Any:
    """Command `cid` once it has left the states `until`."""
    deadline = time.monotonic() + 60.0
    while (got := http.get(f"/commands/{cid}").json())["state"] in until:
        assert time.monotonic() < deadline, got
        time.sleep(0.1)
    return got


def test_meters_join_through_relays_and_are_read_over_the_mesh(tmp_path: Path) -> None:
    ks = tmp_path / "ks"
    with open_store(ks, create=True) as store:
        for dev in ("conc-1", *METERS, "mesh-bad", "mesh-away"):
            store.enroll(dev, bytes.fromhex(PSK), time.time())
    pki.init_ca(ks)
    pki.issue_server(ks, "keyserver", ["127.0.0.1"])
    pki.issue_client(ks, "headend", ["c1222"], meters=["mesh-*"])
    repo = SqliteRepository(ks)
    for dev in (*METERS, "mesh-bad", "mesh-away"):
        repo.register_meter(dev, str(ap_title_for(dev).absolute()), "conc-1", "cell", time.time())
        repo.commission_meter(dev, time.time())
    repo.close()
    people = AccessStore(ks)
    people.add_user("conc-1-report", "correct horse battery", {Role.ENGINEER}, time.time())
    token_file = tmp_path / "conc-1.token"
    token_file.write_text(people.issue_token("conc-1-report", time.time()).token)
    people.add_user("olga", "correct horse battery", {Role.OPERATOR}, time.time())
    olga = {"Authorization": f"Bearer {people.issue_token('olga', time.time()).token}"}
    people.close()
    pana, c1222, relay, r0, r1, r2, r3, r4 = free_ports(8)
    keydist, api = free_ports(2, socket.SOCK_STREAM)
    radio = {i: f"127.0.0.1:{p}" for i, p in enumerate((r0, r1, r2, r3, r4))}
    sniffer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sniffer.bind(("127.0.0.1", 0))
    sniffer.setblocking(False)
    sniff = f"127.0.0.1:{sniffer.getsockname()[1]}"
    p = Procs(tmp_path)
    ks_addr = f"127.0.0.1:{pana}"
    he_addr = f"127.0.0.1:{c1222}"
    common = ["--keyserver", ks_addr, "--headend", he_addr]
    hears = {1: [radio[0], radio[2], radio[4]], 2: [radio[1], radio[3]], 3: [radio[2], sniff]}

    def meter(i: int) -> None:  # meter 3 pushes; meters 1 and 2 are only read by the head-end
        dev = METERS[i - 1]
        hear = [a for h in hears[i] for a in ("--hear", h)]
        push = ["--push"] if i == 3 else []
        p.start(dev, "-v", "meter", "--mesh", "--id", dev, "--psk", PSK, *common, *push,
                "--time-scale", "900", "--radio", radio[i], *hear,
                "--data-dir", str(tmp_path / dev))  # fmt: skip

    try:
        p.start("ks", "-v", "keyserver", "--data-dir", str(ks), "--listen", ks_addr,
                "--mesh-pan", "0xface", "--relay", "127.0.0.1",
                "--keydist-listen", f"127.0.0.1:{keydist}")  # fmt: skip
        p.start("he", "-v", "headend", "--data-dir", str(ks), "--keyserver", f"127.0.0.1:{keydist}",
                "--listen", he_addr, "--api", f"127.0.0.1:{api}",
                "--concentrator", f"conc-1=127.0.0.1:{relay}",
                "--c1222-datagram", "64")  # fmt: skip
        p.start("conc", "-v", "concentrator", "--id", "conc-1", "--psk", PSK, *common,
                "--radio", radio[0], "--hear", radio[1],
                "--report-to", f"http://127.0.0.1:{api}", "--report-token-file", str(token_file),
                "--report-every", "1", "--c1222-listen", f"127.0.0.1:{relay}",
                "--data-dir", str(tmp_path / "conc"))  # fmt: skip
        for i in (1, 2, 3):
            meter(i)
        p.start("bad", "meter", "--mesh", "--id", "mesh-bad", "--psk", WRONG, *common,
                "--radio", radio[4], "--hear", radio[1],
                "--data-dir", str(tmp_path / "bad"))  # fmt: skip
        # a meter of conc-1's cell that authenticates, but not through the mesh
        p.start("away", "meter", "--id", "mesh-away", "--psk", PSK, "--keyserver", ks_addr,
                "--once")  # fmt: skip
        p.wait_for("ks", "PANA on 127.0.0.1", 45.0)  # everything starts at once: the
        p.wait_for("conc", "DODAG root", 45.0)  # PaCs retransmit until the key server is up
        for dev in METERS:
            p.wait_for(dev, "relaying", 30.0)
        p.wait_for("bad", "authentication refused", 30.0)

        deadline = time.monotonic() + 30.0
        repo = SqliteRepository(ks)
        try:
            while not repo.count_readings("mesh-m3"):
                assert time.monotonic() < deadline, "no pushed readings of meter 3"
                time.sleep(0.2)
            # the concentrator's DODAG report: meter 1 under the root, 2 under 1, 3 under 2, each
            # named by the meter id it joined as, with its rank (one hop more each) and ETX
            eui = {dev: str(eui_for(dev)) for dev in ("conc-1", *METERS)}
            want = {eui["mesh-m1"]: (eui["conc-1"], "mesh-m1"),
                    eui["mesh-m2"]: (eui["mesh-m1"], "mesh-m2"),
                    eui["mesh-m3"]: (eui["mesh-m2"], "mesh-m3")}  # fmt: skip
            seen: dict[str, tuple[Any, ...]] = {}
            while any(seen.get(child, ())[:2] != up for child, up in want.items()):
                assert time.monotonic() < deadline, seen
                time.sleep(0.2)
                stored = repo.topology("conc-1")
                nodes = [] if stored is None else json.loads(stored[1])
                fields = ("parent", "meter_id", "rank", "etx", "authenticated")
                seen = {n["eui64"]: tuple(n.get(f) for f in fields) for n in nodes}
            ranks = [seen[eui[dev]][2] for dev in METERS]
            assert ranks == sorted(ranks) and len(set(ranks)) == 3, seen  # deeper, higher
            assert all(seen[eui[dev]][3] >= 1.0 and seen[eui[dev]][4] for dev in METERS), seen
        finally:
            repo.close()

        # the head-end reads every registered meter on demand; one that never joined the mesh
        # is not reachable: the wrong-PSK one has no key to be sent with, and the one that
        # authenticated directly (its key is the head-end's) has no ApTitle bound at the
        # concentrator (c1222-unknown-title): its READ is sent and never answered
        api_http = httpx.Client(base_url=f"http://127.0.0.1:{api}", headers=olga, timeout=10)
        for dev in METERS:
            p.wait_for(dev, "registered", 30.0)
            got = command(api_http, create_read(api_http, dev))
            assert got["state"] == "confirmed", got
            assert "active_forward_wh" in json.loads(str(got["confirmation"]))
        bad_read = command(api_http, create_read(api_http, "mesh-bad"))
        assert bad_read["state"] == "failed" and "no C12.22 key" in bad_read["reason"], bad_read
        deadline = time.monotonic() + 30.0
        while away := command(api_http, create_read(api_http, "mesh-away"), until=("pending",)):
            if away["state"] == "sent":  # the head-end has fetched its key (prefetch: 10 s)
                break
            assert "no C12.22 key" in away["reason"] and time.monotonic() < deadline, away
            time.sleep(1.0)

        # meter 3, killed while it sends (pushes each second), starts above every counter it used
        before = secured_counters(sniffer)
        assert before
        p.procs["mesh-m3"].send_signal(signal.SIGKILL)
        p.procs["mesh-m3"].wait(5)
        before += secured_counters(sniffer)
        meter(3)
        p.wait_for("mesh-m3", "relaying", 30.0)
        after = secured_counters(sniffer)
        assert after and min(after) > max(before)
        p.wait_for("mesh-m3", "registered", 30.0)
        for dev in METERS:  # and the head-end reads them all again, meter 3 in its new session
            got = command(api_http, create_read(api_http, dev))
            assert got["state"] == "confirmed", got
        away = command(api_http, away["id"])
        assert away["state"] == "failed" and "no answer" in away["reason"], away
        api_http.close()
    finally:
        p.stop()
        sniffer.close()
    bad = p.log("bad").read_text()
    assert "relaying" not in bad and "authenticated through" not in bad
    assert b"peer_id=mesh-bad" in p.log("ks").read_bytes()
    conc = p.log("conc").read_text()
    assert "'c1222-relayed-in-segmented'" in conc, conc[-2000:]
    assert "'c1222-title-bound'" in conc and "'c1222-registration-out'" in conc, conc[-2000:]
    assert "'c1222-unknown-title'" in conc, conc[-2000:]
