"""`amistack bench flood`: a legitimate meter's authentication latency while the key server is
flooded, against its idle latency measured in the same run.

Three processes on loopback only: the key server (the real `keymgmt.KeyServer` on a temporary
SQLite store, production PAA settings, one configured relay), a flooder (one UDP socket sending as
fast as it can, or at `rate` datagrams/s) and, in this process, the meter authenticating one
session after another (PCI sent -> Authenticated).

Floods (each `duration` s):
  * pci: one source (one socket) repeating a PCI (RFC 5191 §4.1) -- the PAR cache path;
  * pry: one configured relay (RFC 6345) wrapping PCIs from ever new PaC addresses.

The flooder counts the bytes the key server sent back to it: an unauthenticated source must never
get more bytes than it sent (`amplification` <= 1). Target: p50 during a flood <= 2x idle p50.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from amistack.addr import Addr
from amistack.bench.auth import (
    bench_device_id,
    bench_psk,
    pac_fleet,
    percentile,
)
from amistack.runtime.loop import is_uvloop, new_event_loop, run

SERVER_HOST = "127.0.0.1"
METER_HOSTS = [f"127.0.1.{i}" for i in range(1, 251)]  # the meters' addresses, in turn
FLOOD_HOST = "127.0.0.2"  # the one-source PCI flood
RELAY_HOST = "127.0.0.3"  # the configured relay that floods PRYs
FLOODS = ("pci", "pry")
_INNER_ADDRESSES = 16384  # distinct PaC addresses the PRY flood cycles through


# -- the key server (child process) ------------------------------------------------------------


def _server_process(conn: Connection, prefer_uvloop: bool) -> None:
    try:
        run(lambda: _serve(conn), prefer_uvloop)
    except BaseException as exc:  # tell the parent rather than leaving it waiting
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


async def _serve(conn: Connection) -> None:
    from pathlib import Path

    from amistack.crypto import system_random
    from amistack.keymgmt.kek import FileKek
    from amistack.keymgmt.store import CredentialStore
    from amistack.pana.paa import PaaConfig
    from amistack.runtime.keyserver import build_key_server, start_keyserver

    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="amistack-bench-flood-") as tmp:
        now = time.time()
        store = CredentialStore(Path(tmp) / "keys.db", FileKek(os.urandom(32), system_random))
        store.enroll(bench_device_id(0), bench_psk(0), now)
        # production PAA defaults; the PRY flooder is a configured relay (the worst case)
        config = PaaConfig(allowed_relays=frozenset({RELAY_HOST}))
        engine = build_key_server(store, paa_config=config, now=now)
        rt = await start_keyserver(engine, [SERVER_HOST], 0, on_event=None)
        try:
            conn.send(rt.pana_addresses[0])
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                if command == "stop":
                    break
                counters = {**engine.agent.counters, **engine.counters}
                conn.send({"cpu_s": time.process_time(), "counters": dict(counters)})
        finally:
            rt.close()
            store.close()


# -- the flooder (child process) ---------------------------------------------------------------


def flood_datagrams(kind: str) -> list[bytes]:
    """What the flooder sends in turn: one PCI, or PRYs carrying a PCI from many PaCs."""
    from amistack.pana.constants import MessageType
    from amistack.pana.message import PanaMessage
    from amistack.pana.relay import wrap_relay

    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    if kind == "pci":
        return [pci]
    return [
        wrap_relay((f"10.{i >> 8 & 0xFF}.{i & 0xFF}.1", 1024 + i), pci)
        for i in range(_INNER_ADDRESSES)
    ]


def _flood_process(
    target: Addr, kind: str, host: str, duration: float, rate: float, conn: Connection
) -> None:
    datagrams = flood_datagrams(kind)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    sent = bytes_out = received = bytes_in = 0
    n = len(datagrams)
    perf = time.perf_counter
    start = perf()
    end = start + duration
    try:
        while (now := perf()) < end:
            if rate and sent >= (now - start) * rate:
                time.sleep(0.0005)
            for _ in range(64):
                data = datagrams[sent % n]
                try:
                    sock.sendto(data, target)
                except (BlockingIOError, OSError):  # ENOBUFS: the kernel is full
                    break
                sent += 1
                bytes_out += len(data)
            while True:
                try:
                    reply = sock.recv(65536)
                except (BlockingIOError, OSError):
                    break
                received += 1
                bytes_in += len(reply)
        time.sleep(0.5)  # late answers count too
        while True:
            try:
                reply = sock.recv(65536)
            except (BlockingIOError, OSError):
                break
            received += 1
            bytes_in += len(reply)
    finally:
        sock.close()
    conn.send(
        {
            "sent": sent,
            "bytes_out": bytes_out,
            "received": received,
            "bytes_in": bytes_in,
            "seconds": perf() - start,
        }
    )
    conn.close()


# -- the meter (this process) ------------------------------------------------------------------


async def _latencies(
    paa: Addr, hosts: Iterator[str], until: float, at_least: int = 0
) -> dict[str, Any]:
    """Authenticate one session after another until `until` (perf_counter) and `at_least`.

    Each from its own loopback address, as meters are: one address authenticating many times a
    second would meet the PAA's per-source PCI budget (5/s), which is not what is measured."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    while time.perf_counter() < until or len(latencies) < at_least:
        r = await pac_fleet(
            paa, 1, 1, 1, 1, timeout=60.0, keep_latencies=True, local_hosts=[next(hosts)]
        )
        latencies += r["latencies"]
        for key, count in r["failure_reasons"].items():
            failures[key] = failures.get(key, 0) + count
        if r["failure_reasons"] and len(latencies) < at_least:
            break
    latencies.sort()
    return {
        "auths": len(latencies),
        "failures": failures,
        "p50_ms": round(percentile(latencies, 50) * 1000.0, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000.0, 3),
        "max_ms": round(latencies[-1] * 1000.0, 3) if latencies else None,
    }


