"""What every sub-command shares: the data directory, argument parsing with clear errors."""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

from amistack.addr import Addr
from amistack.crypto import system_random
from amistack.keymgmt import CredentialStore, FileKek, KekError, StoreError

DEFAULT_DATA_DIR = Path("./amistack-data")
KEYSERVER_DB = "keyserver.db"
KEK_FILE = "kek.key"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"where the service keeps its database and key files (default {DEFAULT_DATA_DIR})",
    )


def open_store(data_dir: Path, *, create: bool) -> CredentialStore:
    """The key server's credential store in `data_dir`, its KEK in a 0600 file beside it."""
    db = data_dir / KEYSERVER_DB
    if not create and not db.exists():
        raise CliError(f"no key server data in {data_dir} (enroll a device first)")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        kek = (FileKek.open_or_create if create else FileKek.load)(
            data_dir / KEK_FILE, system_random
        )
        return CredentialStore(db, kek)
    except (KekError, StoreError, OSError) as exc:
        raise CliError(str(exc)) from None


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
