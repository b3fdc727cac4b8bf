"""`amistack keys`: enroll, list, revoke devices, rotate PSKs, read the audit trail -- always as
an operator with an identity, and always through `access.keyadmin.KeyAdminService`.

Two ways to say who you are (docs/access-control.md, "Administering the key server"):
- `--server HOST[:PORT] --cert NAME`: over the key server's admin endpoint (mutual TLS with the
  role certificate DIR/pki/clients/NAME.crt, `amistack pki issue-client NAME --role SECADM`);
- `--token-file FILE` (or `-`, or $AMISTACK_TOKEN): on this machine's data directory, with a
  bearer token of a user in DIR/access.db (`amistack users token NAME`).
Either way the same rights, area-of-responsibility, freshness and budget checks run, and the
action is written to the operator audit trail (the key server's DIR/audit/) before it happens.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from amistack.cli.common import (
    CliError,
    add_data_dir,
    add_psk_options,
    add_store_db,
    db_password,
    open_store_args,
    pan_id_arg,
    parse_hostport,
    resolve_psk,
    store_location,
)
from amistack.keymgmt.store import EAP_METHODS, METHOD_PSK, METHOD_TLS

TOKEN_ENV = "AMISTACK_TOKEN"
MAX_TOKEN_FILE = 256
ADMIN_PORT = 7717  # runtime.keydist.DEFAULT_KEYADMIN_PORT (not imported: keeps --help fast)


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _add_identity(p: argparse.ArgumentParser) -> None:
    who = p.add_argument_group(
        "operator identity (one is required)",
        "over the network with a role certificate, or on this machine with a user's token",
    )
    who.add_argument(
        "--server",
        type=lambda t: parse_hostport(t, ADMIN_PORT),
        metavar="HOST[:PORT]",
        help=f"the key server's admin endpoint ('keyserver --admin-listen'; port {ADMIN_PORT})",
    )
    who.add_argument(
        "--cert",
        metavar="NAME",
        help="with --server: your role certificate DIR/pki/clients/NAME.{crt,key} "
        "('amistack pki issue-client NAME --role SECADM')",
    )
    who.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=f"a bearer token of a user in DIR/access.db ('amistack users token NAME') from "
        f"FILE (chmod 600) or standard input with '-'; or set ${TOKEN_ENV}",
    )
    add_data_dir(p)
    add_store_db(p)  # on this machine: the credentials in PostgreSQL (docs/scale-out.md)


def register(sub: Any) -> None:
    keys = sub.add_parser(
        "keys",
        help="manage device credentials in the key server's store (as an identified operator)",
        description="Manage the key server's credential store: device id -> EAP-PSK key, "
        "encrypted at rest under the key-encryption key in DIR/kek.key (0600). Every action "
        "needs an operator identity with the right (IEC 62351-8 roles: SECADM changes keys, "
        "SECAUD or SECADM lists, SECAUD reads the audit) and is written to the operator audit "
        "trail DIR/audit/ before it takes effect. Changes reach a running key server at once. "
        "See docs/access-control.md.",
    )
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    p = ksub.add_parser(
        "enroll",
        help="add a device and its PSK (SECADM)",
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
    add_psk_options(p, "omitted: a random PSK, printed once", env=False, argv=False)
    p.add_argument(
        "--lifetime",
        type=float,
        metavar="SECONDS",
        help="this device's PANA session lifetime (default: the key server's)",
    )
    p.add_argument("--replace", action="store_true", help="re-enroll an existing device")
    _add_identity(p)
    p.set_defaults(handler=_enroll)

    p = ksub.add_parser("list", help="list enrolled devices, never their PSKs (SECADM, SECAUD)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_identity(p)
    p.set_defaults(handler=_list)

    p = ksub.add_parser(
        "revoke",
        help="revoke a device (SECADM)",
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
    _add_identity(p)
    p.set_defaults(handler=_revoke)

    p = ksub.add_parser(
        "rotate-psk",
        help="replace a device's PSK (SECADM)",
        description="Give a device a new PSK (its next authentication needs it).",
    )
    p.add_argument("device_id", metavar="ID")
    add_psk_options(p, "omitted: a random PSK, printed once", env=False, argv=False)
    _add_identity(p)
    p.set_defaults(handler=_rotate)

    p = ksub.add_parser(
        "group-keys",
        help="show a PAN's mesh group keys (validity; --tshark: the keys, SECADM)",
        description="The mesh group keys the key server holds for a PAN (docs/mesh-keys.md): "
        "key index, serial and validity. --tshark prints instead the tshark options that "
        "decrypt a capture of that mesh - the keys themselves, so keep that output private; "
        "it needs SECADM with the area of responsibility '*' and is audited as an export.",
    )
    p.add_argument("--pan", required=True, type=pan_id_arg, metavar="PANID", help="e.g. 0xface")
    p.add_argument(
        "--tshark", action="store_true", help="print -o uat:ieee802154_keys options (secret!)"
    )
    _add_identity(p)
    p.set_defaults(handler=_group_keys)

    p = ksub.add_parser(
        "trail",
        help="export the operator audit trail to verify it (SECAUD)",
        description="Write the key server's operator audit trail (who enrolled, revoked, "
        "rotated, listed, and every refusal) as an event-log export to FILE and its public key "
        "to FILE.pem; 'amistack log verify FILE --pubkey FILE.pem' checks that nothing in it "
        "was changed or cut.",
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    _add_identity(p)
    p.set_defaults(handler=_trail)

    p = ksub.add_parser("audit", help="show the store's audit trail, newest first (SECAUD)")
    p.add_argument("--device", metavar="ID")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    _add_identity(p)
    p.set_defaults(handler=_audit)


# -- acting as the operator ------------------------------------------------------------------


def _call(args: argparse.Namespace, request: dict[str, Any]) -> dict[str, Any]:
    """Send `request` as the operator the options name; the answer, or a one-line CliError."""
    from amistack.keymgmt.keydist import KeyDistError

    db_password(args)  # a password in --db is refused before anything else happens
    request = {**request, "at": time.time(), "nonce": secrets.token_hex(16), "id": 1}
    token_given = args.token_file is not None or bool(os.environ.get(TOKEN_ENV))
    try:
        if args.server is not None:  # (a $AMISTACK_TOKEN in the environment is not used)
            if args.token_file is not None:
                raise CliError("give one identity: --server/--cert or --token-file, not both")
            return _over_the_network(args, request)
        if token_given:
            return _on_this_machine(args, request)
    except KeyDistError as exc:  # KeyDistRefused: "code: detail" (forbidden, not-found, ...)
        raise CliError(str(exc)) from None
    raise CliError(
        f"'keys {args.keys_command}' needs an operator identity: --server HOST --cert NAME (a "
        f"role certificate) or --token-file FILE / ${TOKEN_ENV} (a token of 'amistack users "
        "token NAME'); see docs/access-control.md"
    )


def _over_the_network(args: argparse.Namespace, request: dict[str, Any]) -> dict[str, Any]:
    from amistack.keymgmt.pki import PkiError
    from amistack.runtime.keydist import TlsFiles, admin_request

    if not args.cert:
        raise CliError("--server needs --cert NAME (your role certificate)")
    host, port = args.server
    try:
        tls = TlsFiles.client(args.data_dir, args.cert)
        return asyncio.run(admin_request(host, port, tls, request))
    except PkiError as exc:
        raise CliError(str(exc)) from None


def _on_this_machine(args: argparse.Namespace, request: dict[str, Any]) -> dict[str, Any]:
    from amistack.access import AccessStore, AuditTrail
    from amistack.access.keyadmin import KeyAdminService
    from amistack.keymgmt.keydist import decode_answer

    token = _token(args)
    if not (args.data_dir / AccessStore.FILENAME).exists():
        raise CliError(
            f"no users in {args.data_dir} (add one: amistack users add NAME --role SECADM)"
        )
    now = time.time()
    users = AccessStore(args.data_dir)
    trail = AuditTrail.open(args.data_dir, now)
    try:
        principal = users.authenticate_token(token, now)
        if principal is None:
            trail.record(now, _login(), "keys.auth", via="token", outcome="failed")
            raise CliError("the token is invalid, expired or revoked")
        principal = dataclasses.replace(principal, source=f"local:{_login()}")
        store = open_store_args(args, create=request["op"] == "enroll")
        with store:
            line = json.dumps(request).encode()
            answer = KeyAdminService(store, trail).handle(line, principal, now)
    finally:
        trail.close()
        users.close()
    return decode_answer(answer, request["id"])


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "?"


def _token(args: argparse.Namespace) -> str:
    from amistack.crypto.secretfile import SecretFileError, read_secret_file

    if str(args.token_file) == "-" and str(getattr(args, "psk_file", "")) == "-":
        raise CliError("standard input can carry the PSK or the token, not both")
    if args.token_file is None:
        text = os.environ.get(TOKEN_ENV, "")
    elif str(args.token_file) == "-":
        text = sys.stdin.readline(MAX_TOKEN_FILE)
    else:
        try:
            text = read_secret_file(args.token_file, MAX_TOKEN_FILE, "token").decode(
                "ascii", "replace"
            )
        except SecretFileError as exc:
            raise CliError(str(exc)) from None
    text = text.strip()
    if not text or len(text) > MAX_TOKEN_FILE:
        raise CliError("no token given (or not a token)")
    return text


# -- the verbs -------------------------------------------------------------------------------


def _enroll(args: argparse.Namespace) -> int:
    given = resolve_psk(args, env=False, argv=False)
    if args.method == METHOD_TLS and given is not None:
        raise CliError("--psk-file goes with --method psk (an EAP-TLS device has no PSK)")
    request: dict[str, Any] = {
        "op": "enroll",
        "device": args.device_id,
        "method": args.method,
        "replace": args.replace,
    }
    if args.lifetime is not None:
        request["lifetime"] = args.lifetime
    if given is not None:
        request["psk"] = given.hex()
    answer = _call(args, request)
    print(f"enrolled {args.device_id} for EAP-{args.method.upper()} in {_where(args)}")
    if args.method == METHOD_TLS:
        print(f"its certificate: amistack pki issue-device {args.device_id}")
    elif "psk" in answer:
        print(f"psk {answer['psk']}  (shown once: configure it in the device now)")
    return 0


def _where(args: argparse.Namespace) -> str:
    if args.server is not None:
        return f"the key server at {args.server[0]} port {args.server[1]}"
    return store_location(args)


def _group_keys(args: argparse.Namespace) -> int:
    answer = _call(args, {"op": "group_keys", "pan": args.pan, "material": args.tshark})
    keys = answer.get("keys")
    if keys is None:
        raise CliError(f"no group keys for PAN {args.pan:#06x} (key server run with --mesh-pan?)")
    if args.tshark:
        for k in keys:
            print(f'-o \'uat:ieee802154_keys:"{k["key"]}","{k["index"]}","No hash"\'')
        return 0
    print(f"{'INDEX':>5} {'SERIAL':>7}  {'FROM':<21} {'UNTIL':<21}")
    for k in keys:
        print(
            f"{k['index']:>5} {k['serial']:>7}  {_when(k['not_before']):<21} "
            f"{_when(k['not_after']):<21}"
        )
    rotate_at = answer.get("rotate_at")
    pending = "" if rotate_at is None else f", rotation due {_when(rotate_at)}"
    print(f"PAN {args.pan:#06x}: {len(keys)} key(s), serial {answer['serial']}{pending}")
    return 0


def _list(args: argparse.Namespace) -> int:
    devices = _call(args, {"op": "list"})["devices"]
    rows = [
        {
            "device_id": d["device"],
            "enrolled_at": _when(d["enrolled_at"]),
            "revoked_at": None if d["revoked_at"] is None else _when(d["revoked_at"]),
            "revoke_reason": d["revoke_reason"],
            "psk_generation": d["psk_generation"],
            "session_lifetime": d["session_lifetime"],
            "method": d["method"],
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
    print(f"{len(rows)} device(s) in {_where(args)}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    answer = _call(
        args,
        {
            "op": "revoke",
            "device": args.device_id,
            "reason": args.reason,
            "keys_valid_for": max(0.0, args.keys_valid_for),
        },
    )
    newly = answer["revoked"]
    print(f"revoked {args.device_id}" if newly else f"{args.device_id} was already revoked")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    given = resolve_psk(args, env=False, argv=False)
    request: dict[str, Any] = {"op": "rotate_psk", "device": args.device_id}
    if given is not None:
        request["psk"] = given.hex()
    answer = _call(args, request)
    print(f"{args.device_id}: PSK generation {answer['generation']}")
    if "psk" in answer:
        print(f"psk {answer['psk']}  (shown once)")
    return 0


def _audit(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"op": "audit", "limit": args.limit}
    if args.device:
        request["device"] = args.device
    entries = _call(args, request)["entries"]
    rows = [
        {
            "seq": e["seq"],
            "at": _when(e["at"]),
            "kind": e["kind"],
            "device_id": e["device"],
            "detail": e["detail"],
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


def _trail(args: argparse.Namespace) -> int:
    answer = _call(args, {"op": "trail"})
    pem = args.out.with_name(args.out.name + ".pem")
    try:
        args.out.write_text(answer["export"])
        pem.write_text(answer["public_key"])
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename}: {exc.strerror}") from None
    print(
        f"operator audit trail: {args.out} (verify: amistack log verify {args.out} --pubkey {pem})"
    )
    return 0
