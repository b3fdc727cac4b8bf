"""What every sub-command shares: the data directory, argument parsing with clear errors."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys
from pathlib import Path

from amistack.addr import Addr
from amistack.broute import BrouteCredentials, CredentialError
from amistack.crypto import system_random
from amistack.crypto.secretfile import SecretFileError, read_secret_file
from amistack.keymgmt import CredentialStore, FileKek, KekError, KeyEncryptionKey, StoreError

DEFAULT_DATA_DIR = Path("./amistack-data")
KEYSERVER_DB = "keyserver.db"
KEK_FILE = "kek.key"
PIN_ENV = "AMISTACK_PKCS11_PIN"


def stop_on_signals() -> asyncio.Event:
    """An event that SIGINT and SIGTERM set: a long-running command's clean stop (inside the
    running event loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def add_data_dir(parser: argparse.ArgumentParser, *, kek: bool = True) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"where the service keeps its database and key files (default {DEFAULT_DATA_DIR})",
    )
    if kek:
        parser.add_argument(
            "--kek",
            default="file",
            metavar="SPEC",
            help="the key-encryption key wrapping stored secrets: 'file' (DIR/kek.key, 0600; the "
            "default) or 'pkcs11:LIB?token=T&label=L' (an AES key generated inside the token; "
            f"PIN from ${PIN_ENV} or '&pin=')",
        )


def open_kek(data_dir: Path, spec: str, *, create: bool) -> KeyEncryptionKey:
    """The KEK named by `spec` ('file' or 'pkcs11:LIB?token=T&label=L[&pin=P]')."""
    if spec == "file":
        return (FileKek.open_or_create if create else FileKek.load)(
            data_dir / KEK_FILE, system_random
        )
    if not spec.startswith("pkcs11:"):
        raise CliError(f"--kek {spec!r}: expected 'file' or 'pkcs11:LIB?token=T&label=L'")
    from amistack.keymgmt.kek_pkcs11 import Pkcs11Kek
    from amistack.securemodule import SecureModuleError
    from amistack.securemodule.spec import parse_pkcs11_spec, resolve_pin

    try:
        library, params = parse_pkcs11_spec(spec.removeprefix("pkcs11:"), spec)
        pin = resolve_pin(params.get("pin"), None, PIN_ENV, os.environ)
        return Pkcs11Kek.open(
            library, params["token"], pin, params["label"], system_random, create=create
        )
    except SecureModuleError as exc:
        raise CliError(str(exc)) from None


def add_store_db(parser: argparse.ArgumentParser, instead_of: str = f"DIR/{KEYSERVER_DB}") -> None:
    """--db / --db-password-file: the service's data in PostgreSQL (shared by several
    processes) instead of `instead_of`; the key files stay in DIR (or the token)."""
    parser.add_argument(
        "--db",
        metavar="URL",
        help=f"postgresql://USER@HOST/DB instead of {instead_of} (no password in the URL: "
        "--db-password-file, PGPASSWORD or ~/.pgpass)",
    )
    parser.add_argument(
        "--db-password-file",
        type=Path,
        metavar="FILE",
        help="the database password, in a file only its owner can read",
    )


def db_password(args: argparse.Namespace) -> str | None:
    """The password of --db from --db-password-file (None: libpq's PGPASSWORD / ~/.pgpass)."""
    from amistack.pgconn import DsnError, check_dsn, read_password_file

    path = getattr(args, "db_password_file", None)
    db = getattr(args, "db", None)
    if path is not None and db is None:
        raise CliError("--db-password-file goes with --db")
    try:
        if db is not None:
            check_dsn(db)
        return None if path is None else read_password_file(path)
    except DsnError as exc:
        raise CliError(f"--db: {exc}") from None


def open_store(
    data_dir: Path,
    *,
    create: bool,
    kek: str = "file",
    db: str | None = None,
    password: str | None = None,
    instance: str = "",
) -> CredentialStore:
    """The key server's credential store: DIR/keyserver.db, or PostgreSQL at `db`; secrets
    wrapped under the `kek` spec (a key file in DIR, or a token) either way."""
    path = data_dir / KEYSERVER_DB
    if db is None and not create and not path.exists():
        raise CliError(f"no key server data in {data_dir} (enroll a device first)")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        key = open_kek(data_dir, kek, create=create)
        from amistack.keymgmt.store_pg import open_credential_store

        return open_credential_store(db or str(path), key, instance=instance, password=password)
    except (KekError, StoreError, OSError) as exc:
        raise CliError(str(exc)) from None


def store_location(args: argparse.Namespace) -> str:
    """Where `open_store_args` keeps the credentials, as messages show it (no secret)."""
    from amistack.pgconn import describe

    return describe(args.db) if getattr(args, "db", None) else str(args.data_dir)


def open_store_args(args: argparse.Namespace, *, create: bool) -> CredentialStore:
    """`open_store` as the options of `add_data_dir` and `add_store_db` give it."""
    return open_store(
        args.data_dir,
        create=create,
        kek=args.kek,
        db=args.db,
        password=db_password(args),
        instance=getattr(args, "instance", None) or "",
    )


def parse_hostport(text: str, default_port: int | None = None) -> Addr:
    """HOST:PORT, [V6]:PORT, or a bare host when `default_port` is given."""
    host, sep, port = text.rpartition(":")
    if text.startswith("[") and "]" in text:
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        sep = ":" if port else ""
    elif not sep or ":" in host:  # bare host, or a bare IPv6 address
        host, port, sep = text, "", ""
    if not sep:
        if default_port is None:
            raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
        port = str(default_port)
    try:
        port_n = int(port)
        if not 0 <= port_n <= 65535:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be 0-65535") from None
    if host in ("localhost", ""):
        host = "127.0.0.1" if host == "localhost" else "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {host!r} is not an IPv4 or IPv6 address"
        ) from None
    return host, port_n


