"""The head-end REST API (FastAPI; the OpenAPI document is at /openapi.json, docs at /docs).

Meters (list/get/register/commission/decommission, re-commission), readings by meter and time
range (JSON pages or a whole-range CSV/JSON export), commands (create/list/get/cancel), events,
alarms, the meters' event logs, the operator audit trail, and login. Lists are keyset-paginated:
each page carries the cursor of the next one (`next_after`), null at the end. Errors are always
JSON `{"error": code, "detail": message}`: 401 no or bad credentials, 403 no role grants the
route's right, 404 unknown, 409 exists or wrong state, 400 invalid, 413 body too large, 422 the
request does not match the schema, 429 too many failed logins.

Access control (amistack.access, docs/access-control.md): every route but POST /auth/login
declares the one right it needs (`x-required-right` in the OpenAPI document); callers present a
bearer token, the login session cookie, or a client certificate carrying IEC 62351-8 roles.
Every state-changing action, login and refusal for lack of a right goes to the operator audit
trail. Request bodies are size-limited before they are read.

`create_app(repo, access, clock)` builds the app over any ReadingRepository; the clock stamps
registrations, commands and acknowledgements (the API is the I/O edge, so it may read one).
"""

import dataclasses
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from ipaddress import IPv6Address
from typing import Annotated, Any, Literal, Self

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from amistack.access import AccessError, LoginRefused, Principal, Right, Role, User, role_names
from amistack.access.http import (
    MUTUAL_TLS_SCHEME,
    SESSION_COOKIE,
    AccessControl,
    AccessDenied,
    client_address,
)
from amistack.eventlog.record import iso_ms, parse_head_line
from amistack.eventlog.verify import Verdict
from amistack.headend.commands import check_params
from amistack.headend.dashboard.views import PREFIX as DASHBOARD
from amistack.headend.dashboard.views import PUBLIC as DASHBOARD_PUBLIC
from amistack.headend.dashboard.views import (
    HeadEndView,
    Hooks,
    KeyAdminPort,
    add_dashboard,
    ui_denied,
)
from amistack.headend.eventlog_intake import MAX_EXPORT_BYTES, EventLogIntake
from amistack.headend.export import csv_lines, iter_readings, json_lines, reading_dict
from amistack.headend.registry import MAX_ID, MAX_KEY_PEM, HeadendError, Meter, MeterState
from amistack.headend.schema import (
    Alarm,
    Command,
    CommandKind,
    CommandState,
    StoredEvent,
)
from amistack.headend.storage import MAX_PAGE, ReadingRepository
from amistack.headend.vee import VeeConfig, run_vee

log = logging.getLogger(__name__)

_STATUS = {
    "not_found": 404,
    "exists": 409,
    "invalid_transition": 409,
    "invalid": 400,
    "no_key": 409,
    "too_large": 413,
    "unavailable": 503,
}
MAX_JSON_BODY = 64 * 1024  # octets: every JSON body here is a few hundred
MAX_KEY_BODY = 4096


