"""Offline work orders (claim 6): one technician, some meters, a validity window, sealed twice.

A SECADM at the office issues a `WorkOrder` (`issue`, audited; the principal must hold
`Right.KEYS`). Provisioning (`provision`) copies the PSKs of exactly that order's meters out of the
key server's `CredentialStore` into one file on the handheld, sealed in two layers, both with the
order's canonical header as associated data (so a widened meter list, a later `not_after` or
another technician's name makes the file not open):

1. inner: AES-256-GCM under a key derived with Argon2id (RFC 9106) from the named technician's
   password and a random salt: nobody but that technician opens it, not even with the token;
2. outer: the handheld's key-encryption key (`keymgmt.kek_pkcs11.Pkcs11Kek`, AES-256-GCM inside
   its PKCS#11 token, non-extractable): the file copied off the handheld opens nowhere else.

Inside both seals, beside the PSKs, is a fresh random 256-bit technician seal key: what the
handheld collects under this order is sealed under it as well as under the token's key
(`handheld.offline.SealedReadings`), so the collected data opens only with the token *and* the
technician's unlock, and sync at the office (which keeps the seal key from `provision`, wrapped
under its own KEK) can attribute every record to the order's technician.

`open_work_order` logs the technician in through the handheld's `TechnicianDesk` (lock-out and
audit), refuses another technician, refuses before `not_before`, and after `not_after` destroys
the file and refuses, whether or not the handheld ever comes back to the office.

Files are written 0600 in 0700 directories; no secret is ever logged or put in an argument list.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from amistack.access.rights import Right
from amistack.access.users import AccessError, Principal, check_name
from amistack.crypto import RandomSource
from amistack.handheld.technician import TechnicianDesk, TechnicianSession
from amistack.keymgmt.kek import KekError, KeyEncryptionKey, record_aad
from amistack.keymgmt.store import CredentialStore, StoreError
from amistack.securemodule.base import SecureModule

__all__ = [
    "OPERATIONS",
    "KdfParams",
    "OpenedWorkOrder",
    "WorkOrder",
    "WorkOrderError",
    "check_clock",
    "destroy_file",
    "issue",
    "open_work_order",
    "order_path",
    "parse_order",
    "provision",
    "read_header",
    "read_private",
    "write_private",
]

FORMAT = "amistack-workorder-v1"
# What a work order may allow the technician to do with its meters (handheld operations).
OPERATIONS = frozenset({"read", "events", "connect", "disconnect", "commission"})
SALT_LENGTH = 16  # RFC 9106 §3.1: 128-bit salt
KEY_LENGTH = 32
NONCE_LENGTH = 12
MAX_FILE = 1 << 20  # a work order of a few thousand meters fits easily
MAX_METERS = 4096
MAX_METER_ID = 64
CLOCK_SLACK_S = 300.0  # clock corrections (NTP at the office) within this are not rollbacks
_CLOCK_TAG = b"amistack-handheld-clock-v1"
MAX_KDF_KIB = 256 * 1024  # a file cannot make the handheld spend more memory than this
_ORDER_ID = re.compile(r"(?!\.\.?$)[A-Za-z0-9_.-]{1,64}")  # also its file name
ORDERS_DIR = "orders"  # in the handheld's data dir


class WorkOrderError(Exception):
    """A work order that cannot be issued, provisioned or opened; `reason` is a short code:
    invalid | refused | expired | not_yet_valid | tampered | wrong_technician | unreadable |
    clock."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost (RFC 9106 §4 second recommended option: t=3, 64 MiB, p=4)."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4

    def derive(self, password: str, salt: bytes) -> bytes:
        return hash_secret_raw(
            password.encode("utf-8", "surrogatepass"), salt, self.time_cost, self.memory_kib,
            self.parallelism, KEY_LENGTH, Type.ID,
        )  # fmt: skip


