"""`amistack hems`: a HEMS controller that finds the smart meter and polls it over ECHONET Lite.

Discovery is a multicast Get of D6 (224.0.23.0, or ff02::1 with an IPv6 --bind), or, with
--meter, a unicast probe of that address (guideline §6.6: a Get of D6, then an INF_REQ of D5;
never waiting for the meter's startup INF). Each poll reads E7 (instantaneous power), E8
(instantaneous current R/T) and E0 (cumulative energy, normal direction; E1 unit and D3
coefficient read once and applied: kWh); with --history-day N it also sets E5 = N (SetC) and reads
E2 (48 half-hour values of that day). Output: one line per poll, or one JSON object per poll
(--json, JSON Lines). No-data codes (0x7FFFFFFE, 0x7FFE, 0xFFFFFFFE) print as "-" / null.

With --broute the same controller runs over the B route (`broute.controller.BrouteController`):
it authenticates to the meter with PANA + EAP-PSK from the B-route ID and password, then probes
and polls it inside AES-CCM* link frames; the link's keep-alive and reconnection stages
(guideline §6.4, §6.5) run underneath.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import ipaddress
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from amistack.addr import Addr
from amistack.broute import BrouteHems
from amistack.broute.controller import BrouteController
from amistack.cli.common import (
    CliError,
    add_broute_options,
    broute_credentials,
    parse_hostport,
    stop_on_signals,
)
from amistack.crypto.rand import system_random
from amistack.echonet.controller import ControllerConfig, EchonetController, KnownNode
from amistack.echonet.events import RequestCompleted
from amistack.echonet.frame import Eoj
from amistack.echonet.node import EL_PORT, MULTICAST_V4, MULTICAST_V6
from amistack.echonet.objects.smart_meter import (
    NO_DATA_S16,
    NO_DATA_S32,
    NO_DATA_U32,
    UNIT_TENTHS_WH,
)
from amistack.runtime.echonet import AddressInUse
from amistack.runtime.echonet_controller import ControllerDriver, ControllerEngine, RequestError
from amistack.runtime.loop import new_event_loop

SMART_METER_CLASS = 0x0288
HISTORY_SLOTS = 48


def register(sub: Any) -> None:
    p = sub.add_parser(
        "hems",
        help="find the smart meter over ECHONET Lite and poll power, current and energy",
        description="A home energy management controller: finds the low-voltage smart meter "
        "(0x0288) by multicast discovery or, with --meter, by probing its address; then polls "
        "E7 (instantaneous power, W), E8 (instantaneous current R/T, A) and E0 (cumulative "
        "energy with the E1 unit and D3 coefficient applied, kWh), and with --history-day N "
        "sets E5=N and reads E2 (that day's 48 half-hour cumulative values). Prints one line "
        "per poll, or with --json one JSON object per poll (JSON Lines). Exit status: 0, 1 when "
        "a poll got no answer, 2 when no meter was found within --timeout.",
        epilog="examples: amistack hems --interface eth0 ; "
        "amistack hems --meter 192.168.1.20 --count 1 --json ; "
        "amistack hems --meter fe80::1%eth0 --bind fe80::2%eth0 --history-day 1 ; "
        "amistack hems --broute [::1]:716 --broute-id RBID --count 1",
    )
    p.add_argument(
        "--meter",
        type=_parse_meter,
        metavar="HOST",
        help="the meter's address: probe it by unicast instead of multicast discovery "
        "(IPv4, IPv6; a link-local IPv6 address takes its %%zone)",
    )
    p.add_argument(
        "--bind",
        metavar="ADDR",
        type=_parse_bind,
        help="our address (UDP 3610 is bound on it; answers arrive there); default 0.0.0.0, "
        "or :: when --meter is IPv6",
    )
    p.add_argument(
        "--interface",
        metavar="IF",
        help="network interface for multicast discovery (join and send) on a multi-homed host",
    )
    p.add_argument(
        "--interval", type=float, default=10.0, metavar="S", help="seconds between polls (10)"
    )
    p.add_argument(
        "--count", type=int, default=0, metavar="N", help="stop after N polls (default: forever)"
    )
    p.add_argument(
        "--history-day",
        type=int,
        metavar="N",
        help="also set E5=N (0 today, 1 yesterday ... 99) and read E2 each poll",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per poll (JSON Lines)")
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="give up finding the meter after S seconds (exit 2); also the per-request limit",
    )
    add_broute_options(
        p,
        "With --broute the HEMS reaches the meter over the B route instead of the LAN: PANA + "
        "EAP-PSK with the B-route ID and password (the meter is the PAA), then ECHONET Lite in "
        "AES-CCM* link frames (a meter started with 'amistack meter --broute').",
        "the meter's B-route link address",
    )
    p.set_defaults(handler=_run)


def _parse_meter(text: str) -> Addr:
    if "%" not in text:
        return parse_hostport(text, EL_PORT)
    host, _, zone = text.strip("[]").partition("%")
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a %zone goes with an IPv6 address") from None
    return (f"{host}%{zone}", EL_PORT)


def _parse_bind(text: str) -> str:
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address") from None
    return host


# -- values (APPENDIX, low-voltage smart electric energy meter) ----------------------------------


def signed(edt: bytes | None, nodata: int) -> int | None:
    """A signed EDT, None when absent or the no-data code."""
    if edt is None or not edt:
        return None
    raw = int.from_bytes(edt, "big")
    if raw == nodata:
        return None
    return int.from_bytes(edt, "big", signed=True)


def unsigned(edt: bytes | None) -> int | None:
    if edt is None or len(edt) != 4:
        return None
    raw = int.from_bytes(edt, "big")
    return None if raw == NO_DATA_U32 else raw


@dataclass(frozen=True)
class EnergyScale:
    """E0/E2 raw value -> kWh: raw * D3 coefficient * E1 unit."""

    coefficient: int = 1
    unit_tenths_wh: int = UNIT_TENTHS_WH[0x01]

    def kwh(self, raw: int | None) -> float | None:
        if raw is None:
            return None
        return round(raw * self.coefficient * self.unit_tenths_wh / 10_000, 6)


def energy_scale(r: RequestCompleted) -> EnergyScale:
    """From a Get of E1 and D3 (D3 is optional: absent means 1, APPENDIX)."""
    coefficient = unsigned(r.value(0xD3)) or 1
    unit_edt = r.value(0xE1)
    unit = unit_edt[0] if unit_edt and len(unit_edt) == 1 else 0x01
    return EnergyScale(coefficient, UNIT_TENTHS_WH.get(unit, UNIT_TENTHS_WH[0x01]))


def current_amps(edt: bytes | None) -> tuple[float | None, float | None]:
    """E8: R phase and T phase, signed 0.1 A each (0x7FFE: no data, e.g. T on single phase)."""
    if edt is None or len(edt) != 4:
        return None, None
    r = signed(edt[:2], NO_DATA_S16)
    t = signed(edt[2:], NO_DATA_S16)
    return (None if r is None else r / 10, None if t is None else t / 10)


def history(edt: bytes | None, scale: EnergyScale) -> tuple[int | None, list[float | None]]:
    """E2: day (2 bytes) + 48 cumulative values (u32, 0xFFFFFFFE: no data) -> kWh."""
    if edt is None or len(edt) != 2 + 4 * HISTORY_SLOTS:
        return None, []
    day = int.from_bytes(edt[:2], "big")
    values = [scale.kwh(unsigned(edt[2 + 4 * i : 6 + 4 * i])) for i in range(HISTORY_SLOTS)]
    return day, values


# -- running ---------------------------------------------------------------------------------------


def _fmt(v: float | int | None, unit: str, spec: str = "") -> str:
    return "-" if v is None else f"{v:{spec}} {unit}"


def _print_poll(obj: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, separators=(",", ":")), flush=True)
        return
    r, t = obj["current_a"]["r"], obj["current_a"]["t"]
    line = (
        f"{obj['time']} {obj['meter']} power {_fmt(obj['power_w'], 'W')}  "
        f"current R {_fmt(r, 'A', '.1f')} T {_fmt(t, 'A', '.1f')}  "
        f"energy {_fmt(obj['energy_kwh'], 'kWh', '.3f')}"
    )
    hist = obj.get("history")
    if hist is not None:
        known = [v for v in hist["kwh"] if v is not None]
        span = f"{known[0]:.3f}..{known[-1]:.3f} kWh" if known else "no data"
        line += f"  E2 day {hist['day']}: {len(known)}/{HISTORY_SLOTS} values, {span}"
    print(line, flush=True)


async def _find(driver: ControllerDriver, args: argparse.Namespace) -> tuple[KnownNode, Eoj]:
    driver.start(probe=[args.meter] if args.meter else [])
    waiting = asyncio.ensure_future(
        driver.wait_for_node(SMART_METER_CLASS, timeout=args.timeout, maps=False)
    )
    if isinstance(driver.engine, BrouteController):
        # the meter's refusal of our B-route ID/password is final: say so at once
        hems = driver.engine.hems
        while not waiting.done() and not hems.counters["refused"]:
            await asyncio.wait({waiting}, timeout=0.05)
        if not waiting.done():
            waiting.cancel()
            raise CliError(
                f"B route: the meter at {args.broute[0]} port {args.broute[1]} refused the "
                "B-route ID/password (authentication failed; not retrying)"
            )
    node = await waiting
    how = f"at {args.meter[0]}" if args.meter else "by multicast discovery"
    if isinstance(driver.engine, BrouteController):
        how = f"over the B route at {args.broute[0]} port {args.broute[1]}"
        hems = driver.engine.hems
        if node is None and not hems.connected:
            failed = hems.counters["auth_failed"]
            why = "authentication refused (B-route ID/password?)" if failed else "no answer"
            raise CliError(f"B route: not connected within {args.timeout:g} s: {why}")
    if node is None:
        raise CliError(f"no smart meter (class 0x0288) found {how} within {args.timeout:g} s")
    eoj = node.find(SMART_METER_CLASS)
    if eoj is None:  # wait_for_node returns only nodes that have one
        raise CliError(f"the node at {node.addr[0]} has no smart meter object")
    return node, eoj


async def _poll(
    driver: ControllerDriver, addr: Addr, eoj: Eoj, scale: EnergyScale, args: argparse.Namespace
) -> dict[str, Any]:
    r = await driver.get(addr, eoj, [0xE7, 0xE8, 0xE0], timeout=args.timeout)
    cur_r, cur_t = current_amps(r.value(0xE8))
    obj: dict[str, Any] = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "meter": addr[0],
        "eoj": str(eoj),
        "power_w": signed(r.value(0xE7), NO_DATA_S32),
        "current_a": {"r": cur_r, "t": cur_t},
        "energy_kwh": scale.kwh(unsigned(r.value(0xE0))),
    }
    if args.history_day is not None:
        s = await driver.set(addr, eoj, [(0xE5, bytes((args.history_day,)))], timeout=args.timeout)
        if not s.ok:
            raise RequestError(f"the meter refused E5={args.history_day}")
        h = await driver.get(addr, eoj, [0xE2], timeout=args.timeout)
        day, values = history(h.value(0xE2), scale)
        obj["history"] = {"day": day, "kwh": values}
    return obj


async def _main(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    v6 = ":" in (args.bind or (args.meter[0] if args.meter else ""))
    bind = args.bind or ("::" if v6 else "0.0.0.0")
    multicast = args.meter is None
    groups = ((MULTICAST_V6 if v6 else MULTICAST_V4),) if multicast else ()
    per_request = max(args.timeout / 3, 0.1)
    config = ControllerConfig(
        multicast_groups=groups,
        request_timeout=per_request,
        retries=2,
        late_grace=0.0,
        discovery_window=min(args.timeout, 5.0),
        rediscover_interval=None if args.meter else 600.0,
    )
    ctl = EchonetController(config, system_random)
    engine: ControllerEngine = ctl
    if args.broute is not None:
        config = dataclasses.replace(config, multicast_groups=(), rediscover_interval=None)
        hems = BrouteHems(broute_credentials(args), args.broute, system_random)
        engine = BrouteController(hems, EchonetController(config, system_random))
    driver = ControllerDriver(engine)
    try:
        try:
            if args.broute is not None:
                await driver.bind("::" if ":" in args.broute[0] else "0.0.0.0", 0)
            else:
                await driver.open(
                    ipv4=None if v6 else bind,
                    ipv6=bind if v6 else None,
                    interface=args.interface,
                    multicast=multicast,
                )
        except AddressInUse as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            raise CliError(f"cannot use UDP {bind} port {EL_PORT}: {exc.strerror or exc}") from None
        find = asyncio.ensure_future(_find(driver, args))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({find, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not find.done():  # Ctrl-C while still looking for the meter
            find.cancel()
            return 130
        node, eoj = find.result()
        try:
            r = await driver.get(node.addr, eoj, [0xE1, 0xD3], timeout=args.timeout)
            scale = energy_scale(r)
        except RequestError:
            scale = EnergyScale()
        failed = 0
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                _print_poll(await _poll(driver, node.addr, eoj, scale, args), args.json)
            except RequestError as exc:
                failed += 1
                print(f"amistack hems: poll {n}: {exc}", file=sys.stderr, flush=True)
            if args.count and n >= args.count:
                break
            wait = args.interval - (time.monotonic() - started)
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await stop.wait()
                except TimeoutError:
                    pass
        return 1 if failed else 0
    finally:
        driver.close()


def _run(args: argparse.Namespace) -> int:
    if args.interval < 0 or args.count < 0 or args.timeout <= 0:
        raise CliError("--interval and --count must be >= 0, --timeout > 0")
    if args.history_day is not None and not 0 <= args.history_day <= 99:
        raise CliError("--history-day must be 0..99 (E5)")
    if args.meter and args.bind and (":" in args.meter[0]) != (":" in args.bind):
        raise CliError("--meter and --bind must be of one family (IPv4 or IPv6)")
    if args.broute is not None:
        if args.meter or args.bind or args.interface:
            raise CliError("--broute reaches the meter itself: no --meter, --bind, --interface")
        broute_credentials(args)  # a bad ID or password: say so before anything starts
    elif args.broute_id or args.broute_password:
        raise CliError("--broute-id and --broute-password go with --broute")
    loop = new_event_loop()
    try:
        return loop.run_until_complete(_main(args))
    finally:
        loop.close()
