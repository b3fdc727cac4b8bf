"""`amistack workorder`: offline work orders for the field handheld (docs/handheld-offline.md).

    amistack workorder issue ORDER ...   a SECADM issues it; the handheld is provisioned with it
    amistack workorder show FILE         the order a file claims to be (no secret)
    amistack workorder run ORDER ...     in the field: the handheld as key server and collector
    amistack workorder sync ORDER ...    back at the office: readings to the head-end, once each
    amistack workorder list ...          what was issued; expired orders' meters to rotate

Secrets never come from the command line: the SECADM's token from $AMISTACK_TOKEN, the
technician's password from --password-file, $AMISTACK_PASSWORD or the terminal, PKCS#11 PINs
from $AMISTACK_PKCS11_PIN. Each command prints one JSON object, but `run`, which prints a line
per step for the technician and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import getpass
import ipaddress
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from amistack.addr import Addr, PanId
from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222_PORT
from amistack.cli.common import (
    CliError,
    add_data_dir,
    open_kek,
    open_store,
    parse_hostport,
    stop_on_signals,
)
from amistack.cli.concentrator import add_radio_options, check_radio
from amistack.runtime.keyserver import PANA_PORT
from amistack.runtime.meter_node import DEFAULT_HEADEND_TITLE

TOKEN_ENV = "AMISTACK_TOKEN"
PASSWORD_ENV = "AMISTACK_PASSWORD"
OFFICE_DIR = "workorders"  # in the key server's data dir: what was issued, with the handheld key
_SPECS = (
    "--handheld-kek: 'file' (HANDHELD_DIR/kek.key) or 'pkcs11:LIB?token=T&label=L', the AES key "
    "in the handheld's token; --handheld-module: 'software:PATH' or 'pkcs11:LIB?token=T&label=L',"
    " its signing key"
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "workorder",
        help="offline work orders for the field handheld (no WAN in the area)",
        description="Offline work orders (JP5701792B2, second embodiment): a SECADM issues a "
        "work order (meters, operations, validity, technician); the handheld gets exactly those "
        "meters' PSKs, sealed under its PKCS#11 key and the technician's password; in the "
        "field `run` makes the handheld key server, DODAG root and collector for them; back at "
        "the office `sync` loads its signed readings and event logs into the head-end once "
        "each. See docs/handheld-offline.md.",
    )
    wsub = p.add_subparsers(dest="workorder_command", metavar="ACTION", required=True)

    i = wsub.add_parser(
        "issue",
        help="issue a work order and provision the docked handheld with it",
        description="Issue work order ORDER as the SECADM whose token is in $AMISTACK_TOKEN "
        "(a user of --data-dir, the key server's), audited there; then, with the technician "
        "present (password from $AMISTACK_PASSWORD or asked on the terminal, checked by the "
        "handheld's own login), seal the meters' PSKs into HANDHELD_DIR/orders/ORDER.order. "
        + _SPECS,
    )
    i.add_argument("order", metavar="ORDER", help="the order id (1-64 of A-Za-z0-9_.-)")
    i.add_argument("--technician", required=True, help="the one technician who may open it")
    i.add_argument("--handheld", required=True, help="the handheld's device id")
    i.add_argument("--meter", action="append", required=True, metavar="ID",
                   help="a meter's device id (repeat)")  # fmt: skip
    i.add_argument("--op", action="append", metavar="OP",
                   help="an allowed operation: read, events, connect, disconnect, commission "
                   "(repeat; default read)")  # fmt: skip
    i.add_argument("--start", type=float, metavar="EPOCH", help="valid from (default now)")
    i.add_argument("--hours", type=float, default=8.0, help="valid for (default 8)")
    _handheld_options(i)
    add_data_dir(i)

    s = wsub.add_parser("show", help="print the order a work order file claims to be",
                        description="Print the (unauthenticated) header of a work order file: "
                        "no secret is in it.")  # fmt: skip
    s.add_argument("file", type=Path, metavar="FILE")
    s.set_defaults(handler=_show)

    y = wsub.add_parser(
        "sync",
        help="upload what the handheld collected to the head-end, then destroy its copies",
        description="As the SECADM of $AMISTACK_TOKEN: open what the handheld collected for "
        "ORDER (sealed under its token and the order's technician seal key, which the office "
        "kept at issue), check each signature against the handheld key recorded at issue and "
        "that the order's technician made it, store each reading once in the head-end (a "
        "second sync stores nothing new), hand each signed event log to the head-end's "
        "verification, report conflicts and refusals, mark the order's meters for PSK "
        "rotation (once), and destroy the handheld's records and work order. With refusals or "
        "conflicts the handheld's copies are kept and the exit status is 1. " + _SPECS,
    )
    y.add_argument("order", metavar="ORDER")
    y.add_argument("--headend", required=True, metavar="DIR|URL",
                   help="the head-end's data directory or postgresql:// URL")  # fmt: skip
    _handheld_options(y)
    add_data_dir(y)
    i.set_defaults(handler=_issue)

    r = wsub.add_parser(
        "run",
        help="in the field: run the offline work session (DODAG root, key server, collector)",
        description="Run work order ORDER on the handheld where there is no WAN "
        "(docs/handheld-offline.md): the technician logs in (password from --password-file, "
        "$AMISTACK_PASSWORD or the terminal), the order opens with the handheld's token "
        "(PIN from $AMISTACK_PKCS11_PIN), and the handheld becomes DODAG root and PANA relay "
        "on the mesh radio with the key server and the collector inside it, for the order's "
        "meters only. Meters (amistack meter --mesh, with --keyserver/--headend as given here) "
        "join it; each is read and its signed event log fetched, as far as the order and the "
        "technician's role allow, and everything collected is sealed (token key + technician "
        "seal key) and signed at once. Type 'status', 'collect' (again, now), 'connect METER', "
        "'disconnect METER' "
        "(where the order and the role allow; in the handheld's audit trail) or 'logout' on "
        "standard input; the "
        "session also ends on SIGINT/SIGTERM, --timeout, or the order's end of validity, and "
        "its keys go with it. Refused with exit status 2: an expired order, another "
        "technician, a wrong password or PIN, a --meter not in the order. " + _SPECS,
    )
    r.add_argument("order", metavar="ORDER")
    r.add_argument("--technician", required=True, help="who logs in on the handheld")
    r.add_argument("--password-file", type=Path, metavar="FILE",
                   help="the technician's password, in a file only its owner can read")  # fmt: skip
    r.add_argument("--meter", action="append", metavar="ID",
                   help="serve only these of the order's meters (repeat; default all)")  # fmt: skip
    r.add_argument("--keyserver", required=True, type=lambda t: parse_hostport(t, PANA_PORT),
                   metavar="HOST[:PORT]", help="the office key server's address as the meters "
                   "know it (the handheld answers there)")  # fmt: skip
    r.add_argument("--headend", required=True, type=lambda t: parse_hostport(t, C1222_PORT),
                   metavar="HOST[:PORT]", help="the head-end's C12.22 address as the meters "
                   "know it")  # fmt: skip
    r.add_argument("--headend-title", default=DEFAULT_HEADEND_TITLE, metavar="TITLE",
                   help=f"the head-end's AP title (default {DEFAULT_HEADEND_TITLE})")  # fmt: skip
    r.add_argument("--intervals", type=int, default=4, metavar="N",
                   help="newest intervals read from each meter (default 4)")  # fmt: skip
    r.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="end the session after this long (default: the order's end, at most "
                   "8 hours)")  # fmt: skip
    add_radio_options(r, "the handheld's radio", "The mesh radio the meters are on "
                      "(runtime/mesh.py): a UDP socket with a neighbour table.")  # fmt: skip
    _handheld_options(r)
    r.set_defaults(handler=_run)

    ls = wsub.add_parser(
        "list",
        help="the work orders issued here and their state",
        description="As the SECADM of $AMISTACK_TOKEN: each work order issued from --data-dir, "
        "with its state: issued, synced, or expired-unsynced (the handheld never came back: its "
        "credentials have expired, and the meters' PSKs must be rotated). --mark-expired marks "
        "the meters of expired-unsynced orders for PSK rotation in the key server's audit "
        "trail (kind psk_rotation_due), once per order.",
    )
    ls.add_argument("--mark-expired", action="store_true",
                    help="mark expired, unsynced orders' meters for PSK rotation")  # fmt: skip
    add_data_dir(ls)
    ls.set_defaults(handler=_list)
    y.set_defaults(handler=_sync)


def _handheld_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--handheld-dir", required=True, type=Path, metavar="DIR",
                   help="the handheld's data dir (technicians, orders, readings)")  # fmt: skip
    p.add_argument("--handheld-kek", required=True, metavar="SPEC",
                   help="the handheld's key-encryption key")  # fmt: skip
    p.add_argument("--handheld-module", required=True, metavar="SPEC",
                   help="the handheld's signing key")  # fmt: skip


def _print(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "?"


@contextmanager
def _secadm(data_dir: Path, action: str, target: str, now: float) -> Iterator[Any]:
    """(principal, office audit trail) for the token in $AMISTACK_TOKEN; refusals audited."""
    from amistack.access import AccessStore, AuditTrail
    from amistack.access.rights import Right

    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise CliError(f"no operator token: set ${TOKEN_ENV} (amistack users token NAME)")
    if not (data_dir / AccessStore.FILENAME).exists():
        raise CliError(f"no users in {data_dir} (add one: amistack users add NAME --role SECADM)")
    with ExitStack() as stack:
        users = AccessStore(data_dir)
        stack.callback(users.close)
        trail = AuditTrail.open(data_dir, now)
        stack.callback(trail.close)
        principal = users.authenticate_token(token, now)
        if principal is None or not principal.may(Right.KEYS):
            who = _who() if principal is None else principal.name
            trail.record(now, who, action, via=f"cli:{_who()}", target=target,
                         outcome="refused")  # fmt: skip
            raise CliError("the token is invalid, expired, revoked, or not a SECADM's")
        yield principal, trail


def _password(path: Path | None = None) -> str:
    if path is not None:
        from amistack.handheld.workorder import WorkOrderError, read_private

        try:
            return read_private(path).decode("utf-8").rstrip("\r\n")
        except (WorkOrderError, UnicodeDecodeError) as exc:
            why = exc.message if isinstance(exc, WorkOrderError) else "not UTF-8"
            raise CliError(f"--password-file: {why}") from None
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise CliError(f"no terminal to ask for the technician's password: set ${PASSWORD_ENV}")
    return getpass.getpass("technician's password: ")


def _handheld_keys(args: argparse.Namespace, stack: ExitStack, *, create: bool) -> tuple[Any, Any]:
    from amistack.keymgmt.kek import KekError
    from amistack.securemodule import SecureModuleError
    from amistack.securemodule.spec import open_module

    args.handheld_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        kek = open_kek(args.handheld_dir, args.handheld_kek, create=create)
        module = open_module(args.handheld_module, create=create)
    except (KekError, SecureModuleError) as exc:
        raise CliError(str(exc)) from None
    for thing in (kek, module):
        if hasattr(thing, "close"):
            stack.callback(thing.close)
    return kek, module


def _office_kek(args: argparse.Namespace, stack: ExitStack) -> Any:
    """The key server's own KEK (--kek), which wraps the technician seal keys it keeps."""
    kek = open_kek(args.data_dir, args.kek, create=False)
    if hasattr(kek, "close"):
        stack.callback(kek.close)
    return kek


