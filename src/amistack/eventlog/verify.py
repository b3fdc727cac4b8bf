"""The MDMS side: verify an exported event log, single-event inclusion proofs, head updates.

Every failure has its own `Reason`, decided in one streaming pass over the export file (1M
entries in a few seconds): entries are re-hashed into an RFC 9162 frontier and every signed head
in the file must match the tree at its size and carry a valid signature by the meter's key. A
verifier that remembers the last head it accepted (`TrustedHead`, `HeadStore`) refuses any log
that is not an extension of it (rollback, fork).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from amistack.eventlog.merkle import (
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    MerkleTree,
    verify_consistency,
    verify_inclusion,
)
from amistack.eventlog.record import (
    MAX_DATA,
    EventRecord,
    HeadKind,
    LogFormatError,
    LogHeader,
    Mode,
    SignedHead,
    key_id,
    parse_header,
    parse_iso_ms,
    parse_line,
    range_hasher,
)
from amistack.securemodule.base import SecureModuleError, load_p256_public_key


class Reason(Enum):
    """Why a log was refused (or OK). Each tampering the issue names has its own member."""

    OK = "ok"
    MALFORMED = "malformed"  # the file does not parse as the documented format
    WRONG_METER = "wrong-meter"  # the file is another meter's log
    WRONG_KEY = "wrong-key"  # a head is signed by a key other than the meter's
    BAD_SIGNATURE = "bad-signature"  # a head's signature does not verify (head forged/altered)
    EDITED_ENTRY = "edited-entry"  # the entries do not hash to the signed root
    DELETED_ENTRY = "deleted-entry"  # a sequence number is missing
    REORDERED_ENTRIES = "reordered-entries"  # entries (or heads) are out of order
    TRUNCATED = "truncated"  # entries that a signed head covers are missing at the end
    ROLLBACK = "rollback"  # an earlier signed state than the head already accepted
    NOT_EXTENSION = "not-an-extension"  # validly signed but diverges from the accepted head
    NO_SIGNED_HEAD = "no-signed-head"  # nothing in the log is signed
    WRONG_MODE = "wrong-mode"  # patent vs Merkle mismatch with the trusted head


@dataclass(frozen=True)
class Verdict:
    reason: Reason
    detail: str = ""
    line: int = 0  # 1-based line of the file where it was decided (0: whole file)
    meter_id: str | None = None
    entries: int = 0
    heads: int = 0
    last_head: SignedHead | None = None  # the newest verified head
    unsigned_tail: int = 0  # entries after the last signed head (not covered by a signature)

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK

    def __str__(self) -> str:
        if self.ok:
            assert self.last_head is not None
            return (
                f"OK meter {self.meter_id}: {self.entries} entries, {self.heads} signed heads, "
                f"last signed size {self.last_head.size}, {self.unsigned_tail} unsigned at the end"
            )
        where = f" (line {self.line})" if self.line else ""
        return f"FAIL {self.reason.value}{where}: {self.detail}"


@dataclass(frozen=True)
class TrustedHead:
    """The last head the MDMS accepted for a meter."""

    meter_id: str
    mode: Mode
    head: SignedHead

    def to_text(self) -> str:
        return LogHeader(self.meter_id, self.mode).to_line() + "\n" + self.head.to_line() + "\n"

    @classmethod
    def from_text(cls, text: str) -> TrustedHead:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) != 2:
            raise LogFormatError(0, "a trusted head is two lines: the log header and an H/P line")
        header = parse_header(lines[0])
        item = parse_line(lines[1].strip(), 2)
        if not isinstance(item, SignedHead):
            raise LogFormatError(2, "expected a signed head line")
        return cls(header.meter_id, header.mode, item)


class _Key:
    """The meter's public key, parsed once (ECDSA P-256 over a SHA-256 digest, raw r||s)."""

    def __init__(self, public_key_pem: bytes) -> None:
        self._key = load_p256_public_key(public_key_pem)
        der = self._key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = key_id(der)

    def verify(self, digest: bytes, sig: bytes) -> bool:
        if len(sig) != 64:
            return False
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        if r == 0 or s == 0:
            return False
        try:
            self._key.verify(
                encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256()))
            )
        except InvalidSignature:
            return False
        return True


