"""A raw UDP echo: the ceiling any UDP protocol service can reach on this machine and event loop.

`bench auth` reports it beside the authentication rate, measured the same way (server in this
process, client in a separate process, the same concurrency), so the two numbers compare.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any, cast

from amistack.addr import Addr
from amistack.runtime.loop import new_event_loop, run
from amistack.runtime.udp import make_udp_socket

log = logging.getLogger(__name__)

DEFAULT_PAYLOAD = 96  # about one PANA message carrying an EAP-PSK first message


class EchoServer(asyncio.DatagramProtocol):
    """Sends every datagram straight back to its sender."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.echoed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop\'s UDP transport is not an asyncio.DatagramTransport subclass, but quacks like one
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)
        self.echoed += 1


async def start_echo_server(
    host: str = "127.0.0.1", port: int = 0
) -> tuple[asyncio.DatagramTransport, EchoServer, Addr]:
    """An echo server on (host, port); returns its transport, protocol and bound address."""
    loop = asyncio.get_running_loop()
    sock = make_udp_socket(host, port)
    transport, proto = await loop.create_datagram_endpoint(EchoServer, sock=sock)
    name = sock.getsockname()
    return transport, proto, (name[0], name[1])


class _EchoClient(asyncio.DatagramProtocol):
    """Keeps a share of the in-flight echoes on one socket: each reply sends the next request."""

    def __init__(self, payload: bytes, state: dict[str, Any]) -> None:
        self.payload = payload
        self.state = state
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop\'s UDP transport is not an asyncio.DatagramTransport subclass, but quacks like one
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        state = self.state
        state["done"] += 1
        state["last"] = time.perf_counter()
        if state["stop"]:
            return
        assert self.transport is not None
        self.transport.sendto(self.payload)


async def echo_client(
    server: Addr,
    concurrency: int,
    duration: float = 1.0,
    payload_size: int = DEFAULT_PAYLOAD,
    sockets: int | None = None,
) -> dict[str, Any]:
    """Keep `concurrency` echoes in flight to `server` for `duration` s; round trips per second.

    Loss (a full socket buffer) is refilled once the flow stalls for 200 ms, as a retransmission
    timer would.
    """
    loop = asyncio.get_running_loop()
    n_sockets = max(1, min(sockets or concurrency, concurrency))
    payload = b"\xa5" * payload_size
    state: dict[str, Any] = {"done": 0, "stop": False, "last": time.perf_counter()}
    clients: list[_EchoClient] = []
    family_host = "::1" if ":" in server[0] else "127.0.0.1"
    for _ in range(n_sockets):
        sock = make_udp_socket(family_host, 0)
        sock.connect(server)
        _, proto = await loop.create_datagram_endpoint(
            lambda: _EchoClient(payload, state), sock=sock
        )
        clients.append(proto)
    start = time.perf_counter()
    for i in range(concurrency):
        transport = clients[i % n_sockets].transport
        assert transport is not None
        transport.sendto(payload)
    deadline = start + duration
    refills = 0
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        await asyncio.sleep(min(0.05, deadline - now))
        if time.perf_counter() - state["last"] > 0.2:  # everything in flight was lost
            refills += 1
            state["last"] = time.perf_counter()
            for i in range(concurrency):
                transport = clients[i % n_sockets].transport
                assert transport is not None
                transport.sendto(payload)
    state["stop"] = True
    elapsed = time.perf_counter() - start
    done = int(state["done"])
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    return {
        "round_trips": done,
        "elapsed_s": elapsed,
        "per_s": done / elapsed if elapsed > 0 else 0.0,
        "refills": refills,
        "concurrency": concurrency,
        "sockets": n_sockets,
    }


def _echo_client_process(
    server: Addr,
    concurrency: int,
    duration: float,
    payload_size: int,
    sockets: int | None,
    prefer_uvloop: bool,
    conn: Connection,
) -> None:
    """Entry point of the client process: runs `echo_client` and sends its result dict back."""
    try:
        result = run(
            lambda: echo_client(server, concurrency, duration, payload_size, sockets),
            prefer_uvloop,
        )
        conn.send(result)
    except BaseException as exc:  # report, don't hang the parent
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


async def measure_udp_echo(
    concurrency: int,
    duration: float = 1.0,
    host: str = "127.0.0.1",
    payload_size: int = DEFAULT_PAYLOAD,
    sockets: int | None = None,
    prefer_uvloop: bool = True,
) -> dict[str, Any]:
    """Echo server on this loop, client in a spawned process; the client's result dict."""
    transport, _proto, addr = await start_echo_server(host, 0)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_echo_client_process,
        args=(addr, concurrency, duration, payload_size, sockets, prefer_uvloop, child),
        name="amistack-echo-client",
        daemon=True,
    )
    proc.start()
    child.close()
    loop = asyncio.get_running_loop()
    try:
        result: dict[str, Any] = await loop.run_in_executor(None, _recv, parent, duration + 60.0)
    finally:
        transport.close()
        await loop.run_in_executor(None, proc.join, 5.0)
        if proc.is_alive():
            proc.kill()
        parent.close()
    if "error" in result:
        raise RuntimeError(f"echo client failed: {result['error']}")
    return result


def _recv(conn: Connection, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError("child process sent no result")
    return conn.recv()


def udp_echo_baseline(
    concurrency: int, duration: float = 1.0, host: str = "127.0.0.1", prefer_uvloop: bool = True
) -> dict[str, Any]:
    """Synchronous wrapper of `measure_udp_echo` on a fresh (uv)loop."""
    loop = new_event_loop(prefer_uvloop)
    try:
        return loop.run_until_complete(
            measure_udp_echo(concurrency, duration, host, prefer_uvloop=prefer_uvloop)
        )
    finally:
        loop.close()
