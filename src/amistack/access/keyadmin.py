"""Key-server administration by an authenticated operator (sans-IO): enroll, revoke, rotate a
PSK, list devices, read the store's audit, show mesh group keys.

`KeyAdminService.handle(line, principal, now) -> bytes` answers one request line (the framing
of `keymgmt.keydist`: one JSON object per line each way) for a `Principal` that something else
authenticated: the key server's admin listener (mutual TLS with a role certificate,
`runtime.keydist.start_keyadmin`) or `amistack keys` acting locally with a bearer token from the
user store. Either way the same checks run, in this order:

1. the request decodes (`bad-request`, and at most `KeyAdminConfig.max_request` octets);
2. the operator is within its request budget (`rate-limited`: a token bucket per operator; the
   first refusal of a flood is audited, the rest counted);
3. the operator's roles grant the right the op needs (`ROLE_RIGHTS`: `keys` for changes,
   `key_inventory` to list, `audit` for the store's audit; `forbidden`);
4. the device lies in the operator's area of responsibility (`Principal.covers`; `forbidden`);
5. a state-changing request carries a fresh `at` (within `freshness_s` of `now`: `stale`) and a
   `nonce` never seen in that window (`replayed`);
6. the action is written to the operator audit trail (`access.audit.AuditTrail`, signed daily
   heads) BEFORE it takes effect: if that write fails nothing is done (`internal`, "audit
   unavailable"); the outcome (`ok` or `refused: <code>`) follows in a second entry.

**Delegation** (docs/access-control.md "Delegated key administration"): a service whose
certificate CN the key server lists in `delegators` (`amistack keyserver --admin-delegate CN`:
the head-end's dashboard) may ask for a `revoke` or `rotate_psk` on behalf of a named user with
`"on_behalf": "NAME"`, nothing else. The service checks that NAME is a user of its own access
store (`users`), enabled, whose roles grant `keys`; the change is then checked (area: the
delegator certificate's), freshness-checked and audited as NAME's, with the delegator named in
the entry's `via`. A delegator's certificate asks for nothing on its own (only `whoami`), so a
stolen one cannot act without naming a SECADM the key server knows, and every such act names both.

Every refusal is audited too. A PSK never appears in an audit entry or a log line: the answer
to an enroll/rotate_psk without a PSK carries the generated one, once, to the operator.

    {"op": "enroll", "device": "meter-1", "psk": "<32 hex>", "method": "psk", "lifetime": 3600,
     "replace": false, "at": 1790000000.0, "nonce": "<32 hex>", "id": 1}
    {"op": "revoke", "device": "meter-1", "reason": "stolen", "keys_valid_for": 0, "at", "nonce"}
    {"op": "revoke", ..., "on_behalf": "alice"}  (a delegator only)
    {"op": "rotate_psk", "device": "meter-1", "psk": "<32 hex>"?, "at", "nonce"}
    {"op": "list"}  {"op": "audit", "device": "meter-1"?, "limit": 50}
    {"op": "group_keys", "pan": 64206, "material": false}  {"op": "trail"}  {"op": "whoami"}
 -> {"ok": true, "id": 1, ...}  or  {"ok": false, "id": 1, "error": "forbidden", "detail": ...}
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from amistack.access.audit import AuditTrail
from amistack.access.rights import Right, role_names
from amistack.access.users import AccessStore, Principal
from amistack.crypto import RandomSource, system_random
from amistack.echonet.budget import ReplyBudget
from amistack.keymgmt.store import (
    METHOD_PSK,
    METHOD_TLS,
    AlreadyEnrolled,
    DeviceRevoked,
    StoreError,
    UnknownDevice,
)

log = logging.getLogger(__name__)

PSK_OCTETS = 16  # RFC 4764 §2.1: the EAP-PSK PSK is 16 octets
_NONCE = re.compile(r"[0-9a-f]{32,64}")
_MAX_DEVICE = 255  # as keymgmt.store.MAX_DEVICE_ID
_MAX_REASON = 200
_MAX_AUDIT_ROWS = 1000
DELEGABLE = frozenset({"revoke", "rotate_psk"})  # what a delegator may ask for a user
_USER_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # as access.users' names


@dataclass(frozen=True)
class KeyAdminConfig:
    max_request: int = 4096  # octets per request line
    freshness_s: float = 300.0  # a change's `at` must lie within this of the server's now
    rate: float = 2.0  # requests per second per operator, sustained
    burst: int = 30  # requests an operator may send at once
    max_operators: int = 1024  # token buckets kept (bounded memory)
    max_nonces: int = 100_000  # nonces remembered (a change past this is refused, not forgotten)


class _Refused(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class _Op:
    right: Right | None
    changes: bool  # state-changing: needs `at` + `nonce`, audited before and after


_OPS: dict[str, _Op] = {
    "enroll": _Op(Right.KEYS, True),
    "revoke": _Op(Right.KEYS, True),
    "rotate_psk": _Op(Right.KEYS, True),
    "list": _Op(Right.KEY_INVENTORY, False),
    "audit": _Op(Right.AUDIT, False),
    "group_keys": _Op(Right.KEY_INVENTORY, False),  # with "material": Right.KEYS and aor *
    "trail": _Op(Right.AUDIT, False),  # the operator audit trail itself, to verify offline
    "whoami": _Op(None, False),
}


class KeyAdminService:
    """Answers one admin request line for one authenticated operator (see the module doc).

    `store` is a `keymgmt.CredentialStore` (used through its public methods only), `audit` the
    operator audit trail (`AuditTrail`), `rng` draws generated PSKs. With `users` (the key
    server's `AccessStore`), a certificate whose CN names a disabled user is refused, as the
    head-end's API does. `delegators`: the certificate CNs that may act on behalf of a user of
    `users` (module doc: delegation)."""

    def __init__(
        self,
        store: Any,
        audit: AuditTrail,
        *,
        rng: RandomSource = system_random,
        config: KeyAdminConfig | None = None,
        users: AccessStore | None = None,
        delegators: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.audit = audit
        self.users = users
        self.delegators = delegators
        self.rng = rng
        self.config = config or KeyAdminConfig()
        cfg = self.config
        self._budget = ReplyBudget(cfg.rate, cfg.burst, cfg.max_operators)
        self._flooding: dict[str, float] = {}  # operator -> when its flood refusal was audited
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self.counters: Counter[str] = Counter()

    # -- the entry point ----------------------------------------------------------------------

    def handle(self, line: bytes, who: Principal, now: float) -> bytes:
        """The answer line (with its newline) to `line` from `who` at `now`."""
        rid: object = None
        req: dict[str, Any] = {}
        op_name = "?"
        try:
            self._within_budget(who, now)  # first: a flood of garbage must not flood the audit
            if len(line) > self.config.max_request:
                raise _Refused("too-large", f"request longer than {self.config.max_request}")
            req = _decode(line)
            raw_id = req.get("id")
            if isinstance(raw_id, int | str) and not isinstance(raw_id, bool):
                rid = raw_id if len(str(raw_id)) <= 64 else None
            op_name = str(req.get("op"))[:32]
            op = _OPS.get(op_name)
            if op is None:
                raise _Refused("unknown-op", f"unknown op {op_name!r}")
            self._enabled(who)
            who = self._acting(who, op_name, req)
            return self._dispatch(op_name, op, req, who, now, rid)
        except _Refused as exc:
            if exc.code != "rate-limited":
                self._refusal(who, now, op_name, req, exc)
            return _answer(rid, {"ok": False, "error": exc.code, "detail": exc.detail})

    def error(
        self, who: Principal, now: float, rid: object, code: str, detail: str, what: str
    ) -> bytes:
        """An audited error answer (the transport's: `too-large`, a certificate gone bad)."""
        self.counters[code] += 1
        self._record(who, now, f"keys.{what or 'request'}", "", f"refused: {code}", detail)
        return _answer(rid, {"ok": False, "error": code, "detail": detail})

    def refuse_client(self, who: Principal, now: float, why: str) -> bytes:
        """The answer (and audit entry) for an operator whose certificate is no longer valid."""
        return self.error(who, now, None, "forbidden", why, "connection")

    # -- the checks ---------------------------------------------------------------------------

    def _within_budget(self, who: Principal, now: float) -> None:
        if self._budget.allows(who.name, now):
            self._budget.charge(who.name, 1)
            self._flooding.pop(who.name, None)
            return
        self.counters["rate-limited"] += 1
        first = who.name not in self._flooding
        if first and len(self._flooding) < self.config.max_operators:
            self._flooding[who.name] = now
            self._record(
                who, now, "keys.flood", "", "refused: rate-limited", {"rate": self.config.rate}
            )
        raise _Refused("rate-limited", "too many requests; slow down")

    def _enabled(self, who: Principal) -> None:
        user = self.users.get_user(who.name) if self.users is not None else None
        if user is not None and user.disabled:
            raise _Refused("forbidden", f"user {who.name!r} is disabled")

    def _acting(self, who: Principal, op: str, req: dict[str, Any]) -> Principal:
        """Who a request acts as: the caller, or for a delegator the user it names (checked in
        this key server's access store); a delegator asks for nothing on its own."""
        named = req.get("on_behalf")
        if who.name not in self.delegators:
            if named is not None:
                raise _Refused("forbidden", f"{who.name} may not act on behalf of another user")
            return who
        if named is None:
            if op == "whoami":
                return who
            raise _Refused("forbidden", f"{who.name} acts only on behalf of a named user")
        if op not in DELEGABLE:
            raise _Refused("forbidden", f"{op!r} cannot be delegated")
        if not isinstance(named, str) or not _USER_NAME.fullmatch(named):
            raise _Refused("bad-request", "on_behalf: a user name (1-64 of [A-Za-z0-9_.@-])")
        user = self.users.get_user(named) if self.users is not None else None
        if user is None or user.disabled:
            raise _Refused("forbidden", f"{named!r} is not an enabled user of this key server")
        return Principal(
            named,
            user.roles,
            f"delegated by {who.name} ({who.token_id or who.via})",
            who.token_id,
            who.source,
            aor=who.aor,  # the delegator's area bounds what it may ask for anyone
        )

    def _authorise(self, who: Principal, right: Right | None) -> None:
        if right is not None and not who.may(right):
            held = ", ".join(role_names(who.roles)) or "no role"
            raise _Refused("forbidden", f"{right.value!r} is needed; {who.name} holds {held}")

    def _fresh(self, req: dict[str, Any], who: Principal, now: float) -> str:
        at, nonce = req.get("at"), req.get("nonce")
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise _Refused("bad-request", "a change needs a nonce (32-64 lower-case hex digits)")
        if isinstance(at, bool) or not isinstance(at, int | float):
            raise _Refused("bad-request", "a change needs `at` (the time it was made, epoch s)")
        if not abs(float(at) - now) <= self.config.freshness_s:
            raise _Refused("stale", f"`at` is more than {self.config.freshness_s:g} s from now")
        horizon = now - 2 * self.config.freshness_s  # older nonces fail the freshness check
        while self._nonces and next(iter(self._nonces.values())) < horizon:
            self._nonces.popitem(last=False)
        key = f"{who.name}\x00{nonce}"
        if key in self._nonces:
            raise _Refused("replayed", "this request was already received")
        if len(self._nonces) >= self.config.max_nonces:
            raise _Refused("rate-limited", "too many changes in the freshness window")
        self._nonces[key] = now
        return nonce

    # -- the ops ------------------------------------------------------------------------------

    def _dispatch(
        self, name: str, op: _Op, req: dict[str, Any], who: Principal, now: float, rid: object
    ) -> bytes:
        if name == "group_keys" and req.get("material") is True:
            op = _Op(Right.KEYS, False)
        self._authorise(who, op.right)
        device = _device(req) if name in ("enroll", "revoke", "rotate_psk") else None
        if device is not None:
            _in_area(who, device)
        if name == "whoami":
            return _answer(rid, _whoami(who))
        if name == "list":
            self._read(who, now, "keys.list")
            return _answer(rid, {"ok": True, **self._list(who)})
        if name == "audit":
            return self._audit_rows(req, who, now, rid)
        if name == "group_keys":
            return self._group_keys(req, who, now, rid)
        if name == "trail":
            return self._trail(who, now, rid)
        assert device is not None
        nonce = self._fresh(req, who, now)
        detail, apply = self._change(name, req, device, now)
        detail["nonce"] = nonce
        return self._act(who, now, rid, f"keys.{name}", device, detail, apply)

    def _change(
        self, name: str, req: dict[str, Any], device: str, now: float
    ) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
        """What a change will do (its audit detail, never a secret) and the function doing it."""
        if name == "revoke":
            reason = req.get("reason", "revoked by operator")
            grace = req.get("keys_valid_for", 0.0)
            if not isinstance(reason, str) or not 1 <= len(reason) <= _MAX_REASON:
                raise _Refused("bad-request", f"reason: 1..{_MAX_REASON} characters")
            if isinstance(grace, bool) or not isinstance(grace, int | float) or not grace >= 0:
                raise _Refused("bad-request", "keys_valid_for: seconds >= 0")

            def revoke() -> dict[str, Any]:
                newly = self.store.revoke(device, reason, now, keys_until=now + float(grace))
                return {"revoked": bool(newly)}

            return {"reason": reason, "keys_valid_for": grace}, revoke
        method = req.get("method", METHOD_PSK) if name == "enroll" else METHOD_PSK
        if method not in (METHOD_PSK, METHOD_TLS):
            raise _Refused("bad-request", f"method: {METHOD_PSK} or {METHOD_TLS}")
        psk = _psk(req)
        if method == METHOD_TLS and psk is not None:
            raise _Refused("bad-request", "an EAP-TLS device has no PSK")
        generated = psk is None and method == METHOD_PSK
        secret = psk if psk is not None else self.rng(PSK_OCTETS)
        detail: dict[str, Any] = {"psk": "generated" if generated else "given"}
        if name == "rotate_psk":

            def rotate() -> dict[str, Any]:
                out: dict[str, Any] = {"generation": self.store.rotate_psk(device, secret, now)}
                if generated:
                    out["psk"] = secret.hex()
                return out

            return detail, rotate
        lifetime = req.get("lifetime")
        replace = req.get("replace", False)
        if lifetime is not None and (
            isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0
        ):
            raise _Refused("bad-request", "lifetime: seconds > 0")
        if not isinstance(replace, bool):
            raise _Refused("bad-request", "replace: true or false")
        detail.update(method=method, lifetime=lifetime, replace=replace)
        if method == METHOD_TLS:
            del detail["psk"]

        def enroll() -> dict[str, Any]:
            if method == METHOD_TLS:
                self.store.enroll_tls(device, now, replace=replace, session_lifetime=lifetime)
                return {"method": method}
            self.store.enroll(device, secret, now, replace=replace, session_lifetime=lifetime)
            return {"method": method, **({"psk": secret.hex()} if generated else {})}

        return detail, enroll

    def _act(
        self,
        who: Principal,
        now: float,
        rid: object,
        action: str,
        target: str,
        detail: dict[str, Any],
        apply: Callable[[], dict[str, Any]],
    ) -> bytes:
        """Audit, then act, then audit the outcome (audit-before-action)."""
        if not self._record(who, now, action, target, "requested", detail):
            raise _AuditDown
        try:
            result = apply()
        except StoreError as exc:
            code = _store_code(exc)
            self._record(who, now, action, target, f"refused: {code}", {"reason": str(exc)})
            self.counters[code] += 1
            return _answer(rid, {"ok": False, "error": code, "detail": str(exc)})
        except Exception:  # a broken store: the admin keeps serving, the trail says it failed
            log.exception("key admin: %s failed", action)
            self._record(who, now, action, target, "failed: internal", "")
            self.counters["internal"] += 1
            return _answer(rid, {"ok": False, "error": "internal", "detail": "the store failed"})
        self._record(
            who, now, action, target, "ok", {k: v for k, v in result.items() if k != "psk"}
        )
        self.counters["done"] += 1
        return _answer(rid, {"ok": True, "device": target, **result})

    def _read(self, who: Principal, now: float, action: str, **detail: Any) -> None:
        """Reads are audited too, and not answered if the entry cannot be written."""
        target = str(detail.pop("target", ""))
        if not self._record(who, now, action, target, "ok", detail):
            raise _AuditDown

    def _list(self, who: Principal) -> dict[str, Any]:
        rows = []
        for d in self.store.list_devices():
            if not who.covers(d.device_id):
                continue
            rows.append(
                {
                    "device": d.device_id.decode("utf-8", "replace"),
                    "enrolled_at": d.enrolled_at,
                    "revoked_at": d.revoked_at,
                    "revoke_reason": d.revoke_reason,
                    "psk_generation": d.psk_generation,
                    "session_lifetime": d.session_lifetime,
                    "method": d.method,
                }
            )
        return {"devices": rows}

    def _audit_rows(self, req: dict[str, Any], who: Principal, now: float, rid: object) -> bytes:
        limit = req.get("limit", 50)
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= _MAX_AUDIT_ROWS
        ):
            raise _Refused("bad-request", f"limit: 1..{_MAX_AUDIT_ROWS}")
        device = _device(req) if req.get("device") is not None else None
        if device is not None:
            _in_area(who, device)
        self._read(who, now, "keys.audit", target=device or "", limit=limit)
        out = []
        for e in self.store.audit_log(limit, device_id=device):
            if not who.covers(e.device_id if e.device_id is not None else "*"):
                continue
            shown = None if e.device_id is None else e.device_id.decode("utf-8", "replace")
            out.append(
                {"seq": e.seq, "at": e.at, "kind": str(e.kind), "device": shown, "detail": e.detail}
            )
        return _answer(rid, {"ok": True, "entries": out})

    def _group_keys(self, req: dict[str, Any], who: Principal, now: float, rid: object) -> bytes:
        pan, material = req.get("pan"), req.get("material", False)
        if isinstance(pan, bool) or not isinstance(pan, int) or not 0 <= pan <= 0xFFFF:
            raise _Refused("bad-request", "pan: 0..65535")
        if material and "*" not in who.aor:  # a PAN's group key covers every meter in it
            raise _Refused("forbidden", "group key material needs an area of responsibility '*'")
        action = "keys.group_keys.export" if material else "keys.group_keys"
        self._read(who, now, action, target=f"pan:{pan:#06x}")
        found = self.store.load_group_keys(pan)
        if found is None:
            return _answer(rid, {"ok": True, "pan": pan, "keys": None})
        serial, rotate_at, keys = found
        rows = [
            {
                "index": k.index,
                "serial": k.serial,
                "not_before": k.not_before,
                "not_after": k.not_after,
                **({"key": k.key.hex()} if material else {}),
            }
            for k in keys
        ]
        body = {"ok": True, "pan": pan, "serial": serial, "rotate_at": rotate_at, "keys": rows}
        return _answer(rid, body)

    def _trail(self, who: Principal, now: float, rid: object) -> bytes:
        """The operator audit trail as an event-log export and its public key: `amistack log
        verify FILE --pubkey PEM` checks it. A head is signed first (beside the daily ones), so
        the export verifies up to this request. Every operator's actions: area '*' only."""
        if "*" not in who.aor:
            raise _Refused("forbidden", "the whole audit trail needs an area of responsibility '*'")
        self._read(who, now, "keys.trail")
        try:  # a head over everything so far (this request too), so all of it verifies now
            self.audit.seal(now)
        except Exception:
            log.exception("key admin: sealing the audit trail failed")
            raise _AuditDown from None
        export = "".join(self.audit.export_lines())
        pem = self.audit.public_key_pem().decode("ascii")
        return _answer(rid, {"ok": True, "export": export, "public_key": pem})

    # -- the audit trail ----------------------------------------------------------------------

    def _record(
        self,
        who: Principal,
        now: float,
        action: str,
        target: str,
        outcome: str,
        detail: Mapping[str, Any] | str,
    ) -> bool:
        try:
            self.audit.record_by(now, who, action, target=target, outcome=outcome, detail=detail)
        except Exception:  # the caller decides: no change (and no read) without its entry
            self.counters["audit_errors"] += 1
            log.exception("key admin: audit entry lost", extra={"action": action})
            return False
        return True

    def _refusal(
        self, who: Principal, now: float, op: str, req: dict[str, Any], exc: _Refused
    ) -> None:
        self.counters[exc.code] += 1
        target = req.get("device") if isinstance(req.get("device"), str) else ""
        self._record(
            who,
            now,
            f"keys.{op}" if op in _OPS else "keys.request",
            str(target)[:64],
            f"refused: {exc.code}",
            {"reason": exc.detail},
        )


class _AuditDown(_Refused):
    def __init__(self) -> None:
        super().__init__("internal", "audit unavailable; nothing done")


def _decode(line: bytes) -> dict[str, Any]:
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):
        raise _Refused("bad-request", "not a JSON object in UTF-8") from None
    if not isinstance(req, dict):
        raise _Refused("bad-request", "request must be an object")
    return req


