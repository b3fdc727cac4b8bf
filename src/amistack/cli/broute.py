"""`amistack broute emulate`: a Rohm BP35A1 / BP35C2 Wi-SUN module on a pseudo-terminal, with our
smart meter behind it on the secured B route."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from amistack.broute.credentials import BrouteCredentials, CredentialError
from amistack.broute.skstack import Dialect, ModuleConfig
from amistack.cli.common import CliError, parse_hostport, stop_on_signals
from amistack.runtime.loop import run
from amistack.runtime.skstack_pty import EmulatorConfig, EmulatorInfo, run_emulator

EPILOG = """\
Point B-route software at the printed device (or at --link) instead of a real module's serial
port and give it the printed B-route ID and password. For example, with momonga:

  from momonga import Momonga
  with Momonga(rbid=RBID, pwd=PASSWORD, dev=PTY) as mo:
      print(mo.get_instantaneous_power())

Dialects: bp35c2 (the default) names a side (0 = B route) in SKSCAN, SKSENDTO, EVENT, ERXUDP,
EPANDESC and SKINFO, puts the LQI into ERXUDP after 'SKSREG SA2 1' and has no ROPT/WOPT (ERXUDP
data in hex); bp35a1 has none of the side fields, reports the short address FFFE in SKINFO and
sets binary or hex ERXUDP data with WOPT. docs/skstack-emulator.md has the command list."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "broute",
        help="B-route tools: emulate a Wi-SUN module (SKSTACK-IP) in front of our meter",
        description="Tools for the B route (PANA-secured ECHONET Lite between meter and HEMS).",
    )
    verbs = p.add_subparsers(dest="broute_command", metavar="VERB", required=True)
    e = verbs.add_parser(
        "emulate",
        help="a BP35A1/BP35C2 module on a pseudo-terminal with our meter behind it",
        description=textwrap.fill(
            "Create a pseudo-terminal that behaves like the serial port of a Rohm "
            "BP35C2 or BP35A1 Wi-SUN module (SKSTACK-IP commands: SKINFO, SKRESET, SKSREG, "
            "SKSETRBID, SKSETPWD, SKSCAN, SKLL64, SKJOIN, SKSENDTO, SKTERM, ROPT, WOPT, ...). "
            "Behind it sits a smart meter reached over the secured B route: PANA (EAP-PSK from the "
            "B-route ID and password) and ECHONET Lite in AES-CCM link frames, over UDP on "
            "loopback. By default the meter runs in this process (a seeded metering model); "
            "--meter uses an external B-route meter. Runs until Ctrl-C.",
            width=92,
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument(
        "--dialect",
        choices=[d.value for d in Dialect],
        default=Dialect.BP35C2.value,
        help="which module to answer as (default bp35c2)",
    )
    e.add_argument("--rbid", metavar="ID", help="the meter's B-route ID, 32 characters")
    e.add_argument("--password", metavar="PWD", help="the meter's B-route password, 12 characters")
    e.add_argument(
        "--link",
        type=Path,
        metavar="PATH",
        help="also make PATH a symlink to the pty (a stable name, e.g. /tmp/ttyBP35)",
    )
    e.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="derive credentials (when not given), addresses and the meter model from N "
        "(default: random)",
    )
    e.add_argument(
        "--meter",
        type=lambda t: parse_hostport(t),
        metavar="HOST:PORT",
        help="an external B-route meter (`amistack meter --broute`) instead of the built-in one",
    )
    e.add_argument(
        "--meter-mac",
        type=_eui64,
        metavar="HEX16",
        help="EUI-64 the scan reports for the external --meter (default 001D129000000001)",
    )
    e.add_argument(
        "--channel",
        type=_channel,
        default=0x21,
        metavar="HEX",
        help="the meter's channel, 21-3C hex (default 21: channel 33)",
    )
    e.add_argument(
        "--pan-id", type=_pan_id, default=0x8888, metavar="HEX", help="the meter's PAN ID"
    )
    e.add_argument(
        "--erxudp",
        choices=("binary", "hex"),
        default="binary",
        help="the module's stored WOPT setting: ERXUDP data in binary (factory) or hex ASCII",
    )
    e.add_argument(
        "--ropt",
        choices=("on", "off"),
        help="whether the product-setting commands ROPT/WOPT exist (default: on for bp35a1, "
        "off for bp35c2); off: FAIL ER04 and ERXUDP data always hex ASCII",
    )
    e.add_argument(
        "--time-scale",
        type=float,
        default=0.05,
        metavar="F",
        help="radio timings (scan windows, unanswered PANA) times F (default 0.05; 1 = real)",
    )
    e.add_argument(
        "--rx-latency",
        type=float,
        default=30.0,
        metavar="MS",
        help="milliseconds from SKSENDTO's answer reaching the radio to its ERXUDP on the serial "
        "line, as over the air (default 30, not scaled by --time-scale; 0: at once). Some "
        "software loses an ERXUDP read together with the EVENT lines before it",
    )
    e.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDR",
        help="loopback address for the built-in meter and the module's UDP (default 127.0.0.1)",
    )
    e.set_defaults(handler=_emulate)