def _seal_key_aad(header: bytes) -> bytes:
    from amistack.keymgmt.kek import record_aad

    return record_aad("workorder-seal-key", header)


def _record_path(data_dir: Path, order_id: str) -> Path:
    return data_dir / OFFICE_DIR / f"{order_id}.json"


def _save_record(data_dir: Path, order_id: str, record: dict[str, Any]) -> None:
    from amistack.handheld.workorder import write_private

    write_private(_record_path(data_dir, order_id), json.dumps(record).encode())


def _load_record(data_dir: Path, order_id: str) -> dict[str, Any]:
    """The office's record of an issued order; WorkOrderError if unreadable."""
    from amistack.handheld.workorder import WorkOrderError, read_private

    record = json.loads(read_private(_record_path(data_dir, order_id)))
    if not isinstance(record, dict):
        raise WorkOrderError("unreadable", "office record is not an object")
    return record


def _list(args: argparse.Namespace) -> int:
    from amistack.handheld.offline import mark_for_rotation
    from amistack.handheld.workorder import WorkOrder, WorkOrderError

    now = time.time()
    rows = []
    with ExitStack() as stack:
        principal, trail = stack.enter_context(_secadm(args.data_dir, "workorder.list", "", now))
        for path in sorted((args.data_dir / OFFICE_DIR).glob("*.json")):
            order_id = path.name.removesuffix(".json")
            try:
                record = _load_record(args.data_dir, order_id)
                order = WorkOrder.from_header(str(record["header"]).encode())
            except (WorkOrderError, ValueError, KeyError):
                rows.append({"order": order_id, "state": "unreadable"})
                continue
            if "synced_at" in record:
                state = "synced"
            elif order.valid_at(now) or now < order.not_before:
                state = "issued"
            else:  # the handheld never came back: its credentials are useless, the PSKs exposed
                state = "expired-unsynced"
                if args.mark_expired and "rotation_marked_at" not in record:
                    store = open_store(args.data_dir, create=False, kek=args.kek)
                    with store:
                        mark_for_rotation(store, order, now)
                    record["rotation_marked_at"] = now
                    _save_record(args.data_dir, order_id, record)
                    trail.record(now, principal.name, "workorder.expire", via=f"cli:{_who()}",
                                 target=f"workorder:{order_id}")  # fmt: skip
            rows.append({"order": order_id, "state": state, "technician": order.technician,
                         "handheld": order.handheld, "meters": list(order.meters),
                         "not_after": order.not_after,
                         "rotation_marked": "rotation_marked_at" in record})  # fmt: skip
    _print({"ok": True, "orders": rows})
    return 0