def _check_head(key: _Key, meter_id: str, head: SignedHead) -> Reason:
    if head.key_id != key.key_id:
        return Reason.WRONG_KEY
    if not key.verify(head.digest(meter_id), head.signature):
        return Reason.BAD_SIGNATURE
    return Reason.OK


_REC = struct.Struct(">QQHI")


def _classify_gap(expected: int, got: int, rest: Iterator[str]) -> Reason:
    """seq jumped from `expected` to `got`: reordering if a skipped seq turns up later."""
    for line in rest:
        if line.startswith("E "):
            parts = line.split(" ", 2)
            if parts[1].isdigit() and expected <= int(parts[1]) < got:
                return Reason.REORDERED_ENTRIES
    return Reason.DELETED_ENTRY


def verify_lines(
    lines: Iterable[str],
    public_key_pem: bytes,
    *,
    trusted: TrustedHead | None = None,
    meter_id: str | None = None,
) -> Verdict:
    """Verify an export file given as lines. `meter_id`: the meter the caller expects."""
    try:
        key = _Key(public_key_pem)
    except SecureModuleError as exc:
        raise ValueError(str(exc)) from None
    it = iter(lines)
    first = next(it, None)
    if first is None:
        return Verdict(Reason.MALFORMED, "empty file", 1)
    try:
        header = parse_header(first)
    except LogFormatError as exc:
        return Verdict(Reason.MALFORMED, exc.reason, 1)
    mid = header.meter_id
    if meter_id is not None and mid != meter_id:
        return Verdict(Reason.WRONG_METER, f"log of {mid}, expected {meter_id}", 1, mid)
    if trusted is not None:
        if trusted.meter_id != mid:
            return Verdict(Reason.WRONG_METER, f"trusted head is {trusted.meter_id}'s", 1, mid)
        if trusted.mode is not header.mode:
            return Verdict(Reason.WRONG_MODE, f"trusted head is {trusted.mode.value} mode", 1, mid)

    merkle = header.mode is Mode.MERKLE
    frontier: list[bytes] = []
    rng = range_hasher()
    sha = hashlib.sha256
    pack = _REC.pack
    names = _type_map()
    sec_cache: dict[str, int] = {}
    n = 0
    heads = 0
    last: SignedHead | None = None
    trusted_at = trusted.head.size if trusted is not None else -1
    root_at_trusted: bytes | None = None
    if trusted_at == 0:
        root_at_trusted = EMPTY_ROOT if merkle else range_hasher().digest()
    lineno = 1

    def fail(reason: Reason, detail: str) -> Verdict:
        return Verdict(reason, detail, lineno, mid, n, heads, last)

    def current_root() -> bytes:
        if not merkle:
            return rng.copy().digest()
        if not frontier:
            return EMPTY_ROOT
        r = frontier[-1]
        for h in reversed(frontier[:-1]):
            r = sha(NODE_PREFIX + h + r).digest()
        return r

    for raw in it:
        lineno += 1
        line = raw[:-1] if raw.endswith("\n") else raw
        if line.startswith("E "):
            # Fast path for the common case; anything odd goes through the strict parser.
            parts = line.split(" ")
            try:
                if len(parts) != 5:
                    raise ValueError
                seq = int(parts[1])
                ts = parts[2]
                sec = sec_cache.get(ts[:19])
                if sec is None or len(ts) != 24 or ts[19] != "." or ts[23] != "Z":
                    t = parse_iso_ms(ts)
                    if len(sec_cache) > 4096:
                        sec_cache.clear()
                    sec_cache[ts[:19]] = t // 1000
                else:
                    t = sec * 1000 + int(ts[20:23])
                typ = names[parts[3]]
                data = b"" if parts[4] == "-" else bytes.fromhex(parts[4])
                if len(data) > MAX_DATA or not parts[1].isdigit():
                    raise ValueError
                enc = pack(seq, t, typ, len(data)) + data
            except (ValueError, KeyError, OverflowError, struct.error):
                try:
                    item = parse_line(line, lineno)
                except LogFormatError as exc:
                    return fail(Reason.MALFORMED, exc.reason)
                assert isinstance(item, EventRecord)
                seq = item.seq
                enc = item.encode()
            if seq != n:
                if seq < n:
                    return fail(Reason.REORDERED_ENTRIES, f"entry {seq} after entry {n - 1}")
                reason = _classify_gap(n, seq, it)
                what = "is out of order" if reason is Reason.REORDERED_ENTRIES else "is missing"
                return fail(reason, f"entry {n} {what} (found {seq} in its place)")
            if merkle:
                h = sha(LEAF_PREFIX + enc).digest()
                m = n
                while m & 1:
                    h = sha(NODE_PREFIX + frontier.pop() + h).digest()
                    m >>= 1
                frontier.append(h)
            else:
                rng.update(len(enc).to_bytes(4, "big"))
                rng.update(enc)
            n += 1
            if n == trusted_at:
                # Judged at the end: an edit caught by one of the file's own heads is reported
                # as the edit it is, not as a fork.
                root_at_trusted = current_root()
        elif line.startswith(("H ", "P ")):
            try:
                item = parse_line(line, lineno)
            except LogFormatError as exc:
                return fail(Reason.MALFORMED, exc.reason)
            assert isinstance(item, SignedHead)
            if (item.kind is HeadKind.MERKLE) != merkle:
                return fail(
                    Reason.MALFORMED, f"{item.kind.value} line in a {header.mode.value} log"
                )
            check = _check_head(key, mid, item)
            if check is not Reason.OK:
                return fail(check, f"head for size {item.size}")
            if item.size < n:
                return fail(
                    Reason.REORDERED_ENTRIES, f"head for size {item.size} after {n} entries"
                )
            if item.size > n:
                # Either entries it covers were cut off at the end, or the head was moved up.
                rest = any(r.startswith("E ") for r in it)
                if rest:
                    return fail(Reason.REORDERED_ENTRIES, f"head for size {item.size} after {n}")
                return fail(
                    Reason.TRUNCATED,
                    f"a signed head covers {item.size} entries, the log has {n}",
                )
            if current_root() != item.root:
                return fail(
                    Reason.EDITED_ENTRY,
                    f"entries 0..{n - 1} do not hash to the signed root of size {n}",
                )
            last = item
            heads += 1
        elif line.strip() == "" or line.startswith("#"):
            continue
        else:
            try:
                parse_line(line, lineno)
            except LogFormatError as exc:
                return fail(Reason.MALFORMED, exc.reason)
            return fail(Reason.MALFORMED, "unexpected line")

    lineno = 0
    if trusted is not None and root_at_trusted is not None:
        if root_at_trusted != trusted.head.root:
            return fail(
                Reason.NOT_EXTENSION,
                f"the first {trusted_at} entries differ from the accepted head of that size",
            )
    elif trusted is not None:
        if last is not None and last.size == n:
            return fail(
                Reason.ROLLBACK,
                f"log ends at signed size {n}, older than the accepted size {trusted_at}",
            )
        return fail(Reason.TRUNCATED, f"log has {n} entries, the accepted head covers {trusted_at}")
    if last is None:
        return fail(Reason.NO_SIGNED_HEAD, f"{n} entries and no signed head")
    return Verdict(Reason.OK, "", 0, mid, n, heads, last, n - last.size)


