"""The dashboard's routes under /ui: HTML pages (Jinja2), their live parts over server-sent
events, and the few actions an operator takes from them.

Every route declares its right through the API's `need(...)` (create_app refuses one that
does not), so a page or an action is refused by the server whatever the page showed; buttons a
role may not use are not rendered. State-changing posts come from forms of this origin only
(`same_origin`: the Origin header, or the Referer without one, must be this server) on top of
the SameSite=Strict session cookie. Pages carry a Content-Security-Policy allowing scripts,
styles and connections to this origin only (inline styles too: cytoscape.js sets its own;
no inline script).

Live parts: a page names one stream (`data-sse`); the stream renders the page's fragments every
`TICK_S` and sends each one that changed as an SSE event of its name (`data-swap` elements take
it). A stream checks its credentials at every tick and ends once they no longer hold (logout,
revocation, expiry), and after `STREAM_S` anyway (the browser reconnects, authenticating
again).

SECADM actions (revoke a meter's credential, rotate its PSK) go to the key server's admin
endpoint through a `KeyAdminPort`: the head-end's own service certificate, which the key server
lets act on behalf of a named user of its own access store and nothing else (docs/dashboard.md
"SECADM actions"). The page asks for confirmation and the user's password again (step-up); the
confirmation form carries a one-time token bound to the user, meter and action.
"""

import asyncio
import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import escape
from starlette.concurrency import run_in_threadpool

from amistack.access import LoginRefused, Principal, Right, role_names
from amistack.access.http import AccessDenied
from amistack.headend.dashboard.fleet import (
    PROFILE_POINTS,
    SLOT_S,
    fleet_counts,
    fleet_page,
    load_profile,
)
from amistack.headend.registry import MAX_ID, HeadendError, MeterState
from amistack.headend.schema import Alarm, Command, CommandKind, CommandState
from amistack.headend.storage import MAX_PAGE, ReadingRepository

PREFIX = "/ui"
PUBLIC = frozenset({("GET", f"{PREFIX}/login"), ("POST", f"{PREFIX}/login")})
TICK_S = 1.0  # how often a stream looks for changes
STREAM_S = 60.0  # a stream's lifetime; EventSource reconnects (and authenticates again)
MAX_FORM = 4096  # octets: the dashboard's forms are a few fields
MESH_MAX_NODES = 5000
MESH_TABLE_ROWS = 200  # nodes per reported DODAG listed as text under the graph
MESH_TABLES = 20  # reported DODAGs listed so (choose a concentrator for another)
AUDIT_SHOWN = 200  # the audit page's newest entries
KEY_WINDOW_S = 86400.0  # key generations seen in the last day's readings
EXPIRING_S = 600.0  # a cached key generation ending within this is "expiring soon"
FLEET_COUNTS_S = 10.0  # the fleet's counts are at most this old (plus one computation)
CONFIRM_S = 300.0  # a SECADM confirmation form's token lives this long, and is used once
MAX_CONFIRMS = 1024  # confirmation tokens outstanding (the oldest is dropped past this)
KEY_ACTIONS_SHOWN = 20  # the Keys page's recent key-server actions
MAX_REASON = 200  # as the key server's (access.keyadmin)
KEY_OPS = {"revoke": "revoke", "rotate": "rotate_psk"}  # page action -> key server op
NO_DELEGATION = (
    "this head-end holds no delegation certificate for the key server "
    "(amistack headend --key-admin HOST:PORT; docs/dashboard.md)"
)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
COMMAND_LABELS = {
    CommandKind.DISCONNECT: "Disconnect",
    CommandKind.RECONNECT: "Connect",
    CommandKind.DEMAND_RESPONSE: "Demand response",
    CommandKind.TIME_SYNC: "Time sync",
    CommandKind.READ: "Read now",
}


class HeadEndView(Protocol):
    """What the running head-end engine can tell the dashboard beyond the database (optional:
    an API served over a bare repository has none)."""

    def key_generations(self, meter_id: str, now: float) -> list[tuple[str, float]]:
        """(key id text, not_after) of the C12.22 key generations cached for the meter."""
        ...

    def authenticated(self, now: float) -> int:
        """Meters with a key generation held now (the fleet page's `authenticated` count)."""
        ...

    def counters(self) -> dict[str, int]:
        """The engine's counters: refusals and drops by reason."""
        ...