def _issue(args: argparse.Namespace) -> int:
    from amistack.access import AccessStore, AuditTrail, LoginRefused
    from amistack.crypto import system_random
    from amistack.handheld.technician import TechnicianDesk
    from amistack.handheld.workorder import (
        WorkOrderError,
        issue,
        order_path,
        provision,
    )

    now = time.time()
    start = now if args.start is None else args.start
    if not args.hours > 0:
        raise CliError("--hours must be > 0")
    target = f"workorder:{args.order}"
    with ExitStack() as stack:
        principal, trail = stack.enter_context(
            _secadm(args.data_dir, "workorder.issue", target, now)
        )
        try:
            order = issue(principal, args.order, args.handheld, args.technician, args.meter,
                          args.op or ["read"], start, start + args.hours * 3600.0, now)  # fmt: skip
        except WorkOrderError as exc:
            trail.record(now, principal.name, "workorder.issue", via=f"cli:{_who()}",
                         target=target, outcome=exc.reason)  # fmt: skip
            raise CliError(exc.message) from None
        path = order_path(args.handheld_dir, order.order_id)
        if path.exists():
            raise CliError(f"{path} exists: the handheld already holds order {args.order}")
        if not (args.handheld_dir / AccessStore.FILENAME).exists():
            raise CliError(f"no technicians on the handheld ({args.handheld_dir})")
        kek, module = _handheld_keys(args, stack, create=True)
        hh_users = AccessStore(args.handheld_dir)
        stack.callback(hh_users.close)
        hh_trail = AuditTrail.open(args.handheld_dir, now)
        stack.callback(hh_trail.close)
        desk = TechnicianDesk(hh_users, hh_trail, args.handheld)
        password = _password()
        try:
            session = desk.login(args.technician, password, now)
        except LoginRefused as exc:
            raise CliError(
                f"the technician's login on the handheld failed: {exc.message}"
            ) from None
        desk.logout(session, now)
        store = open_store(args.data_dir, create=False, kek=args.kek)
        stack.callback(store.close)
        office_kek = _office_kek(args, stack)
        try:
            seal_key = provision(order, store, kek, password, path, system_random)
        except WorkOrderError as exc:
            trail.record(now, principal.name, "workorder.issue", via=f"cli:{_who()}",
                         target=target, outcome=exc.reason)  # fmt: skip
            raise CliError(exc.message) from None
        wrapped = office_kek.wrap(seal_key, _seal_key_aad(order.header()))
        record = {"header": order.header().decode(),
                  "handheld_key": module.public_key_pem().decode(),
                  "seal_key": base64.b64encode(wrapped).decode()}  # fmt: skip
        _save_record(args.data_dir, order.order_id, record)
        trail.record(now, principal.name, "workorder.issue", via=f"cli:{_who()}", target=target,
                     detail={"meters": list(order.meters), "technician": order.technician,
                             "handheld": order.handheld, "not_after": order.not_after})  # fmt: skip
    _print({"ok": True, "order": json.loads(order.header()), "file": str(path)})
    return 0


