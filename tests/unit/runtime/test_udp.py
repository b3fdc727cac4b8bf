"""EngineDriver over real loopback UDP (IPv4 and IPv6) with a small request/retransmit engine."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import require_ipv6_loopback

from amistack.addr import Addr
from amistack.runtime.loop import is_uvloop, new_event_loop
from amistack.runtime.pcap import PcapWriter, read_udp_pcap
from amistack.runtime.udp import EngineDriver, normalize_addr


@dataclass(frozen=True)
class Pong:
    seq: int
    addr: Addr


@dataclass(frozen=True)
class GaveUp:
    seq: int


class PingEngine:
    """Sans-IO: sends PING<n> to `peer`, retransmits every `rto` s until PONG<n>, `tries` times."""

    def __init__(self, peer: Addr, rto: float = 0.05, tries: int = 3) -> None:
        self.peer = peer
        self.rto = rto
        self.tries = tries
        self.out: list[tuple[bytes, Addr]] = []
        self.events: deque[object] = deque()
        self.seq = 0
        self.deadline: float | None = None
        self.sent = 0
        self.timer_calls: list[float] = []

    def ping(self, now: float) -> None:
        self.seq += 1
        self.sent = 0
        self._send(now)

    def _send(self, now: float) -> None:
        self.out.append((b"PING%d" % self.seq, self.peer))
        self.sent += 1
        self.deadline = now + self.rto

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if data == b"PONG%d" % self.seq and self.deadline is not None:
            self.deadline = None
            self.events.append(Pong(self.seq, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.timer_calls.append(now)
        if self.deadline is None or now < self.deadline:
            return
        if self.sent >= self.tries:
            self.deadline = None
            self.events.append(GaveUp(self.seq))
        else:
            self._send(now)

    def next_event(self) -> object | None:
        return self.events.popleft() if self.events else None


class PongEngine:
    """Answers PING<n> with PONG<n>, optionally ignoring the first `drop` pings."""

    def __init__(self, drop: int = 0) -> None:
        self.drop = drop
        self.out: list[tuple[bytes, Addr]] = []
        self.seen: list[Addr] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        assert isinstance(addr, tuple) and len(addr) == 2
        self.seen.append(addr)
        if self.drop:
            self.drop -= 1
            return
        self.out.append((b"PONG" + data[4:], addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> object | None:
        return None


def run_loop(coro_fn, uv: bool = True):  # type: ignore[no-untyped-def]
    loop = new_event_loop(uv)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(), 10))
    finally:
        loop.close()


FAMILIES = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]


@pytest.mark.parametrize("host", FAMILIES)
@pytest.mark.parametrize("uv", [True, False], ids=["uvloop", "asyncio"])
def test_round_trip_and_retransmission(host: str, uv: bool) -> None:
    if host == "::1":
        require_ipv6_loopback()

    async def main() -> tuple[list[object], PongEngine, Addr, Addr, bool]:
        server = PongEngine(drop=1)  # the first ping is lost: the client timer must retransmit
        async with EngineDriver(server) as sd:
            saddr = await sd.bind(host, 0)
            queue: asyncio.Queue[object] = asyncio.Queue()
            client = PingEngine(saddr)
            async with EngineDriver(client, events=queue) as cd:
                caddr = await cd.bind(host, 0)
                client.ping(cd.now())
                cd.kick()
                first = await queue.get()
                client.ping(cd.now())
                cd.kick()
                second = await queue.get()
                return [first, second], server, saddr, caddr, is_uvloop(asyncio.get_running_loop())

    events, server, saddr, caddr, was_uv = run_loop(main, uv)
    assert was_uv == uv
    assert events == [Pong(1, saddr), Pong(2, saddr)]
    assert saddr[0] == host and saddr[1] > 0
    # ping 1 sent twice (one dropped, one retransmitted by the timer), ping 2 once, all from caddr
    assert server.seen == [caddr, caddr, caddr]


def test_gives_up_after_retries_and_timer_never_sees_early_time() -> None:
    async def main() -> tuple[object, PingEngine, float]:
        # a bound socket nobody answers on
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        try:
            got: list[object] = []
            done = asyncio.Event()

            def sink(ev: object) -> None:
                got.append(ev)
                done.set()

            client = PingEngine(normalize_addr(silent.getsockname()), rto=0.02, tries=3)
            async with EngineDriver(client, on_event=sink) as cd:
                await cd.bind("127.0.0.1")
                t0 = cd.now()
                client.ping(t0)
                cd.kick()
                await done.wait()
                return got[0], client, t0
        finally:
            silent.close()

    event, client, t0 = run_loop(main)
    assert event == GaveUp(1)
    assert client.sent == 3
    # three timer expiries at >= 20, 40, 60 ms after the first send
    assert len(client.timer_calls) == 3
    for i, t in enumerate(client.timer_calls, start=1):
        assert t >= t0 + i * 0.02 - 1e-9


def test_async_event_handler_and_dual_stack_routing() -> None:
    require_ipv6_loopback()

    async def main() -> tuple[list[Addr], PongEngine, list[Addr]]:
        server = PongEngine()
        async with EngineDriver(server) as sd:
            a4 = await sd.bind("127.0.0.1", 0)
            # the same engine answers on an IPv6 socket with the same port number when free
            a6 = await sd.bind("::1", 0)
            replies: list[Addr] = []
            done = asyncio.Event()

            async def on_event(ev: object) -> None:
                assert isinstance(ev, Pong)
                await asyncio.sleep(0)
                replies.append(ev.addr)
                if len(replies) == 2:
                    done.set()

            c4, c6 = PingEngine(a4), PingEngine(a6)
            async with (
                EngineDriver(c4, on_event=on_event) as d4,
                EngineDriver(c6, on_event=on_event) as d6,
            ):
                await d4.bind("127.0.0.1")
                await d6.bind("::1")
                c4.ping(d4.now())
                c6.ping(d6.now())
                d4.kick()
                d6.kick()
                await done.wait()
            return sorted(replies), server, sd.local_addresses

    replies, server, locals_ = run_loop(main)
    assert replies == sorted(locals_)
    assert {a[0] for a in server.seen} == {"127.0.0.1", "::1"}


def test_capture_hook_writes_both_directions(tmp_path: Path) -> None:
    path = tmp_path / "ping.pcap"

    async def main() -> tuple[Addr, Addr]:
        with PcapWriter(path) as pcap:
            server = PongEngine()
            async with EngineDriver(server, capture=pcap.capture) as sd:
                saddr = await sd.bind("127.0.0.1")
                q: asyncio.Queue[object] = asyncio.Queue()
                client = PingEngine(saddr)
                async with EngineDriver(client, events=q) as cd:
                    caddr = await cd.bind("127.0.0.1")
                    client.ping(cd.now())
                    cd.kick()
                    await q.get()
                    return saddr, caddr

    saddr, caddr = run_loop(main)
    records = list(read_udp_pcap(path))
    # the server-side hook sees the ping coming in and the pong going out
    assert [(r.src, r.dst, r.payload) for r in records] == [
        (caddr, saddr, b"PING1"),
        (saddr, caddr, b"PONG1"),
    ]


def test_normalize_addr_drops_flowinfo_and_scope() -> None:
    assert normalize_addr(("::1", 716, 0, 0)) == ("::1", 716)
    assert normalize_addr(("10.0.0.1", 716)) == ("10.0.0.1", 716)


class _BadAddrEngine(PongEngine):
    """Answers one datagram to an address no socket can send to, then behaves."""

    def __init__(self) -> None:
        super().__init__()
        self.first = True

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out = super().datagrams_to_send(now)
        if out and self.first:
            self.first = False
            return [(b"x", ("999.1.2.3", 1)), *out]
        return out


def test_unsendable_address_is_counted_and_the_driver_keeps_going(tmp_path: Path) -> None:
    path = tmp_path / "wild.pcap"

    async def main() -> tuple[list[object], int, Addr]:
        with PcapWriter(path) as pcap:
            server = _BadAddrEngine()
            # bound to the wildcard: the capture still shows the loopback address it answered on
            async with EngineDriver(server, capture=pcap.capture) as sd:
                saddr = await sd.bind("0.0.0.0")
                q: asyncio.Queue[object] = asyncio.Queue()
                client = PingEngine(("127.0.0.1", saddr[1]))
                async with EngineDriver(client, events=q) as cd:
                    await cd.bind("127.0.0.1")
                    got = []
                    for _ in range(2):
                        client.ping(cd.now())
                        cd.kick()
                        got.append(await q.get())
                    return got, sd.counters["send_error"], saddr

    got, errors, saddr = run_loop(main)
    assert [type(e) for e in got] == [Pong, Pong]
    assert errors == 1
    records = list(read_udp_pcap(path))
    assert len(records) == 4
    assert {r.dst for r in records if r.payload.startswith(b"PING")} == {("127.0.0.1", saddr[1])}
