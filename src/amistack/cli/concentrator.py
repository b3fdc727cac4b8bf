"""`amistack concentrator`: the mesh's DODAG root, PANA relay and border router as a process;
and the radio options it shares with `amistack meter --mesh`."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amistack.c1222.endpoint import C1222_PORT
from amistack.cli.common import (
    PSK_ENV,
    CliError,
    add_psk_options,
    pan_id_arg,
    parse_hostport,
    resolve_psk,
    stop_on_signals,
)
from amistack.mesh.border import BorderPolicy
from amistack.runtime.keyserver import PANA_PORT
from amistack.runtime.loop import run

DEFAULT_PAN = 0xFACE
DEFAULT_PREFIX = ipaddress.IPv6Network("fd00:a3e5:1::/64")  # a ULA prefix (RFC 4193)
REPORT_TOKEN_ENV = "AMISTACK_REPORT_TOKEN"


def add_radio_options(p: argparse.ArgumentParser, title: str, description: str) -> None:
    """--radio, --hear, --pan: a node's place on the UDP radio (runtime/mesh.py)."""
    g = p.add_argument_group(title, description)
    g.add_argument(
        "--radio",
        type=lambda t: parse_hostport(t, None),
        metavar="HOST:PORT",
        help="this node's radio: a UDP socket ([v6]:port for IPv6)",
    )
    g.add_argument(
        "--hear",
        action="append",
        default=[],
        type=lambda t: parse_hostport(t, None),
        metavar="HOST:PORT",
        help="a neighbour's radio (repeatable): frames go to every neighbour, and frames from "
        "any other address are never heard",
    )
    g.add_argument(
        "--radio-if",
        action="append",
        default=[],
        metavar="IFACE",
        help="instead of --radio/--hear, repeatable: the radio is made of these network "
        "interfaces (veths or bridges between network namespaces): frames go to the link-local "
        "group ff02::114, port 61617, on each, and everyone on those links hears them",
    )
    g.add_argument(
        "--pan",
        type=pan_id_arg,
        default=DEFAULT_PAN,
        metavar="PANID",
        help=f"the 802.15.4 PAN id, the key server's --mesh-pan (default {DEFAULT_PAN:#x})",
    )


def check_radio(args: argparse.Namespace) -> None:
    """--radio with --hear, or --radio-if alone; sets `args.radio_at` and `args.neighbours`."""
    if args.radio_if:
        if args.radio is not None or args.hear:
            raise CliError("give either --radio-if or --radio with --hear, not both")
        from amistack.runtime.mesh import Links

        args.radio_at, args.neighbours = Links(tuple(args.radio_if)), ()
        return
    if args.radio is None or not args.hear:
        raise CliError(
            "the mesh needs --radio HOST:PORT and at least one --hear HOST:PORT (or --radio-if)"
        )
    args.radio_at, args.neighbours = args.radio, args.hear