def _show(args: argparse.Namespace) -> int:
    from amistack.handheld.workorder import WorkOrderError, read_header

    try:
        order = read_header(args.file)
    except WorkOrderError as exc:
        raise CliError(exc.message) from None
    _print({"ok": True, "order": json.loads(order.header())})
    return 0


def _sync(args: argparse.Namespace) -> int:
    from amistack.handheld.offline import (
        READINGS_FILE,
        Collected,
        SealedReadings,
        mark_for_rotation,
        sync,
    )
    from amistack.handheld.workorder import (
        WorkOrder,
        WorkOrderError,
        destroy_file,
        order_path,
    )
    from amistack.headend.storage import open_repository
    from amistack.keymgmt.kek import KekError

    now = time.time()
    target = f"workorder:{args.order}"
    with ExitStack() as stack:
        principal, trail = stack.enter_context(
            _secadm(args.data_dir, "workorder.sync", target, now)
        )
        try:
            record = _load_record(args.data_dir, args.order)
            order = WorkOrder.from_header(record["header"].encode())
            handheld_key = record["handheld_key"].encode()
        except WorkOrderError as exc:
            raise CliError(f"work order {args.order} was not issued here: {exc.message}") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CliError(f"the office record of work order {args.order} is malformed") from None
        try:
            wrapped = base64.b64decode(record["seal_key"], validate=True)
            seal_key = _office_kek(args, stack).unwrap(wrapped, _seal_key_aad(order.header()))
        except (KeyError, TypeError, binascii.Error, KekError):
            raise CliError(f"the office's seal key of work order {args.order} does not open "
                           "(not issued by this version, or altered)") from None  # fmt: skip
        readings_path = args.handheld_dir / READINGS_FILE
        collected = Collected()
        readings = None
        if readings_path.exists():
            kek, module = _handheld_keys(args, stack, create=False)
            readings = SealedReadings(readings_path, kek, module, order, seal_key)
            stack.callback(readings.close)
            collected = readings.export()
        repo = open_repository(args.headend)
        stack.callback(repo.close)
        already = "synced_at" in record
        report = sync(order, collected, handheld_key, repo, now)
        clean = not report.refused and not report.conflicts
        if "rotation_marked_at" not in record:  # once per order, however often it is synced
            store = open_store(args.data_dir, create=False, kek=args.kek)
            stack.callback(store.close)
            report.marked_for_rotation = mark_for_rotation(store, order, now)
            record["rotation_marked_at"] = now
        if clean:
            record["synced_at"] = now
        _save_record(args.data_dir, order.order_id, record)
        if clean:
            if readings is not None:
                readings.destroy()
            destroy_file(order_path(args.handheld_dir, order.order_id))
        trail.record(now, principal.name, "workorder.sync", via=f"cli:{_who()}", target=target,
                     outcome="ok" if clean else "refused",
                     detail={"inserted": report.inserted, "duplicates": report.duplicates,
                             "event_logs": report.event_logs,
                             "refused": len(report.refused),
                             "conflicts": len(report.conflicts)})  # fmt: skip
    _print({"ok": clean, "order": order.order_id, "technician": order.technician,
            "inserted": report.inserted,
            "duplicates": report.duplicates, "event_logs": report.event_logs,
            "events_stored": report.events_stored, "already_synced": already,
            "refused": report.refused,
            "conflicts": report.conflicts, "marked_for_rotation": report.marked_for_rotation,
            "handheld_copies_destroyed": clean})  # fmt: skip
    return 0 if clean else 1


