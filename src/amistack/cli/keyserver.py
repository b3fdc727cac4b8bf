"""`amistack keyserver`: the PAA + EAP-PSK (and EAP-TLS) server + UKMF key server over UDP."""

from __future__ import annotations

import argparse
import ipaddress
import time
from pathlib import Path
from typing import Any

from amistack.addr import Addr
from amistack.cli.common import (
    KEYSERVER_DB,
    CliError,
    add_data_dir,
    add_store_db,
    open_store_args,
    pan_id_arg,
    parse_hostport,
    stop_on_signals,
    store_location,
)
from amistack.keymgmt import StoreError
from amistack.pana.constants import IntegrityAlgorithm, PrfAlgorithm
from amistack.pana.paa import PaaConfig
from amistack.runtime.keyserver import PANA_PORT, RADIUS_AUTH_PORT, KeyServerRuntime, run_keyserver
from amistack.runtime.loop import run, service_gc
from amistack.runtime.pcap import PcapWriter


def register(sub: Any) -> None:
    p = sub.add_parser(
        "keyserver",
        help="run the key server (PANA authentication agent, EAP-PSK, key management)",
        description="Run the key server: a PANA authentication agent (RFC 5191) with a built-in "
        "EAP-PSK server (RFC 4764) over the credential store in DIR/keyserver.db (or, shared by "
        "several key-server processes, PostgreSQL with --db: docs/scale-out.md). After each "
        "authentication it derives the session's application keys (PANA_AUTH_KEY, C12.22, "
        "link) with the unified key-management function, expires them with the session and "
        "audits every success, failure, rekey and revocation. Devices revoked with "
        "'amistack keys revoke' lose their sessions and keys at once. With --eap-tls it also "
        "runs EAP-TLS for the devices enrolled for it, side by side with EAP-PSK.",
    )
    add_data_dir(p)
    add_store_db(p)
    p.add_argument(
        "--instance",
        default="",
        metavar="NAME",
        help="this process's name among several key servers sharing one --db database (each "
        "restores only the keys it issued; a second process with the same name is refused)",
    )
    p.add_argument(
        "--init",
        action="store_true",
        help="create an empty credential store in DIR if there is none (without it, a DIR "
        "with no store is refused unless --aaa-radius: a mistyped path must not start an "
        "empty key server)",
    )
    p.add_argument(
        "--listen",
        action="append",
        type=lambda t: parse_hostport(t, PANA_PORT),
        metavar="HOST:PORT",
        help=f"PANA address, repeatable, one port for all (default 0.0.0.0:{PANA_PORT} and "
        f"[::]:{PANA_PORT})",
    )
    p.add_argument(
        "--lifetime",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="PANA session lifetime for devices without their own (default 3600)",
    )
    p.add_argument(
        "--radius-listen",
        action="append",
        default=[],
        type=lambda t: parse_hostport(t, RADIUS_AUTH_PORT),
        metavar="HOST:PORT",
        help="also be a RADIUS EAP server (EAP-PSK; with --eap-tls EAP-TLS too) for 802.1X "
        "authenticators (repeatable)",
    )
    p.add_argument("--radius-secret", help="shared secret of --radius-listen")
    p.add_argument(
        "--aaa-radius",
        type=lambda t: parse_hostport(t, RADIUS_AUTH_PORT),
        metavar="HOST:PORT",
        help="pass EAP through to this external RADIUS AAA server instead of the built-in "
        "EAP-PSK server (credentials then live there)",
    )
    p.add_argument("--aaa-secret", help="shared secret of --aaa-radius")
    p.add_argument(
        "--keydist-listen",
        action="append",
        default=[],
        type=lambda t: parse_hostport(t, 7716),
        metavar="HOST:PORT",
        help="serve application keys by key id over mutual TLS (needs 'amistack pki' first; "
        "see docs/key-distribution.md)",
    )
    p.add_argument(
        "--admin-listen",
        action="append",
        default=[],
        type=lambda t: parse_hostport(t, 7717),
        metavar="HOST:PORT",
        help="serve key administration ('amistack keys --server') to operators over mutual TLS "
        "with role certificates ('amistack pki issue-client NAME --role SECADM'); every action "
        "is written to the operator audit trail DIR/audit/ first (see docs/access-control.md)",
    )
    p.add_argument(
        "--admin-delegate",
        action="append",
        default=[],
        metavar="CN",
        help="with --admin-listen: the CN of a service's role certificate (the head-end's "
        "dashboard) that may revoke or rotate a PSK on behalf of a named SECADM of DIR's user "
        "store and nothing else; both are audited (docs/access-control.md)",
    )
    p.add_argument(
        "--relay",
        action="append",
        default=[],
        type=_ip_literal,
        metavar="ADDRESS",
        help="accept PANA-Relay (RFC 6345) messages from this relay's IP address (repeatable; "
        "default: none, every PRY is dropped); each relay's PCIs are rate-limited as a whole",
    )
    p.add_argument(
        "--relay-rate",
        type=float,
        default=PaaConfig().relay_pci_rate,
        metavar="PCIS_PER_S",
        help="PCIs per second one relay may carry, all its PaCs together (burst: twice that; "
        f"default {PaaConfig().relay_pci_rate:g}); raise it for relays that serve large cells",
    )
    p.add_argument(
        "--pana-algorithms",
        type=_suites,
        default=_suites("sha256,sha1"),
        metavar="LIST",
        help="PRF and integrity algorithms offered in the PAR(S), in this order (default "
        "sha256,sha1); OpenPANA's PaC reads only the first offered and needs sha1,sha256 "
        "(see docs/network-access.md, Interoperability)",
    )
    p.add_argument(
        "--lifetime-grace",
        type=float,
        default=PaaConfig().lifetime_grace,
        metavar="SECONDS",
        help="keep a session this long past its lifetime for a late re-authentication "
        f"(OpenPANA's PaC re-authenticates only at expiry; default {PaaConfig().lifetime_grace:g}"
        ", 0 = none)",
    )
    p.add_argument(
        "--mesh-pan",
        type=pan_id_arg,
        metavar="PANID",
        help="deliver the mesh group keys of this PAN (e.g. 0xface) with every PANA success and "
        "rotate them when a device is revoked (docs/mesh-keys.md; not with --aaa-radius)",
    )
    p.add_argument(
        "--eap-tls",
        action="store_true",
        help="also authenticate devices enrolled with 'keys enroll ID --method tls' by EAP-TLS "
        "(RFC 5216 / RFC 9190) with their device certificates, beside EAP-PSK; needs 'amistack "
        "pki init' and 'amistack pki issue-server keyserver' (see docs/network-access.md)",
    )
    p.add_argument(
        "--eap-tls-cert",
        default="keyserver",
        metavar="NAME",
        help="the server certificate EAP-TLS presents: DIR/pki/servers/NAME.crt (default "
        "keyserver)",
    )
    p.add_argument("--pcap", type=Path, metavar="FILE", help="write the PANA traffic to FILE")
    p.set_defaults(handler=_run)