def register(sub: Any) -> None:
    p = sub.add_parser(
        "concentrator",
        help="run a mesh concentrator: DODAG root, PANA relay and border router to the WAN",
        description="Run the concentrator of a mesh of meters (docs/mesh.md, 'Running a mesh "
        "as processes'). It authenticates itself to the key server (PANA + EAP-PSK, like a "
        "meter) and takes the PAN's group keys from its PANA success, then becomes the RPL "
        "DODAG root on its radio, relays the PANA of meters in range to the key server (RFC "
        "6345) and routes the mesh's traffic to the key server and the head-end and back "
        "(UDP; an IPv4 address is 64:ff9b::/96 inside the mesh), limiting what each meter may "
        "send out (the border). With --c1222-listen it is also a C12.22 relay: the head-end "
        "reaches every meter that registered through it there, by ApTitle. The key server must "
        "accept this host as relay (amistack keyserver --relay ADDRESS --mesh-pan PANID). Stops "
        "on Ctrl-C / SIGTERM.",
        epilog="example: amistack concentrator --id conc-1 --psk-file conc-1.psk --keyserver "
        "127.0.0.1:716 --headend 127.0.0.1:1153 --c1222-listen 127.0.0.1:7153 --radio "
        "127.0.0.1:7000 --hear 127.0.0.1:7001 --data-dir conc",
    )
    p.add_argument("--id", dest="device_id", help="the concentrator's device identity")
    add_psk_options(p, "required", env=True)
    p.add_argument(
        "--keyserver",
        type=lambda t: parse_hostport(t, PANA_PORT),
        metavar="HOST:PORT",
        help=f"the key server's PANA address (default port {PANA_PORT})",
    )
    p.add_argument(
        "--headend",
        type=lambda t: parse_hostport(t, C1222_PORT),
        metavar="HOST:PORT",
        help=f"the head-end's C12.22 address (default port {C1222_PORT}): the meters may reach it",
    )
    p.add_argument(
        "--c1222-listen",
        type=lambda t: parse_hostport(t, C1222_PORT),
        metavar="HOST:PORT",
        help="be a C12.22 relay on the WAN here: the head-end reaches every meshed meter at this "
        "address (amistack headend --concentrator ID=HOST:PORT), routed by the ApTitle it "
        "calls (a segmented request is reassembled first); a meter is reachable once its C12.22 "
        "Registration through this concentrator was granted by the head-end, for that period",
    )
    p.add_argument(
        "--prefix",
        type=_prefix,
        default=DEFAULT_PREFIX,
        metavar="PREFIX/64",
        help=f"the mesh's IPv6 prefix the DODAG root announces (default {DEFAULT_PREFIX})",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("./amistack-data/concentrator"),
        metavar="DIR",
        help="where the frame counters are kept, ahead of use (default "
        "./amistack-data/concentrator)",
    )
    add_radio_options(p, "the radio", "Where the node is on the UDP radio.")
    g = p.add_argument_group(
        "the border",
        "What leaves the mesh: only from the root's or a joined meter's address, at most "
        f"{BorderPolicy().flows_per_source} flows per meter, PANA to the key server only as "
        "PANA-Relay messages, their PCIs limited per relaying meter (docs/mesh.md).",
    )
    g.add_argument(
        "--relay-pci-rate",
        type=_rate,
        default=BorderPolicy().relay_pci_rate,
        metavar="PER_S",
        help="relayed PCIs per second one relaying meter may send the key server (default "
        f"{BorderPolicy().relay_pci_rate:g}); keep the mesh's sum below the key server's "
        "--relay-rate",
    )
    g.add_argument(
        "--relay-pci-burst",
        type=_rate,
        default=BorderPolicy().relay_pci_burst,
        metavar="N",
        help=f"its burst (default {BorderPolicy().relay_pci_burst:g}, at least 1)",
    )
    g = p.add_argument_group(
        "topology reports",
        "Report the DODAG to the head-end's REST API for its mesh page (docs/mesh.md).",
    )
    g.add_argument(
        "--report-to",
        metavar="URL",
        help="the head-end's REST base URL (e.g. https://headend:8443): POST the DODAG to "
        "/concentrators/ID/topology",
    )
    g.add_argument(
        "--report-token-file",
        type=Path,
        metavar="FILE",
        help=f"a file holding the bearer token (or ${REPORT_TOKEN_ENV}) of a user whose role "
        "has the topology_report right (ENGINEER)",
    )
    g.add_argument(
        "--report-every",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="seconds between reports (default 60)",
    )
    p.set_defaults(handler=_run)