HANDHELD_PREFIX = ipaddress.IPv6Network("fd00:a3e5:f1::/64")  # the isolated mesh's ULA (RFC 4193)
MAX_SESSION_S = 8 * 3600.0
CLOCK_MARK_S = 60.0  # how often a run raises the handheld's clock mark


def _run(args: argparse.Namespace) -> int:
    from amistack.access import AccessStore, AuditTrail, LoginRefused
    from amistack.crypto import system_random
    from amistack.handheld.offline import READINGS_FILE, SealedReadings
    from amistack.handheld.offline_run import OfflineRun, OfflineRunConfig
    from amistack.handheld.session import HandheldConfig, NotPermitted
    from amistack.handheld.technician import TechnicianDesk
    from amistack.handheld.workorder import (
        WorkOrderError,
        open_work_order,
        order_path,
        read_header,
    )
    from amistack.mesh.gateway import mesh_side
    from amistack.pana.paa import PaaConfig
    from amistack.pana.pac import PacConfig
    from amistack.runtime.loop import run as run_loop
    from amistack.runtime.mesh import eui_for, mesh_rpl_config
    from amistack.sim.mesh import MESH_PCI_RETRANSMIT, MESH_REQ_RETRANSMIT

    check_radio(args)
    if args.radio_if:
        raise CliError("workorder run takes --radio with --hear (not --radio-if)")
    if not 1 <= args.intervals <= 96:
        raise CliError("--intervals must be 1..96")
    if args.timeout is not None and not args.timeout > 0:
        raise CliError("--timeout must be > 0")
    path = order_path(args.handheld_dir, args.order)
    try:
        claimed = read_header(path)
    except WorkOrderError as exc:
        raise CliError(f"work order {args.order}: {exc.message}") from None
    served = list(dict.fromkeys(args.meter or claimed.meters))
    outside = [m for m in served if m not in claimed.meters]
    if outside:
        raise CliError(f"not in work order {args.order}: {', '.join(outside)}")
    try:
        title = ApTitle.parse(args.headend_title)
    except ValueError as exc:
        raise CliError(f"--headend-title: {exc}") from None
    now = time.time()
    with ExitStack() as stack:
        kek, module = _handheld_keys(args, stack, create=False)
        if not (args.handheld_dir / AccessStore.FILENAME).exists():
            raise CliError(f"no technicians on the handheld ({args.handheld_dir})")
        users = AccessStore(args.handheld_dir)
        stack.callback(users.close)
        trail = AuditTrail.open(args.handheld_dir, now)
        stack.callback(trail.close)
        desk = TechnicianDesk(users, trail, claimed.handheld)
        password = _password(args.password_file)
        try:
            opened = open_work_order(path, kek, desk, args.technician, password, now,
                                     clock=module)  # fmt: skip
        except LoginRefused as exc:
            raise CliError(f"login refused: {exc.message}") from None
        except WorkOrderError as exc:
            raise CliError(exc.message) from None
        del password
        order = opened.order
        end_at = min(order.not_after, now + (args.timeout or MAX_SESSION_S))
        readings = SealedReadings(args.handheld_dir / READINGS_FILE, kek, module, order,
                                  opened.seal_key)  # fmt: skip
        stack.callback(readings.close)
        hh = HandheldConfig(
            order.handheld, eui_for(order.handheld), PanId(args.pan),
            HANDHELD_PREFIX.network_address.packed,
            (mesh_side(args.keyserver[0]), args.keyserver[1]),
            rpl=mesh_rpl_config(),
            pac=PacConfig(pci_retransmit=MESH_PCI_RETRANSMIT, req_retransmit=MESH_REQ_RETRANSMIT),
            idle_timeout=end_at - now, max_duration=end_at - now,
        )  # fmt: skip
        config = OfflineRunConfig(
            hh, (mesh_side(args.headend[0]), args.headend[1]), title,
            {m: eui_for(m) for m in served}, intervals=args.intervals,
            paa=PaaConfig(req_retransmit=MESH_REQ_RETRANSMIT),
        )  # fmt: skip
        try:
            field_run = OfflineRun(opened, readings, config, system_random, now)
        except WorkOrderError as exc:
            raise CliError(exc.message) from None
        except NotPermitted as exc:
            raise CliError(f"{args.technician}'s role allows no work: {exc.why}") from None
        opened_session = opened.session
        del opened
        roles = ",".join(sorted(r.name for r in field_run.session.technician.roles))
        collects = sorted(field_run.allowed_operations & {"read", "events"}) or ["nothing"]
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(end_at))
        _say(f"{order.order_id}: opened for {args.technician} ({roles}) on handheld "
             f"{order.handheld}; {len(served)} meter(s); collects {', '.join(collects)}; "
             f"until {until}")  # fmt: skip
        not_allowed = sorted(order.operations - field_run.allowed_operations)
        if not_allowed:
            _say(f"{order.order_id}: not allowed by {args.technician}'s role: "
                 f"{', '.join(not_allowed)}")  # fmt: skip
        technician = opened_session

        def audit(action: str, target: str, outcome: str) -> None:
            desk.record(technician, action, target, outcome, time.time())

        why = run_loop(lambda: _serve(args, field_run, module, audit))
        status = field_run.status()
        _say(f"{order.order_id}: session ended ({why}); its keys are wiped; sealed on the "
             f"handheld: {status['readings_sealed']} readings, {status['event_logs_sealed']} "
             f"event logs")  # fmt: skip
    _print({"ok": True, "ended": why, **status})
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _wall_clock() -> float:
    return time.time()


