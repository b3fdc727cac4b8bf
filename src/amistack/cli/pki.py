"""`amistack pki`: the lab PKI for key distribution over mutual TLS and EAP-TLS devices."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from amistack.cli.common import CliError, add_data_dir
from amistack.keymgmt import pki

T = TypeVar("T")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pki",
        help="certificates for key distribution over mutual TLS and for EAP-TLS meters",
        description="A small lab PKI under DIR/pki/: a CA, the key server's TLS certificate and "
        "client certificates for application servers (the head-end) and for people. A client "
        "certificate names the key purposes its holder may fetch (SAN URIs "
        "urn:amistack:purpose:NAME) and the meters it serves (urn:amistack:meters:SELECTOR), or "
        "the IEC 62351-8 roles of an operator (the IECUserRoles extension); a device "
        "certificate names the meter that authenticates with it over EAP-TLS. "
        "See docs/key-distribution.md, docs/access-control.md and docs/network-access.md.",
    )
    psub = p.add_subparsers(dest="pki_command", metavar="ACTION", required=True)

    c = psub.add_parser("init", help="create the CA")
    c.add_argument("--name", default="amistack lab CA", help="the CA's common name")
    c.add_argument("--days", type=int, default=3650, help="validity in days")
    c.add_argument("--force", action="store_true", help="replace an existing CA")
    add_data_dir(c, kek=False)
    c.set_defaults(handler=_init)

    c = psub.add_parser("issue-server", help="a TLS server certificate (the key server's)")
    c.add_argument("name", help="certificate name, e.g. keyserver")
    c.add_argument(
        "--host",
        action="append",
        required=True,
        metavar="HOST",
        help="DNS name or IP address the server is reached at (repeatable)",
    )
    c.add_argument("--force", action="store_true", help="replace (the old one is revoked)")
    add_data_dir(c, kek=False)
    c.set_defaults(handler=_server)

    c = psub.add_parser(
        "issue-client",
        help="a client certificate for an application server or an operator",
        description="Issue a client certificate. An application server (the head-end) gets "
        "--purpose and --meters: the key purposes it may fetch from the key server and the "
        "meters whose keys it may fetch. A person gets --role: IEC 62351-8 roles carried in the "
        "certificate, accepted by the head-end's API over TLS (amistack headend --api-tls).",
    )
    c.add_argument("name", help="the application server's name (headend) or the user's name")
    c.add_argument(
        "--purpose",
        action="append",
        default=[],
        metavar="PURPOSE",
        help="a key purpose it may fetch, e.g. c1222 or link (repeatable)",
    )
    c.add_argument(
        "--meters",
        action="append",
        default=[],
        metavar="SELECTOR",
        help="meters it serves: a device id, a prefix ending in * ('meter-*'), or '*' for all "
        "(repeatable; required with --purpose). With --role: the area of responsibility, the "
        "only meters the person may act on (default '*')",
    )
    c.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="ROLE",
        help="an IEC 62351-8 role for a person: VIEWER, OPERATOR, ENGINEER, INSTALLER, SECADM, "
        "SECAUD or RBACMNT (repeatable, or comma-separated)",
    )
    c.add_argument("--force", action="store_true", help="replace (the old one is revoked)")
    add_data_dir(c, kek=False)
    c.set_defaults(handler=_client)

    c = psub.add_parser(
        "issue-device",
        help="an EAP-TLS device certificate for a meter",
        description="An ECDSA P-256 certificate for the meter ID (CN and subjectAltName URI "
        "urn:amistack:device:ID, extendedKeyUsage clientAuth) under DIR/pki/devices/. The key "
        "server takes the authenticated device id from it. Enroll the device with 'amistack "
        "keys enroll ID --method tls' and run it with 'amistack meter --id ID --cert ... --key "
        "... --ca DIR/pki/ca.crt'. See docs/network-access.md.",
    )
    c.add_argument("device_id", metavar="ID", help="the device id, e.g. meter-0001")
    c.add_argument("--days", type=int, default=pki.DEFAULT_DEVICE_DAYS, help="validity in days")
    c.add_argument("--force", action="store_true", help="replace (the old one is revoked)")
    add_data_dir(c, kek=False)
    c.set_defaults(handler=_device)

    c = psub.add_parser("revoke", help="put a certificate on the CRL")
    c.add_argument("name")
    kind = c.add_mutually_exclusive_group()
    kind.add_argument("--server", action="store_true", help="a server certificate (default client)")
    kind.add_argument("--device", action="store_true", help="a device (EAP-TLS) certificate")
    add_data_dir(c, kek=False)
    c.set_defaults(handler=_revoke)


def _show(issued: pki.Issued) -> int:
    until = datetime.fromtimestamp(issued.not_after, UTC).date()
    print(f"{issued.subject}: serial {issued.serial:x}, valid until {until}")
    print(f"  certificate {issued.cert_path}\n  private key {issued.key_path} (0600)")
    if issued.purposes:
        print(f"  may fetch: {', '.join(sorted(issued.purposes))}")
    if issued.meters:
        print(f"  for meters: {', '.join(sorted(issued.meters))}")
    if issued.revoked_serial is not None:
        print(f"  replaced serial {issued.revoked_serial:x}, now on the CRL")
    return 0


def _pki(call: Callable[[], T]) -> T:
    """Run a PKI verb; its errors are one-line CLI errors."""
    try:
        return call()
    except pki.PkiError as exc:
        raise CliError(str(exc)) from None


def _init(args: argparse.Namespace) -> int:
    return _show(
        _pki(
            lambda: pki.init_ca(
                args.data_dir, common_name=args.name, valid_days=args.days, force=args.force
            )
        )
    )


def _server(args: argparse.Namespace) -> int:
    return _show(
        _pki(lambda: pki.issue_server(args.data_dir, args.name, args.host, force=args.force))
    )


def _client(args: argparse.Namespace) -> int:
    from amistack.access.certroles import user_roles_extension
    from amistack.access.rights import parse_roles, role_names

    try:
        roles = parse_roles(args.role)
    except ValueError as exc:
        raise CliError(f"--role: {exc}") from None
    if not args.purpose and not roles:
        raise CliError("give --purpose (an application server) or --role (a person)")
    if args.purpose and not args.meters:
        raise CliError(
            "a key-fetching certificate must name the meters it serves "
            "(e.g. --meters 'meter-*', or '*' for every meter)"
        )
    # a person's --meters is the area of responsibility of the roles (IEC 62351-8 `aor`)
    extensions = [user_roles_extension(roles, args.meters or ["*"])] if roles else []
    shown = _show(
        _pki(
            lambda: pki.issue_client(
                args.data_dir,
                args.name,
                args.purpose,
                meters=args.meters,
                extensions=extensions,
                force=args.force,
            )
        )
    )
    if roles:
        print(f"  roles (IEC 62351-8): {', '.join(role_names(roles))}")
        print(f"  area of responsibility: {', '.join(sorted(args.meters or ['*']))}")
    return shown


def _device(args: argparse.Namespace) -> int:
    return _show(
        _pki(
            lambda: pki.issue_device(
                args.data_dir, args.device_id, valid_days=args.days, force=args.force
            )
        )
    )


def _revoke(args: argparse.Namespace) -> int:
    kind = "server" if args.server else "device" if args.device else "client"
    serial = _pki(lambda: pki.revoke(args.data_dir, args.name, kind=kind))
    print(f"revoked serial {serial:x}; the CRL in {args.data_dir}/pki is updated")
    return 0