@dataclass(frozen=True)
class WorkOrder:
    """What the SECADM allowed: no secret in here (the header travels in clear)."""

    order_id: str
    handheld: str
    technician: str
    meters: tuple[str, ...]  # device ids as the key server and the head-end name them
    operations: frozenset[str]
    not_before: float
    not_after: float
    issued_by: str
    issued_at: float

    def __post_init__(self) -> None:
        if not _ORDER_ID.fullmatch(self.order_id):
            raise WorkOrderError("invalid", "an order id is 1-64 of [A-Za-z0-9_.-], not . or ..")
        if not self.meters or len(self.meters) > MAX_METERS:
            raise WorkOrderError("invalid", f"a work order names 1..{MAX_METERS} meters")
        if len(set(self.meters)) != len(self.meters):
            raise WorkOrderError("invalid", "a work order names each meter once")
        for meter in self.meters:
            if not 0 < len(meter) <= MAX_METER_ID or not meter.isprintable():
                raise WorkOrderError("invalid", f"meter id {meter!r} is not 1-64 printable chars")
        unknown = self.operations - OPERATIONS
        if unknown or not self.operations:
            raise WorkOrderError(
                "invalid", f"operations must be some of {', '.join(sorted(OPERATIONS))}"
            )
        if not self.not_before < self.not_after:
            raise WorkOrderError("invalid", "the validity window must end after it starts")

    def header(self) -> bytes:
        """Canonical JSON: the associated data both seals bind to."""
        body = {
            "format": FORMAT,
            "order_id": self.order_id,
            "handheld": self.handheld,
            "technician": self.technician,
            "meters": list(self.meters),
            "operations": sorted(self.operations),
            "not_before": self.not_before,
            "not_after": self.not_after,
            "issued_by": self.issued_by,
            "issued_at": self.issued_at,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_header(cls, raw: bytes) -> WorkOrder:
        try:
            body = json.loads(raw)
            if body.pop("format") != FORMAT:
                raise WorkOrderError("unreadable", "not an amistack work order (format)")
            return cls(
                order_id=str(body["order_id"]), handheld=str(body["handheld"]),
                technician=str(body["technician"]),
                meters=tuple(str(m) for m in body["meters"]),
                operations=frozenset(str(o) for o in body["operations"]),
                not_before=float(body["not_before"]), not_after=float(body["not_after"]),
                issued_by=str(body["issued_by"]), issued_at=float(body["issued_at"]),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError):
            raise WorkOrderError("unreadable", "work order header is malformed") from None
        except WorkOrderError as exc:
            raise WorkOrderError("unreadable", f"work order header: {exc.message}") from None

    def valid_at(self, now: float) -> bool:
        return self.not_before <= now < self.not_after


def issue(
    principal: Principal,
    order_id: str,
    handheld: str,
    technician: str,
    meters: Iterable[str],
    operations: Iterable[str],
    not_before: float,
    not_after: float,
    now: float,
) -> WorkOrder:
    """A new work order by `principal`, who must hold the key-management right (SECADM) and have
    every meter in its area of responsibility. The caller writes the audit entry."""
    if not principal.may(Right.KEYS):
        raise WorkOrderError("refused", f"{principal.name} may not issue work orders (SECADM)")
    order = WorkOrder(
        order_id, handheld, technician, tuple(meters), frozenset(operations), not_before,
        not_after, principal.name, now,
    )  # fmt: skip
    outside = [m for m in order.meters if not principal.covers(m)]
    if outside:
        raise WorkOrderError("refused", f"meters outside {principal.name}'s area: {outside}")
    if not_after <= now:
        raise WorkOrderError("invalid", "the work order would already be expired")
    return order


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise WorkOrderError("unreadable", "work order field is not text")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise WorkOrderError("unreadable", "work order field is not base64") from None


def _aad(header: bytes) -> bytes:
    return record_aad("workorder", header)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, 0600, in a 0700 directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_private(path: Path) -> bytes:
    """The file's content; refuses one that group or others could read or write, or a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise WorkOrderError("unreadable", f"{path}: {exc.strerror}") from None
    try:
        if os.fstat(fd).st_mode & 0o077:
            raise WorkOrderError("unreadable", f"{path}: readable by others; refusing it")
        data = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE:
        raise WorkOrderError("unreadable", f"{path}: larger than {MAX_FILE} bytes")
    return data


def destroy_file(path: Path) -> None:
    """Overwrite with zeros, then unlink (flash may keep old pages: the seal is what protects)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b", buffering=0) as f:
            f.write(bytes(size))
            os.fsync(f.fileno())
        path.unlink()
    except FileNotFoundError:
        pass


def provision(
    order: WorkOrder,
    store: CredentialStore,
    handheld_kek: KeyEncryptionKey,
    password: str,
    path: Path,
    rng: RandomSource,
    kdf: KdfParams | None = None,
) -> bytes:
    """Seal the PSKs of the order's meters (from the key server's store) into `path`, with a
    fresh technician seal key (returned: the office keeps it, wrapped, to check at sync that
    what the handheld collected was sealed by this technician's unlocked order).

    `password` is the named technician's, typed by them at the office (verify it with the
    handheld's desk first). A meter unknown, revoked or not on EAP-PSK refuses the whole order."""
    kdf = kdf or KdfParams()
    psks: dict[str, str] = {}
    for meter in order.meters:
        try:
            psk = store.psk(meter)
        except StoreError as exc:
            raise WorkOrderError("refused", f"meter {meter}: {exc}") from None
        if psk is None:
            raise WorkOrderError("refused", f"meter {meter} is revoked")
        psks[meter] = psk.hex()
    seal_key = rng(KEY_LENGTH)
    header = order.header()
    salt, nonce = rng(SALT_LENGTH), rng(NONCE_LENGTH)
    inner = nonce + AESGCM(kdf.derive(password, salt)).encrypt(
        nonce, json.dumps({"psks": psks, "seal_key": seal_key.hex()}).encode(), header
    )
    sealed = handheld_kek.wrap(inner, _aad(header))
    body = {
        "header": _b64(header),
        "kdf": {"alg": "argon2id", "salt": _b64(salt), "t": kdf.time_cost,
                "m": kdf.memory_kib, "p": kdf.parallelism},
        "kek": handheld_kek.label,
        "sealed": _b64(sealed),
    }  # fmt: skip
    write_private(path, json.dumps(body).encode())
    return seal_key


def order_path(handheld_dir: Path, order_id: str) -> Path:
    """Where the handheld keeps work order `order_id`."""
    return handheld_dir / ORDERS_DIR / f"{order_id}.order"


def read_header(path: Path) -> WorkOrder:
    """The order a file claims to be (unauthenticated until opened)."""
    return parse_order(read_private(path))


def parse_order(raw: bytes) -> WorkOrder:
    """The order a work order file's bytes claim to be; WorkOrderError if they are not one."""
    return _parse(raw)[0]


def _parse(raw: bytes) -> tuple[WorkOrder, bytes, KdfParams, bytes, bytes]:
    try:
        body = json.loads(raw)
        header = _unb64(body["header"])
        kdf_body = body["kdf"]
        if kdf_body["alg"] != "argon2id":
            raise WorkOrderError("unreadable", "unknown key derivation")
        kdf = KdfParams(int(kdf_body["t"]), int(kdf_body["m"]), int(kdf_body["p"]))
        salt, sealed = _unb64(kdf_body["salt"]), _unb64(body["sealed"])
    except (ValueError, KeyError, TypeError):
        raise WorkOrderError("unreadable", "work order file is malformed") from None
    if not (1 <= kdf.time_cost <= 16 and 8 <= kdf.memory_kib <= MAX_KDF_KIB
            and 1 <= kdf.parallelism <= 16):  # fmt: skip
        raise WorkOrderError("unreadable", "work order key-derivation cost out of range")
    return WorkOrder.from_header(header), header, kdf, salt, sealed


def check_clock(module: SecureModule, now: float, slack: float = CLOCK_SLACK_S) -> None:
    """Refuse a clock more than `slack` s behind the latest time the handheld has seen, which is
    kept inside its secure module (`write_anchor`: out of reach of whoever rewrites its files),
    then raise that mark to `now`. Setting the clock back therefore does not revive an order
    past the latest time the handheld already lived through. The module's anchor must be the
    handheld's own (not shared with an event log)."""
    raw = module.read_anchor()
    seen = -math.inf
    if raw is not None:
        if len(raw) != len(_CLOCK_TAG) + 8 or not raw.startswith(_CLOCK_TAG):
            raise WorkOrderError("clock", "the secure module's anchor is not the handheld's clock")
        seen = struct.unpack("!d", raw[len(_CLOCK_TAG) :])[0]
    if now < seen - slack:
        raise WorkOrderError(
            "clock", f"the clock is {seen - now:.0f} s behind the latest time this handheld saw"
        )
    if now > seen:
        module.write_anchor(_CLOCK_TAG + struct.pack("!d", now))


@dataclass(frozen=True)
class OpenedWorkOrder:
    order: WorkOrder
    session: TechnicianSession
    psks: Mapping[str, bytes]  # device id -> PSK, only the order's meters
    seal_key: bytes  # the technician seal key: what is collected is sealed under it too

    def __repr__(self) -> str:  # never the PSKs or the seal key
        return f"OpenedWorkOrder({self.order.order_id}, {self.session.principal.name})"


def open_work_order(
    path: Path,
    handheld_kek: KeyEncryptionKey,
    desk: TechnicianDesk,
    name: str,
    password: str,
    now: float,
    clock: SecureModule | None = None,
) -> OpenedWorkOrder:
    """Log `name` in on the handheld and open the order's credentials for them; see the module
    docstring for what is refused. Every refusal is in the handheld's audit trail. With `clock`
    (the handheld's secure module), a clock set back is refused first (`check_clock`)."""
    if clock is not None:
        check_clock(clock, now)
    order, header, kdf, salt, sealed = _parse(read_private(path))
    target = f"workorder:{order.order_id}"
    via = desk.via
    if now >= order.not_after:
        destroy_file(path)
        try:
            who = check_name(name)
        except AccessError:  # not a well-formed name: not written to the trail
            who = "?"
        desk.audit.record(now, who, "workorder_open", via=via, target=target,
                          outcome="expired", detail="credentials destroyed")  # fmt: skip
        raise WorkOrderError(
            "expired", f"work order {order.order_id} expired; its credentials are destroyed"
        )
    session = desk.login(name, password, now)  # LoginRefused is audited by the desk

    def refuse(reason: str, message: str) -> WorkOrderError:
        desk.record(session, "workorder_open", target, reason, now)
        return WorkOrderError(reason, message)

    if order.technician != session.principal.name:
        raise refuse("wrong_technician", f"work order {order.order_id} is not for {name}")
    if now < order.not_before:
        raise refuse("not_yet_valid", f"work order {order.order_id} is not valid yet")
    try:
        inner = handheld_kek.unwrap(sealed, _aad(header))
        psk_json = AESGCM(kdf.derive(password, salt)).decrypt(
            inner[:NONCE_LENGTH], inner[NONCE_LENGTH:], header
        )
        inner_body = json.loads(psk_json)
        psks = {str(m): bytes.fromhex(p) for m, p in inner_body["psks"].items()}
        seal_key = bytes.fromhex(inner_body["seal_key"])
    except (KekError, InvalidTag, ValueError, AttributeError, KeyError, TypeError):
        raise refuse(
            "tampered", f"work order {order.order_id} does not open: altered, or not sealed "
            "for this handheld and technician",
        ) from None  # fmt: skip
    if set(psks) != set(order.meters) or len(seal_key) != KEY_LENGTH:
        raise refuse("tampered", f"work order {order.order_id}: credentials do not match")
    desk.record(session, "workorder_open", target, "ok", now)
    return OpenedWorkOrder(order, session, psks, seal_key)