async def _watch_clock(module: Any, stop: asyncio.Event, why: list[str]) -> None:
    """Every `CLOCK_MARK_S`, raise the latest time the handheld saw in its secure module
    (`workorder.check_clock`), so a clock set back later does not revive the order; a clock
    set back during the run ends it."""
    from amistack.handheld.workorder import WorkOrderError, check_clock

    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CLOCK_MARK_S)
        if stop.is_set():
            return
        try:
            check_clock(module, _wall_clock())
        except WorkOrderError as exc:
            why.append(f"clock: {exc.message}")
            stop.set()


async def _serve(
    args: argparse.Namespace, field_run: Any, module: Any, audit: Callable[[str, str, str], None]
) -> str:
    """Drive the run until it ends; why it ended. `audit(action, target, outcome)`: the
    handheld's audit trail, for the technician's commands."""
    from amistack.handheld.events import WorkEnded
    from amistack.handheld.offline import SwitchDone
    from amistack.handheld.session import NotPermitted
    from amistack.handheld.workorder import WorkOrderError
    from amistack.runtime.handheld_offline import run_offline

    stop = stop_on_signals()
    why: list[str] = []
    loop = asyncio.get_running_loop()
    order = field_run.order.order_id
    submit: list[Callable[[Callable[[float], None]], None]] = []

    def switch(operation: str, meter: str) -> None:
        target = f"meter:{meter}"
        if not submit:
            _say("not ready yet: try again in a moment")
            return
        try:
            submit[0](lambda now: field_run.command(meter, operation, now))
        except (NotPermitted, WorkOrderError) as exc:
            audit(f"offline.{operation}", target, "refused")
            _say(f"{order}: REFUSED {operation} {meter}: {exc}")
            return
        audit(f"offline.{operation}", target, "sent")

    pending = bytearray()

    def readable() -> None:
        """Standard input, read from its descriptor (not through sys.stdin's buffer, which
        would hold lines back from the loop): one command a line."""
        fd = sys.stdin.fileno()
        data = os.read(fd, 4096)
        if not data:  # end of input: no more commands, the session goes on
            loop.remove_reader(fd)
            return
        pending.extend(data)
        if len(pending) > 4096 and b"\n" not in pending:
            pending.clear()  # not a command
        while b"\n" in pending:
            raw, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            command(raw.decode("utf-8", "replace"))

    def command(line: str) -> None:
        word = line.strip().lower()
        if word in ("logout", "quit", "exit"):
            why.append("logout")
            stop.set()
        elif word == "status":
            _say(json.dumps(field_run.status(), sort_keys=True))
        elif word == "collect" and submit:
            submit[0](field_run.collect_again)
        elif len(words := line.split()) == 2 and word.split()[0] in ("connect", "disconnect"):
            switch(word.split()[0], words[1])
        elif word:
            _say("commands: status, collect, connect METER, disconnect METER, logout")

    # stdin closed, or a regular file (not pollable): no commands, signals still end it
    with contextlib.suppress(OSError, ValueError):
        loop.add_reader(sys.stdin.fileno(), readable)
    handheld = field_run.order.handheld.encode()
    ended: list[str] = []

    def event(ev: object) -> None:
        text = _describe(order, handheld, ev)
        if isinstance(ev, WorkEnded):
            ended.append(ev.reason)
            return
        if isinstance(ev, SwitchDone):
            audit(f"offline.{ev.operation}", f"meter:{ev.meter_id}",
                  "ok" if ev.ok else f"failed: {ev.detail}")  # fmt: skip
        if text:
            _say(text)

    def ready(addr: Addr, submitter: Callable[[Callable[[float], None]], None]) -> None:
        submit.append(submitter)
        _say(f"{order}: radio on {addr[0]} port {addr[1]}, PAN {args.pan:#06x}, mesh prefix "
             f"{HANDHELD_PREFIX}; waiting for meters")  # fmt: skip

    clock = asyncio.ensure_future(_watch_clock(module, stop, why))
    try:
        await run_offline(field_run, radio=args.radio_at, neighbours=args.neighbours, stop=stop,
                          on_event=event, on_ready=ready,
                          reason=lambda: why[0] if why else "stopped")  # fmt: skip
    finally:
        stop.set()
        await clock
        with contextlib.suppress(OSError, ValueError):
            loop.remove_reader(sys.stdin.fileno())
    return ended[0] if ended else (why[0] if why else "stopped")


