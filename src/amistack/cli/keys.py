"""`amistack keys`: enroll, list, revoke devices, rotate PSKs, read the audit trail."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

from amistack.cli.common import (
    CliError,
    add_data_dir,
    add_psk_options,
    open_store,
    pan_id_arg,
    resolve_psk,
)
from amistack.keymgmt import StoreError
from amistack.keymgmt.store import EAP_METHODS, METHOD_PSK, METHOD_TLS


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def register(sub: Any) -> None:
    keys = sub.add_parser(
        "keys",
        help="manage device credentials in the key server's store",
        description="Manage the key server's credential store: device id -> EAP-PSK key, "
        "encrypted at rest under the key-encryption key in DIR/kek.key (0600). Changes reach "
        "a running key server at once (it watches the store's revocation journal).",
    )
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    p = ksub.add_parser(
        "enroll",
        help="add a device and its PSK",
        description="Enroll a device with its 16-byte EAP-PSK key, or (--method tls) for "
        "EAP-TLS with the device certificate 'amistack pki issue-device ID' gives it; a "
        "device enrolled for one method is refused by the other.",
    )
    p.add_argument("device_id", metavar="ID", help="the device identity (EAP-PSK ID_P)")
    p.add_argument(
        "--method",
        choices=EAP_METHODS,
        default=METHOD_PSK,
        help="the EAP method it authenticates with (default psk)",
    )
    add_psk_options(p, "omitted: a random PSK, printed once", env=False)
    p.add_argument(
        "--lifetime",
        type=float,
        metavar="SECONDS",
        help="this device's PANA session lifetime (default: the key server's)",
    )
    p.add_argument("--replace", action="store_true", help="re-enroll an existing device")
    add_data_dir(p)
    p.set_defaults(handler=_enroll)

    p = ksub.add_parser("list", help="list enrolled devices (never their PSKs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_data_dir(p)
    p.set_defaults(handler=_list)

    p = ksub.add_parser(
        "revoke",
        help="revoke a device",
        description="Revoke a device: its PSK is destroyed, a running key server ends its "
        "sessions at once and refuses it from then on, and keys already issued to it end "
        "after --keys-valid-for seconds (default 0: at once).",
    )
    p.add_argument("device_id", metavar="ID")
    p.add_argument("--reason", default="revoked by operator")
    p.add_argument(
        "--keys-valid-for",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="grace for keys already issued, e.g. to drain in-flight reads",
    )
    add_data_dir(p)
    p.set_defaults(handler=_revoke)

    p = ksub.add_parser(
        "rotate-psk",
        help="replace a device's PSK",
        description="Give a device a new PSK (its next authentication needs it).",
    )
    p.add_argument("device_id", metavar="ID")
    add_psk_options(p, "omitted: a random PSK, printed once", env=False)
    add_data_dir(p)
    p.set_defaults(handler=_rotate)

    p = ksub.add_parser(
        "group-keys",
        help="show a PAN's mesh group keys (key index, validity; --tshark: the keys)",
        description="The mesh group keys the key server holds for a PAN (docs/mesh-keys.md): "
        "key index, serial and validity. --tshark prints instead the tshark options that "
        "decrypt a capture of that mesh - the keys themselves, so keep that output private.",
    )
    p.add_argument("--pan", required=True, type=pan_id_arg, metavar="PANID", help="e.g. 0xface")
    p.add_argument(
        "--tshark", action="store_true", help="print -o uat:ieee802154_keys options (secret!)"
    )
    add_data_dir(p)
    p.set_defaults(handler=_group_keys)

    p = ksub.add_parser("audit", help="show the audit trail, newest first")
    p.add_argument("--device", metavar="ID")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    add_data_dir(p)
    p.set_defaults(handler=_audit)


def _enroll(args: argparse.Namespace) -> int:
    given = resolve_psk(args, env=False)
    if args.method == METHOD_TLS and given is not None:
        raise CliError("--psk goes with --method psk (an EAP-TLS device has no PSK)")
    psk = given or secrets.token_bytes(16)
    with open_store(args.data_dir, create=True, kek=args.kek) as store:
        try:
            if args.method == METHOD_TLS:
                store.enroll_tls(
                    args.device_id,
                    time.time(),
                    replace=args.replace,
                    session_lifetime=args.lifetime,
                )
            else:
                store.enroll(
                    args.device_id,
                    psk,
                    time.time(),
                    replace=args.replace,
                    session_lifetime=args.lifetime,
                )
        except StoreError as exc:
            raise CliError(str(exc)) from None
    print(f"enrolled {args.device_id} for EAP-{args.method.upper()} in {args.data_dir}")
    if args.method == METHOD_TLS:
        print(f"its certificate: amistack pki issue-device {args.device_id}")
    elif given is None:
        print(f"psk {psk.hex()}  (shown once: configure it in the device now)")
    return 0


def _group_keys(args: argparse.Namespace) -> int:
    with open_store(args.data_dir, create=False, kek=args.kek) as store:
        ring = store.load_group_keys(args.pan)
    if ring is None:
        raise CliError(f"no group keys for PAN {args.pan:#06x} (key server run with --mesh-pan?)")
    serial, rotate_at, keys = ring
    if args.tshark:
        for k in keys:
            print(f'-o \'uat:ieee802154_keys:"{k.key.hex()}","{k.index}","No hash"\'')
        return 0
    print(f"{'INDEX':>5} {'SERIAL':>7}  {'FROM':<21} {'UNTIL':<21}")
    for k in keys:
        print(f"{k.index:>5} {k.serial:>7}  {_when(k.not_before):<21} {_when(k.not_after):<21}")
    pending = "" if rotate_at is None else f", rotation due {_when(rotate_at)}"
    print(f"PAN {args.pan:#06x}: {len(keys)} key(s), serial {serial}{pending}")
    return 0


def _list(args: argparse.Namespace) -> int:
    with open_store(args.data_dir, create=False, kek=args.kek) as store:
        devices = store.list_devices()
    rows = [
        {
            "device_id": d.device_id.decode("utf-8", "replace"),
            "enrolled_at": _when(d.enrolled_at),
            "revoked_at": None if d.revoked_at is None else _when(d.revoked_at),
            "revoke_reason": d.revoke_reason,
            "psk_generation": d.psk_generation,
            "session_lifetime": d.session_lifetime,
            "method": d.method,
        }
        for d in devices
    ]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print(f"{'DEVICE':<24} {'ENROLLED':<21} {'METHOD':<6} {'PSK GEN':>7}  STATUS")
    for r in rows:
        status = "active" if r["revoked_at"] is None else f"revoked {r['revoked_at']}"
        print(
            f"{r['device_id']:<24} {r['enrolled_at']:<21} {r['method']:<6} "
            f"{r['psk_generation']:>7}  {status}"
        )
    print(f"{len(rows)} device(s) in {args.data_dir}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    now = time.time()
    with open_store(args.data_dir, create=False, kek=args.kek) as store:
        try:
            newly = store.revoke(
                args.device_id, args.reason, now, keys_until=now + max(0.0, args.keys_valid_for)
            )
        except StoreError as exc:
            raise CliError(str(exc)) from None
    print(f"revoked {args.device_id}" if newly else f"{args.device_id} was already revoked")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    given = resolve_psk(args, env=False)
    psk = given or secrets.token_bytes(16)
    with open_store(args.data_dir, create=False, kek=args.kek) as store:
        try:
            gen = store.rotate_psk(args.device_id, psk, time.time())
        except StoreError as exc:
            raise CliError(str(exc)) from None
    print(f"{args.device_id}: PSK generation {gen}")
    if given is None:
        print(f"psk {psk.hex()}  (shown once)")
    return 0


def _audit(args: argparse.Namespace) -> int:
    with open_store(args.data_dir, create=False, kek=args.kek) as store:
        entries = store.audit_log(args.limit, device_id=args.device)
    rows = [
        {
            "seq": e.seq,
            "at": _when(e.at),
            "kind": e.kind,
            "device_id": None if e.device_id is None else e.device_id.decode("utf-8", "replace"),
            "detail": e.detail,
        }
        for e in entries
    ]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    else:
        for r in rows:
            print(
                f"{r['seq']:>6} {r['at']} {r['kind']:<16} {r['device_id'] or '-':<20} {r['detail']}"
            )
    return 0
