"""The mesh runtime (runtime/mesh.py, runtime/concentrator.py, runtime/meter_mesh.py) under
attack, in one event loop over real loopback UDP: the key server engine (group keys on) on a
socket, `run_concentrator`, honest `run_meter_mesh` meters, and an attacker's radio socket that
the concentrator and meter 1 count as a neighbour (it hears what they send, they hear it).

Each attack is counted by the process it is aimed at, and the honest meters keep joining."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from amistack.addr import Addr, Eui64, PanId
from amistack.crypto import seeded_random, system_random
from amistack.keymgmt.groupkeys import GroupKeyManager
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import CredentialStore
from amistack.mesh.frame import Frame
from amistack.mesh.gateway import UdpGateway, mesh_side, wan_side
from amistack.mesh.ipv6 import UdpDatagram
from amistack.mesh.link import MeshLink
from amistack.mesh.node import RelayReady
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.pana.constants import PANA_PORT
from amistack.pana.paa import PaaConfig
from amistack.runtime.concentrator import ConcentratorReady, run_concentrator
from amistack.runtime.loop import new_event_loop
from amistack.runtime.mesh import RadioEngine, eui_for
from amistack.runtime.meter import build_pac
from amistack.runtime.meter_mesh import run_meter_mesh
from amistack.runtime.udp import EngineDriver

T = TypeVar("T")
PAN = 0xFACE
PREFIX = ipaddress.IPv6Network("fd00:a3e5:1::/64")
PSK = bytes(range(16))


def run_loop(fn: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(fn(), timeout))  # type: ignore[arg-type]
    finally:
        loop.close()


def key_server(devices: list[str]) -> KeyServer:
    store = CredentialStore(":memory:", FileKek(random.randbytes(32), system_random))
    for dev in devices:
        store.enroll(dev, PSK, 0.0)
    server = KeyServer(
        store,
        rng=system_random,
        paa_config=PaaConfig(allowed_relays=frozenset({"127.0.0.1"})),
        session_lifetime=3600.0,
        now=0.0,
    )
    server.enable_group_keys(GroupKeyManager([PAN], rng=system_random, now=0.0))
    return server


def radio_socket() -> tuple[socket.socket, Addr]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock, ("127.0.0.1", sock.getsockname()[1])


def free_port() -> int:
    sock, addr = radio_socket()
    sock.close()
    return addr[1]


class Attacker:
    """A node with a radio and no key: it sends what it likes."""

    def __init__(self, sock: socket.socket, targets: list[Addr]) -> None:
        self.sock = sock
        self.targets = targets
        self.eui = Eui64(bytes.fromhex("02aa00000000a77c"))
        self.sent = 0
        self.heard: list[bytes] = []

    def send(self, frames: list[bytes]) -> None:
        for frame in frames:
            for target in self.targets:
                self.sock.sendto(frame, target)

    def unsecured_udp(self, to: Eui64, dst_ip: str, port: int, payload: bytes) -> list[bytes]:
        src = ipaddress.IPv6Address(str(self.eui.link_local()))
        packet = UdpDatagram(PANA_PORT, port, payload).packet(src, ipaddress.IPv6Address(dst_ip))
        # a fresh link per packet: the attacker waits for no acknowledgement
        self.sent += 1
        link = MeshLink(
            LinkSecurity(self.eui, MemoryCounterStore()), PanId(PAN), seeded_random(self.sent)
        )
        link.send(packet, to, secure=False)
        return [f for f, _ in link.frames_to_send(0.0)]

    def listen(self) -> None:
        while True:
            try:
                self.heard.append(self.sock.recv(2048))
            except BlockingIOError:
                return

    def secured_from(self, eui: Eui64) -> list[bytes]:
        out = []
        for data in self.heard:
            frame = Frame.decode(data)
            if frame.security is not None and frame.src == eui and len(data) > 40:
                out.append(data)
        return out


async def wait_until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


async def _mesh_under_attack(tmp: Path) -> dict[str, Any]:
    meters = ["att-m1", "att-m2"]
    server = key_server(["conc-1", *meters])
    stop = asyncio.Event()
    ready: dict[str, Any] = {}
    relay_ready: set[str] = set()
    evil_sock, evil = radio_socket()
    radios = {name: free_port() for name in ("conc", *meters)}
    addr = {name: ("127.0.0.1", port) for name, port in radios.items()}
    async with EngineDriver(server) as ks_driver:
        ks = await ks_driver.bind("127.0.0.1", 0)

        def on(name: str) -> Callable[[object], None]:
            return lambda ev: relay_ready.add(name) if isinstance(ev, RelayReady) else None

        def conc_ready(r: ConcentratorReady) -> None:
            ready["conc"] = r.engine

        tasks = [
            asyncio.ensure_future(
                run_concentrator(
                    "conc-1", PSK, ks, None, radio=addr["conc"],
                    neighbours=[addr["att-m1"], addr["att-m2"], evil], data_dir=tmp / "conc",
                    pan=PAN, prefix=PREFIX, stop=stop, on_ready=conc_ready,
                )
            ),
            asyncio.ensure_future(
                run_meter_mesh(
                    "att-m1", PSK, ks, None, radio=addr["att-m1"],
                    neighbours=[addr["conc"], evil], data_dir=tmp, pan=PAN, stop=stop,
                    on_ready=lambda _, e: ready.__setitem__("att-m1", e), on_event=on("att-m1"),
                )
            ),
        ]  # fmt: skip
        try:
            await wait_until(lambda: "att-m1" in relay_ready)
            conc: RadioEngine = ready["conc"]
            m1: RadioEngine = ready["att-m1"]
            attacker = Attacker(evil_sock, [addr["conc"]])
            conc_eui = eui_for("conc-1")
            conc_ll = str(conc_eui.link_local())
            result: dict[str, Any] = {}

            # 1. a keyless node sends C12.22 to the concentrator and, through it, to the WAN
            wan_before = dict(conc.node.counters)
            attacker.send(attacker.unsecured_udp(conc_eui, conc_ll, 1153, b"\x60" * 20))
            attacker.send(attacker.unsecured_udp(conc_eui, mesh_side(ks[0]), ks[1], b"x" * 20))
            await wait_until(lambda: conc.node.counters["unsecured-dropped"] >= 2)
            result["wan-out unchanged"] = conc.node.counters["wan-out"] == wan_before.get(
                "wan-out", 0
            )

            # 2. forged MIC and 3. replay: meter 1's own frames, changed or sent again
            await asyncio.sleep(0.5)
            attacker.listen()
            m1_frames = attacker.secured_from(eui_for("att-m1"))
            assert m1_frames, "the attacker heard meter 1's secured frames"
            frame = m1_frames[-1]
            heard = Frame.decode(frame)
            assert heard.security is not None  # a counter never used, under the old MIC:
            later = replace(heard.security, counter=heard.security.counter + 1000)
            forged = replace(heard, security=later).encode()
            forged_before = conc.node.link.counters["forged"]
            attacker.send([forged])
            await wait_until(lambda: conc.node.link.counters["forged"] > forged_before)
            replayed_before = conc.node.link.counters["replayed"]
            attacker.send([frame])
            await wait_until(lambda: conc.node.link.counters["replayed"] > replayed_before)

            # 4. a PANA flood from one neighbour, at meter 1 (a relay), while meter 2 joins
            attacker.targets = [addr["att-m1"]]
            pac = build_pac("att-evil", PSK, (str(eui_for("att-m1").link_local()), PANA_PORT))
            pac.start(0.0)
            pci = pac.datagrams_to_send(0.0)[0][0]
            m1_ll = str(eui_for("att-m1").link_local())
            for _ in range(200):
                attacker.send(attacker.unsecured_udp(eui_for("att-m1"), m1_ll, PANA_PORT, pci))
            tasks.append(
                asyncio.ensure_future(
                    run_meter_mesh(
                        "att-m2", PSK, ks, None, radio=addr["att-m2"],
                        neighbours=[addr["conc"]], data_dir=tmp, pan=PAN, stop=stop,
                        on_event=on("att-m2"),
                    )
                )
            )  # fmt: skip
            await wait_until(lambda: "att-m2" in relay_ready)
            result["relay-rate-limited"] = m1.node.counters["relay-rate-limited"]
            result["relayed-from-pac"] = m1.node.counters["relayed-from-pac"]
            result["conc"] = dict(conc.node.counters)
            return result
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            evil_sock.close()


@pytest.mark.slow
def test_attacks_on_the_mesh_processes_are_counted_and_the_mesh_keeps_joining(
    tmp_path: Path,
) -> None:
    result = run_loop(lambda: _mesh_under_attack(tmp_path))
    assert result["wan-out unchanged"]
    # the flood: 200 PCIs in a moment; the bucket lets its burst (8) through, not the rest
    assert result["relay-rate-limited"] >= 150
    assert result["relayed-from-pac"] <= 20


def test_udp_gateway_forwards_only_to_its_peers() -> None:
    gw = UdpGateway([("127.0.0.1", 716), ("::1", 1153)], max_flows=2)
    meter = ipaddress.IPv6Address("fd00:a3e5:1::1")
    ks = ipaddress.IPv6Address(mesh_side("127.0.0.1"))
    assert str(ks) == "64:ff9b::7f00:1" and wan_side(ks) == "127.0.0.1"

    def packet(dst: ipaddress.IPv6Address, port: int, src_port: int = 5000) -> bytes:
        return UdpDatagram(src_port, port, b"hello").packet(meter, dst).encode()

    out = gw.outbound(packet(ks, 716), 0.0)
    assert out is not None and out.dst == ("127.0.0.1", 716) and out.payload == b"hello"
    assert gw.outbound(packet(ks, 80), 0.0) is None  # not a peer: no open relay
    assert gw.outbound(b"\x60garbage", 0.0) is None
    assert gw.counters["wan-not-allowed"] == 1 and gw.counters["wan-decode-error"] == 1
    back = gw.inbound(out.flow, b"answer", ("127.0.0.1", 716), 0.0)
    assert back is not None
    assert gw.inbound(out.flow, b"answer", ("127.0.0.1", 9), 0.0) is None  # not from a peer
    assert gw.inbound(("fd00::9", 1), b"answer", ("127.0.0.1", 716), 0.0) is None  # no such flow
    for port in (5001, 5002):  # two more flows: the oldest is evicted
        gw.outbound(packet(ks, 716, port), 0.0)
    assert gw.evicted == [out.flow]
    assert gw.inbound(out.flow, b"late", ("127.0.0.1", 716), 0.0) is None