def _describe(order: str, handheld: bytes, ev: object) -> str | None:
    """One line for the technician per step that matters."""
    from amistack.handheld.events import HandheldAuthenticated, HandheldRefused
    from amistack.handheld.offline import (
        CollectFailed,
        EventLogSealed,
        ReadingsSealed,
        SwitchDone,
    )
    from amistack.handheld.offline_run import MeterCollected, MeterJoined
    from amistack.pana.events import Authenticated, AuthenticationFailed

    if isinstance(ev, HandheldAuthenticated):
        return f"{order}: the handheld is DODAG root and relay (its own key server accepted it)"
    if isinstance(ev, HandheldRefused):
        return f"{order}: the handheld was refused: {ev.reason}"
    if isinstance(ev, Authenticated) and ev.peer_id not in (None, handheld):
        return f"{order}: {_peer(ev.peer_id)} authenticated"
    if isinstance(ev, AuthenticationFailed):
        who = _peer(ev.peer_id) if ev.peer_id is not None else "a meter"
        return f"{order}: REFUSED {who}: not a meter of this session ({ev.reason})"
    if isinstance(ev, MeterJoined):
        return f"{order}: {ev.meter_id} joined the DODAG ({ev.address})"
    if isinstance(ev, ReadingsSealed):
        return f"{order}: {ev.meter_id}: {ev.stored} new readings sealed"
    if isinstance(ev, EventLogSealed):
        new = "sealed" if ev.new else "already held"
        return f"{order}: {ev.meter_id}: signed event log ({ev.size} bytes) {new}"
    if isinstance(ev, CollectFailed):
        return f"{order}: {ev.meter_id}: {ev.what} failed ({ev.reason}); trying again later"
    if isinstance(ev, SwitchDone):
        done = "confirmed" if ev.ok else f"NOT confirmed ({ev.detail})"
        return f"{order}: {ev.meter_id}: {ev.operation} {done}"
    if isinstance(ev, MeterCollected):
        return f"{order}: {ev.meter_id}: collected"
    return None


def _peer(peer_id: bytes | None) -> str:
    text = "?" if peer_id is None else peer_id.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)[:64]