def verify_file(
    path: Path | str,
    public_key_pem: bytes,
    *,
    trusted: TrustedHead | None = None,
    meter_id: str | None = None,
) -> Verdict:
    """`verify_lines` over a file; undecodable bytes are MALFORMED, never an exception."""
    try:
        with open(path, encoding="ascii", newline="\n") as f:
            return verify_lines(f, public_key_pem, trusted=trusted, meter_id=meter_id)
    except UnicodeDecodeError as exc:
        return Verdict(Reason.MALFORMED, f"non-ASCII bytes at offset {exc.start}")


def _type_map() -> dict[str, int]:
    from amistack.eventlog.record import EventType

    return {e.name: int(e) for e in EventType}


# --- proofs for one event and between two heads ------------------------------------------------


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 §2.1.3 inclusion proof of entry `index` in the tree of `tree_size`."""

    index: int
    tree_size: int
    path: tuple[bytes, ...]

    def encode(self) -> bytes:
        return struct.pack(">QQ", self.index, self.tree_size) + b"".join(self.path)

    @classmethod
    def decode(cls, data: bytes) -> InclusionProof:
        if len(data) < 16 or (len(data) - 16) % 32 or len(data) > 16 + 64 * 32:
            raise LogFormatError(0, f"inclusion proof of {len(data)} bytes")
        index, size = struct.unpack_from(">QQ", data)
        path = tuple(data[i : i + 32] for i in range(16, len(data), 32))
        return cls(index, size, path)


def build_tree(records: Iterable[EventRecord]) -> MerkleTree:
    tree = MerkleTree()
    for rec in records:
        tree.append(rec.encode())
    return tree


def prove_inclusion(tree: MerkleTree, index: int, tree_size: int) -> InclusionProof:
    return InclusionProof(index, tree_size, tuple(tree.inclusion_proof(index, tree_size)))


def verify_event(
    record: EventRecord,
    proof: InclusionProof,
    head: SignedHead,
    meter_id: str,
    public_key_pem: bytes,
) -> Reason:
    """Does this single event belong to the log the meter signed in `head`?"""
    key = _Key(public_key_pem)
    if head.kind is not HeadKind.MERKLE:
        return Reason.WRONG_MODE
    check = _check_head(key, meter_id, head)
    if check is not Reason.OK:
        return check
    if proof.tree_size != head.size or proof.index != record.seq:
        return Reason.EDITED_ENTRY
    leaf = hashlib.sha256(LEAF_PREFIX + record.encode()).digest()
    ok = verify_inclusion(leaf, proof.index, proof.tree_size, proof.path, head.root)
    return Reason.OK if ok else Reason.EDITED_ENTRY


def verify_head_update(
    trusted: TrustedHead,
    new: SignedHead,
    consistency_path: Iterable[bytes],
    public_key_pem: bytes,
) -> Reason:
    """Accept `new` only if it is signed by the meter and RFC 9162 §2.1.4-consistent with the
    head accepted before (no full log needed)."""
    key = _Key(public_key_pem)
    check = _check_head(key, trusted.meter_id, new)
    if check is not Reason.OK:
        return check
    old = trusted.head
    if new.size < old.size:
        return Reason.ROLLBACK
    if not verify_consistency(old.size, new.size, old.root, new.root, list(consistency_path)):
        return Reason.NOT_EXTENSION
    return Reason.OK


class HeadStore:
    """The MDMS's memory: the last accepted head per meter, one small file each in `directory`."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def _path(self, meter_id: str) -> Path:
        return self.directory / f"{meter_id}.head"

    def get(self, meter_id: str) -> TrustedHead | None:
        try:
            return TrustedHead.from_text(self._path(meter_id).read_text(encoding="ascii"))
        except FileNotFoundError:
            return None

    def put(self, trusted: TrustedHead) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        p = self._path(trusted.meter_id)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(trusted.to_text(), encoding="ascii")
        os.replace(tmp, p)

    def verify_and_accept(self, path: Path | str, meter_id: str, public_key_pem: bytes) -> Verdict:
        """Verify a meter's export against its last accepted head; remember the new head only
        when the log holds."""
        trusted = self.get(meter_id)
        verdict = verify_file(path, public_key_pem, trusted=trusted, meter_id=meter_id)
        if (
            verdict.ok
            and verdict.last_head is not None
            and (trusted is None or verdict.last_head.size >= trusted.head.size)
        ):
            mode = Mode.MERKLE if verdict.last_head.kind is HeadKind.MERKLE else Mode.PATENT
            self.put(TrustedHead(meter_id, mode, verdict.last_head))
        return verdict
