"""`amistack log`: a meter's tamper-evident event log — append, export, show, verify, pubkey.

Where things live (docs/event-log.md): DIR/meters/<ID>/events.log is the meter's log store and
DIR/meters/<ID>/module.pem its software secure-module key (0600), unless --module names another
module (e.g. a PKCS#11 token).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amistack.cli.common import CliError, add_data_dir
from amistack.eventlog import (
    EventLog,
    EventType,
    LogFormatError,
    LogStoreError,
    TrustedHead,
    layout,
    verify_file,
)
from amistack.eventlog.record import (
    MAX_DATA,
    EventRecord,
    Mode,
    SignedHead,
    iso_ms,
    parse_header,
    parse_line,
)
from amistack.securemodule import SecureModule, SecureModuleError, open_module

EXIT_REFUSED = 1  # `log verify`: the log does not hold


def _at(where: Callable[[Path, str], Path], data_dir: Path, meter_id: str) -> Path:
    try:
        return where(data_dir, meter_id)
    except layout.LayoutError as exc:
        raise CliError(str(exc)) from None


def meter_dir(data_dir: Path, meter_id: str) -> Path:
    return _at(layout.meter_dir, data_dir, meter_id)


def log_path(data_dir: Path, meter_id: str) -> Path:
    return _at(layout.log_path, data_dir, meter_id)


def module_path(data_dir: Path, meter_id: str) -> Path:
    return _at(layout.module_path, data_dir, meter_id)


def _open_module(args: argparse.Namespace, *, create: bool) -> SecureModule | None:
    spec = args.module or f"software:{module_path(args.data_dir, args.meter)}"
    if not args.module and not create and not module_path(args.data_dir, args.meter).exists():
        return None
    try:
        if create:
            meter_dir(args.data_dir, args.meter).mkdir(parents=True, exist_ok=True, mode=0o700)
        return open_module(spec, create=create, label=f"{args.meter}/eventlog")
    except (SecureModuleError, OSError) as exc:
        raise CliError(str(exc)) from None


def _add_meter(p: argparse.ArgumentParser) -> None:
    p.add_argument("--meter", required=True, metavar="ID", help="the meter id")
    add_data_dir(p)
    p.add_argument(
        "--module",
        metavar="SPEC",
        help="secure module holding the meter's key: software:PATH or "
        "pkcs11:LIB?token=T&label=L (PIN from AMISTACK_PKCS11_PIN); "
        "default software:DIR/meters/ID/module.pem",
    )


def _parse_type(text: str) -> int:
    try:
        return int(EventType[text.upper()])
    except KeyError:
        pass
    try:
        v = int(text, 0)
    except ValueError:
        names = ", ".join(e.name for e in EventType)
        raise argparse.ArgumentTypeError(f"unknown event type {text!r} ({names})") from None
    if not 0 <= v <= 0xFFFF:
        raise argparse.ArgumentTypeError("event type must be 0-65535")
    return v


def _parse_hex(text: str) -> bytes:
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("data must be hex digits") from None
    if len(data) > MAX_DATA:
        raise argparse.ArgumentTypeError(f"data longer than {MAX_DATA} bytes")
    return data


def register(sub: Any) -> None:
    lg = sub.add_parser(
        "log",
        help="a meter's tamper-evident event log: export, show, verify",
        description="A meter's event log: entries hashed into an RFC 9162 Merkle tree, tree heads "
        "signed by the meter's secure module. Files: DIR/meters/ID/events.log (the store) and "
        "DIR/meters/ID/module.pem (software module key, 0600). Format: docs/event-log.md.",
    )
    lsub = lg.add_subparsers(dest="log_command", metavar="ACTION", required=True)

    p = lsub.add_parser(
        "append",
        help="append an event to a meter's log (creates log and key if missing)",
        description="Append one event at the current time; a head is signed when the event "
        "type is a signing event or a checkpoint interval has passed.",
    )
    _add_meter(p)
    p.add_argument("type", type=_parse_type, metavar="TYPE", help="event type name or number")
    p.add_argument("--data", type=_parse_hex, default=b"", metavar="HEX", help="event data")
    p.add_argument("--sign", action="store_true", help="sign a head after it regardless")
    p.add_argument(
        "--patent",
        action="store_true",
        help="create the log in patent mode (whole-range signatures); only for a new log",
    )
    p.set_defaults(handler=_append)

    p = lsub.add_parser(
        "export",
        help="write a meter's log and signed heads as one line-oriented file",
        description="Export the log. If entries were appended after the last signed head and "
        "the meter's module is available, a fresh head is signed first so the file is covered.",
    )
    _add_meter(p)
    p.add_argument("--out", required=True, type=Path, metavar="FILE")
    p.set_defaults(handler=_export)

    p = lsub.add_parser("show", help="print an exported log readably")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=_show)

    p = lsub.add_parser(
        "verify",
        help="verify an exported log (exit 0 when it holds, 1 with the reason otherwise)",
        description="Verify every signed head against the entries and the meter's public key. "
        "With --trusted-head (a head accepted earlier, as written by --save-head), the log must "
        "also be an extension of it: a rollback or a fork is refused.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--pubkey", required=True, type=Path, metavar="PEM")
    p.add_argument("--trusted-head", type=Path, metavar="HEAD")
    p.add_argument("--save-head", type=Path, metavar="HEAD", help="write the newest head here")
    p.add_argument("--meter", metavar="ID", help="refuse a log of any other meter")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_verify)

    p = lsub.add_parser("pubkey", help="print the meter's event-log public key (PEM)")
    _add_meter(p)
    p.set_defaults(handler=_pubkey)


def _open_log(args: argparse.Namespace, module: SecureModule | None, *, create: bool) -> EventLog:
    from amistack.eventlog import LogConfig

    path = log_path(args.data_dir, args.meter)
    mode = Mode.PATENT if getattr(args, "patent", False) else Mode.MERKLE
    if path.exists():
        try:
            with open(path, "rb") as f:
                head = f.read(9)
            mode = Mode.PATENT if head[8:9] == b"\x01" else Mode.MERKLE
        except OSError as exc:
            raise CliError(f"{path}: {exc.strerror}") from None
    elif not create:
        raise CliError(f"no event log for meter {args.meter} in {args.data_dir}")
    try:
        return EventLog.open(path, args.meter, module, time.time(), LogConfig(mode=mode))
    except LogStoreError as exc:
        raise CliError(str(exc)) from None


def _append(args: argparse.Namespace) -> int:
    module = _open_module(args, create=True)
    assert module is not None
    try:
        with _open_log(args, module, create=True) as lg:
            res = lg.append(args.type, args.data, time.time())
            head = res.head
            if args.sign and head is None:
                head = lg.checkpoint(time.time())
    except (LogStoreError, SecureModuleError) as exc:
        raise CliError(str(exc)) from None
    finally:
        module.close()
    print(res.record.to_line())
    if head is not None:
        print(head.to_line())
    return 0


def _export(args: argparse.Namespace) -> int:
    module = _open_module(args, create=False)
    try:
        with _open_log(args, module, create=False) as lg:
            if lg.unsigned_entries and module is not None:
                lg.checkpoint(time.time())
            lg.export(args.out)
            size, heads, unsigned = lg.size, len(lg.heads), lg.unsigned_entries
    except (LogStoreError, SecureModuleError, OSError) as exc:
        raise CliError(str(exc)) from None
    finally:
        if module is not None:
            module.close()
    note = f", {unsigned} unsigned (no module to sign)" if unsigned else ""
    print(f"{args.out}: meter {args.meter}, {size} entries, {heads} signed heads{note}")
    return 0


def _show(args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="ascii", newline="\n") as f:
            header = parse_header(f.readline())
            print(f"# meter {header.meter_id}, {header.mode.value} mode, format {header.version}")
            for lineno, raw in enumerate(f, start=2):
                line = raw.rstrip("\n")
                if not line.strip() or line.startswith("#"):
                    continue
                item = parse_line(line, lineno)
                if args.json:
                    print(json.dumps(_item_json(item)))
                elif isinstance(item, EventRecord):
                    data = item.data.hex() if item.data else ""
                    print(f"{item.seq:>8}  {iso_ms(item.time_ms)}  {item.type_name():<18} {data}")
                else:
                    print(
                        f"{'':>8}  {iso_ms(item.time_ms)}  -- signed head: size {item.size}, "
                        f"root {item.root.hex()[:16]}..., key {item.key_id.hex()[:16]}..."
                    )
    except LogFormatError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"{args.file}: not an ASCII event-log file") from None
    except OSError as exc:
        raise CliError(f"{args.file}: {exc.strerror}") from None
    return 0


def _item_json(item: EventRecord | SignedHead) -> dict[str, Any]:
    if isinstance(item, EventRecord):
        return {
            "seq": item.seq,
            "time": iso_ms(item.time_ms),
            "type": item.type_name(),
            "data": item.data.hex(),
        }
    return {
        "head": item.kind.value,
        "size": item.size,
        "root": item.root.hex(),
        "time": iso_ms(item.time_ms),
        "key_id": item.key_id.hex(),
        "signature": item.signature.hex(),
    }


def _verify(args: argparse.Namespace) -> int:
    try:
        pem = args.pubkey.read_bytes()
        trusted = None
        if args.trusted_head is not None:
            trusted = TrustedHead.from_text(args.trusted_head.read_text(encoding="ascii"))
    except OSError as exc:
        raise CliError(f"{exc.filename}: {exc.strerror}") from None
    except (LogFormatError, UnicodeDecodeError) as exc:
        raise CliError(f"{args.trusted_head}: not a trusted head file ({exc})") from None
    try:
        verdict = verify_file(args.file, pem, trusted=trusted, meter_id=args.meter)
    except ValueError as exc:  # the public key is not P-256 SPKI PEM
        raise CliError(f"{args.pubkey}: {exc}") from None
    except OSError as exc:
        raise CliError(f"{args.file}: {exc.strerror}") from None
    if args.json:
        doc = {
            "ok": verdict.ok,
            "reason": verdict.reason.value,
            "detail": verdict.detail,
            "line": verdict.line,
            "meter": verdict.meter_id,
            "entries": verdict.entries,
            "heads": verdict.heads,
            "unsigned_tail": verdict.unsigned_tail,
        }
        json.dump(doc, sys.stdout)
        print()
    else:
        print(verdict)
    if not verdict.ok:
        return EXIT_REFUSED
    if args.save_head is not None and verdict.last_head is not None:
        assert verdict.meter_id is not None
        mode = Mode.MERKLE if verdict.last_head.kind.value == "H" else Mode.PATENT
        text = TrustedHead(verdict.meter_id, mode, verdict.last_head).to_text()
        try:
            args.save_head.write_text(text, encoding="ascii")
        except OSError as exc:
            raise CliError(f"{args.save_head}: {exc.strerror}") from None
    return 0


def _pubkey(args: argparse.Namespace) -> int:
    module = _open_module(args, create=False)
    if module is None:
        raise CliError(f"no secure-module key for meter {args.meter} in {args.data_dir}")
    try:
        sys.stdout.write(module.public_key_pem().decode("ascii"))
    finally:
        module.close()
    return 0