def _number(low: float, high: float, unit: str) -> Callable[[str], float]:
    """An argparse type: a number in (low, high], or in [low, high] when `low` > 0."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            what = f"a number of{unit}" if unit else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (low <= value if low > 0 else low < value) or value > high:
            span = f"between {low:g} and {high:g}" if low > 0 else f"above 0, at most {high:g}"
            raise argparse.ArgumentTypeError(f"{text!r}: {span}{unit}")
        return value

    return parse


_seconds = _number(1.0, 86_400.0, " seconds")
_rate = _number(0.0, 10_000.0, "")


def _reporter(args: argparse.Namespace) -> Any:
    """The TopologyReporter of --report-to (None without it)."""
    if args.report_to is None:
        if args.report_token_file is not None:
            raise CliError("--report-token-file needs --report-to")
        return None
    if not args.report_to.startswith(("http://", "https://")):
        raise CliError(f"--report-to {args.report_to!r}: an http:// or https:// URL")
    token = os.environ.get(REPORT_TOKEN_ENV, "")
    if args.report_token_file is not None:
        try:
            token = args.report_token_file.read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read --report-token-file: {exc.strerror}") from None
    if not token:
        raise CliError(f"--report-to needs a token (--report-token-file or ${REPORT_TOKEN_ENV})")
    from amistack.runtime.concentrator import TopologyReporter

    return TopologyReporter(args.report_to, token, args.report_every)


def _prefix(text: str) -> ipaddress.IPv6Network:
    try:
        net = ipaddress.IPv6Network(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv6 prefix") from None
    if net.prefixlen != 64:
        raise argparse.ArgumentTypeError(f"{text!r}: the mesh prefix is a /64")
    return net


def print_mesh_event(who: str, event: object) -> None:
    """One line per step of joining, for the meter and the concentrator."""
    from amistack.mesh.node import ParentChosen, RelayReady
    from amistack.meter.registration import Registered
    from amistack.pana.events import Authenticated, AuthenticationFailed

    if isinstance(event, ParentChosen):
        print(f"{who}: parent {event.parent} (rank {event.rank})", flush=True)
    elif isinstance(event, Authenticated):
        again = "re-" if event.reauth else ""
        print(f"{who}: {again}authenticated through the mesh", flush=True)
    elif isinstance(event, AuthenticationFailed):
        print(f"{who}: authentication refused: {event.reason}", flush=True)
    elif isinstance(event, RelayReady):
        print(f"{who}: in the DODAG at rank {event.rank}, relaying", flush=True)
    elif isinstance(event, Registered):
        print(
            f"{who}: registered: the head-end reaches it through the concentrator "
            f"(for {event.period} s)",
            flush=True,
        )


def _run(args: argparse.Namespace) -> int:
    psk = resolve_psk(args, env=True)
    if args.device_id is None or psk is None or args.keyserver is None:
        raise CliError(
            f"the concentrator needs --id, a PSK (--psk-file, ${PSK_ENV} or --psk) and --keyserver"
        )
    check_radio(args)
    reporter = _reporter(args)
    if args.relay_pci_burst < 1:
        raise CliError("--relay-pci-burst must be at least 1")
    policy = BorderPolicy(relay_pci_rate=args.relay_pci_rate, relay_pci_burst=args.relay_pci_burst)
    from amistack.runtime.concentrator import ConcentratorReady, run_concentrator

    def ready(r: ConcentratorReady) -> None:
        host, port = r.radio[0], r.radio[1]
        print(
            f"concentrator {args.device_id}: DODAG root {r.eui} of {r.prefix}, PAN {r.pan:#06x}, "
            f"radio on {host} port {port}",
            flush=True,
        )
        if r.c1222_relay is not None:
            where = f"{r.c1222_relay[0]} port {r.c1222_relay[1]}"
            print(f"concentrator {args.device_id}: C12.22 relay on {where}", flush=True)

    async def main() -> None:
        stop = stop_on_signals()
        await run_concentrator(
            args.device_id,
            psk,
            args.keyserver,
            args.headend,
            radio=args.radio_at,
            neighbours=args.neighbours,
            data_dir=args.data_dir,
            pan=args.pan,
            prefix=args.prefix,
            stop=stop,
            on_ready=ready,
            on_event=lambda ev: print_mesh_event(f"concentrator {args.device_id}", ev),
            reporter=reporter,
            c1222_relay=args.c1222_listen,
            policy=policy,
        )

    try:
        run(main)
    except OSError as exc:
        raise CliError(f"cannot start: {exc}") from None
    return 0
