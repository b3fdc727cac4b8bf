"""The key-distribution protocol (sans-IO): application servers fetch UKMF keys from the key server.

    head-end --TLS 1.3, client cert (CN, purposes)--> key server: KeyDistService.handle(line,
             <-- {"ok": true, "key": "<hex>", "not_after": ...} --  identity, now) -> key_for

The protocol is one JSON object per line each way (UTF-8, `\\n`-terminated, at most
`KeyDistConfig.max_request` octets per request):

    {"op": "get_key", "key_id": "4097dcd8.fc268032", "purpose": "c1222", "id": 7}
    {"op": "current_key", "device": "meter-1", "purpose": "c1222"}      (if `current` is given)
    {"op": "ping"}
 -> {"ok": true, "id": 7, "key_id": "...", "purpose": "c1222", "key": "<hex>",
     "not_after": 1790000000.0, "now": 1789999000.0, "device": "meter-1", "device_hex": "..."}
 -> {"ok": false, "id": 7, "error": "forbidden", "detail": "..."}

Error codes: `bad-request`, `unknown-op`, `forbidden` (the client's certificate does not carry
the purpose, does not cover the meter -- its `urn:amistack:meters:` selectors scope a head-end to
the meters it serves -- or the certificate was revoked/expired), `not-found` (unknown, expired,
revoked or not exportable: deliberately one answer), `too-large`, `internal`.

Both halves live here, with no socket, clock or event loop: `KeyDistService` answers a request
line for an authenticated `ClientIdentity` at `now` (the key server's side); `encode_request`,
`decode_answer` and `key_from_answer` are the client's codec. `runtime.keydist` drives them over
asyncio TLS (`KeyDistServer`, `KeyDistClient`); the handheld reuses them over its own channel.
See docs/key-distribution.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from amistack.addr import text_or_hex
from amistack.keymgmt.pki import ClientIdentity
from amistack.keymgmt.ukmf import KeyId, KeyIdError

log = logging.getLogger(__name__)

DEFAULT_KEYDIST_PORT = 7716  # lab choice (unassigned); the CLI can override
AUDIT_KEY_EXPORT = "key-export"
AUDIT_KEY_REFUSED = "key-export-refused"
_PURPOSE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_MAX_DEVICE = 255  # as keymgmt.store.MAX_DEVICE_ID


class KeyLike(Protocol):
    """What a lookup returns: `keymgmt.AppKey` and `keymgmt.IssuedKey` both fit.

    An `IssuedKey` also carries `peer_id` (the device), which is passed on to the client."""

    @property
    def key(self) -> bytes: ...

    @property
    def not_after(self) -> float: ...


KeyLookup = Callable[[KeyId, str, float], KeyLike | None]
CurrentLookup = Callable[[bytes, str, float], KeyLike | None]
# Same shape as CredentialStore.audit(kind, device_id, detail, now).
AuditSink = Callable[[str, bytes | None, str, float], object]


class KeyDistError(Exception):
    """Key distribution failed (client side)."""


class KeyDistUnavailable(KeyDistError):
    """No answer: connection refused, TLS handshake refused, timeout, connection lost."""


class KeyDistRefused(KeyDistError):
    """The key server answered with an error (`code` is one of the protocol's error codes)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class KeyDistConfig:
    max_request: int = 4096  # octets per request line (longer: `too-large`, connection closed)
    idle_timeout: float = 30.0  # seconds without a request before the server hangs up
    handshake_timeout: float = 10.0
    write_timeout: float = 10.0  # a client that does not read its answers is dropped
    max_connections: int = 1024
    max_connections_per_source: int = 256  # open connections from one IP address


class KeyDistService:
    """Answers one request line for one authenticated client. No sockets, no clock.

    `lookup` is `KeyServer.key_for` (or any `(KeyId, purpose, now) -> key | None`), `current`
    is `KeyServer.current_key` (optional), `audit` is `CredentialStore.audit` (optional but
    expected in production). Every request of an authenticated client is audited; if auditing
    fails, no key is handed out (fail closed).
    """

    def __init__(
        self,
        lookup: KeyLookup,
        *,
        current: CurrentLookup | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.lookup = lookup
        self.current = current
        self.audit = audit
        self.counters: Counter[str] = Counter()

    def handle(self, line: bytes, client: ClientIdentity, now: float) -> bytes:
        """The response line (with its `\\n`) for the request `line` from `client` at `now`."""
        rid: object = None
        try:
            req = json.loads(line)
        except json.JSONDecodeError as exc:
            return self.error(client, now, None, "bad-request", f"not JSON: {exc.msg}"[:120], "")
        except UnicodeDecodeError:
            return self.error(client, now, None, "bad-request", "not UTF-8", "")
        except RecursionError:
            return self.error(client, now, None, "bad-request", "too deeply nested", "")
        if not isinstance(req, dict):
            return self.error(client, now, None, "bad-request", "request must be an object", "")
        raw_id = req.get("id")
        if (
            isinstance(raw_id, int | str)
            and not isinstance(raw_id, bool)
            and len(str(raw_id)) <= 64
        ):
            rid = raw_id
        op = req.get("op")
        if op == "ping":
            self.counters["ping"] += 1
            return _line(
                {
                    "ok": True,
                    "id": rid,
                    "client": client.name,
                    "purposes": sorted(client.purposes),
                    "meters": sorted(client.meters),
                    "now": now,
                }
            )
        if op == "get_key":
            return self._get_key(req, client, now, rid)
        if op == "current_key" and self.current is not None:
            return self._current_key(req, client, now, rid)
        shown = op if isinstance(op, str) else type(op).__name__
        return self.error(client, now, rid, "unknown-op", f"unknown op {shown[:32]!r}", "")

    def _get_key(
        self, req: dict[str, Any], client: ClientIdentity, now: float, rid: object
    ) -> bytes:
        text, purpose = req.get("key_id"), req.get("purpose")
        if not isinstance(text, str) or not isinstance(purpose, str):
            return self.error(
                client, now, rid, "bad-request", "key_id and purpose must be strings", ""
            )
        what = f"get_key {text[:40]!r} {purpose[:40]!r}"
        if not _PURPOSE.fullmatch(purpose):
            return self.error(client, now, rid, "bad-request", "malformed purpose", what)
        try:
            key_id = KeyId.parse(text)
        except KeyIdError as exc:
            return self.error(client, now, rid, "bad-request", exc.reason, what)
        what = f"get_key {key_id} {purpose}"
        if not client.may_fetch(purpose):
            return self.error(
                client,
                now,
                rid,
                "forbidden",
                f"certificate does not allow purpose {purpose!r}",
                what,
            )
        try:
            key = self.lookup(key_id, purpose, now)
        except Exception:  # the key server must keep serving; the details go to the log
            log.exception("key lookup failed", extra={"key_id": str(key_id)})
            return self.error(client, now, rid, "internal", "lookup failed", what)
        return self._grant(key, key_id, purpose, client, now, rid, what)

    def _current_key(
        self, req: dict[str, Any], client: ClientIdentity, now: float, rid: object
    ) -> bytes:
        assert self.current is not None
        purpose = req.get("purpose")
        device: bytes | None = None
        if isinstance(req.get("device"), str):
            device = str(req["device"]).encode()
        elif isinstance(req.get("device_hex"), str):
            with contextlib.suppress(ValueError):
                device = bytes.fromhex(str(req["device_hex"]))
        if device is None or not 1 <= len(device) <= _MAX_DEVICE or not isinstance(purpose, str):
            return self.error(
                client,
                now,
                rid,
                "bad-request",
                "need device (or device_hex, 1..255 octets) and purpose",
                "",
            )
        what = f"current_key {text_or_hex(device[:64])} {purpose[:40]!r}"
        if not _PURPOSE.fullmatch(purpose):
            return self.error(client, now, rid, "bad-request", "malformed purpose", what)
        if not client.may_fetch(purpose):
            return self.error(
                client,
                now,
                rid,
                "forbidden",
                f"certificate does not allow purpose {purpose!r}",
                what,
            )
        if not client.may_serve(device):
            return self.error(
                client, now, rid, "forbidden", "certificate does not cover this meter", what
            )
        try:
            key = self.current(device, purpose, now)
        except Exception:
            log.exception("current key lookup failed")
            return self.error(client, now, rid, "internal", "lookup failed", what)
        key_id = getattr(key, "key_id", None)
        return self._grant(
            key,
            key_id if isinstance(key_id, KeyId) else None,
            purpose,
            client,
            now,
            rid,
            what,
            device,
        )

    def _grant(
        self,
        key: KeyLike | None,
        key_id: KeyId | None,
        purpose: str,
        client: ClientIdentity,
        now: float,
        rid: object,
        what: str,
        device: bytes | None = None,
    ) -> bytes:
        if key is None or not key.not_after > now:
            return self.error(
                client,
                now,
                rid,
                "not-found",
                "no valid key (unknown, expired, revoked or not exportable)",
                what,
            )
        peer = getattr(key, "peer_id", None)
        if isinstance(peer, bytes):
            device = peer
        if not (client.may_serve(device) if device is not None else "*" in client.meters):
            return self.error(
                client, now, rid, "forbidden", "certificate does not cover this meter", what
            )
        try:
            material = key.key
        except Exception:  # wiped between lookup and use
            return self.error(client, now, rid, "not-found", "key no longer valid", what)
        detail = (
            f"client {client.name!r} (serial {client.serial:x}) {what}: granted, "
            f"not_after {key.not_after:.3f}"
        )
        if not self._audit(AUDIT_KEY_EXPORT, device, detail, now):
            return _line(
                {
                    "ok": False,
                    "id": rid,
                    "error": "internal",
                    "detail": "audit unavailable; no key issued",
                }
            )
        self.counters["granted"] += 1
        out: dict[str, Any] = {
            "ok": True,
            "id": rid,
            "key_id": str(key_id) if key_id is not None else None,
            "purpose": purpose,
            "key": material.hex(),
            "not_after": key.not_after,
            "now": now,
        }
        if device is not None:
            out["device_hex"] = device.hex()
            with contextlib.suppress(UnicodeDecodeError):
                text = device.decode("utf-8")
                if text.isprintable():
                    out["device"] = text
        return _line(out)

    def refuse_client(self, client: ClientIdentity, now: float, why: str) -> bytes:
        """The answer (and audit entry) for a client whose certificate is no longer acceptable."""
        return self.error(client, now, None, "forbidden", why, "connection")

    def error(
        self, client: ClientIdentity, now: float, rid: object, code: str, detail: str, what: str
    ) -> bytes:
        """An error answer for `client`, audited (also used by the transport, e.g. too-large)."""
        self.counters[code] += 1
        self._audit(
            AUDIT_KEY_REFUSED,
            None,
            f"client {client.name!r} (serial {client.serial:x}) {what or 'request'}: "
            f"{code}: {detail}",
            now,
        )
        return _line({"ok": False, "id": rid, "error": code, "detail": detail})

    def _audit(self, kind: str, device: bytes | None, detail: str, now: float) -> bool:
        if self.audit is None:
            return True
        if device is not None and not 1 <= len(device) <= _MAX_DEVICE:
            device = None
        try:
            self.audit(kind, device, detail, now)
        except Exception:
            self.counters["audit_errors"] += 1
            log.exception("key distribution audit entry lost", extra={"kind": kind})
            return False
        return True


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


# -- the client's codec -------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributedKey:
    """A key as the key server handed it out."""

    key_id: KeyId | None
    purpose: str
    key: bytes
    not_after: float  # on the key server's clock
    device: bytes | None  # the device the key belongs to: attribute messages to it

    def __repr__(self) -> str:  # never the key
        return (
            f"DistributedKey(key_id={self.key_id}, purpose={self.purpose}, "
            f"device={self.device!r}, not_after={self.not_after})"
        )


def encode_request(req: dict[str, Any]) -> bytes:
    """One request line (with its `\\n`)."""
    return _line(req)


def decode_answer(line: bytes, rid: object) -> dict[str, Any]:
    """The answer to the request with id `rid`: `KeyDistError` if it is malformed or answers
    another request, `KeyDistRefused` (with the protocol's error code) if the server said no."""
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("id") not in (rid, None):
        raise KeyDistError("malformed answer from the key server")
    if answer.get("ok") is not True:
        raise KeyDistRefused(str(answer.get("error", "error")), str(answer.get("detail", "")))
    return answer


def key_from_answer(answer: dict[str, Any], purpose: str) -> DistributedKey:
    """The key a successful `get_key` / `current_key` answer carries."""
    try:
        key = bytes.fromhex(answer["key"])
        not_after = float(answer["not_after"])
        kid = None if answer.get("key_id") is None else KeyId.parse(answer["key_id"])
        device = bytes.fromhex(answer["device_hex"]) if "device_hex" in answer else None
    except (KeyError, TypeError, ValueError, AttributeError, KeyIdError) as exc:
        # (AttributeError: a key_id that is not a string; found by tests/fuzz/test_keydist_fuzz)
        raise KeyDistError(f"malformed answer from the key server: {exc}") from None
    if answer.get("purpose") != purpose or not key:
        raise KeyDistError("malformed answer from the key server: wrong purpose or no key")
    return DistributedKey(kid, purpose, key, not_after, device)
