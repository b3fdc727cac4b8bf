"""`amistack bench echonet-flood`: what a flood of small Gets draws out of a smart-meter node.

The node (`EchonetNode` + the given `SmartMeterObject`) is fed on a virtual clock, as a socket
driver feeds it: `rate` Gets per second, each 16 bytes asking for E2 and E4 (404 bytes of
answer), in receive batches of `batch` datagrams with one flush after each. Two floods are run
for `duration` seconds each:

- `one_source`: every Get from one address (a flooder, or a victim whose address is spoofed);
- `spoofed_sources`: every Get from a different address (so no per-source limit applies alone).

Meanwhile a legitimate controller at another address sends one Get of E7 a second (60/min, the
guideline §6.11 case) and must be answered every time. Each flood runs twice in the same
invocation: with the node's default reply budget (`after`) and with `reply_rate=None`, the
behaviour before the budget existed (`before`, the baseline). The figure that matters is
`out_per_in`: bytes the node sent to the flooding source(s) per byte received from them.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from amistack.addr import Addr
from amistack.crypto.rand import seeded_random
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterObject

__all__ = ["bench_flood", "flood_run"]

CONTROLLER = Eoj(0x05, 0xFF, 0x01)
METER = Eoj(0x02, 0x88, 0x01)
LEGIT: Addr = ("192.0.2.10", 3610)
FLOODER: Addr = ("198.51.100.66", 3610)


def _flood_source(i: int, spoofed: bool) -> Addr:
    if not spoofed:
        return FLOODER
    return (f"10.{(i >> 16) & 0xFF}.{(i >> 8) & 0xFF}.{i & 0xFF}", 3610)


def flood_run(
    meter: SmartMeterObject,
    config: NodeConfig,
    *,
    rate: int,
    duration: float,
    batch: int = 32,
    spoofed: bool = False,
) -> dict[str, Any]:
    """One flood against a fresh node; returns the byte counts and the legitimate controller's
    answers."""
    node = EchonetNode(NodeProfile([]), [meter], seeded_random(1), config)
    get = Frame(1, CONTROLLER, METER, Esv.GET, (Property(0xE2), Property(0xE4))).encode()
    legit = Frame(2, CONTROLLER, METER, Esv.GET, (Property(0xE7),)).encode()
    bytes_in = bytes_out = sent = legit_sent = legit_answered = 0
    batches = max(1, int(rate * duration) // batch)
    step = duration / batches
    next_legit = 0.0
    started = time.perf_counter()
    for k in range(batches):
        now = k * step
        if now >= next_legit:
            node.receive_datagram(legit, LEGIT, now)
            legit_sent += 1
            next_legit += 1.0
        for _ in range(batch):
            node.receive_datagram(get, _flood_source(sent, spoofed), now)
            bytes_in += len(get)
            sent += 1
        node.handle_timer(now)
        for data, dest in node.datagrams_to_send(now):
            if dest[0] == LEGIT[0]:
                legit_answered += 1
            else:
                bytes_out += len(data)
    elapsed = time.perf_counter() - started
    budget = node.reply_budget
    return {
        "requests": sent,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "out_per_in": round(bytes_out / bytes_in, 4) if bytes_in else None,
        "legit_sent": legit_sent,
        "legit_answered": legit_answered,
        "dropped_rate_limited": node.counters["dropped_rate_limited"],
        "dropped_queue_full": node.counters["dropped_queue_full"],
        "budget_sources": None if budget is None else len(budget),
        "requests_per_s_cpu": round(sent / elapsed) if elapsed > 0 else None,
    }


def bench_flood(
    meter: SmartMeterObject,
    *,
    rate: int = 2000,
    duration: float = 60.0,
    batch: int = 32,
    config: NodeConfig | None = None,
) -> dict[str, Any]:
    """Both floods, each with the reply budget (`after`) and without it (`before`)."""
    after = dataclasses.replace(config or NodeConfig(), multicast_groups=())
    before = dataclasses.replace(after, reply_rate=None)
    result: dict[str, Any] = {
        "rate_per_s": rate,
        "duration_s": duration,
        "batch": batch,
        "request_bytes": 16,
        "reply_rate": after.reply_rate,
        "reply_burst": after.reply_burst,
    }
    for name, spoofed in (("one_source", False), ("spoofed_sources", True)):
        result[name] = {
            "before": flood_run(
                meter, before, rate=rate, duration=duration, batch=batch, spoofed=spoofed
            ),
            "after": flood_run(
                meter, after, rate=rate, duration=duration, batch=batch, spoofed=spoofed
            ),
        }
    return result