class KeyAdminPort(Protocol):
    """The key server's admin endpoint as this head-end's delegator certificate reaches it
    (`runtime.keydist.KeyAdminClient`)."""

    @property
    def name(self) -> str:
        """The delegator certificate's CN."""
        ...

    async def delegate(self, request: dict[str, Any]) -> dict[str, Any]:
        """The key server's answer (`ok` false with `error` when refused or unreachable)."""
        ...


class Refreshed:
    """A value computed by `compute` and kept for `ttl` s of monotonic time; once older, the
    next `get` still answers the kept value at once and a thread computes the new one (only
    the very first `get` waits): the whole fleet's counts cost ~0.1-0.2 s at 100,000 meters,
    which no page request should pay. The refreshes run on one worker thread of its own."""

    def __init__(self, compute: Callable[[], dict[str, int]], ttl: float) -> None:
        self.compute = compute
        self.ttl = ttl
        self._value: dict[str, int] | None = None
        self._at = 0.0
        self._lock = threading.Lock()
        self._refreshing = False
        # one long-lived thread: the repository keeps a reader connection per thread
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="fleet-counts")

    def get(self) -> dict[str, int]:
        with self._lock:
            value, due = self._value, time.monotonic() - self._at > self.ttl
            start = value is not None and due and not self._refreshing
            self._refreshing |= start
        if value is None:
            return self._refresh()
        if start:
            self._worker.submit(self._refresh)
        return value

    def _refresh(self) -> dict[str, int]:
        try:
            value = self.compute()
            with self._lock:
                self._value, self._at = value, time.monotonic()
            return value
        finally:
            with self._lock:
                self._refreshing = False