def _device(req: dict[str, Any]) -> str:
    device = req.get("device")
    try:
        size = len(device.encode("utf-8")) if isinstance(device, str) else 0
    except UnicodeEncodeError:  # a lone surrogate
        size = 0
    if not isinstance(device, str) or not device.isprintable() or not 1 <= size <= _MAX_DEVICE:
        raise _Refused("bad-request", f"device: 1..{_MAX_DEVICE} octets of printable text")
    return device


def _in_area(who: Principal, device: str) -> None:
    if not who.covers(device):
        raise _Refused("forbidden", f"{device!r} is outside {who.name}'s area of responsibility")


def _psk(req: dict[str, Any]) -> bytes | None:
    text = req.get("psk")
    if text is None:
        return None
    try:
        psk = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        psk = b""
    if len(psk) != PSK_OCTETS:
        raise _Refused("bad-request", f"psk: {PSK_OCTETS} octets as hex")
    return psk


def _store_code(exc: StoreError) -> str:
    if isinstance(exc, UnknownDevice):
        return "not-found"
    if isinstance(exc, AlreadyEnrolled):
        return "exists"
    if isinstance(exc, DeviceRevoked):
        return "revoked"
    return "refused"


def _whoami(who: Principal) -> dict[str, Any]:
    return {
        "ok": True,
        "operator": who.name,
        "roles": role_names(who.roles),
        "rights": sorted(r.value for r in who.rights),
        "aor": sorted(who.aor),
        "via": who.via,
    }


def _answer(rid: object, body: dict[str, Any]) -> bytes:
    return json.dumps({**body, "id": rid}, separators=(",", ":")).encode() + b"\n"
