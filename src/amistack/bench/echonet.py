"""`amistack bench echonet`, the Get round-trip half and the whole run: Get round trips per second
against our smart-meter node over loopback UDP, after the codec comparison of
`amistack.bench.echonet_codec`.

- **Get round trips** -- our meter (`EchonetNode` + `SmartMeterObject` on `EchonetDriver`) serves
  on 127.0.40.1:3610 in this process; a controller in a spawned process (127.0.40.2:3610, where the
  answers arrive) keeps `concurrency` Gets of E7 in flight. The controller is either the real one
  (`EchonetController` on `ControllerDriver`, `get_rtt_per_s`) or a lean raw-socket one (one socket,
  prebuilt requests, each answer decoded with `Frame.decode` and its TID checked,
  `get_rtt_lean_per_s`) that shows the node's own ceiling. Baseline: a raw UDP echo
  (`bench.echo`) at the same concurrency and payload size.

The event loop is uvloop's when importable (`runtime.loop.new_event_loop`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

from amistack.addr import Addr
from amistack.bench.echo import measure_udp_echo
from amistack.bench.echonet_codec import (
    CODEC_TARGET_RATIO,
    CONTROLLER,
    METER,
    MODEL_T,
    codec_section,
    realistic_frames,
)
from amistack.crypto import system_random
from amistack.crypto.rand import seeded_random
from amistack.echonet.controller import ControllerConfig, EchonetController
from amistack.echonet.errors import EchonetDecodeError
from amistack.echonet.frame import Esv, Frame, Property
from amistack.echonet.node import EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.meter.model import MeterModel
from amistack.meter.tables import TimeScale
from amistack.runtime.echonet import EchonetDriver
from amistack.runtime.echonet_controller import ControllerDriver
from amistack.runtime.loop import is_uvloop, new_event_loop, run
from amistack.runtime.udp import make_udp_socket

log = logging.getLogger(__name__)

__all__ = ["GET_RTT_TARGET", "bench_echonet", "bench_get_rtt"]

NODE_HOST = "127.0.40.1"  # the benchmark's loopback addresses (tests use 127.0.40.0/24 too)
CONTROLLER_HOST = "127.0.40.2"
GET_RTT_TARGET = 20_000.0  # issue 3: >= 20,000 Get round trips per second


def _meter(time_scale: TimeScale) -> SmartMeterObject:
    """The smart meter whose values the codec frames carry and which the Get benchmark serves."""
    return SmartMeterObject(MeterModel(7), time_scale)


def _get_request(tid: int) -> bytes:
    return Frame(tid, CONTROLLER, METER, Esv.GET, (Property(0xE7),)).encode()


class _LeanController(asyncio.DatagramProtocol):
    """Keeps `concurrency` Gets of E7 in flight on one socket bound to port 3610 (where answers
    come back); every answer is decoded and matched by TID, then the next Get is sent."""

    def __init__(self, node: Addr, concurrency: int) -> None:
        self.node = node
        self.concurrency = concurrency
        self.transport: Any = None
        self.in_flight: set[int] = set()
        self.next_tid = 1
        self.done = 0
        self.bad = 0
        self.stop = False
        self.last = time.perf_counter()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def send_one(self) -> None:
        tid = self.next_tid
        self.next_tid = (tid % 0xFFFF) + 1
        self.in_flight.add(tid)
        self.transport.sendto(_get_request(tid), self.node)

    def fill(self) -> None:
        self.in_flight.clear()
        for _ in range(self.concurrency):
            self.send_one()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            frame = Frame.decode(data)
        except EchonetDecodeError:
            self.bad += 1
            return
        if frame.esv != Esv.GET_RES or frame.tid not in self.in_flight:
            self.bad += 1
            return
        self.in_flight.discard(frame.tid)
        self.done += 1
        self.last = time.perf_counter()
        if not self.stop:
            self.send_one()


async def _lean_get_client(
    node: Addr, host: str, concurrency: int, duration: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    sock = make_udp_socket(host, node[1])
    _, client = await loop.create_datagram_endpoint(
        lambda: _LeanController(node, concurrency), sock=sock
    )
    start = time.perf_counter()
    client.fill()
    refills = 0
    deadline = start + duration
    while (now := time.perf_counter()) < deadline:
        await asyncio.sleep(min(0.05, deadline - now))
        if time.perf_counter() - client.last > 0.2:  # everything in flight was lost
            refills += 1
            client.last = time.perf_counter()
            client.fill()
    client.stop = True
    elapsed = time.perf_counter() - start
    client.transport.close()
    return {
        "round_trips": client.done,
        "elapsed_s": elapsed,
        "per_s": client.done / elapsed if elapsed > 0 else 0.0,
        "refills": refills,
        "unexpected": client.bad,
    }


async def _driver_get_client(
    node: Addr, host: str, concurrency: int, duration: float
) -> dict[str, Any]:
    """`concurrency` tasks, each awaiting `ControllerDriver.get` of E7 in a loop: the real
    controller engine (TID matching, pacing, timers) with its asyncio driver."""
    config = ControllerConfig(
        multicast_groups=(),
        request_timeout=1.0,
        retries=2,
        max_outstanding_per_device=concurrency,  # pacing off: the node is the one measured
        rediscover_interval=None,
        fetch_property_maps=False,
    )
    ctl = EchonetController(config, system_random)
    done = 0
    failed = 0
    stop = False

    driver = ControllerDriver(ctl)
    try:
        await driver.open(ipv4=host, port=node[1], multicast=False)

        async def worker() -> None:
            nonlocal done, failed
            while not stop:
                try:
                    r = await driver.get(node, METER, (0xE7,))
                except Exception:  # a timeout or a full queue counts, never ends the run
                    failed += 1
                    continue
                if r.esv == Esv.GET_RES:
                    done += 1
                else:
                    failed += 1

        start = time.perf_counter()
        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(duration)
        stop = True
        elapsed = time.perf_counter() - start
        n_done = done
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        driver.close()
    return {
        "round_trips": n_done,
        "elapsed_s": elapsed,
        "per_s": n_done / elapsed if elapsed > 0 else 0.0,
        "failed": failed,
        "controller_counters": dict(ctl.counters),
    }


CONTROLLERS: dict[str, tuple[str, Any]] = {
    "driver": ("ControllerDriver + EchonetController (amistack.runtime)", _driver_get_client),
    "lean": ("lean raw-socket controller (amistack.bench.echonet)", _lean_get_client),
}


def _get_client_process(
    kind: str,
    node: Addr,
    host: str,
    concurrency: int,
    duration: float,
    prefer_uvloop: bool,
    conn: Connection,
) -> None:
    """Entry point of the controller process: sends its result dict back."""
    label, client = CONTROLLERS[kind]
    try:
        result = run(lambda: client(node, host, concurrency, duration), prefer_uvloop)
        result["controller"] = label
        conn.send(result)
    except BaseException as exc:  # report, don't hang the parent
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


def _recv(conn: Connection, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError("the controller process sent no result")
    return conn.recv()


async def _serve_and_measure(
    kind: str,
    concurrency: int,
    duration: float,
    node_host: str,
    controller_host: str,
    prefer_uvloop: bool,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    meter = _meter(TimeScale(loop.time(), MODEL_T))
    node = EchonetNode(
        NodeProfile([]),
        [meter],
        seeded_random(7),
        # a round-trip rate, not a flood: no per-source reply budget (bench echonet-flood)
        NodeConfig(
            multicast_groups=(),
            max_pending_per_source=max(64, 2 * concurrency),
            reply_rate=None,
        ),
    )
    driver = EchonetDriver(node)
    await driver.open(ipv4=node_host, multicast=False)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_get_client_process,
        args=(
            kind,
            (node_host, 3610),
            controller_host,
            concurrency,
            duration,
            prefer_uvloop,
            child,
        ),
        name="amistack-echonet-controller",
        daemon=True,
    )
    proc.start()
    child.close()
    try:
        result: dict[str, Any] = await loop.run_in_executor(None, _recv, parent, duration + 60.0)
    finally:
        driver.close()
        await loop.run_in_executor(None, proc.join, 5.0)
        if proc.is_alive():
            proc.kill()
        parent.close()
    if "error" in result:
        raise RuntimeError(f"controller process failed: {result['error']}")
    result["node_counters"] = {
        k: v
        for k, v in node.counters.items()
        if k in ("rx", "tx", "malformed", "dropped_queue_full")
    }
    return result


def bench_get_rtt(
    kind: str = "driver",
    concurrency: int = 32,
    duration: float = 2.0,
    node_host: str = NODE_HOST,
    controller_host: str = CONTROLLER_HOST,
    prefer_uvloop: bool = True,
) -> dict[str, Any]:
    """Get round trips per second against our meter node (see the module docstring)."""
    loop = new_event_loop(prefer_uvloop)
    try:
        return loop.run_until_complete(
            _serve_and_measure(
                kind, concurrency, duration, node_host, controller_host, prefer_uvloop
            )
        )
    finally:
        loop.close()


def _udp_echo(concurrency: int, duration: float, prefer_uvloop: bool) -> dict[str, Any]:
    loop = new_event_loop(prefer_uvloop)
    try:
        return loop.run_until_complete(
            measure_udp_echo(
                concurrency,
                duration,
                NODE_HOST,
                payload_size=len(_get_request(1)),
                sockets=1,
                prefer_uvloop=prefer_uvloop,
            )
        )
    finally:
        loop.close()


def bench_echonet(
    *,
    codec_duration: float = 2.0,
    rtt_duration: float = 2.0,
    concurrency: int = 32,
    rounds: int = 3,
    prefer_uvloop: bool = True,
    rtt: bool = True,
) -> dict[str, Any]:
    """The whole benchmark: codec rates and ratio, Get round trips and the UDP echo baseline.

    The three round-trip measurements (ControllerDriver, lean controller, UDP echo) run in
    turn, `rounds` times; each reports its best round (all rounds are listed too), so that a
    busy neighbour during one round does not decide the result."""
    result: dict[str, Any] = {"targets": {"codec_ratio_vs_pychonet": CODEC_TARGET_RATIO}}
    frames = realistic_frames(_meter(TimeScale(0.0, MODEL_T)), 0.0)
    result.update(codec_section(frames, codec_duration))
    if not rtt:
        return result
    result["targets"]["get_rtt_per_s"] = GET_RTT_TARGET
    loop = new_event_loop(prefer_uvloop)
    result["uvloop"] = is_uvloop(loop)
    loop.close()
    runs: dict[str, list[dict[str, Any]]] = {"driver": [], "lean": [], "echo": []}
    for _ in range(max(1, rounds)):
        for kind in ("driver", "lean"):
            runs[kind].append(
                bench_get_rtt(kind, concurrency, rtt_duration, prefer_uvloop=prefer_uvloop)
            )
        runs["echo"].append(_udp_echo(concurrency, rtt_duration, prefer_uvloop))
    best = {k: max(v, key=lambda r: float(r["per_s"])) for k, v in runs.items()}
    get, lean, echo = best["driver"], best["lean"], best["echo"]
    result.update(
        get_rtt_per_s=round(get["per_s"]),
        get_rtt=get,
        controller=get.get("controller"),
        get_rtt_lean_per_s=round(lean["per_s"]),
        get_rtt_lean=lean,
        udp_echo_per_s=round(echo["per_s"]),
        get_vs_udp_echo=round(get["per_s"] / echo["per_s"], 3) if echo["per_s"] else None,
        rounds={k: [round(r["per_s"]) for r in v] for k, v in runs.items()},
        concurrency=concurrency,
    )
    return result
