"""`amistack headend`: the head-end / MDMS: collection, commands, storage and the REST API."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from amistack.c1222.endpoint import C1222_PORT
from amistack.cli.common import CliError, add_store_db, db_password, parse_hostport, stop_on_signals
from amistack.headend.collector import CollectorConfig, Mode
from amistack.headend.shard import Shard, ShardKey
from amistack.keymgmt.keydist import DEFAULT_KEYDIST_PORT
from amistack.pgconn import describe
from amistack.runtime.headend import DEFAULT_TITLE, HeadEndRuntime, run_headend
from amistack.runtime.loop import run

KEY_ADMIN_PORT = 7717  # runtime.keydist.DEFAULT_KEYADMIN_PORT (not imported: keeps --help fast)
KEY_ADMIN_CERT = "headend-dashboard"

DEFAULT_API_CERT = "headend-api"  # DIR/pki/servers/headend-api.crt for --api-tls


def register(sub: Any) -> None:
    p = sub.add_parser(
        "headend",
        help="run the head-end / MDMS (C12.22 collection, commands, storage, REST API)",
        description="Run the head-end / meter data management system: it collects interval "
        "readings over ANSI C12.22 (EAX' under each meter's UKMF key, fetched from the key "
        "server by key id over mutual TLS), polled under per-cell throttling or pushed by the "
        "meters, backfills gaps, executes demand-response, disconnect/reconnect, time-sync and "
        "on-demand read commands with relay read-back, stores every acknowledged reading "
        "durably (SQLite in DIR/headend.db, or PostgreSQL with --db) and serves a REST API with "
        "an OpenAPI document at /docs and the operators' web dashboard at /ui/. Every API call "
        "needs credentials ('amistack users add' makes the first user) and is recorded in the "
        "operator audit trail (DIR/audit/). See docs/headend.md, docs/collection.md, "
        "docs/access-control.md and docs/dashboard.md.",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("./amistack-data"),
        metavar="DIR",
        help="database (SQLite default), TLS client files, API users (access.db) and the operator "
        "audit trail (audit/) (default ./amistack-data)",
    )
    add_store_db(p, "DIR/headend.db")
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="one of N collectors on one --db database: collect, admit pushes from and run "
        "commands for shard K's meters only (0 <= K < N; each collector its own --data-dir)",
    )
    p.add_argument(
        "--shard-by",
        choices=[k.value for k in ShardKey],
        default=ShardKey.CELL.value,
        help="what places a meter in a shard: its cell (default), concentrator or meter id",
    )
    p.add_argument(
        "--retention-days",
        type=float,
        metavar="DAYS",
        help="with --db: drop readings' daily partitions wholly older than DAYS (default: keep "
        "all); partitions are made a week ahead, hourly",
    )
    p.add_argument(
        "--listen",
        action="append",
        type=lambda t: parse_hostport(t, C1222_PORT),
        metavar="HOST:PORT",
        help=f"C12.22 address, repeatable (default 0.0.0.0:{C1222_PORT} and [::]:{C1222_PORT})",
    )
    p.add_argument(
        "--api",
        type=lambda t: parse_hostport(t, 8080),
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="REST API address (default 127.0.0.1:8080); a non-loopback address needs --api-tls",
    )
    p.add_argument(
        "--api-tls",
        nargs="?",
        const=DEFAULT_API_CERT,
        metavar="NAME",
        help="serve the API over HTTPS with the PKI's server certificate DIR/pki/servers/NAME.crt "
        f"(default {DEFAULT_API_CERT}: 'amistack pki issue-server {DEFAULT_API_CERT} --host H'); "
        "clients may then also authenticate with certificates carrying IEC 62351-8 roles "
        "('amistack pki issue-client NAME --role OPERATOR')",
    )
    p.add_argument(
        "--keyserver",
        action="append",
        type=lambda t: parse_hostport(t, DEFAULT_KEYDIST_PORT),
        metavar="HOST:PORT",
        help="the key server's key-distribution (mTLS) address; the client certificate is "
        "DIR/pki/clients/headend.crt ('amistack pki issue-client headend --purpose c1222 "
        "--meters SELECTOR'); repeat it for several key servers on one database, each asked "
        "for the keys of the meters it authenticated",
    )
    p.add_argument(
        "--key-admin",
        type=lambda t: parse_hostport(t, KEY_ADMIN_PORT),
        metavar="HOST:PORT",
        help="the key server's admin endpoint (its --admin-listen): the dashboard's SECADM "
        "actions (revoke, rotate a PSK) go there on the user's behalf, with the head-end's "
        "certificate --key-admin-cert, which the key server must list in --admin-delegate "
        "(docs/dashboard.md); without it those buttons are disabled",
    )
    p.add_argument(
        "--key-admin-cert",
        default=KEY_ADMIN_CERT,
        metavar="NAME",
        help=f"the delegator certificate DIR/pki/clients/NAME.crt (default {KEY_ADMIN_CERT}: "
        f"'amistack pki issue-client {KEY_ADMIN_CERT} --role VIEWER')",
    )
    p.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.PUSHED.value,
        help="interval collection: pushed by meters (default) or polled by the head-end",
    )
    p.add_argument(
        "--concentrator",
        action="append",
        default=[],
        type=_relay,
        metavar="ID=HOST:PORT",
        help="the C12.22 relay of mesh concentrator ID (its --c1222-listen), repeatable: the "
        "meters registered under ID are polled and read there (docs/mesh.md)",
    )
    p.add_argument(
        "--c1222-datagram",
        type=int,
        default=None,
        metavar="OCTETS",
        help="the largest C12.22 datagram the head-end sends (default 1232, the IPv6 minimum "
        "MTU's): a larger message goes in segments (C12.22 §5.3.2.3), which a mesh "
        "concentrator's relay reassembles and relays (docs/mesh.md)",
    )
    p.add_argument("--ap-title", default=DEFAULT_TITLE, help="the head-end's C12.22 AP title")
    p.set_defaults(handler=_run)


def _relay(text: str) -> tuple[str, tuple[str, int]]:
    conc, sep, where = text.partition("=")
    if not sep or not conc:
        raise argparse.ArgumentTypeError(f"{text!r}: want CONCENTRATOR_ID=HOST:PORT")
    return conc, parse_hostport(where, C1222_PORT)


def _shard(args: argparse.Namespace) -> Shard | None:
    if args.shard is None:
        return None
    if args.db is None:
        raise CliError("--shard needs --db: the collectors share one PostgreSQL database")
    try:
        return Shard.parse(args.shard, args.shard_by)
    except ValueError as exc:
        raise CliError(f"--shard {exc}") from None


def _client_tls(data_dir: Path, name: str, how: str) -> Any:
    """The client certificate DIR/pki/clients/NAME (a `runtime.keydist.TlsFiles`), checked
    here, in one line, rather than at its first use; `how`: the rest of the hint."""
    from amistack.keymgmt.pki import PkiError
    from amistack.runtime.keydist import TlsFiles, client_ssl_context

    try:
        files = TlsFiles.client(data_dir, name)
        client_ssl_context(files.ca, files.cert, files.key)
    except PkiError as exc:
        raise CliError(f"{exc} (run 'amistack pki issue-client {name} {how})") from None
    return files


def _run(args: argparse.Namespace) -> int:
    if args.keyserver is None:
        raise CliError("--keyserver is required: the head-end gets meter keys from the key server")
    shard = _shard(args)
    if args.retention_days is not None and (args.db is None or not args.retention_days > 0):
        raise CliError("--retention-days needs --db and a number of days > 0")
    if args.c1222_datagram is not None and not 64 <= args.c1222_datagram <= 65535:
        raise CliError("--c1222-datagram must be 64..65535 octets")
    password = db_password(args)
    from amistack.runtime.api_server import ApiRefused, ApiTls, BindError, check_api_address

    tls = ApiTls.from_pki(args.data_dir, args.api_tls) if args.api_tls else None
    try:
        check_api_address(args.api[0], tls)
    except ApiRefused as exc:
        raise CliError(str(exc)) from None
    if tls is not None:
        for path in (tls.cert, tls.key, tls.ca):
            if not path.exists():
                raise CliError(
                    f"{path}: missing (run 'amistack pki issue-server {args.api_tls} --host H')"
                )
    _client_tls(args.data_dir, "headend", "--purpose c1222 --meters SELECTOR' for DIR")
    key_admin = None
    if args.key_admin is not None:
        from amistack.runtime.keydist import KeyAdminClient

        name = args.key_admin_cert
        how = "--role VIEWER' for DIR, and list it in the key server's --admin-delegate"
        host, port = args.key_admin
        key_admin = KeyAdminClient(host, port, _client_tls(args.data_dir, name, how), name)

    def ready(rt: HeadEndRuntime) -> None:
        where = describe(args.db) if args.db else f"{args.data_dir.resolve()}/headend.db"
        part = f", shard {shard}" if shard is not None else ""
        print(f"head-end: data in {where}; {args.mode} collection{part}", flush=True)
        for host, port in rt.udp:
            print(f"head-end: C12.22 on {host} port {port}", flush=True)
        if rt.api is not None:
            scheme = "https" if tls is not None else "http"
            print(f"head-end: REST API on {scheme}://{rt.api[0]}:{rt.api[1]}/docs", flush=True)
        if rt.access is not None and not rt.access.store.list_users():
            print(
                "head-end: no API users yet: amistack users add NAME --role OPERATOR "
                f"--data-dir {args.data_dir} (docs/access-control.md)",
                flush=True,
            )

    async def main() -> None:
        stop = stop_on_signals()
        await run_headend(
            args.data_dir,
            db=args.db,
            listen=args.listen or [("0.0.0.0", C1222_PORT), ("::", C1222_PORT)],
            api=args.api,
            keyserver=args.keyserver,
            ap_title=args.ap_title,
            collector=CollectorConfig(mode=Mode(args.mode)),
            shard=shard,
            relays=dict(args.concentrator),
            max_datagram=args.c1222_datagram,
            db_password=password,
            retention_days=args.retention_days,
            api_tls=tls,
            key_admin=key_admin,
            stop=stop,
            ready=ready,
        )

    try:
        run(main)
    except BindError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot start: {exc}") from None
    print("head-end: stopped", flush=True)
    return 0