@dataclass(frozen=True)
class Hooks:
    """What create_app lends the dashboard so that both take the same path."""

    need: Callable[[Right | None], Any]  # the access dependency for a right
    create_command: Callable[[Principal, str, CommandKind, dict[str, Any], Request], Command]
    acknowledge: Callable[[Principal, int, Request], Alarm]
    scoped: Callable[[Principal, str, Request], None]  # 403 outside the area of responsibility
    open_session: Callable[[str, str, Request, Response], Any]  # login; raises LoginRefused
    close_session: Callable[[Principal, Response], None]  # logout
    signed_in: Callable[[Request], bool]  # do the request's credentials still hold?
    step_up: Callable[[Principal, str, Request], None]  # the password again; raises LoginRefused
    before: Callable[..., None]  # (who, action, target, **detail) audited first, else 503
    outcome: Callable[..., bool]  # (who, action, target=, outcome=, detail=) audited after


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("amistack.headend.dashboard", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.globals["prefix"] = PREFIX
    return env


_ENV = _templates()


def same_origin(request: Request) -> None:
    """Refuse a state-changing request that another site's page made (CSRF): the browser's
    Origin (or, without it, the Referer) must be this server's own origin."""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin = request.headers.get("origin")
    if origin is None:
        referer = urlsplit(request.headers.get("referer", ""))
        origin = f"{referer.scheme}://{referer.netloc}" if referer.netloc else ""
    if origin != own:
        raise AccessDenied(403, "cross_site", "a form of this dashboard must make this request")


async def read_form(request: Request) -> dict[str, str]:
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_FORM:
            raise HeadendError("too_large", f"the form is larger than {MAX_FORM} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=16, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise HeadendError("invalid", "the form is not URL-encoded UTF-8") from None
    return {k: v[0] for k, v in fields.items()}


def sse_event(name: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n".encode()


def sse_response(
    request: Request,
    signed_in: Callable[[], Awaitable[bool]],
    render: Callable[[], Awaitable[Mapping[str, str]]],
    tick: float = TICK_S,
) -> Response:
    """A page's live parts as server-sent events: every `tick` the parts are rendered and each
    one that changed is sent as an event of its name, until the credentials no longer hold
    (`signed_in`: logout, revocation, expiry), the browser leaves, or `STREAM_S` passes. The
    query's `seen` is the digest of the parts the page was loaded with (nothing to resend)."""

    async def events() -> AsyncIterator[bytes]:
        sent: dict[str, str] = {}
        until = time.monotonic() + STREAM_S
        seen = request.query_params.get("seen")
        yield b"retry: 2000\n\n"
        while time.monotonic() < until:
            if not await signed_in():
                return  # logged out, revoked or expired since the stream began
            parts = await render()
            if seen is not None and _digest(parts) == seen:
                sent = dict(parts)  # the page as loaded: nothing to swap yet
            seen = None
            for name, text in parts.items():
                if sent.get(name) != text:
                    sent[name] = text
                    yield sse_event(name, text)
            if await request.is_disconnected():
                return
            await asyncio.sleep(tick)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


def ui_denied(request: Request, exc: AccessDenied) -> Response:
    """A refusal on a /ui route: a page asks to log in; the rest get a short HTML answer."""
    page = not request.url.path.endswith(("/stream", "/graph"))
    if exc.status == 401 and request.method == "GET" and page:
        return RedirectResponse(f"{PREFIX}/login", status_code=303)
    headers = {"Content-Security-Policy": CSP}
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    text = f'<p class="refused" role="alert">Refused: {_escape(exc.detail)}</p>'
    if request.method == "GET" and page:  # a whole page, with a way out (log out)
        text = _ENV.get_template("refused.html").render(message=f"Refused: {exc.detail}")
    return HTMLResponse(text, status_code=exc.status, headers=headers)


def _escape(text: str) -> str:
    return str(escape(text))


def add_dashboard(
    app: FastAPI,
    repo: ReadingRepository,
    clock: Callable[[], float],
    hooks: Hooks,
    *,
    audit_entries: Callable[[int, int], list[Any]],
    audit_size: Callable[[], int],
    live: HeadEndView | None = None,
    key_admin: KeyAdminPort | None = None,
) -> None:
    env = _ENV
    need = hooks.need
    Reader = Annotated[Principal, need(Right.READ)]
    Controller = Annotated[Principal, need(Right.CONTROL)]
    Auditor = Annotated[Principal, need(Right.AUDIT)]
    MeterId = Annotated[str, Path(min_length=1, max_length=MAX_ID)]
    ui: dict[str, Any] = {"include_in_schema": False}
    app.mount(
        f"{PREFIX}/static",
        StaticFiles(packages=[("amistack.headend.dashboard", "static")]),
        name="dashboard-static",
    )

    def page(name: str, who: Principal | None, status: int = 200, **ctx: Any) -> HTMLResponse:
        if "stream" in ctx and "parts" in ctx:  # the stream need not resend what this shows
            sep = "&" if "?" in ctx["stream"] else "?"
            ctx["stream"] += f"{sep}seen={_digest(ctx['parts'])}"
        text = env.get_template(name).render(
            who=who,
            roles=role_names(who.roles) if who else [],
            may_control=who is not None and who.may(Right.CONTROL),
            may_audit=who is not None and who.may(Right.AUDIT),
            **ctx,
        )
        return HTMLResponse(text, status_code=status, headers={"Content-Security-Policy": CSP})

    def fragment(name: str, who: Principal, **ctx: Any) -> str:
        return env.get_template(name).render(
            who=who, may_control=who.may(Right.CONTROL), may_audit=who.may(Right.AUDIT), **ctx
        )

    def stream(request: Request, render: Callable[[], Mapping[str, str]]) -> Response:
        return sse_response(
            request,
            lambda: run_in_threadpool(hooks.signed_in, request),
            lambda: run_in_threadpool(render),
        )

    # -- login, logout -------------------------------------------------------------------------

    @app.get(f"{PREFIX}/login", response_class=HTMLResponse, **ui)
    def login_page() -> HTMLResponse:
        return page("login.html", None)

    @app.post(f"{PREFIX}/login", **ui)
    async def login_form(request: Request) -> Response:
        same_origin(request)
        form = await read_form(request)
        answer = RedirectResponse(f"{PREFIX}/fleet", status_code=303)
        try:
            await run_in_threadpool(
                hooks.open_session,
                form.get("username", "")[:64],
                form.get("password", "")[:1024],
                request,
                answer,
            )
        except LoginRefused as exc:
            status = 429 if exc.retry_after else 401
            return page("login.html", None, status=status, error=exc.message)
        return answer

    @app.post(f"{PREFIX}/logout", **ui)
    async def logout_form(request: Request, who: Annotated[Principal, need(None)]) -> Response:
        same_origin(request)
        answer = RedirectResponse(f"{PREFIX}/login", status_code=303)
        await run_in_threadpool(hooks.close_session, who, answer)
        return answer

    @app.get(f"{PREFIX}/", **ui)
    def home(who: Reader) -> Response:
        return RedirectResponse(f"{PREFIX}/fleet", status_code=303)

    # -- fleet ---------------------------------------------------------------------------------

    counts = Refreshed(
        lambda: fleet_counts(repo, clock(), None if live is None else live.authenticated(clock())),
        FLEET_COUNTS_S,
    )

    def fleet_parts(who: Principal, q: str, state: MeterState | None, after: str) -> dict[str, str]:
        fp = fleet_page(repo, clock(), text=q, state=state, after=after, covers=who.covers)
        return {
            "fleet": fragment(
                "_fleet.html", who, fp=fp, counts=counts.get(), q=q, state=state, after=after
            )
        }

    FleetQ = Annotated[str, Query(max_length=MAX_ID)]

    @app.get(f"{PREFIX}/fleet", response_class=HTMLResponse, **ui)
    def fleet(
        request: Request,
        who: Reader,
        q: FleetQ = "",
        state: MeterState | None = None,
        after: FleetQ = "",
    ) -> HTMLResponse:
        parts = fleet_parts(who, q, state, after)
        return page(
            "fleet.html",
            who,
            parts=parts,
            q=q,
            state=state,
            states=list(MeterState),
            stream=f"{PREFIX}/fleet/stream?{request.url.query}",
        )

    @app.get(f"{PREFIX}/fleet/stream", **ui)
    def fleet_stream(
        request: Request,
        who: Reader,
        q: FleetQ = "",
        state: MeterState | None = None,
        after: FleetQ = "",
    ) -> Response:
        return stream(request, lambda: fleet_parts(who, q, state, after))

    # -- one meter -----------------------------------------------------------------------------

    def meter_parts(who: Principal, meter_id: str) -> dict[str, str]:
        meter = repo.get_meter(meter_id)
        if meter is None:
            raise HeadendError("not_found", f"no meter {meter_id!r}")
        now = clock()
        last = repo.latest_readings([meter_id]).get(meter_id)
        profile: tuple[list[int], list[float | None], list[float | None]] = ([], [], [])
        if last is not None:
            end = last.interval_start + last.length_min * 60
            rows = repo.readings(
                meter_id, end - PROFILE_POINTS * 15 * 60, end, limit=2 * PROFILE_POINTS
            )
            profile = load_profile(rows)
        head = repo.eventlog_head(meter_id)
        events = repo.recent_events(meter_id=meter_id, limit=50)
        alarms = repo.recent_alarms(meter_id=meter_id, limit=20)
        recent = repo.recent_commands(meter_id, limit=100)
        commands = recent[:10]
        registers = _last_read(recent)
        keys = repo.key_ids_seen([meter_id], now - KEY_WINDOW_S)
        cached = live.key_generations(meter_id, now) if live is not None else None
        gaps = sum(1 for v in profile[1] if v is None)
        ctx = {
            "meter": meter,
            "last": last,
            "relay": repo.relay_states([meter_id]).get(meter_id),
            "head": head,
            "events": events,
            "alarms": alarms,
            "commands": commands,
            "keys": keys,
            "cached": cached,
            "now": now,
            "gaps": gaps,
            "points": len(profile[0]),
            "registers": registers,
        }
        return {
            "status": fragment("_meter_status.html", who, **ctx),
            "commands": fragment("_meter_commands.html", who, **ctx),
            "eventlog": fragment("_meter_eventlog.html", who, **ctx),
            "keys": fragment("_meter_keys.html", who, **ctx),
            "chart": json.dumps(profile, separators=(",", ":")),
        }

    @app.get(f"{PREFIX}/meters/{{meter_id}}", response_class=HTMLResponse, **ui)
    def meter_page(meter_id: MeterId, request: Request, who: Reader) -> HTMLResponse:
        hooks.scoped(who, meter_id, request)
        try:
            parts = meter_parts(who, meter_id)
        except HeadendError as exc:
            return page("error.html", who, status=404, message=exc.message)
        return page(
            "meter.html",
            who,
            meter_id=meter_id,
            parts=parts,
            kinds=COMMAND_LABELS,
            stream=f"{PREFIX}/meters/{_quote(meter_id)}/stream",
        )

    @app.get(f"{PREFIX}/meters/{{meter_id}}/stream", **ui)
    def meter_stream(request: Request, meter_id: MeterId, who: Reader) -> Response:
        hooks.scoped(who, meter_id, request)
        if repo.get_meter(meter_id) is None:
            raise HeadendError("not_found", f"no meter {meter_id!r}")
        return stream(request, lambda: meter_parts(who, meter_id))

    @app.post(f"{PREFIX}/meters/{{meter_id}}/commands", response_class=HTMLResponse, **ui)
    async def meter_command(meter_id: MeterId, request: Request, who: Controller) -> Response:
        """Queue a command from the meter page; its progress shows in the live command list."""
        same_origin(request)
        form = await read_form(request)
        try:
            kind = CommandKind(form.get("kind", ""))
            params: dict[str, Any] = {}
            if kind is CommandKind.DEMAND_RESPONSE:
                params = {"limit_w": int(form.get("limit_w", ""))}
            cmd = await run_in_threadpool(
                hooks.create_command, who, meter_id, kind, params, request
            )
        except ValueError:
            return HTMLResponse(
                _alert("give a command and, for demand response, a limit in W"), 400
            )
        except HeadendError as exc:
            return HTMLResponse(_alert(exc.message), 409 if exc.code != "invalid" else 400)
        text = f"{COMMAND_LABELS[kind]} queued as command {cmd.id}: progress below."
        return HTMLResponse(f'<p role="status">{_escape(text)}</p>')

    # -- events and alarms ---------------------------------------------------------------------

    def event_parts(who: Principal, meter: str, kind: str, open_only: bool) -> dict[str, str]:
        alarms = repo.recent_alarms(
            meter_id=meter or None, unacknowledged=open_only, limit=MAX_PAGE
        )
        events = repo.recent_events(meter_id=meter or None, limit=MAX_PAGE)
        alarms = [a for a in alarms if kind in a.kind and who.covers(a.meter_id or "*")][:100]
        events = [e for e in events if kind in e.kind and who.covers(e.meter_id)][:100]
        return {
            "alarms": fragment("_alarms.html", who, alarms=alarms),
            "events": fragment("_events.html", who, events=events),
        }

    Filter = Annotated[str, Query(max_length=MAX_ID)]

    @app.get(f"{PREFIX}/events", response_class=HTMLResponse, **ui)
    def events_page(
        request: Request, who: Reader, meter: Filter = "", kind: Filter = "", open: bool = False
    ) -> HTMLResponse:
        return page(
            "events.html",
            who,
            parts=event_parts(who, meter, kind, open),
            meter=meter,
            kind=kind,
            open=open,
            stream=f"{PREFIX}/events/stream?{request.url.query}",
        )

    @app.get(f"{PREFIX}/events/stream", **ui)
    def events_stream(
        request: Request, who: Reader, meter: Filter = "", kind: Filter = "", open: bool = False
    ) -> Response:
        return stream(request, lambda: event_parts(who, meter, kind, open))

    @app.post(f"{PREFIX}/alarms/{{alarm_id}}/acknowledge", response_class=HTMLResponse, **ui)
    def acknowledge(
        alarm_id: Annotated[int, Path(ge=0, le=2**62)], request: Request, who: Controller
    ) -> Response:
        """Acknowledge an alarm (recorded in the operator audit trail as the API's is)."""
        same_origin(request)
        try:
            alarm = hooks.acknowledge(who, alarm_id, request)
        except HeadendError as exc:
            return HTMLResponse(_alert(exc.message), 404)
        return HTMLResponse(
            f'<span role="status">acknowledged {_escape(_when(alarm.acknowledged_at))} '
            f"by {_escape(who.name)}</span>"
        )

    # -- audit ---------------------------------------------------------------------------------

    def audit_parts(who: Principal) -> dict[str, str]:
        entries = audit_entries(audit_size() - AUDIT_SHOWN - 1, AUDIT_SHOWN)[::-1]
        return {"audit": fragment("_audit.html", who, entries=entries)}

    @app.get(f"{PREFIX}/audit", response_class=HTMLResponse, **ui)
    def audit_page(who: Auditor) -> HTMLResponse:
        return page("audit.html", who, parts=audit_parts(who), stream=f"{PREFIX}/audit/stream")

    @app.get(f"{PREFIX}/audit/stream", **ui)
    def audit_stream(request: Request, who: Auditor) -> Response:
        return stream(request, lambda: audit_parts(who))

    # -- mesh ----------------------------------------------------------------------------------

    def reported(concentrator: str) -> tuple[set[str], dict[str, tuple[float, list[Any]]]]:
        """(every concentrator that reported a DODAG, the reports loaded: the chosen one's, or
        in name order as many as fill MESH_MAX_NODES; never all of them at once)."""
        names = set(repo.topologies())
        loaded: dict[str, tuple[float, list[Any]]] = {}
        size = 0
        for name in sorted(names):
            if (concentrator and name != concentrator) or size >= MESH_MAX_NODES:
                continue
            stored = repo.topology(name)
            if stored is not None:
                loaded[name] = (stored[0], json.loads(stored[1]))
                size += len(loaded[name][1])
        return names, loaded

    def dodag_elements(
        who: Principal, name: str, nodes: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One reported DODAG as graph nodes and parent edges (node ids `root/eui64`); a meter
        id the caller's scope does not cover is not shown."""
        out_nodes: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        for n in nodes:
            meter_id = n.get("meter_id")
            if meter_id is not None and not who.covers(meter_id):
                meter_id = None
            nid = f"{name}/{n['eui64']}"
            root = n.get("role") == "concentrator"
            out_nodes.append(
                {
                    "id": nid,
                    "label": name if root else (meter_id or n["eui64"][-5:]),
                    "kind": "concentrator" if root else "node",
                    "concentrator": name,
                    "eui64": n["eui64"],
                    "meter_id": meter_id or "",
                    "address": n.get("address", ""),
                    "rank": n.get("rank"),
                    "hops": n.get("hops"),
                    "etx": n.get("etx"),
                    "lq": n.get("link_quality"),
                    "join": "joined" if n.get("joined") else "unjoined",
                    "auth": bool(n.get("authenticated")),
                }
            )
            if n.get("parent"):
                edges.append(
                    {
                        "id": f"p:{nid}",
                        "source": f"{name}/{n['parent']}",
                        "target": nid,
                        "etx": n.get("etx"),
                        "lq": n.get("link_quality"),
                    }
                )
        return out_nodes, edges

    def graph(who: Principal, concentrator: str) -> dict[str, Any]:
        """Per concentrator the DODAG it reported (rank, parent edges, link quality, join
        state) and, for a concentrator that reported nothing, the star topology the head-end
        knows (meter -> its registered concentrator)."""
        nodes: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        reporters, dodags = reported(concentrator)
        for name, (_at, reported_nodes) in dodags.items():
            more_nodes, more_edges = dodag_elements(who, name, reported_nodes)
            nodes += more_nodes[: MESH_MAX_NODES - len(nodes)]
            edges += more_edges
        room = MESH_MAX_NODES - len(nodes)
        listed = repo.list_meters(concentrator=concentrator or None, limit=max(1, room))
        meters = [m for m in listed if who.covers(m.meter_id) and m.concentrator not in reporters]
        meters = meters[:room]
        last = repo.latest_readings([m.meter_id for m in meters]) if len(meters) <= 500 else {}
        roots: set[str] = set()
        for m in meters:
            root = f"concentrator:{m.concentrator or '(none)'}"
            if root not in roots:
                roots.add(root)
                nodes.append(
                    {"id": root, "label": m.concentrator or "(none)", "kind": "concentrator"}
                )
            seen = last.get(m.meter_id)
            nodes.append(
                {
                    "id": m.meter_id,
                    "label": m.meter_id,
                    "kind": "meter",
                    "state": m.state.value,
                    "cell": m.cell,
                    "last": _when(seen.received_at) if seen else "-",
                }
            )
            edges.append({"id": f"e:{m.meter_id}", "source": root, "target": m.meter_id})
        ids = {n["id"] for n in nodes}
        edges = [e for e in edges if e["source"] in ids and e["target"] in ids]
        return {
            "nodes": nodes,
            "edges": edges,
            "dodag": bool(dodags),
            "truncated": len(nodes) >= MESH_MAX_NODES or len(listed) == max(1, room),
        }

    def dodag_tables(who: Principal, concentrator: str) -> list[dict[str, Any]]:
        """What the page lists under the graph: per reported DODAG its summary and its first
        MESH_TABLE_ROWS nodes with their parents (the graph's text equivalent)."""
        out = []
        for name, (at, reported_nodes) in list(reported(concentrator)[1].items())[:MESH_TABLES]:
            shown, _ = dodag_elements(who, name, reported_nodes)
            parents = {n["eui64"]: n.get("parent") or "" for n in reported_nodes}
            for n in shown:
                n["parent"] = parents[n["eui64"]]
            out.append(
                {
                    "name": name,
                    "reported": _when(at),
                    "total": len(shown),
                    "joined": sum(n["join"] == "joined" for n in shown),
                    "rows": shown[:MESH_TABLE_ROWS],
                }
            )
        return out

    @app.get(f"{PREFIX}/mesh", response_class=HTMLResponse, **ui)
    def mesh_page(who: Reader, concentrator: Filter = "") -> HTMLResponse:
        q = f"?concentrator={_quote(concentrator)}" if concentrator else ""
        return page(
            "mesh.html",
            who,
            concentrator=concentrator,
            dodags=dodag_tables(who, concentrator),
            graph_url=f"{PREFIX}/mesh/graph{q}",
            stream=f"{PREFIX}/mesh/stream{q}",
        )

    @app.get(f"{PREFIX}/mesh/graph", **ui)
    def mesh_graph(who: Reader, concentrator: Filter = "") -> JSONResponse:
        return JSONResponse(graph(who, concentrator))

    @app.get(f"{PREFIX}/mesh/stream", **ui)
    def mesh_stream(request: Request, who: Reader, concentrator: Filter = "") -> Response:
        def version() -> dict[str, str]:
            g = graph(who, concentrator)
            return {"graph": str(hash(json.dumps(g["nodes"], sort_keys=True)))}

        return stream(request, version)

    # -- keys and sessions ---------------------------------------------------------------------

    def key_parts(who: Principal, q: str, after: str) -> dict[str, str]:
        now = clock()
        found, total = repo.find_meters(text=q, after=after, limit=50)
        meters = [m for m in found if who.covers(m.meter_id)]
        ids = [m.meter_id for m in meters]
        seen = repo.key_ids_seen(ids, now - KEY_WINDOW_S)
        cached = {m: live.key_generations(m, now) for m in ids} if live is not None else None
        expiring = (
            sorted(
                (na - now, m, kid)
                for m, gens in cached.items()
                for kid, na in gens[:1]
                if na - now < EXPIRING_S
            )
            if cached is not None
            else None
        )
        keyed = {m for m, _, _, _, _ in seen}
        summary = {
            "meters": len(ids),
            "held": sum(1 for gens in cached.values() if gens) if cached is not None else None,
            "generations": len(seen),
            "reauth": len(seen) - len(keyed),  # each generation after a meter's first
        }
        return {
            "keys": fragment(
                "_keys.html",
                who,
                summary=summary,
                meters=meters,
                total=total,
                seen=seen,
                cached=cached,
                expiring=expiring,
                counters=sorted(live.counters().items()) if live is not None else None,
                now=now,
                next_after=found[-1].meter_id if len(found) == 50 else None,
                q=q,
                may_keys=who.may(Right.KEYS),
                delegation=None if key_admin is None else key_admin.name,
                no_delegation=NO_DELEGATION,
                actions=[a for a in key_actions if who.covers(a[3])],
            )
        }

    @app.get(f"{PREFIX}/keys", response_class=HTMLResponse, **ui)
    def keys_page(
        request: Request, who: Reader, q: Filter = "", after: Filter = ""
    ) -> HTMLResponse:
        return page(
            "keys.html",
            who,
            q=q,
            parts=key_parts(who, q, after),
            stream=f"{PREFIX}/keys/stream?{request.url.query}",
        )

    @app.get(f"{PREFIX}/keys/stream", **ui)
    def keys_stream(request: Request, who: Reader, q: Filter = "", after: Filter = "") -> Response:
        return stream(request, lambda: key_parts(who, q, after))

    # -- SECADM actions: revoke, rotate a PSK (through the key server, delegated) -------------

    KeyAdmin = Annotated[Principal, need(Right.KEYS)]
    Action = Annotated[Literal["revoke", "rotate"], Path()]
    confirms: OrderedDict[str, tuple[str, str, str, float]] = OrderedDict()
    confirming = threading.Lock()  # pages render in the thread pool, actions on the loop
    key_actions: deque[tuple[float, str, str, str, str]] = deque(maxlen=KEY_ACTIONS_SHOWN)

    def confirm_page(who: Principal, meter_id: str, action: str, **ctx: Any) -> HTMLResponse:
        now = clock()
        token = secrets.token_urlsafe(24)
        with confirming:
            while confirms and (
                len(confirms) >= MAX_CONFIRMS or next(iter(confirms.values()))[3] < now
            ):
                confirms.popitem(last=False)
            confirms[token] = (who.name, meter_id, action, now + CONFIRM_S)
        return page(
            "key_confirm.html",
            who,
            status=ctx.pop("status", 200),
            meter_id=meter_id,
            action=action,
            token=token,
            delegation=None if key_admin is None else key_admin.name,
            no_delegation=NO_DELEGATION,
            **ctx,
        )

    @app.get(f"{PREFIX}/keys/{{meter_id}}/{{action}}", response_class=HTMLResponse, **ui)
    def key_action_page(
        meter_id: MeterId, action: Action, request: Request, who: KeyAdmin
    ) -> HTMLResponse:
        """The confirmation form: what will happen, a reason (revoke), the password again."""
        hooks.scoped(who, meter_id, request)
        if repo.get_meter(meter_id) is None:
            return page("error.html", who, status=404, message=f"no meter {meter_id!r}")
        return confirm_page(who, meter_id, action)

    @app.post(f"{PREFIX}/keys/{{meter_id}}/{{action}}", response_class=HTMLResponse, **ui)
    async def key_action(
        meter_id: MeterId, action: Action, request: Request, who: KeyAdmin
    ) -> HTMLResponse:
        """A confirmed SECADM action: the one-time token of this user's confirmation form for
        this meter and action, the password again, then the key server, on this user's behalf
        (audited here and there, before and after)."""
        same_origin(request)
        form = await read_form(request)
        hooks.scoped(who, meter_id, request)
        op = KEY_OPS[action]
        if key_admin is None:
            return page("refused.html", who, status=409, message=f"Refused: {NO_DELEGATION}")
        with confirming:
            held = confirms.pop(form.get("confirm", ""), None)
        if held is None or held[:3] != (who.name, meter_id, action) or held[3] < clock():
            await run_in_threadpool(
                lambda: hooks.outcome(
                    who, f"keys.{op}", target=meter_id, outcome="refused: not_confirmed"
                )
            )
            return page(
                "refused.html", who, status=403,
                message="Refused: this confirmation expired or was already used; start again.",
            )  # fmt: skip
        reason = form.get("reason", "").strip() or "revoked by operator"
        if action == "revoke" and not (len(reason) <= MAX_REASON and reason.isprintable()):
            return confirm_page(
                who, meter_id, action, status=400, error=f"reason: 1..{MAX_REASON} characters"
            )
        try:
            await run_in_threadpool(hooks.step_up, who, form.get("password", "")[:1024], request)
        except LoginRefused as exc:
            return confirm_page(
                who, meter_id, action, status=401, error=f"password not confirmed: {exc.message}"
            )
        nonce = secrets.token_hex(16)
        detail = {"delegate": key_admin.name, "nonce": nonce}
        await run_in_threadpool(hooks.before, who, f"keys.{op}", meter_id, **detail)
        req: dict[str, Any] = {
            "op": op, "id": 1, "device": meter_id, "on_behalf": who.name, "at": clock(),
            "nonce": nonce, **({"reason": reason} if action == "revoke" else {}),
        }  # fmt: skip
        answer = await key_admin.delegate(req)
        ok = answer.get("ok") is True
        result = "ok" if ok else f"refused: {str(answer.get('error', 'error'))[:32]}"
        await run_in_threadpool(
            lambda: hooks.outcome(
                who, f"keys.{op}", target=meter_id, outcome=result,
                detail={} if ok else {"reason": str(answer.get("detail", ""))[:200]},
            )
        )  # fmt: skip
        key_actions.appendleft((clock(), who.name, op, meter_id, result))
        done = page(
            "key_done.html", who, status=200 if ok else 409, meter_id=meter_id, action=action,
            ok=ok, answer=answer, delegation=key_admin.name,
        )  # fmt: skip
        done.headers["Cache-Control"] = "no-store"  # a rotated PSK is shown once
        return done


def _last_read(commands: list[Command]) -> tuple[float, dict[str, Any]] | None:
    """(when, registers) of the newest confirmed on-demand read among commands, newest first."""
    for c in commands:
        if c.kind is CommandKind.READ and c.state is CommandState.CONFIRMED and c.confirmation:
            try:
                regs = json.loads(c.confirmation)
            except ValueError:
                continue
            if isinstance(regs, dict):
                return c.updated_at, regs
    return None


def _digest(parts: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _alert(text: str) -> str:
    return f'<p class="refused" role="alert">{_escape(text)}</p>'


def _quote(text: str) -> str:
    return quote(text, safe="")


__all__ = [
    "CSP",
    "PREFIX",
    "PUBLIC",
    "SLOT_S",
    "HeadEndView",
    "Hooks",
    "KeyAdminPort",
    "add_dashboard",
    "read_form",
    "same_origin",
    "sse_event",
    "sse_response",
    "ui_denied",
]