def _text(value: str) -> str:
    """Text that is Unicode all through: a lone surrogate (JSON allows "\\ud800") is refused
    here rather than failing in the database driver."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate)") from None
    return value


Text = Annotated[str, AfterValidator(_text)]
MeterId = Annotated[str, Path(min_length=1, max_length=MAX_ID), AfterValidator(_text)]


class MeterIn(BaseModel):
    meter_id: Text = Field(min_length=1, max_length=MAX_ID, description="key-server device id")
    ap_title: Text = Field(max_length=MAX_ID, description="ANSI C12.22 AP title, dotted OID")
    concentrator: Text = Field("", max_length=MAX_ID)
    cell: Text = Field("", max_length=MAX_ID)
    eventlog_key: Text | None = Field(
        None,
        max_length=MAX_KEY_PEM,
        description="the meter's event-log public key (SPKI PEM, EC P-256)",
    )


MAX_TOPOLOGY_NODES = 5000  # nodes in one DODAG report (the dashboard draws up to MESH_MAX_NODES)
MAX_TOPOLOGY_BODY = 2 * 1024 * 1024  # octets: 5000 nodes of ~300 JSON octets with headroom
RPL_RANK_MAX = 0xFFFF  # RFC 6550 §3.5: a 16-bit rank; INFINITE_RANK is 0xFFFF
_EUI64 = r"^[0-9a-f]{2}(:[0-9a-f]{2}){7}$"  # the form `str(Eui64)` writes


class TopologyNodeIn(BaseModel):
    """One DODAG node as its root sees it (docs/mesh.md "Topology reports")."""

    model_config = {"extra": "forbid"}

    eui64: str = Field(pattern=_EUI64, description="the node's 802.15.4 extended address")
    role: Literal["concentrator", "meter"] = "meter"
    address: IPv6Address | None = Field(None, description="its global address in the DODAG")
    meter_id: Text | None = Field(None, min_length=1, max_length=MAX_ID)
    rank: int | None = Field(None, ge=0, le=RPL_RANK_MAX, description="RPL rank; none: unjoined")
    parent: str | None = Field(None, pattern=_EUI64, description="preferred parent's EUI-64")
    hops: int | None = Field(None, ge=0, le=MAX_TOPOLOGY_NODES)
    etx: float | None = Field(None, ge=0, le=1024, description="link ETX to the parent")
    link_quality: int | None = Field(None, ge=0, le=255, description="LQI of the parent link")
    joined: bool = Field(False, description="in the DODAG (has a preferred parent or is root)")
    authenticated: bool = Field(False, description="PANA authenticated (network access)")


class TopologyIn(BaseModel):
    model_config = {"extra": "forbid"}

    nodes: list[TopologyNodeIn] = Field(max_length=MAX_TOPOLOGY_NODES)

    @model_validator(mode="after")
    def _one_tree(self) -> Self:
        euis = {n.eui64 for n in self.nodes}
        if len(euis) != len(self.nodes):
            raise ValueError("an EUI-64 appears twice")
        for n in self.nodes:
            if n.parent is not None and (n.parent not in euis or n.parent == n.eui64):
                raise ValueError(f"{n.eui64}: parent {n.parent} is not another reported node")
        return self


class TopologyOut(BaseModel):
    concentrator: str
    nodes: int
    reported_at: float


class CommandIn(BaseModel):
    meter_id: Text = Field(min_length=1, max_length=MAX_ID)
    kind: CommandKind
    params: dict[str, Any] = Field(
        default_factory=dict,
        description='demand_response: {"limit_w": W} or {"curtail_s": S}; others: {}',
    )


class CommandOut(BaseModel):
    id: int
    meter_id: str
    kind: CommandKind
    params: dict[str, Any]
    state: CommandState
    created_at: float
    updated_at: float
    confirmation: str | None
    relay_state: str | None
    reason: str | None


def _command_out(cmd: Command) -> CommandOut:
    params = json.loads(cmd.params) if cmd.params else {}
    return CommandOut(
        id=cmd.id,
        meter_id=cmd.meter_id,
        kind=cmd.kind,
        params=params if isinstance(params, dict) else {},
        state=cmd.state,
        created_at=cmd.created_at,
        updated_at=cmd.updated_at,
        confirmation=cmd.confirmation,
        relay_state=cmd.relay_state,
        reason=cmd.reason,
    )


class MeterPage(BaseModel):
    items: list[Meter]
    next_after: str | None


class ReadingOut(BaseModel):
    meter_id: str
    interval_start: int
    interval_start_iso: str
    length_min: int
    forward_wh: int
    reverse_wh: int
    status: int
    vee_flags: int
    received_at: float
    key_id: int


class ReadingCursor(BaseModel):
    after_start: int
    after_length: int


class ReadingPage(BaseModel):
    items: list[ReadingOut]
    next_after: ReadingCursor | None


class CommandPage(BaseModel):
    items: list[CommandOut]
    next_after: int | None


class EventPage(BaseModel):
    items: list[StoredEvent]
    next_after: int | None


class AlarmPage(BaseModel):
    items: list[Alarm]
    next_after: int | None


class GapOut(BaseModel):
    length_min: int
    start: int
    end: int


class VeeOut(BaseModel):
    gaps: list[GapOut]
    findings: int
    flagged: int


class EventLogKeyOut(BaseModel):
    meter_id: str
    key_id: str  # hex SHA-256 of the DER SPKI (what the signed heads carry)
    public_key_pem: str


class EventLogHeadOut(BaseModel):
    meter_id: str
    mode: str
    size: int
    root: str
    time: str
    key_id: str
    head: str  # the H/P line as in the export file
    accepted_at: float


class VerdictOut(BaseModel):
    ok: bool
    reason: str
    detail: str
    line: int
    meter_id: str | None
    entries: int
    heads: int
    signed_size: int | None
    unsigned_tail: int
    stored: int  # events new to the head-end from this upload


def _verdict_out(v: Verdict, stored: int) -> VerdictOut:
    return VerdictOut(
        ok=v.ok,
        reason=v.reason.value,
        detail=v.detail,
        line=v.line,
        meter_id=v.meter_id,
        entries=v.entries,
        heads=v.heads,
        signed_size=None if v.last_head is None else v.last_head.size,
        unsigned_tail=v.unsigned_tail,
        stored=stored,
    )


class ErrorOut(BaseModel):
    error: str
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut},
    401: {"model": ErrorOut, "description": "no credentials, or bad ones"},
    403: {"model": ErrorOut, "description": "no role of the caller grants the right"},
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    413: {"model": ErrorOut, "description": "the request body is too large"},
    422: {"model": ErrorOut, "description": "the request does not match the schema"},
}


class LoginIn(BaseModel):
    username: Text = Field(min_length=1, max_length=64)
    password: Text = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    token: str = Field(description="the bearer token; shown once, only its digest is stored")
    token_id: str
    user: str
    kind: str
    expires_at: float


class TokenIn(BaseModel):
    label: Text = Field("", max_length=64)
    ttl_s: float = Field(30 * 86400.0, gt=0, le=366 * 86400.0)


RoleName = Literal["VIEWER", "OPERATOR", "ENGINEER", "INSTALLER", "SECADM", "SECAUD", "RBACMNT"]


class UserIn(BaseModel):
    name: Text = Field(min_length=1, max_length=64)
    password: Text = Field(min_length=1, max_length=1024)
    roles: list[RoleName] = Field(min_length=1, max_length=7)


class RolesIn(BaseModel):
    roles: list[RoleName] = Field(min_length=1, max_length=7)


class UserOut(BaseModel):
    name: str
    roles: list[str]
    disabled: bool
    locked_until: float


def _user_out(user: User) -> UserOut:
    return UserOut(
        name=user.name,
        roles=role_names(user.roles),
        disabled=user.disabled,
        locked_until=user.locked_until,
    )


class WhoAmI(BaseModel):
    user: str
    roles: list[str]
    rights: list[str]
    via: str


class AuditEntryOut(BaseModel):
    seq: int
    at: str
    who: str
    via: str
    action: str
    target: str
    outcome: str
    detail: Any
    source: str = Field(description="the client's address")


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_after: int | None


class EventLogResetIn(BaseModel):
    reason: Text = Field(min_length=1, max_length=500, description="why (kept in the audit trail)")


class RetiredHeadOut(BaseModel):
    size: int
    head: str
    accepted_at: float


class HeadResetOut(BaseModel):
    meter_id: str
    retired_head: str | None
    retired_size: int | None


PUBLIC_ROUTES = frozenset({("POST", "/auth/login")}) | DASHBOARD_PUBLIC
_EVENTLOG_UPLOAD = re.compile(r"/meters/[^/]+/eventlog")
_TOPOLOGY_REPORT = re.compile(r"/concentrators/[^/]+/topology")
_STATUS_CODES = {
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
    429: "too_many_requests",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Asgi = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def _error(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    # backslashreplace: a detail quoting hostile input must still encode (lone surrogates)
    safe = detail.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse(
        status_code=status, content={"error": code, "detail": safe}, headers=headers
    )


class BodyLimit:
    """ASGI middleware: refuse a body over its route's limit (413) before it is read, by the
    declared Content-Length or, for a chunked body, as soon as the limit is passed."""

    def __init__(self, app: Asgi, limit_for: Callable[[str, str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            too_large = _error(413, "too_large", f"the body is larger than {limit} bytes")
            await too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise StarletteHTTPException(413, f"the body is larger than {limit} bytes")
            return message

        await self.app(scope, limited, send)


def _attachment_name(meter_id: str) -> str:
    """A Content-Disposition value that no meter id can add parameters to (RFC 6266: an ASCII
    token-safe fallback and the exact name as RFC 8187 `filename*`)."""
    from urllib.parse import quote

    name = f"{meter_id}-readings.csv"
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    exact = quote(name.encode("utf-8", "backslashreplace"), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


def _time_range(start: int, end: int) -> None:
    if end <= start:
        raise HeadendError("invalid", "end must be after start")


def _required_right(route: APIRoute) -> tuple[bool, Right | None]:
    """(declares one?, the right) from the route's access dependency."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if dep.call is not None and hasattr(dep.call, "required_right"):
            right: Right | None = dep.call.required_right
            return True, right
        stack.extend(dep.dependencies)
    return False, None