def parse_psk(text: str) -> bytes:
    """A 16-byte EAP-PSK key as 32 hex digits (RFC 4764 §2.1)."""
    try:
        psk = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("PSK must be hex digits") from None
    if len(psk) != 16:
        raise argparse.ArgumentTypeError(f"PSK must be 16 bytes (32 hex digits), got {len(psk)}")
    return psk


PSK_ENV = "AMISTACK_PSK"
MAX_PSK_FILE = 1024


def add_psk_options(
    parser: argparse.ArgumentParser, omitted: str, *, env: bool, argv: bool = True
) -> None:
    """--psk-file FILE (or '-' for standard input) and --psk HEX; with `env`, $AMISTACK_PSK
    too. `omitted` says what happens when no PSK is given. Without `argv`, --psk is refused
    (with a one-line reason) instead of warned about: `resolve_psk(..., argv=False)`."""
    source = f"--psk-file or ${PSK_ENV}" if env else "--psk-file"
    parser.add_argument(
        "--psk-file",
        type=Path,
        metavar="FILE",
        help="the device's PSK (32 hex digits) from FILE, which only its owner may read "
        f"(chmod 600), or from standard input with '-'{f'; or set ${PSK_ENV}' if env else ''}; "
        f"{omitted}",
    )
    parser.add_argument(
        "--psk",
        metavar="HEX",
        help=(
            "the PSK on the command line (warns: every local user can read it in the process "
            f"list); prefer {source}"
        )
        if argv
        else f"refused: a PSK on the command line shows in ps; use {source}",
    )


def resolve_psk(args: argparse.Namespace, *, env: bool, argv: bool = True) -> bytes | None:
    """The PSK given by `add_psk_options`, or None. --psk warns on stderr (it is visible in
    /proc/PID/cmdline to every local user), or without `argv` is refused; a bad value is a
    one-line CliError."""
    if args.psk is not None and not argv:
        raise CliError(
            "--psk: a PSK on the command line is visible to every local user (ps, "
            "/proc/PID/cmdline); give it with --psk-file FILE or --psk-file - (standard input)"
        )
    if args.psk is not None and args.psk_file is not None:
        raise CliError("give the PSK once: --psk-file or --psk, not both")
    if args.psk is not None:
        print(
            "amistack: warning: --psk puts the key in the process list (ps, /proc/PID/cmdline);"
            f" use --psk-file{f' or ${PSK_ENV}' if env else ''}",
            file=sys.stderr,
            flush=True,
        )
        return _psk(args.psk, "--psk")
    if args.psk_file is not None:
        return _psk(_read_psk_file(args.psk_file), f"--psk-file {args.psk_file}")
    if env and os.environ.get(PSK_ENV):
        return _psk(os.environ[PSK_ENV], f"${PSK_ENV}")
    return None


def _psk(text: str, source: str) -> bytes:
    try:
        return parse_psk(text.strip())
    except argparse.ArgumentTypeError as exc:
        raise CliError(f"{source}: {exc}") from None


def _read_psk_file(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.readline(MAX_PSK_FILE)
    try:
        raw = read_secret_file(path, MAX_PSK_FILE, "PSK")
    except SecretFileError as exc:
        raise CliError(str(exc)) from None
    if len(raw) > MAX_PSK_FILE:
        raise CliError(f"{path}: too long to be a PSK file")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise CliError(f"{path}: a PSK file holds 32 hex digits") from None


BROUTE_PORT = 716  # the B-route link frames carry PANA (RFC 5191 §1: UDP 716) and the rest
BROUTE_PASSWORD_ENV = "AMISTACK_BROUTE_PASSWORD"


def add_broute_options(parser: argparse.ArgumentParser, description: str, where: str) -> None:
    """The B-route options of `amistack meter` and `amistack hems`: --broute (`where` says
    what the address is), --broute-id, --broute-password."""
    group = parser.add_argument_group("the B route", description)
    group.add_argument(
        "--broute",
        type=lambda t: parse_hostport(t, BROUTE_PORT),
        metavar="HOST:PORT",
        help=f"{where}; [v6]:port for IPv6 (default port {BROUTE_PORT})",
    )
    group.add_argument("--broute-id", metavar="RBID", help="the B-route ID (32 characters)")
    group.add_argument(
        "--broute-password",
        metavar="PWD",
        help=f"the B-route password (12 characters); default: the {BROUTE_PASSWORD_ENV} "
        "environment variable, which keeps it out of the process list",
    )


def broute_credentials(args: argparse.Namespace) -> BrouteCredentials:
    """The B-route ID and password of `add_broute_options`, checked (one-line CliError)."""
    password = args.broute_password or os.environ.get(BROUTE_PASSWORD_ENV)
    if not args.broute_id or not password:
        raise CliError(
            f"--broute needs --broute-id and --broute-password (or {BROUTE_PASSWORD_ENV})"
        )
    try:
        return BrouteCredentials(args.broute_id, password)
    except CredentialError as exc:
        raise CliError(f"B route: {exc}") from None


def pan_id_arg(text: str) -> int:
    """An 802.15.4 PAN id option (`0xface`, `64206`); 0xFFFF is the broadcast PAN id
    (802.15.4-2006 §7.2.1.3), never a network's own."""
    try:
        pan = int(text, 0)
    except ValueError:
        pan = -1
    if not 0 <= pan <= 0xFFFE:
        raise argparse.ArgumentTypeError(f"PAN id {text!r}: need 0..0xfffe (e.g. 0xface)")
    return pan
