"""`amistack meter`: a smart meter's network access (PANA + EAP-PSK) against the key server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from amistack.addr import Addr
from amistack.c1222.endpoint import C1222_PORT
from amistack.cli.common import CliError, parse_hostport, parse_psk
from amistack.runtime.keyserver import PANA_PORT
from amistack.runtime.loop import new_event_loop
from amistack.runtime.meter import KeyRotation, MeterResult, run_meter

log = logging.getLogger("amistack.meter")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "meter",
        help="run a meter: authenticate to the key server and keep the keys fresh",
        description="Run a smart meter's network access: it authenticates to the key server "
        "with PANA (RFC 5191) carrying EAP-PSK (RFC 4764), derives its application keys with "
        "the unified key-management function, re-authenticates before the session lifetime "
        "ends (logging each key rotation) and starts over with back-off after a failure.",
    )
    p.add_argument("--id", required=True, dest="device_id", help="device identity (EAP-PSK ID_P)")
    p.add_argument("--psk", required=True, type=parse_psk, help="the device's PSK, 32 hex digits")
    p.add_argument(
        "--keyserver",
        required=True,
        type=lambda t: parse_hostport(t, PANA_PORT),
        metavar="HOST:PORT",
        help=f"the key server's PANA address; [v6]:port for IPv6 (default port {PANA_PORT})",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="exit 0 after the first successful authentication, non-zero with the reason if not",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="with --once: give up after SECONDS")
    full = p.add_argument_group(
        "the full meter",
        "With --headend the meter also serves ANSI C12.22 (EAX' under its UKMF key) from its "
        "metering model: registers, load profile, clock, remote switch, demand reset.",
    )
    full.add_argument(
        "--headend",
        type=lambda t: parse_hostport(t, C1222_PORT),
        metavar="HOST:PORT",
        help=f"the head-end's C12.22 address (default port {C1222_PORT})",
    )
    full.add_argument(
        "--listen",
        type=lambda t: parse_hostport(t, C1222_PORT),
        metavar="HOST:PORT",
        help="where the meter's C12.22 server listens (default: any address, port chosen)",
    )
    full.add_argument(
        "--push",
        action="store_true",
        help="push each 15-minute interval to the head-end at a randomized offset",
    )
    full.add_argument("--seed", type=int, help="metering model seed (default: from the id)")
    full.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="model seconds per real second (accelerated time, e.g. 900)",
    )
    full.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="keep the meter's signed event log in DIR/meters/ID/",
    )
    p.set_defaults(handler=_run)


def _print_rotation(rot: KeyRotation) -> None:
    what = "re-authenticated" if rot.reauth else "authenticated"
    print(
        f"{rot.device_id}: {what}; keys rotated to key id {rot.session_id:08x}.{rot.key_id:08x} "
        f"(lifetime {rot.lifetime:g} s)",
        flush=True,
    )


async def _main(args: argparse.Namespace) -> MeterResult:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.headend is not None:
        from amistack.meter.node import MeterNode
        from amistack.runtime.meter_node import run_meter_node

        def ready(node: MeterNode, addrs: list[Addr]) -> None:
            title = node.config.ap_title.absolute()
            for host, port in addrs:
                print(
                    f"{args.device_id}: C12.22 AP title {title} on {host} port {port}", flush=True
                )

        return await run_meter_node(
            args.device_id,
            args.psk,
            args.keyserver,
            args.headend,
            model_seed=args.seed,
            time_scale=args.time_scale,
            push=args.push,
            listen=[args.listen[0]] if args.listen else None,
            port=args.listen[1] if args.listen else 0,
            data_dir=args.data_dir,
            stop=stop,
            on_rotation=_print_rotation,
            on_ready=ready,
        )
    return await run_meter(
        args.device_id,
        args.psk,
        args.keyserver,
        once=args.once,
        timeout=args.timeout,
        stop=stop,
        on_rotation=_print_rotation,
    )


def _run(args: argparse.Namespace) -> int:
    if args.once and args.headend is not None:
        raise CliError("--once checks network access only; it does not go with --headend")
    if args.time_scale <= 0:
        raise CliError("--time-scale must be > 0")
    loop = new_event_loop()
    try:
        result = loop.run_until_complete(_main(args))
    finally:
        loop.close()
    if not args.once:
        return 0
    if result.ok:
        print(result)
        return 0
    print(f"amistack meter: {result}", flush=True)
    return 1
