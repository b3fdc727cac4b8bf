"""`amistack meter`: a smart meter's network access (PANA + EAP-PSK) against the key server, its
C12.22 endpoint (--headend), its ECHONET Lite node on the home LAN (--echonet), its B route
to the household's HEMS (--broute), and all of its network over the mesh (--mesh)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import time
from pathlib import Path
from typing import Any

from amistack.addr import Addr
from amistack.broute import HemsAuthFailed, HemsConnected, HemsDisconnected
from amistack.c1222.endpoint import C1222_PORT
from amistack.cli.common import (
    PSK_ENV,
    CliError,
    add_broute_options,
    add_psk_options,
    broute_credentials,
    parse_hostport,
    resolve_psk,
    stop_on_signals,
)
from amistack.cli.concentrator import add_radio_options, check_radio, print_mesh_event
from amistack.eventlog.log import LogStoreError
from amistack.meter.events import AccessGranted
from amistack.runtime.echonet import AddressInUse
from amistack.runtime.eventtext import event_text
from amistack.runtime.keyserver import PANA_PORT
from amistack.runtime.loop import new_event_loop
from amistack.runtime.meter import MeterResult, run_meter
from amistack.runtime.meter_broute import BrouteMeterReady, run_meter_broute
from amistack.runtime.meter_echonet import EchonetMeterReady, default_model, run_meter_echonet
from amistack.securemodule import PIN_ENV, SecureModule, SecureModuleError, open_module

log = logging.getLogger("amistack.meter")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "meter",
        help="run a meter: network access and keys, C12.22 (--headend), ECHONET Lite (--echonet), "
        "the B route (--broute), over the mesh (--mesh)",
        description="Run a smart meter's network access: it authenticates to the key server "
        "with PANA (RFC 5191) carrying EAP-PSK (RFC 4764), derives its application keys with "
        "the unified key-management function, re-authenticates before the session lifetime "
        "ends (logging each key rotation) and starts over with back-off after a failure. "
        "--id, a PSK (--psk-file or $AMISTACK_PSK; or --cert/--key/--ca for EAP-TLS) and "
        "--keyserver are needed for that; with --echonet and/or --broute alone "
        "the meter only serves its ECHONET Lite node on the home LAN and/or its B route to the "
        "HEMS (neither needs the utility's network credentials).",
        epilog="examples: amistack meter --echonet --interface eth0 ; "
        "amistack meter --broute [::1]:716 --broute-id RBID --broute-password PWD ; "
        "amistack meter --id m1 --psk-file m1.psk --keyserver 192.0.2.1 --headend 192.0.2.2 "
        "--echonet ; amistack meter --mesh --id m1 --psk-file m1.psk --keyserver 127.0.0.1 "
        "--headend 127.0.0.1 --radio 127.0.0.1:7001 --hear 127.0.0.1:7000 --data-dir m1",
    )
    p.add_argument("--id", dest="device_id", help="device identity (EAP-PSK ID_P)")
    add_psk_options(p, "needed with --id", env=True)
    tls = p.add_argument_group(
        "EAP-TLS instead of EAP-PSK",
        "A meter enrolled with 'keys enroll ID --method tls' authenticates with its device "
        "certificate ('pki issue-device ID': DIR/pki/devices/ID.crt and .key) instead of a PSK "
        "(RFC 5216 / RFC 9190); it checks the key server's certificate against --ca.",
    )
    tls.add_argument("--cert", type=Path, metavar="FILE", help="the device certificate (PEM)")
    tls.add_argument("--key", type=Path, metavar="FILE", help="its private key (PEM, mode 0600)")
    tls.add_argument("--ca", type=Path, metavar="FILE", help="the CA certificate (DIR/pki/ca.crt)")
    tls.add_argument(
        "--server-name",
        metavar="NAME",
        help="a DNS name or IP address the key server's certificate must carry",
    )
    p.add_argument(
        "--keyserver",
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
    full.add_argument(
        "--seed", type=int, help="metering model seed (default: from the id; without --id, 1)"
    )
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
    full.add_argument(
        "--module",
        metavar="SPEC",
        help="with --data-dir: the secure module that signs the event log and keeps its last "
        "signed head: software:PATH or pkcs11:LIB?token=T&label=L (PIN from "
        f"${PIN_ENV}); default software:DIR/meters/ID/module.pem (docs/event-log.md)",
    )
    el = p.add_argument_group(
        "ECHONET Lite on the home LAN",
        "With --echonet the meter serves the node profile 0x0EF001 and the low-voltage smart "
        "electric energy meter 0x028801 on UDP 3610 (unicast, and multicast 224.0.23.0 / "
        "ff02::1), from the same metering model: the startup announcement of its instance list "
        "and the fixed-time values EA/EB every 30 minutes, Get/Set/SetGet/INF_REQ answered "
        "per the ECHONET Lite System Design Guidelines. --seed and --time-scale (above) apply "
        "to its model too. Stops on Ctrl-C / SIGTERM.",
    )
    el.add_argument("--echonet", action="store_true", help="serve the ECHONET Lite node")
    el.add_argument(
        "--echonet-bind",
        action="append",
        type=_parse_bind,
        metavar="ADDR",
        help="address to serve on, once per family (repeatable; default 0.0.0.0 and ::, an "
        "IPv6 socket that cannot open is skipped with a warning)",
    )
    el.add_argument(
        "--interface",
        metavar="IF",
        help="network interface for multicast (join and send) on a multi-homed host; "
        "an IPv6 link-local --echonet-bind needs it too",
    )
    el.add_argument(
        "--no-multicast",
        action="store_true",
        help="unicast only: no group sockets, no announcements (for tests on loopback)",
    )
    el.add_argument(
        "--one-way",
        action="store_true",
        help="a one-way meter: no reverse-direction EPCs E3/E4/EB (guideline §6.1)",
    )
    add_radio_options(
        p,
        "the mesh",
        "With --mesh the meter reaches the key server and the head-end only through the mesh "
        "(docs/mesh.md, 'Running a mesh as processes'): it listens on its radio for join "
        "beacons, runs PANA through the neighbour it chose as parent (RFC 6345 relay), takes "
        "the group keys, joins the RPL DODAG, serves C12.22 over it (with --headend) and "
        "relays for its own neighbours. --keyserver and --headend name the WAN addresses the "
        "concentrator forwards to. Frame counters are kept ahead in DIR/meters/ID/ (--data-dir, "
        "default ./amistack-data).",
    )
    p.add_argument("--mesh", action="store_true", help="all network access over the mesh radio")
    add_broute_options(
        p,
        "With --broute the meter serves the household's HEMS on the B route: the HEMS "
        "authenticates with PANA + EAP-PSK (the meter is the PAA; the PSK comes from the "
        "B-route ID and password the utility issued: docs/broute.md), then speaks ECHONET Lite "
        "to the meter's node inside AES-CCM* link frames keyed from that PANA session. Reach "
        "it with 'amistack hems --broute' or 'amistack broute emulate --meter'. --seed, "
        "--time-scale and --one-way apply to its model too.",
        "where the B-route link listens",
    )
    p.set_defaults(handler=_run)


def _print_broute_ready(ready: BrouteMeterReady) -> None:
    host, port = ready.address
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(
        f"B route: smart meter {ready.smart_meter.eoj} on {where} (PANA PAA, AES-CCM* link)",
        flush=True,
    )


def _print_broute_event(event: object) -> None:
    if isinstance(event, HemsConnected | HemsDisconnected | HemsAuthFailed):
        print(f"B route: {event_text(event)}", flush=True)


async def _broute(args: argparse.Namespace, stop: asyncio.Event, start: float) -> None:
    creds = broute_credentials(args)
    model = default_model(_seed(args), start, two_way=not args.one_way)
    try:
        await run_meter_broute(
            model=model,
            credentials=[creds],
            bind=args.broute,
            model_start=start,
            time_scale=args.time_scale,
            one_way=args.one_way,
            stop=stop,
            on_ready=_print_broute_ready,
            on_event=_print_broute_event,
        )
    except OSError as exc:
        raise CliError(
            f"B route: cannot listen on {args.broute[0]}:{args.broute[1]}: {exc}"
        ) from None


def _parse_bind(text: str) -> str:
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(host)  # no %zone: the interface comes from --interface
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address") from None
    return host


def _print_rotation(rot: AccessGranted) -> None:
    what = "re-authenticated" if rot.reauth else "authenticated"
    print(
        f"{rot.device_id}: {what}; keys rotated to key id {rot.session_id:08x}.{rot.key_id:08x} "
        f"(lifetime {rot.lifetime:g} s)",
        flush=True,
    )


def _print_echonet_ready(ready: EchonetMeterReady) -> None:
    kind = "two-way" if ready.meter.two_way else "one-way"
    where = ", ".join(f"{h}:{p}" if ":" not in h else f"[{h}]:{p}" for h, p in ready.addresses)
    groups = ", ".join(h for h, _ in ready.groups) or "off"
    print(
        f"ECHONET Lite: smart meter {ready.meter.eoj} ({kind}) on {where}; multicast {groups}",
        flush=True,
    )
    for host, why in ready.failed:
        print(f"ECHONET Lite: not serving on {host}: {why}", flush=True)


async def _echonet(args: argparse.Namespace, stop: asyncio.Event, start: float) -> None:
    binds = args.echonet_bind or ["0.0.0.0", "::"]
    if len({":" in b for b in binds}) != len(binds):
        raise CliError("--echonet-bind: give at most one IPv4 and one IPv6 address")
    for host in binds:
        if ipaddress.ip_address(host).is_link_local and ":" in host and not args.interface:
            raise CliError(f"--echonet-bind {host}: a link-local address needs --interface")
    model = default_model(_seed(args), start, two_way=not args.one_way)
    try:
        await run_meter_echonet(
            model=model,
            model_start=start,
            time_scale=args.time_scale,
            binds=binds,
            interface=args.interface,
            multicast=not args.no_multicast,
            one_way=args.one_way,
            stop=stop,
            on_ready=_print_echonet_ready,
        )
    except AddressInUse as exc:
        raise CliError(f"ECHONET Lite: {exc}") from None
    except OSError as exc:
        raise CliError(f"ECHONET Lite: cannot serve on {', '.join(binds)}: {exc}") from None


def _seed(args: argparse.Namespace) -> int | bytes:
    if args.seed is not None:
        return int(args.seed)
    return args.device_id.encode() if args.device_id else 1


async def _main(args: argparse.Namespace) -> MeterResult | None:
    stop = stop_on_signals()
    if not args.echonet and args.broute is None:
        return await _access(args, stop, time.time())
    start = time.time()
    tasks: list[asyncio.Future[Any]] = []
    if args.echonet:
        tasks.append(asyncio.ensure_future(_echonet(args, stop, start)))
    if args.broute is not None:
        tasks.append(asyncio.ensure_future(_broute(args, stop, start)))
    access = None
    if args.device_id is not None:
        access = asyncio.ensure_future(_access(args, stop, start))
        tasks.append(access)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # an error in either side ends both
    finally:
        stop.set()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return None if access is None else access.result()


async def _access(
    args: argparse.Namespace, stop: asyncio.Event, start: float
) -> MeterResult | None:
    if args.mesh:
        from amistack.runtime.meter_mesh import run_meter_mesh

        def radio_ready(addr: Addr, _: object) -> None:
            print(f"{args.device_id}: mesh radio on {addr[0]} port {addr[1]}", flush=True)

        try:
            await run_meter_mesh(
                args.device_id,
                args.credential,
                args.keyserver,
                args.headend,
                radio=args.radio_at,
                neighbours=args.neighbours,
                data_dir=args.data_dir or Path("./amistack-data"),
                pan=args.pan,
                push=args.push,
                time_scale=args.time_scale,
                model_seed=_seed(args),
                model_start=start,
                stop=stop,
                on_ready=radio_ready,
                on_event=lambda ev: print_mesh_event(args.device_id, ev),
            )
        except (LogStoreError, SecureModuleError) as exc:
            raise CliError(f"{args.device_id}: event log: {exc}") from None
        return None
    if args.headend is not None:
        from amistack.meter.node import MeterNode
        from amistack.runtime.meter_node import run_meter_node

        def ready(node: MeterNode, addrs: list[Addr]) -> None:
            title = node.config.ap_title.absolute()
            for host, port in addrs:
                print(
                    f"{args.device_id}: C12.22 AP title {title} on {host} port {port}", flush=True
                )

        module = _secure_module(args)
        try:
            return await run_meter_node(
                args.device_id,
                args.credential,
                args.keyserver,
                args.headend,
                model_seed=_seed(args),
                model_start=start,
                model_config=default_model(_seed(args), start, two_way=not args.one_way).config,
                time_scale=args.time_scale,
                push=args.push,
                listen=[args.listen[0]] if args.listen else None,
                port=args.listen[1] if args.listen else 0,
                data_dir=args.data_dir,
                secure_module=module,
                stop=stop,
                on_rotation=_print_rotation,
                on_ready=ready,
            )
        except (LogStoreError, SecureModuleError) as exc:  # damage is recorded, not raised
            raise CliError(f"{args.device_id}: event log: {exc}") from None
        finally:
            if module is not None:
                module.close()
    return await run_meter(
        args.device_id,
        args.credential,
        args.keyserver,
        once=args.once,
        timeout=args.timeout,
        stop=stop,
        on_rotation=_print_rotation,
    )


def _secure_module(args: argparse.Namespace) -> SecureModule | None:
    """The module named by --module (None: run_meter_node opens the default software key)."""
    if args.module is None:
        return None
    try:
        return open_module(args.module, create=True, label=f"{args.device_id}/eventlog")
    except SecureModuleError as exc:
        raise CliError(f"--module: {exc}") from None


def _tls_credential(args: argparse.Namespace) -> Any:
    """The EAP-TLS peer configuration from --cert/--key/--ca (one-line errors)."""
    from amistack.eap.tls import TlsPeerConfig
    from amistack.keymgmt import pki

    if args.cert is None or args.key is None or args.ca is None:
        raise CliError("EAP-TLS needs --cert, --key and --ca together")
    if args.psk is not None:
        raise CliError("give either a PSK (EAP-PSK) or --cert/--key/--ca (EAP-TLS), not both")
    try:
        cert, key = pki.load_certificate(args.cert), pki.load_private_key(args.key)
        return TlsPeerConfig.build(
            cert, key, [pki.load_certificate(args.ca)], server_name=args.server_name
        )
    except (pki.PkiError, ValueError) as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:  # OpenSSL: the key does not match the certificate, ...
        raise CliError(f"{args.cert}: cannot use it with {args.key}: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    tls = bool(args.cert or args.key or args.ca or args.server_name)
    # $AMISTACK_PSK counts only for a meter given an identity and no certificate: --echonet
    # alone, or an EAP-TLS meter, ignores it
    args.psk = resolve_psk(args, env=args.device_id is not None and not tls)
    args.credential = _tls_credential(args) if tls else args.psk
    access = {"--id": args.device_id, "--psk": args.credential, "--keyserver": args.keyserver}
    # (--psk stands for either credential in the messages below: --cert/--key/--ca replace it)
    missing = [name for name, value in access.items() if value is None]
    local = args.echonet or args.broute is not None
    if missing and (not local or len(missing) < len(access)):
        need = "network access needs" if local else "the meter needs"
        raise CliError(
            f"{need} --id, --psk and --keyserver (missing {', '.join(missing)}; the PSK "
            f"comes from --psk-file, ${PSK_ENV} or --psk); "
            "--echonet or --broute alone serve the ECHONET Lite node / the B route without them"
        )
    if args.broute is not None:
        broute_credentials(args)  # a bad ID or password: say so before anything starts
    elif args.broute_id or args.broute_password:
        raise CliError("--broute-id and --broute-password go with --broute")
    if missing and args.headend is not None:
        raise CliError("--headend needs --id, --psk and --keyserver")
    if args.module is not None and (args.headend is None or args.data_dir is None):
        raise CliError("--module goes with --headend and --data-dir (it signs the event log)")
    if args.once and (args.headend is not None or local):
        raise CliError(
            "--once checks network access only; it goes with none of --headend, --echonet, --broute"
        )
    if args.time_scale <= 0:
        raise CliError("--time-scale must be > 0")
    if args.mesh:
        if missing:
            raise CliError("--mesh needs --id, --psk and --keyserver")
        if args.once or args.listen or args.module:
            raise CliError("--once, --listen and --module do not go with --mesh")
        check_radio(args)
    elif args.radio is not None or args.hear or args.radio_if:
        raise CliError("--radio, --hear and --radio-if go with --mesh")
    if not args.echonet and (args.echonet_bind or args.interface or args.no_multicast):
        raise CliError("--echonet-bind, --interface and --no-multicast go with --echonet")
    if not local and args.one_way:
        raise CliError("--one-way goes with --echonet or --broute")
    loop = new_event_loop()
    try:
        result = loop.run_until_complete(_main(args))
    finally:
        loop.close()
    if not args.once or result is None:
        return 0
    if result.ok:
        print(result)
        return 0
    print(f"amistack meter: {result}", flush=True)
    return 1