# PRF-Algorithm (RFC 5191 §8.6) and Integrity-Algorithm (§8.3) pairs a PaC may choose from
_SUITES = {
    "sha256": (PrfAlgorithm.PRF_HMAC_SHA2_256, IntegrityAlgorithm.AUTH_HMAC_SHA2_256_128),
    "sha1": (PrfAlgorithm.PRF_HMAC_SHA1, IntegrityAlgorithm.AUTH_HMAC_SHA1_160),
}


def _suites(text: str) -> tuple[tuple[PrfAlgorithm, IntegrityAlgorithm], ...]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in _SUITES]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a comma-separated list of {' and '.join(_SUITES)}, each at most once"
        )
    return tuple(_SUITES[n] for n in names)


def _ip_literal(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def _one_port(addrs: list[Addr], what: str) -> tuple[list[str], int]:
    ports = {port for _, port in addrs}
    if len(ports) != 1:
        raise CliError(f"all {what} addresses must use one port, got {sorted(ports)}")
    return [host for host, _ in addrs], ports.pop()


def _paa_config(args: argparse.Namespace) -> PaaConfig:
    """The PAA settings the options give (relays, algorithm order, lifetime grace)."""
    if not args.lifetime_grace >= 0:
        raise CliError("--lifetime-grace must be >= 0")
    if not args.relay_rate > 0:
        raise CliError("--relay-rate must be > 0")
    return PaaConfig(
        allowed_relays=frozenset(args.relay),
        relay_pci_rate=args.relay_rate,
        relay_pci_burst=2.0 * args.relay_rate,
        prf_algorithms=tuple(prf for prf, _ in args.pana_algorithms),
        integrity_algorithms=tuple(integ for _, integ in args.pana_algorithms),
        lifetime_grace=args.lifetime_grace,
    )


def _extra_methods(args: argparse.Namespace, store: Any) -> list[Any]:
    """EAP-TLS beside EAP-PSK with --eap-tls (the PKI's server certificate, the CRL)."""
    if not args.eap_tls:
        return []
    from amistack.keymgmt.eap_tls import eap_tls_method, tls_server_config
    from amistack.keymgmt.pki import PkiError

    try:
        config = tls_server_config(args.data_dir, store, server_cert=args.eap_tls_cert)
    except (PkiError, ValueError) as exc:
        store.close()
        raise CliError(
            f"--eap-tls: {exc} (run 'amistack pki init' and "
            f"'amistack pki issue-server {args.eap_tls_cert} --host ...')"
        ) from None
    return [eap_tls_method(config, time.time)]


def _server_tls(args: argparse.Namespace) -> Any:
    """The key server's TLS files (`pki init`, `pki issue-server keyserver`) for its mutual-TLS
    listeners (key distribution, administration)."""
    from amistack.keymgmt.pki import PkiError
    from amistack.runtime.keydist import TlsFiles

    try:
        return TlsFiles.server(args.data_dir, "keyserver")
    except PkiError as exc:
        raise CliError(
            f"{exc} (run 'amistack pki init' and 'amistack pki issue-server keyserver')"
        ) from None


def _run(args: argparse.Namespace) -> int:
    if args.radius_listen and not args.radius_secret:
        raise CliError("--radius-listen needs --radius-secret")
    if args.aaa_radius and not args.aaa_secret:
        raise CliError("--aaa-radius needs --aaa-secret")
    if args.aaa_radius and args.mesh_pan is not None:
        raise CliError("--mesh-pan is not available with --aaa-radius")
    hosts, port = _one_port(args.listen or [("0.0.0.0", PANA_PORT), ("::", PANA_PORT)], "--listen")
    keydist = None
    if args.keydist_listen:
        kd_hosts, kd_port = _one_port(args.keydist_listen, "--keydist-listen")
        keydist = (_server_tls(args), kd_hosts, kd_port)
    admin_tls = _server_tls(args) if args.admin_listen else None
    if args.admin_delegate and admin_tls is None:
        raise CliError("--admin-delegate goes with --admin-listen")
    # (with --aaa-radius the credentials live in the RADIUS server: no enrolment needed here)
    if args.instance and args.db is None:
        raise CliError("--instance goes with --db (several key servers on one database)")
    fresh = args.db is None and not (args.data_dir / KEYSERVER_DB).exists()
    if not args.init and not args.aaa_radius and fresh:
        raise CliError(
            f"no key server data in {args.data_dir} (enroll a device with 'amistack keys enroll "
            "--data-dir DIR', or give --init to start with an empty store)"
        )
    paa_config = _paa_config(args)
    store = open_store_args(args, create=True)
    methods = _extra_methods(args, store)
    pcap = PcapWriter(args.pcap) if args.pcap else None

    where = store_location(args) if args.db else args.data_dir.resolve()
    if args.instance:
        where = f"{where} as instance {args.instance!r}"

    def ready(rt: KeyServerRuntime) -> None:
        print(
            f"key server: data in {where} ({len(store.list_devices())} "
            f"device(s)), session lifetime {args.lifetime:g} s",
            flush=True,
        )
        for what, addrs in (
            ("PANA", rt.pana_addresses),
            ("RADIUS", rt.radius_addresses),
            ("key distribution (mTLS)", rt.keydist_addresses),
            ("key administration (mTLS, audited)", rt.admin_addresses),
        ):
            for host, bound in addrs:
                print(f"key server: {what} on {host} port {bound}", flush=True)
        kinds = "EAP-TLS and EAP-PSK" if methods else "EAP-PSK"
        print(f"key server: methods {kinds}", flush=True)
        for cn in args.admin_delegate:
            print(f"key server: {cn} may revoke and rotate PSKs for its SECADMs", flush=True)
        relays = ", ".join(args.relay) if args.relay else "none (PANA-Relay messages dropped)"
        print(f"key server: PANA relays accepted from {relays}", flush=True)
        if pcap is not None:
            print(f"key server: capturing to {args.pcap}", flush=True)

    admin = None
    trail = users = None
    if admin_tls is not None:
        from amistack.access import AccessStore, AuditTrail
        from amistack.access.keyadmin import KeyAdminService

        ka_hosts, ka_port = _one_port(args.admin_listen, "--admin-listen")
        trail = AuditTrail.open(args.data_dir, time.time())
        users = (
            AccessStore(args.data_dir) if (args.data_dir / AccessStore.FILENAME).exists() else None
        )
        admin = (
            admin_tls,
            ka_hosts,
            ka_port,
            KeyAdminService(store, trail, users=users, delegators=frozenset(args.admin_delegate)),
        )

    async def main() -> None:
        stop = stop_on_signals()
        await run_keyserver(
            store,
            hosts,
            port,
            radius_listen=args.radius_listen,
            radius_secret=args.radius_secret.encode() if args.radius_secret else None,
            radius_server=args.aaa_radius,
            radius_server_secret=args.aaa_secret.encode() if args.aaa_secret else None,
            capture=pcap.capture if pcap else None,
            stop=stop,
            ready=ready,
            keydist=keydist,
            admin=admin,
            session_lifetime=args.lifetime,
            extra_methods=methods,
            paa_config=paa_config,
            now=time.time(),
            **({} if args.mesh_pan is None else {"mesh_pan": args.mesh_pan}),
        )

    try:
        with service_gc():  # fewer full collections over the key rings (runtime.loop)
            run(main)
    except OSError as exc:
        raise CliError(f"cannot listen: {exc}") from None
    except StoreError as exc:  # e.g. another process runs as this --instance
        raise CliError(str(exc)) from None
    finally:
        if pcap is not None:
            pcap.close()
        if trail is not None:
            trail.close()
        if users is not None:
            users.close()
        store.close()
    print("key server: stopped", flush=True)
    return 0