async def _call(conn: Connection, message: object) -> Any:
    loop = asyncio.get_running_loop()
    conn.send(message)
    return await loop.run_in_executor(None, conn.recv)


async def bench_flood_async(
    duration: float = 20.0,
    floods: tuple[str, ...] = FLOODS,
    rate: float = 0.0,
    idle_seconds: float = 2.0,
    prefer_uvloop: bool = True,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(
        target=_server_process, args=(child, prefer_uvloop), name="amistack-bench-keyserver"
    )
    server.start()
    child.close()
    result: dict[str, Any] = {"duration_s": duration, "rate": rate or "max"}
    try:
        paa = await loop.run_in_executor(None, parent.recv)
        if isinstance(paa, dict):
            raise RuntimeError(f"key server process failed: {paa['error']}")
        paa = tuple(paa)
        hosts = itertools.cycle(METER_HOSTS)
        await _latencies(paa, hosts, 0.0, at_least=1)  # warm-up: the store's first write
        idle = await _latencies(paa, hosts, time.perf_counter() + idle_seconds, at_least=20)
        result["idle"] = idle
        for kind in floods:
            before = await _call(parent, "counters")
            fparent, fchild = ctx.Pipe(duplex=False)
            host = FLOOD_HOST if kind == "pci" else RELAY_HOST
            flooder = ctx.Process(
                target=_flood_process,
                args=(paa, kind, host, duration, rate, fchild),
                name=f"amistack-bench-flood-{kind}",
            )
            flooder.start()
            fchild.close()
            await asyncio.sleep(min(1.0, duration / 10))  # let the flood build up
            during = await _latencies(paa, hosts, time.perf_counter() + duration * 0.8)
            sent = await loop.run_in_executor(None, fparent.recv)
            await loop.run_in_executor(None, flooder.join, 10.0)
            fparent.close()
            after = await _call(parent, "counters")
            counters = {
                k: v - before["counters"].get(k, 0)
                for k, v in after["counters"].items()
                if v - before["counters"].get(k, 0)
            }
            idle_p50 = idle["p50_ms"] or 1e-9
            result[f"{kind}_flood"] = {
                **during,
                "ratio_to_idle_p50": round(during["p50_ms"] / idle_p50, 2),
                "flood_sent": sent["sent"],
                "flood_per_s": round(sent["sent"] / max(sent["seconds"], 1e-9)),
                "flood_bytes_out": sent["bytes_out"],
                "flood_bytes_back": sent["bytes_in"],
                "amplification": round(sent["bytes_in"] / max(sent["bytes_out"], 1), 4),
                "server_cpu_s": round(after["cpu_s"] - before["cpu_s"], 3),
                "server_counters": counters,
            }
            idle_again = await _latencies(
                paa, hosts, time.perf_counter() + idle_seconds, at_least=5
            )
            result[f"{kind}_flood"]["after_p50_ms"] = idle_again["p50_ms"]
    finally:
        with contextlib.suppress(OSError, BrokenPipeError):
            parent.send("stop")
        await loop.run_in_executor(None, server.join, 10.0)
        if server.is_alive():
            server.kill()
        parent.close()
    result["uvloop"] = is_uvloop(loop)
    result["target"] = "p50 during a flood <= 2x idle p50; amplification <= 1"
    return result


def bench_flood(
    duration: float = 20.0,
    floods: tuple[str, ...] = FLOODS,
    rate: float = 0.0,
    prefer_uvloop: bool = True,
) -> dict[str, Any]:
    """The JSON-ready result: idle latency, then per flood the meter's latency during it, its
    ratio to idle, what the flooder sent and got back, and the key server's CPU and counters."""
    loop = new_event_loop(prefer_uvloop)
    try:
        return loop.run_until_complete(
            bench_flood_async(duration, floods, rate, prefer_uvloop=prefer_uvloop)
        )
    finally:
        loop.close()


__all__ = ["FLOODS", "bench_flood", "flood_datagrams"]