def _eui64(text: str) -> bytes:
    try:
        mac = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 16 hex digits") from None
    if len(mac) != 8:
        raise argparse.ArgumentTypeError(f"{text!r}: an EUI-64 is 8 bytes (16 hex digits)")
    return mac


def _hex_in(text: str, lo: int, hi: int, what: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {what} is hex") from None
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"{what} must be {lo:X}-{hi:X} hex, got {text}")
    return value


def _channel(text: str) -> int:
    return _hex_in(text, 0x21, 0x3C, "channel")


def _pan_id(text: str) -> int:
    return _hex_in(text, 0, 0xFFFE, "PAN ID")


def _emulate(args: argparse.Namespace) -> int:
    if (args.rbid is None) != (args.password is None):
        raise CliError("give both --rbid and --password, or neither (then they are generated)")
    if args.rbid is not None:
        try:
            BrouteCredentials(args.rbid, args.password)
        except CredentialError as exc:
            raise CliError(str(exc)) from None
    if args.meter_mac is not None and args.meter is None:
        raise CliError("--meter-mac describes an external --meter")
    if not args.time_scale > 0:
        raise CliError("--time-scale must be > 0")
    if not 0 <= args.rx_latency <= 10_000:
        raise CliError("--rx-latency must be 0..10000 ms")
    if args.link is not None and args.link.exists() and not args.link.is_symlink():
        raise CliError(f"--link {args.link}: exists and is not a symlink")
    config = EmulatorConfig(
        dialect=Dialect(args.dialect),
        rbid=args.rbid,
        password=args.password,
        seed=args.seed,
        link=args.link,
        meter=args.meter,
        meter_mac=args.meter_mac,
        host=args.host,
        channel=args.channel,
        pan_id=args.pan_id,
        time_scale=args.time_scale,
        erxudp_hex=args.erxudp == "hex",
        ropt_supported=None if args.ropt is None else args.ropt == "on",
        module=ModuleConfig(rx_latency=args.rx_latency / 1000),
    )

    def ready(info: EmulatorInfo) -> None:
        b = info.beacon
        print(f"broute emulate: {info.dialect.value.upper()} module on {info.path}", flush=True)
        if info.link is not None:
            print(f"broute emulate: also at {info.link}", flush=True)
        print(f"broute emulate: B-route ID {info.rbid}", flush=True)
        print(f"broute emulate: password   {info.password}", flush=True)
        where = "built-in" if config.meter is None else "external"
        print(
            f"broute emulate: {where} meter at UDP {info.meter_addr[0]}:{info.meter_addr[1]}, "
            f"channel {b.channel:02X}, PAN ID {b.pan_id:04X}, MAC {b.mac.hex().upper()} "
            f"({info.meter_ipv6})",
            flush=True,
        )
        print("broute emulate: Ctrl-C stops", flush=True)

    async def main() -> None:
        stop = stop_on_signals()
        await run_emulator(config, stop=stop, on_ready=ready)

    try:
        run(main)
    except OSError as exc:
        raise CliError(f"cannot start the emulator: {exc}") from None
    print("broute emulate: stopped", flush=True)
    return 0