def create_app(
    repo: ReadingRepository,
    access: AccessControl,
    clock: Callable[[], float] = time.time,
    *,
    max_eventlog_bytes: int = MAX_EXPORT_BYTES,
    live: HeadEndView | None = None,
    key_admin: KeyAdminPort | None = None,
) -> FastAPI:
    intake = EventLogIntake(repo)
    app = FastAPI(
        title="amistack head-end",
        version="1",
        description="Meter registry, interval readings, commands, events and alarms. Every "
        "route but POST /auth/login needs credentials; `x-required-right` names the right.",
    )

    def limit_for(method: str, path: str) -> int:
        if method == "POST" and _EVENTLOG_UPLOAD.fullmatch(path):
            return max_eventlog_bytes
        if method == "POST" and _TOPOLOGY_REPORT.fullmatch(path):
            return MAX_TOPOLOGY_BODY
        return MAX_JSON_BODY

    app.add_middleware(BodyLimit, limit_for=limit_for)

    @app.exception_handler(HeadendError)
    async def _headend_error(request: Request, exc: HeadendError) -> JSONResponse:
        return _error(_STATUS.get(exc.code, 400), exc.code, exc.message)

    @app.exception_handler(AccessDenied)
    async def _denied(request: Request, exc: AccessDenied) -> Response:
        if request.url.path.startswith(f"{DASHBOARD}/"):
            return ui_denied(request, exc)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.code, exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return _error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}) or None)

    def need(right: Right | None) -> Any:
        return Depends(access.require(right))

    Reader = Annotated[Principal, need(Right.READ)]

    def before(who: Principal, action: str, target: str = "", **detail: Any) -> None:
        """The audit entry that must exist before `action` takes effect: if the trail cannot
        be written, nothing is done (503)."""
        try:
            access.record(who, action, target=target, outcome="requested", detail=detail)
        except Exception:
            log.exception("operator audit trail unavailable", extra={"action": action})
            raise HeadendError(
                "unavailable", "the audit trail is unavailable; nothing done"
            ) from None

    def audited(
        who: Principal, action: str, target: str, fn: Callable[[], Any], **detail: Any
    ) -> Any:
        """Audit-before-action: record the request, run it, record the outcome (`ok` or
        `refused: <code>`; best effort, as the action has happened or not by then)."""
        before(who, action, target, **detail)
        try:
            result = fn()
        except HeadendError as exc:
            access.try_record(
                who, action, target=target, outcome=f"refused: {exc.code}",
                detail={"reason": exc.message},
            )  # fmt: skip
            raise
        access.try_record(who, action, target=target, outcome="ok")
        return result

    def scoped(who: Principal, meter_id: str, request: Request) -> None:
        access.check_scope(who, meter_id, request)

    def undo_unless_audited(who: Principal, action: str, undo: Callable[[], Any], **f: Any) -> None:
        """For an action whose audit detail exists only once done (a new token's id): record
        it, and if that fails undo it and answer 503."""
        if not access.try_record(who, action, **f):
            undo()
            raise HeadendError("unavailable", "the audit trail is unavailable; nothing done")

    # -- login, tokens -------------------------------------------------------------------------

    def open_session(username: str, password: str, request: Request, response: Response) -> Any:
        """Log in (audited either way) and set the session cookie on `response`; raises
        LoginRefused. The API's POST /auth/login and the dashboard's login form both use it."""
        try:
            principal, issued = access.store.login(username, password, clock())
        except LoginRefused as exc:
            shown = username if re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", username) else "?"
            access.record(
                shown,
                "login",
                outcome="failed",
                detail={"reason": exc.message},
                source=client_address(request),
            )
            raise
        principal = dataclasses.replace(principal, source=client_address(request))
        undo_unless_audited(
            principal,
            "login",
            lambda: access.store.revoke_token(issued.token_id),
            detail={"token_id": issued.token_id},
        )
        response.set_cookie(
            SESSION_COOKIE,
            issued.token,
            max_age=int(issued.expires_at - clock()),
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="strict",
        )
        return issued

    def close_session(who: Principal, response: Response) -> None:
        before(who, "logout", token_id=who.token_id)
        if who.token_id and not who.token_id.startswith("cert:"):
            access.store.revoke_token(who.token_id)
        response.delete_cookie(SESSION_COOKIE)

    @app.post("/auth/login", response_model=TokenOut, responses=_ERRORS, tags=["auth"])
    def login(body: LoginIn, request: Request, response: Response) -> Any:
        """Open a login session: the answer's token (and the session cookie) authenticate
        later requests until it expires or POST /auth/logout."""
        try:
            issued = open_session(body.username, body.password, request, response)
        except LoginRefused as exc:
            if exc.retry_after:
                return _error(
                    429, "locked", exc.message, {"Retry-After": str(int(exc.retry_after) + 1)}
                )
            return _error(401, "login_failed", exc.message, {"WWW-Authenticate": "Bearer"})
        return TokenOut(**{k: getattr(issued, k) for k in TokenOut.model_fields})

    @app.post("/auth/logout", status_code=204, responses=_ERRORS, tags=["auth"])
    def logout(who: Annotated[Principal, need(None)], response: Response) -> Response:
        """End the session (revoke the token this request presented)."""
        close_session(who, response)
        response.status_code = 204
        return response

    @app.get("/auth/whoami", response_model=WhoAmI, responses=_ERRORS, tags=["auth"])
    def whoami(who: Annotated[Principal, need(None)]) -> WhoAmI:
        return WhoAmI(
            user=who.name,
            roles=role_names(who.roles),
            rights=sorted(r.value for r in who.rights),
            via=who.via,
        )

    @app.post(
        "/auth/tokens", status_code=201, response_model=TokenOut, responses=_ERRORS, tags=["auth"]
    )
    def new_token(body: TokenIn, who: Annotated[Principal, need(None)]) -> TokenOut:
        """A new API token for the caller (rotate: create one, then DELETE the old one)."""
        try:
            issued = access.store.issue_token(who.name, clock(), ttl_s=body.ttl_s, label=body.label)
        except AccessError as exc:
            access.try_record(who, "token.create", outcome=f"refused: {exc.code}")
            raise HeadendError(exc.code, exc.message) from None
        undo_unless_audited(
            who,
            "token.create",
            lambda: access.store.revoke_token(issued.token_id),
            detail={"token_id": issued.token_id, "label": body.label},
        )
        return TokenOut(**{k: getattr(issued, k) for k in TokenOut.model_fields})

    @app.delete("/auth/tokens/{token_id}", status_code=204, responses=_ERRORS, tags=["auth"])
    def revoke_token(
        token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")],
        who: Annotated[Principal, need(None)],
    ) -> Response:
        """Revoke one of the caller's tokens (any user's with the `users` right)."""
        owners = {t.user for t in access.store.list_tokens() if t.token_id == token_id}
        if not owners or (who.name not in owners and not who.may(Right.USERS)):
            raise HeadendError("not_found", f"no token {token_id} of yours")
        before(who, "token.revoke", ",".join(sorted(owners)), token_id=token_id)
        access.store.revoke_token(token_id)
        return Response(status_code=204)

    # -- users and roles (SECADM; role assignment also RBACMNT) --------------------------------

    def _access_call(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except AccessError as exc:
            raise HeadendError(exc.code, exc.message) from None

    @app.get("/users", response_model=list[UserOut], responses=_ERRORS, tags=["users"])
    def list_users(who: Annotated[Principal, need(Right.USERS)]) -> list[UserOut]:
        return [_user_out(u) for u in access.store.list_users()]

    @app.post("/users", status_code=201, response_model=UserOut, responses=_ERRORS, tags=["users"])
    def add_user(body: UserIn, who: Annotated[Principal, need(Right.USERS)]) -> UserOut:
        """Add a user with roles (assigning roles needs the `roles` right as well)."""
        if not who.may(Right.ROLES):
            raise AccessDenied(403, "forbidden", "'roles' is needed to assign roles")
        roles = frozenset(Role[r] for r in body.roles)
        user: User = audited(
            who,
            "user.add",
            body.name,
            lambda: _access_call(
                lambda: access.store.add_user(body.name, body.password, roles, clock())
            ),
            roles=role_names(roles),
        )
        return _user_out(user)

    @app.put("/users/{name}/roles", response_model=UserOut, responses=_ERRORS, tags=["users"])
    def set_roles(
        name: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")],
        body: RolesIn,
        who: Annotated[Principal, need(Right.ROLES)],
    ) -> UserOut:
        roles = frozenset(Role[r] for r in body.roles)
        audited(
            who,
            "user.roles",
            name,
            lambda: _access_call(lambda: access.store.set_roles(name, roles)),
            roles=role_names(roles),
        )
        user = access.store.get_user(name)
        assert user is not None  # set_roles raised otherwise
        return _user_out(user)

    @app.post("/users/{name}/disable", response_model=UserOut, responses=_ERRORS, tags=["users"])
    def disable_user(
        name: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")],
        who: Annotated[Principal, need(Right.USERS)],
    ) -> UserOut:
        """Disable a user: every token it holds is revoked at once."""
        revoked = audited(
            who,
            "user.disable",
            name,
            lambda: _access_call(lambda: access.store.set_disabled(name, True)),
        )
        access.try_record(who, "user.tokens.revoked", target=name, detail={"revoked": revoked})
        user = access.store.get_user(name)
        assert user is not None
        return _user_out(user)

    @app.post("/users/{name}/enable", response_model=UserOut, responses=_ERRORS, tags=["users"])
    def enable_user(
        name: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")],
        who: Annotated[Principal, need(Right.USERS)],
    ) -> UserOut:
        audited(
            who,
            "user.enable",
            name,
            lambda: _access_call(lambda: access.store.set_disabled(name, False)),
        )
        user = access.store.get_user(name)
        assert user is not None
        return _user_out(user)

    # -- meters --------------------------------------------------------------------------------

    @app.get("/meters", response_model=MeterPage, responses=_ERRORS, tags=["meters"])
    def list_meters(
        who: Reader,
        state: MeterState | None = None,
        concentrator: Annotated[Text | None, Query(max_length=MAX_ID)] = None,
        after: Annotated[
            Text | None, Query(max_length=MAX_ID, description="the previous page's next_after")
        ] = None,
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> MeterPage:
        items = repo.list_meters(state=state, concentrator=concentrator, after=after, limit=limit)
        return MeterPage(
            items=[m for m in items if who.covers(m.meter_id)],
            next_after=items[-1].meter_id if len(items) == limit else None,
        )

    @app.post("/meters", status_code=201, response_model=Meter, responses=_ERRORS, tags=["meters"])
    def register_meter(
        body: MeterIn, request: Request, who: Annotated[Principal, need(Right.REGISTER)]
    ) -> Meter:
        scoped(who, body.meter_id, request)
        result: Meter = audited(
            who,
            "meter.register",
            body.meter_id,
            lambda: repo.register_meter(
                body.meter_id,
                body.ap_title,
                body.concentrator,
                body.cell,
                clock(),
                eventlog_key=body.eventlog_key,
            ),
            ap_title=body.ap_title,
            concentrator=body.concentrator,
            eventlog_key=body.eventlog_key is not None,
        )
        return result

    @app.get("/meters/{meter_id}", response_model=Meter, responses=_ERRORS, tags=["meters"])
    def get_meter(meter_id: MeterId, who: Reader) -> Meter:
        meter = repo.get_meter(meter_id)
        if meter is None:
            raise HeadendError("not_found", f"no meter {meter_id!r}")
        return meter

    @app.post(
        "/meters/{meter_id}/commission", response_model=Meter, responses=_ERRORS, tags=["meters"]
    )
    def commission_meter(
        meter_id: MeterId, who: Annotated[Principal, need(Right.COMMISSION)]
    ) -> Meter:
        """Commission an installed meter, or re-commission a decommissioned one."""
        result: Meter = audited(
            who, "meter.commission", meter_id, lambda: repo.commission_meter(meter_id, clock())
        )
        return result

    @app.post(
        "/meters/{meter_id}/decommission",
        response_model=Meter,
        responses=_ERRORS,
        tags=["meters"],
    )
    def decommission_meter(
        meter_id: MeterId, who: Annotated[Principal, need(Right.COMMISSION)]
    ) -> Meter:
        """Stop collecting a meter (reversible: POST .../commission re-commissions it)."""
        result: Meter = audited(
            who, "meter.decommission", meter_id, lambda: repo.decommission_meter(meter_id, clock())
        )
        return result

    # -- event log -----------------------------------------------------------------------------

    async def _body(request: Request, limit: int) -> bytes:
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise HeadendError("too_large", f"the body is larger than {limit} bytes")
        return bytes(body)

    @app.put(
        "/meters/{meter_id}/eventlog-key",
        response_model=EventLogKeyOut,
        responses=_ERRORS,
        tags=["event log"],
        openapi_extra={
            "requestBody": {"content": {"application/x-pem-file": {}, "text/plain": {}}}
        },
    )
    async def put_eventlog_key(
        meter_id: MeterId, request: Request, who: Annotated[Principal, need(Right.SECURITY)]
    ) -> EventLogKeyOut:
        """Register or replace the meter's event-log public key (the PEM as the body). A
        replacement is audited with both fingerprints and raises an alarm; the accepted head
        stays, so uploads under the new key are refused until POST .../eventlog/head/reset."""
        pem = await _body(request, MAX_KEY_BODY)
        now = clock()

        def replace() -> str:
            old = repo.eventlog_key(meter_id)
            new = repo.set_eventlog_key(meter_id, pem, now)
            if old is not None and old[1] != new:
                repo.raise_alarm(
                    meter_id,
                    EVENTLOG_KEY_ALARM,
                    f"event-log key replaced by {who.name}: {old[1]} -> {new}",
                    now,
                )
            return old[1] if old is not None else ""

        old_id = await run_in_threadpool(
            lambda: audited(who, "eventlog.key.set", meter_id, replace)
        )
        out = await run_in_threadpool(get_eventlog_key, meter_id, who)
        await run_in_threadpool(
            access.try_record,
            who,
            "eventlog.key.fingerprints",
            target=meter_id,
            detail={"old": old_id or None, "new": out.key_id},
        )
        return out

    @app.get(
        "/meters/{meter_id}/eventlog-key",
        response_model=EventLogKeyOut,
        responses=_ERRORS,
        tags=["event log"],
    )
    def get_eventlog_key(meter_id: MeterId, who: Reader) -> EventLogKeyOut:
        key = repo.eventlog_key(meter_id)
        if key is None:
            raise HeadendError("not_found", f"no event-log key for meter {meter_id!r}")
        return EventLogKeyOut(meter_id=meter_id, key_id=key[1], public_key_pem=key[0])

    @app.post(
        "/meters/{meter_id}/eventlog",
        response_model=VerdictOut,
        responses={
            **_ERRORS,
            422: {"model": VerdictOut, "description": "the log does not hold (alarm raised)"},
        },
        tags=["event log"],
        openapi_extra={"requestBody": {"content": {"text/plain": {}}}},
    )
    async def upload_eventlog(
        meter_id: MeterId, request: Request, who: Annotated[Principal, need(Right.UPLOAD_LOG)]
    ) -> Any:
        """Upload a meter's exported event log (the `amistack log export` file as the body).
        Verified on arrival against the meter's key and the last accepted head: 200 and stored
        when it holds, 422 with the reason (and an alarm raised) when it does not."""
        body = await _body(request, max_eventlog_bytes)
        now = clock()
        await run_in_threadpool(before, who, "eventlog.upload", meter_id, octets=len(body))
        try:
            verdict, stored = await run_in_threadpool(intake.receive_counted, meter_id, body, now)
        except HeadendError as exc:
            await run_in_threadpool(
                access.try_record,
                who,
                "eventlog.upload",
                target=meter_id,
                outcome=f"refused: {exc.code}",
            )
            raise
        out = _verdict_out(verdict, stored if verdict.ok else 0)
        await run_in_threadpool(
            access.try_record,
            who,
            "eventlog.upload",
            target=meter_id,
            outcome="ok" if verdict.ok else f"refused: {verdict.reason.value}",
            detail={"stored": out.stored, "signed_size": out.signed_size},
        )
        if verdict.ok:
            return out
        return JSONResponse(status_code=422, content=out.model_dump())

    @app.post(
        "/concentrators/{concentrator}/topology",
        response_model=TopologyOut,
        responses=_ERRORS,
        tags=["mesh"],
    )
    def report_topology(
        concentrator: MeterId,
        body: TopologyIn,
        who: Annotated[Principal, need(Right.TOPOLOGY_REPORT)],
    ) -> TopologyOut:
        """A concentrator's DODAG as its root sees it (replacing its last report); the
        dashboard's mesh page draws it."""
        now = clock()
        nodes = json.dumps([n.model_dump(mode="json", exclude_none=True) for n in body.nodes])
        audited(
            who,
            "topology.report",
            concentrator,
            lambda: repo.put_topology(concentrator, nodes, now),
            nodes=len(body.nodes),
        )
        return TopologyOut(concentrator=concentrator, nodes=len(body.nodes), reported_at=now)

    @app.get(
        "/meters/{meter_id}/eventlog/head",
        response_model=EventLogHeadOut,
        responses=_ERRORS,
        tags=["event log"],
    )
    def eventlog_head(meter_id: MeterId, who: Reader) -> EventLogHeadOut:
        """The last signed head accepted from the meter: the next upload must extend it."""
        row = repo.eventlog_head(meter_id)
        if row is None:
            raise HeadendError("not_found", f"no event-log head accepted for {meter_id!r}")
        h = parse_head_line(row.head)
        return EventLogHeadOut(
            meter_id=row.meter_id,
            mode=row.mode,
            size=row.size,
            root=h.root.hex(),
            time=iso_ms(h.time_ms),
            key_id=h.key_id.hex(),
            head=row.head,
            accepted_at=row.accepted_at,
        )

    @app.get(
        "/meters/{meter_id}/eventlog/head/history",
        response_model=list[RetiredHeadOut],
        responses=_ERRORS,
        tags=["event log"],
    )
    def eventlog_head_history(meter_id: MeterId, who: Reader) -> list[RetiredHeadOut]:
        """The heads retired by resets, oldest first: a reset never erases what was accepted."""
        if repo.get_meter(meter_id) is None:
            raise HeadendError("not_found", f"no meter {meter_id!r}")
        return [
            RetiredHeadOut(size=h.size, head=h.head, accepted_at=h.accepted_at)
            for h in repo.eventlog_head_history(meter_id)
        ]

    @app.post(
        "/meters/{meter_id}/eventlog/head/reset",
        response_model=HeadResetOut,
        responses=_ERRORS,
        tags=["event log"],
    )
    def reset_eventlog_head(
        meter_id: MeterId,
        body: EventLogResetIn,
        who: Annotated[Principal, need(Right.SECURITY)],
    ) -> HeadResetOut:
        """Retire the meter's accepted head (kept in its history) so that the next upload is
        trusted on first use again: after a genuine key change (a new secure module)."""
        if repo.get_meter(meter_id) is None:
            raise HeadendError("not_found", f"no meter {meter_id!r}")
        old = audited(
            who,
            "eventlog.head.reset",
            meter_id,
            lambda: repo.reset_eventlog_head(meter_id, clock(), body.reason),
            reason=body.reason,
        )
        repo.raise_alarm(
            meter_id,
            EVENTLOG_KEY_ALARM,
            f"accepted event-log head reset by {who.name}: {body.reason}",
            clock(),
        )
        return HeadResetOut(
            meter_id=meter_id,
            retired_head=None if old is None else old.head,
            retired_size=None if old is None else old.size,
        )

    # -- readings ------------------------------------------------------------------------------

    @app.get(
        "/meters/{meter_id}/readings",
        response_model=ReadingPage,
        responses={
            **_ERRORS,
            200: {"content": {"text/csv": {}, "application/json": {}}},
        },
        tags=["readings"],
    )
    def readings(
        meter_id: MeterId,
        who: Reader,
        start: int = Query(description="epoch seconds, inclusive"),
        end: int = Query(description="epoch seconds, exclusive"),
        length: Literal[15, 30] | None = Query(None, description="interval length (minutes)"),
        after_start: int | None = None,
        after_length: int | None = None,
        limit: int = Query(1000, ge=1, le=MAX_PAGE),
        format: Literal["json", "csv", "json-export"] = Query(
            "json",
            description="json: one page; csv / json-export: the whole range, streamed",
        ),
    ) -> Any:
        _time_range(start, end)
        if repo.get_meter(meter_id) is None:
            raise HeadendError("not_found", f"no meter {meter_id!r}")
        if format != "json":
            rows = iter_readings(repo, meter_id, start, end, length)
            if format == "csv":
                return StreamingResponse(
                    csv_lines(rows),
                    media_type="text/csv",
                    headers={"Content-Disposition": _attachment_name(meter_id)},
                )
            return StreamingResponse(json_lines(rows), media_type="application/json")
        if (after_start is None) != (after_length is None):
            raise HeadendError("invalid", "after_start and after_length go together")
        after = None if after_start is None or after_length is None else (after_start, after_length)
        items = repo.readings(meter_id, start, end, length_min=length, after=after, limit=limit)
        cursor = None
        if len(items) == limit:
            cursor = ReadingCursor(
                after_start=items[-1].interval_start, after_length=items[-1].length_min
            )
        return ReadingPage(items=[ReadingOut(**reading_dict(r)) for r in items], next_after=cursor)

    @app.post("/meters/{meter_id}/vee", response_model=VeeOut, responses=_ERRORS, tags=["readings"])
    def vee(
        meter_id: MeterId,
        who: Annotated[Principal, need(Right.CONFIGURE)],
        start: int,
        end: int,
        spike_factor: float = Query(5.0, gt=1.0, le=1e6),
    ) -> VeeOut:
        """Validate a range: gaps reported, spikes and sum mismatches flagged (values kept)."""
        _time_range(start, end)
        if start % 1800:
            raise HeadendError("invalid", "start must be on a half-hour boundary")
        if end - start > 366 * 86400:
            raise HeadendError("invalid", "a VEE run covers at most a year")
        if repo.get_meter(meter_id) is None:
            raise HeadendError("not_found", f"no meter {meter_id!r}")
        report = audited(
            who,
            "vee.run",
            meter_id,
            lambda: run_vee(repo, meter_id, start, end, VeeConfig(spike_factor=spike_factor)),
            start=start,
            end=end,
        )
        return VeeOut(
            gaps=[GapOut(length_min=g.length_min, start=g.start, end=g.end) for g in report.gaps],
            findings=len(report.findings),
            flagged=report.flagged,
        )

    # -- commands ------------------------------------------------------------------------------

    @app.post(
        "/commands",
        status_code=201,
        response_model=CommandOut,
        responses=_ERRORS,
        tags=["commands"],
    )
    def create_command(
        body: CommandIn, request: Request, who: Annotated[Principal, need(Right.CONTROL)]
    ) -> CommandOut:
        """Queue a command; its parameters are checked for its kind before anything is queued."""
        return _command_out(queue_command(who, body.meter_id, body.kind, body.params, request))

    def queue_command(
        who: Principal, meter_id: str, kind: CommandKind, params: dict[str, Any], request: Request
    ) -> Command:
        """The one path a command takes into the queue (API and dashboard): in the caller's
        area of responsibility, audited."""
        scoped(who, meter_id, request)

        def create() -> Command:
            return repo.create_command(meter_id, kind, check_params(kind, params), clock())

        cmd: Command = audited(
            who, "command.create", meter_id, create, kind=kind.value, params=params
        )
        return cmd

    @app.get("/commands", response_model=CommandPage, responses=_ERRORS, tags=["commands"])
    def list_commands(
        who: Reader,
        meter_id: Annotated[Text | None, Query(max_length=MAX_ID)] = None,
        state: CommandState | None = None,
        after: int = Query(0, ge=0, le=2**62),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> CommandPage:
        items = repo.commands(meter_id=meter_id, state=state, after_id=after, limit=limit)
        return CommandPage(
            items=[_command_out(c) for c in items if who.covers(c.meter_id)],
            next_after=items[-1].id if len(items) == limit else None,
        )

    @app.get(
        "/commands/{command_id}", response_model=CommandOut, responses=_ERRORS, tags=["commands"]
    )
    def get_command(command_id: Annotated[int, Path(ge=0, le=2**62)], who: Reader) -> CommandOut:
        cmd = repo.get_command(command_id)
        if cmd is None:
            raise HeadendError("not_found", f"no command {command_id}")
        return _command_out(cmd)

    @app.post(
        "/commands/{command_id}/cancel",
        response_model=CommandOut,
        responses=_ERRORS,
        tags=["commands"],
    )
    def cancel_command(
        command_id: Annotated[int, Path(ge=0, le=2**62)],
        request: Request,
        who: Annotated[Principal, need(Right.CONTROL)],
    ) -> CommandOut:
        """Cancel a command that is still pending (409 once it was sent)."""
        known = repo.get_command(command_id)
        if known is not None:
            scoped(who, known.meter_id, request)
        cmd: Command = audited(
            who,
            "command.cancel",
            str(command_id),
            lambda: repo.update_command(
                command_id, CommandState.CANCELLED, clock(), reason=f"cancelled by {who.name}"
            ),
        )
        return _command_out(cmd)

    # -- events and alarms ---------------------------------------------------------------------

    @app.get("/events", response_model=EventPage, responses=_ERRORS, tags=["events"])
    def list_events(
        who: Reader,
        meter_id: Annotated[Text | None, Query(max_length=MAX_ID)] = None,
        after: int = Query(0, ge=0, le=2**62),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> EventPage:
        items = repo.events(meter_id=meter_id, after_id=after, limit=limit)
        return EventPage(
            items=[e for e in items if who.covers(e.meter_id)],
            next_after=items[-1].id if len(items) == limit else None,
        )

    @app.get("/alarms", response_model=AlarmPage, responses=_ERRORS, tags=["alarms"])
    def list_alarms(
        who: Reader,
        meter_id: Annotated[Text | None, Query(max_length=MAX_ID)] = None,
        unacknowledged: bool = False,
        after: int = Query(0, ge=0, le=2**62),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> AlarmPage:
        items = repo.alarms(
            meter_id=meter_id, unacknowledged=unacknowledged, after_id=after, limit=limit
        )
        return AlarmPage(
            items=[a for a in items if who.covers(a.meter_id or "*")],
            next_after=items[-1].id if len(items) == limit else None,
        )

    @app.post(
        "/alarms/{alarm_id}/acknowledge", response_model=Alarm, responses=_ERRORS, tags=["alarms"]
    )
    def acknowledge_alarm(
        alarm_id: Annotated[int, Path(ge=0, le=2**62)],
        request: Request,
        who: Annotated[Principal, need(Right.CONTROL)],
    ) -> Alarm:
        return acknowledge(who, alarm_id, request)

    def acknowledge(who: Principal, alarm_id: int, request: Request) -> Alarm:
        """The one path an acknowledgement takes (API and dashboard): in the caller's area of
        responsibility, audited."""
        found = repo.alarms(after_id=alarm_id - 1, limit=1) if alarm_id else []
        if found and found[0].id == alarm_id and found[0].meter_id is not None:
            scoped(who, found[0].meter_id, request)
        result: Alarm = audited(
            who,
            "alarm.acknowledge",
            str(alarm_id),
            lambda: repo.acknowledge_alarm(alarm_id, clock()),
        )
        return result

    # -- the operator audit trail --------------------------------------------------------------

    @app.get("/audit", response_model=AuditPage, responses=_ERRORS, tags=["audit"])
    def audit_entries(
        who: Annotated[Principal, need(Right.AUDIT)],
        after: int = Query(-1, ge=-1, le=2**62),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> AuditPage:
        items = access.audit.entries(after, limit)
        return AuditPage(
            items=[AuditEntryOut(**vars(e)) for e in items],
            next_after=items[-1].seq if len(items) == limit else None,
        )

    @app.get(
        "/audit/export",
        response_class=PlainTextResponse,
        responses={**_ERRORS, 200: {"content": {"text/plain": {}}}},
        tags=["audit"],
    )
    def audit_export(who: Annotated[Principal, need(Right.AUDIT)]) -> PlainTextResponse:
        """The trail as an event-log export file: `amistack log verify FILE --pubkey PEM`
        checks it (the key: GET /audit/public-key)."""
        return PlainTextResponse("".join(access.audit.export_lines()))

    @app.get(
        "/audit/public-key",
        response_class=PlainTextResponse,
        responses={**_ERRORS, 200: {"content": {"application/x-pem-file": {}}}},
        tags=["audit"],
    )
    def audit_key(who: Annotated[Principal, need(Right.AUDIT)]) -> PlainTextResponse:
        return PlainTextResponse(access.audit.public_key_pem().decode("ascii"))

    def signed_in(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        bearer = header[7:] if header[:7].lower() == "bearer " else None
        try:
            who = access.authenticate(request, bearer, request.cookies.get(SESSION_COOKIE))
        except AccessDenied:
            return False
        return who is not None

    def step_up(who: Principal, password: str, request: Request) -> None:
        """The dashboard's step-up before a SECADM action: the password again (audited when
        wrong; failures count towards the login lock-out)."""
        try:
            access.store.verify_password(who.name, password, clock())
        except LoginRefused as exc:
            access.try_record(who, "step_up", outcome="failed", detail={"reason": exc.message})
            raise

    def outcome(who: Principal, action: str, **fields: Any) -> bool:
        return access.try_record(who, action, **fields)

    add_dashboard(
        app,
        repo,
        clock,
        Hooks(
            need,
            queue_command,
            acknowledge,
            scoped,
            open_session,
            close_session,
            signed_in,
            step_up,
            before,
            outcome,
        ),
        audit_entries=access.audit.entries,
        audit_size=lambda: access.audit.size,
        live=live,
        key_admin=key_admin,
    )
    _declare_rights(app, access)
    return app


EVENTLOG_KEY_ALARM = "eventlog_key_changed"


def _declare_rights(app: FastAPI, access: AccessControl) -> None:
    """Every route declares its right (refused otherwise, at start-up) and the OpenAPI document
    says which (`x-required-right`) with the security schemes, mutual TLS included."""
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods or ():
            declared, right = _required_right(route)
            if (method, route.path) in PUBLIC_ROUTES:
                continue
            if not declared:
                raise RuntimeError(f"{method} {route.path} declares no right")
            access.route_rights[(method, route.path)] = right
            route.openapi_extra = {
                **(route.openapi_extra or {}),
                "x-required-right": right.value if right is not None else "authenticated",
            }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            doc.setdefault("components", {}).setdefault("securitySchemes", {})["mutualTLS"] = (
                MUTUAL_TLS_SCHEME
            )
            for ops in doc.get("paths", {}).values():
                for op in ops.values():
                    if isinstance(op, dict) and op.get("security"):
                        op["security"].append({"mutualTLS": []})
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
