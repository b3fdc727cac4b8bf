"""`amistack handheld`: the field technician's handheld (docs/handheld.md).

    amistack handheld gateway ...   the office end of the secure channel (beside the key server)
    amistack handheld run ...       the handheld itself: isolated mesh, channel, control socket
    amistack handheld login|start|meters|read|command|stop|logout|status   talk to `run`

Every command that talks to a running handheld prints one JSON object (exit 0 when it says
"ok": true, 1 when the handheld refused, 2 on bad usage or no handheld running).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from amistack.cli.common import (
    CliError,
    add_data_dir,
    add_psk_options,
    parse_hostport,
    resolve_psk,
    stop_on_signals,
)

PASSWORD_ENV = "AMISTACK_PASSWORD"
TOKEN_ENV = "AMISTACK_HEADEND_TOKEN"
GATEWAY_PORT = 7730
AREA_PORT = 7731


def register(sub: Any) -> None:
    p = sub.add_parser(
        "handheld",
        help="the field handheld: a work session brings isolated meters into the AMI",
        description="The field technician's handheld (JP5701792B2, embodiment 1): after the "
        "technician logs in and starts a work session, it opens a mutual-TLS channel to the "
        "office gateway, authenticates itself to the key server (PANA), becomes the DODAG root "
        "and PANA relay of an isolated mesh, and shows the work data within the technician's "
        "roles. See docs/handheld.md.",
    )
    hsub = p.add_subparsers(dest="handheld_command", metavar="ACTION", required=True)

    g = hsub.add_parser(
        "gateway",
        help="the office end of the handhelds' secure channel",
        description="Accept handhelds over TLS 1.3 (a client certificate of DIR/pki/ca.crt with "
        "purpose 'handheld', checked against the CRL before every packet) and forward their "
        "UDP to the key server (and head-end). Run it beside the key server with the key "
        "server's --data-dir: each work session (handheld, technician, work order) is then "
        "written to the key server's audit trail. PANA for a meter outside the certificate's "
        "--meters selectors (or the handheld's own PaC claiming another name) is dropped, "
        "counted and audited (handheld-scope). Run the key server with --relay SOURCE.",
    )
    g.add_argument("--listen", default=("127.0.0.1", GATEWAY_PORT), type=parse_hostport,
                   metavar="HOST:PORT",
                   help=f"where handhelds connect (default 127.0.0.1:{GATEWAY_PORT})")  # fmt: skip
    g.add_argument("--keyserver", required=True, type=parse_hostport, metavar="HOST:PORT",
                   help="the key server's PANA address (e.g. 127.0.0.1:716)")  # fmt: skip
    g.add_argument("--headend", type=parse_hostport, metavar="HOST:PORT",
                   help="the head-end's C12.22 address")  # fmt: skip
    g.add_argument("--source", default="127.0.0.1", metavar="IP",
                   help="where forwarded UDP comes from (the key server's --relay)")  # fmt: skip
    g.add_argument("--name", default="handheld-gateway", metavar="NAME",
                   help="its server certificate (amistack pki issue-server NAME)")  # fmt: skip
    add_data_dir(g)
    g.set_defaults(handler=_gateway)

    r = hsub.add_parser(
        "run",
        help="run the handheld (control socket DIR/handheld.sock)",
        description="The handheld device: technicians from DIR/access.db (amistack users add "
        "NAME --role INSTALLER --data-dir DIR), its certificate DIR/pki/clients/DEVICE.crt, its "
        "own PSK; an isolated area of --meters simulated meters in this process. Nothing of a "
        "meter is ever written to DIR.",
    )
    r.add_argument("--device", required=True, metavar="ID",
                   help="the handheld's identity (PANA and certificate CN)")  # fmt: skip
    r.add_argument("--gateway", default=("127.0.0.1", GATEWAY_PORT), type=parse_hostport,
                   metavar="HOST:PORT", help=f"the gateway (127.0.0.1:{GATEWAY_PORT})")  # fmt: skip
    r.add_argument("--server-name", metavar="NAME",
                   help="the gateway certificate's host (default: the gateway's)")  # fmt: skip
    r.add_argument("--area", type=parse_hostport, metavar="HOST:PORT",
                   help="the isolated area runs in its own process there (amistack handheld "
                   "area); default: simulated in this process")  # fmt: skip
    r.add_argument("--meters", type=int, default=6, help="meters in the isolated area (6)")
    r.add_argument("--seed", type=int, default=1, help="the area's seed (meters' PSKs) (1)")
    r.add_argument("--headend-api", metavar="URL",
                   help="the head-end's REST API for reads and commands (the handheld's "
                   f"head-end token from ${TOKEN_ENV}, issued with 'amistack users token NAME "
                   "--handheld': the head-end acts and audits as the technician); its meters "
                   "then run C12.22 and push to the head-end through the channel")  # fmt: skip
    r.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                   help="meters' model seconds per second (default 1)")  # fmt: skip
    r.add_argument("--idle-timeout", type=float, default=900.0, metavar="S",
                   help="end a work session after S seconds without an action (900)")  # fmt: skip
    r.add_argument("--screen", type=parse_hostport, metavar="HOST:PORT",
                   help="serve the technician's screen (a web page) there; loopback only, "
                   "e.g. 127.0.0.1:8780 (docs/handheld.md)")  # fmt: skip
    add_psk_options(r, "required", env=True)
    add_data_dir(r, kek=False)
    r.set_defaults(handler=_run)

    a = hsub.add_parser(
        "area",
        help="an isolated area of simulated meters as its own process",
        description="The isolated area as a process of its own (the handheld's radio over "
        "loopback UDP, a stand-in for a radio driver): the handheld's process then holds "
        "nothing of the meters. Meter i is field-meter-00i with a PSK from --seed.",
    )
    a.add_argument("--listen", default=("127.0.0.1", AREA_PORT), type=parse_hostport,
                   metavar="HOST:PORT", help=f"the radio (127.0.0.1:{AREA_PORT})")  # fmt: skip
    a.add_argument("--meters", type=int, default=6, help="meters (6)")
    a.add_argument("--seed", type=int, default=1, help="the meters' seed (1)")
    a.add_argument("--headend", action="store_true",
                   help="the meters run C12.22, pushing to the head-end")  # fmt: skip
    a.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                   help="meters' model seconds per second (default 1)")  # fmt: skip
    a.set_defaults(handler=_area)

    for name, help_text in (
        ("login", "log a technician in (password from $AMISTACK_PASSWORD or the terminal)"),
        ("logout", "log the technician out (ends a running work session)"),
        ("start", "start a work session for a work order"),
        ("stop", "stop the work session: DODAG, channel and session keys are dropped"),
        ("meters", "the work data: meters, route table, results (within your roles)"),
        ("read", "a meter's readings as the head-end collected them (VIEWER and up)"),
        ("command", "connect, disconnect (OPERATOR) or commission (INSTALLER) a meter"),
        ("status", "who is logged in, the work session's state"),
    ):
        c = hsub.add_parser(name, help=help_text, description=help_text + ".")
        if name == "login":
            c.add_argument("user")
        if name == "start":
            c.add_argument("work_order", metavar="WORK_ORDER")
        if name in ("read", "command"):
            c.add_argument("meter")
        if name == "command":
            c.add_argument("kind", choices=["connect", "disconnect", "commission"])
        add_data_dir(c, kek=False)
        c.set_defaults(handler=_control, action=name)


def _socket(args: argparse.Namespace) -> Path:
    from amistack.runtime.handheld import SOCKET_NAME

    return Path(args.data_dir) / SOCKET_NAME


def _control(args: argparse.Namespace) -> int:
    from amistack.runtime.handheld import control

    req: dict[str, Any] = {"op": args.action}
    if args.action == "login":
        password = os.environ.get(PASSWORD_ENV) or (
            getpass.getpass(f"password for {args.user}: ") if sys.stdin.isatty() else ""
        )
        req.update(user=args.user, password=password)
    elif args.action == "start":
        req["work_order"] = args.work_order
    elif args.action in ("read", "command"):
        req["meter"] = args.meter
        if args.action == "command":
            req["kind"] = args.kind
    try:
        answer = asyncio.run(control(_socket(args), req))
    except (FileNotFoundError, ConnectionRefusedError):
        raise CliError(f"no handheld running with --data-dir {args.data_dir}") from None
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 0 if answer.get("ok") else 1


def _run(args: argparse.Namespace) -> int:
    from amistack.access import AccessStore, AuditTrail
    from amistack.c1222.acse import ApTitle
    from amistack.handheld.technician import TechnicianDesk
    from amistack.runtime.handheld import DeviceConfig, HandheldDevice, serve_control
    from amistack.runtime.headend import DEFAULT_TITLE
    from amistack.runtime.loop import run
    from amistack.sim.handheld_area import AreaConfig

    psk = resolve_psk(args, env=True)
    if psk is None:
        raise CliError("the handheld's own PSK is required (--psk-file or $AMISTACK_PSK)")
    if not 1 <= args.meters <= 64:
        raise CliError("--meters must be 1..64")
    if not args.idle_timeout > 0:
        raise CliError("--idle-timeout must be > 0")
    if not args.time_scale > 0:
        raise CliError("--time-scale must be > 0")
    if args.screen is not None:
        from amistack.runtime.api_server import is_loopback

        if not is_loopback(args.screen[0]):
            raise CliError(f"--screen must be a loopback address, not {args.screen[0]}")
    token = os.environ.get(TOKEN_ENV)
    if args.headend_api and not token:
        raise CliError(f"--headend-api needs the handheld's head-end token in ${TOKEN_ENV}")
    gateway = args.gateway
    data_dir = Path(args.data_dir)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    now = time.time()
    desk = TechnicianDesk(AccessStore(data_dir), AuditTrail.open(data_dir, now), args.device)
    title = ApTitle.parse(DEFAULT_TITLE) if args.headend_api else None
    area = AreaConfig(meters=args.meters, seed=args.seed, headend_title=title,
                      time_factor=args.time_scale)  # fmt: skip
    cfg = DeviceConfig(data_dir, args.device, psk, gateway, args.server_name or gateway[0], area,
                       idle_timeout=args.idle_timeout, headend_api=args.headend_api,
                       headend_token=token, area_at=args.area)  # fmt: skip
    device = HandheldDevice(cfg, desk)

    async def main() -> None:
        stop = stop_on_signals()
        screen = None
        if args.screen is not None:
            from amistack.runtime.api_server import BindError, bind_api
            from amistack.runtime.handheld_screen import serve_screen

            host, port = args.screen
            try:
                sock = bind_api(host, port)
            except BindError as exc:
                raise CliError(str(exc).replace("REST API", "technician screen")) from None
            screen = asyncio.create_task(serve_screen(device, sock, stop))
            print(f"handheld {args.device}: technician screen on http://{host}:{port}/",
                  flush=True)  # fmt: skip
        print(f"handheld {args.device}: data in {data_dir.resolve()}, control socket "
              f"{_socket(args)}, gateway {gateway[0]}:{gateway[1]}", flush=True)  # fmt: skip
        await serve_control(device, _socket(args), stop)
        if screen is not None:
            await screen

    try:
        run(main)
    finally:
        desk.audit.seal(time.time())
        desk.audit.close()
        desk.store.close()
    print(f"handheld {args.device}: stopped", flush=True)
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from amistack.cli.common import KEYSERVER_DB, open_store
    from amistack.keymgmt.pki import PkiError
    from amistack.runtime.handheld_gateway import GatewayConfig, start_gateway
    from amistack.runtime.keydist import TlsFiles
    from amistack.runtime.loop import run

    listen = args.listen
    config = GatewayConfig(args.keyserver, args.headend, args.source)
    store = None
    if (Path(args.data_dir) / KEYSERVER_DB).exists():
        store = open_store(Path(args.data_dir), create=False, kek=args.kek)

    async def main() -> None:
        stop = stop_on_signals()
        try:
            tls = TlsFiles.server(args.data_dir, args.name)
            gw, bound = await start_gateway(config, tls, listen[0], listen[1],
                                            None if store is None else store.audit)  # fmt: skip
        except PkiError as exc:
            raise CliError(f"{exc} (amistack pki issue-server {args.name} --host HOST)") from None
        except OSError as exc:
            raise CliError(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror}") from None
        audit = "the key server's audit trail" if store is not None else "the log only"
        print(f"handheld gateway: on {bound[0]} port {bound[1]}, to key server "
              f"{config.keyserver[0]}:{config.keyserver[1]}, sessions recorded in {audit}",
              flush=True)  # fmt: skip
        await stop.wait()
        await gw.close()

    try:
        run(main)
    finally:
        if store is not None:
            store.close()
    print("handheld gateway: stopped", flush=True)
    return 0


def _area(args: argparse.Namespace) -> int:
    from amistack.c1222.acse import ApTitle
    from amistack.runtime.handheld_area import run_area
    from amistack.runtime.headend import DEFAULT_TITLE
    from amistack.runtime.loop import run
    from amistack.sim.handheld_area import AreaConfig

    if not 1 <= args.meters <= 64:
        raise CliError("--meters must be 1..64")
    if not args.time_scale > 0:
        raise CliError("--time-scale must be > 0")
    title = ApTitle.parse(DEFAULT_TITLE) if args.headend else None
    config = AreaConfig(meters=args.meters, seed=args.seed, headend_title=title,
                        time_factor=args.time_scale)  # fmt: skip

    async def main() -> None:
        stop = stop_on_signals()

        def ready(at: tuple[str, int]) -> None:
            print(f"isolated area: {args.meters} meters, the handheld's radio on {at[0]} port "
                  f"{at[1]}", flush=True)  # fmt: skip

        try:
            await run_area(config, args.listen, stop, ready)
        except OSError as exc:
            raise CliError(f"cannot listen on {args.listen[0]}:{args.listen[1]}: {exc}") from None

    run(main)
    print("isolated area: stopped", flush=True)
    return 0
