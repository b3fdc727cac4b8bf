"""The technician's screen: a local web page served by the handheld process on loopback only
(`amistack handheld run --screen 127.0.0.1:PORT`), on the operator dashboard's stack (FastAPI,
Jinja2, server-sent events, htmx; the dashboard's static files, CSP, Origin check and form
reader are imported from `headend.dashboard.views`, not copied).

- Only the technician who logged in on this screen sees it: the login is the handheld's own
  (`HandheldDevice.login`: Argon2id, lock-out, the signed audit trail); the browser then holds a
  random session cookie (HttpOnly, SameSite=Strict) bound to that login. A logout, a login
  through the control socket or the device ending the technician ends it too.
- The page shows the work session's state, the DODAG root's route table and each meter's state
  (joined and its route, or not yet), live over SSE, and the actions the technician's roles
  allow (`handheld.OPERATION_RIGHT`): read (VIEWER, OPERATOR), disconnect/connect (OPERATOR),
  commission (INSTALLER). The server checks the role again (and the device a third time, and
  the head-end a fourth: it acts as the technician there), so a forged post is refused and
  audited as denied.
- The results table lists what the head-end answered, newest first, per meter: the operation
  (read, disconnect, ...), its result (readings and the newest, the command's state and the
  relay's read-back, or why it failed) and the time; live over SSE like the rest.
- The stream reads the route table without counting as a technician's action: an open page does
  not keep a work session from its idle timeout.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import ChoiceLoader, Environment, PackageLoader, PrefixLoader, select_autoescape
from starlette.middleware.trustedhost import TrustedHostMiddleware

from amistack.access import role_names
from amistack.access.http import AccessDenied
from amistack.handheld.session import OPERATION_RIGHT, Operation
from amistack.handheld.technician import TechnicianSession
from amistack.headend.dashboard.views import CSP, read_form, same_origin, sse_response
from amistack.headend.registry import HeadendError
from amistack.runtime.api_server import api_server
from amistack.runtime.handheld import HandheldDevice
from amistack.sim.handheld_area import AREA_PREFIX, area_meter_id, meter_eui

__all__ = ["COOKIE", "create_screen", "serve_screen"]

COOKIE = "amistack_handheld"
TICK_S = 0.5  # how often the stream looks for changes
ACTIONS = (Operation.READ, Operation.DISCONNECT, Operation.CONNECT, Operation.COMMISSION)
LABELS = {Operation.READ: "Read", Operation.DISCONNECT: "Disconnect",
          Operation.CONNECT: "Connect", Operation.COMMISSION: "Commission"}  # fmt: skip


def _env() -> Environment:
    env = Environment(
        loader=ChoiceLoader(
            [  # the screen's own, then the dashboard's as dashboard/...
                PackageLoader("amistack.runtime.handheld_screen", "templates"),
                PrefixLoader(
                    {"dashboard": PackageLoader("amistack.headend.dashboard", "templates")}
                ),
            ]
        ),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["outcome"] = outcome
    env.filters["clock"] = lambda t: time.strftime("%H:%M:%S", time.localtime(t))
    return env


def outcome(result: Any) -> str:
    """One line of the results table for what the head-end answered (runtime/handheld.py)."""
    if not isinstance(result, dict):
        return str(result)
    if "error" in result:
        return f"failed: {result['error']}"
    if "readings" in result:
        newest = result.get("newest")
        text = f"{result['readings']} readings"
        if isinstance(newest, dict) and "forward_wh" in newest:
            text += f", newest {newest['forward_wh']} Wh"
        return text
    if "state" in result:
        text = str(result["state"])
        if result.get("relay_state"):
            text += f", relay read back {result['relay_state']}"
        if result.get("reason"):
            text += f" ({result['reason']})"
        return text
    if result.get("commissioned"):
        return "commissioned"
    return json.dumps(result, sort_keys=True)


_ENV = _env()


class Screen:
    """The one browser session of the logged-in technician, and what the page shows."""

    def __init__(self, device: HandheldDevice) -> None:
        self.device = device
        self.token: str | None = None
        self.technician: TechnicianSession | None = None
        n = device.config.area.meters
        self.meters = {  # global address -> meter id, the isolated area's meters
            str(ipaddress.IPv6Address(AREA_PREFIX[:8] + meter_eui(i).interface_id())):
                area_meter_id(i)
            for i in range(1, n + 1)
        }  # fmt: skip
        self.meter_ids = frozenset(self.meters.values())

    def who(self, request: Request) -> TechnicianSession | None:
        """The technician this request's cookie stands for, while their login holds."""
        cookie = request.cookies.get(COOKIE, "")
        tech = self.technician
        if self.token is None or tech is None or self.device.technician is not tech:
            return None
        return tech if hmac.compare_digest(cookie.encode(), self.token.encode()) else None

    def need(self, request: Request) -> TechnicianSession:
        tech = self.who(request)
        if tech is None:
            raise AccessDenied(401, "not_logged_in", "log in on this handheld first")
        return tech

    def parts(self, tech: TechnicianSession) -> dict[str, str]:
        routes = self.device.route_table()
        status = self.device.status()
        meters = [
            {"address": a, "id": m, "route": routes.get(a)} for a, m in sorted(
                self.meters.items(), key=lambda am: am[1])
        ]  # fmt: skip
        ctx = {"status": status, "routes": routes, "meters": meters, "names": self.meters,
               "actions": self.actions(tech), "labels": LABELS,
               "results": self.device.results()}  # fmt: skip
        return {
            name: _ENV.get_template(f"_{name}.html").render(**ctx)
            for name in ("work", "routes", "meters", "results")
        }

    def actions(self, tech: TechnicianSession) -> list[Operation]:
        return [op for op in ACTIONS if tech.principal.may(OPERATION_RIGHT[op])]


def create_screen(device: HandheldDevice, hosts: Sequence[str]) -> FastAPI:
    """The screen's app for one handheld (all routes run on the handheld's loop), answering
    only requests naming one of `hosts` (a page of another site whose name was rebound to
    loopback names its own: refused)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))
    screen = Screen(device)
    app.state.screen = screen
    app.mount(
        "/static",
        StaticFiles(packages=[("amistack.headend.dashboard", "static")]),
        name="static",
    )

    def page(name: str, tech: TechnicianSession | None, status: int = 200,
             **ctx: Any) -> HTMLResponse:  # fmt: skip
        text = _ENV.get_template(name).render(
            who=None if tech is None else tech.principal,
            roles=[] if tech is None else role_names(tech.principal.roles),
            device=device.config.device_id,
            prefix="",
            stream=None if tech is None else "/stream",
            heading=f"Handheld {device.config.device_id}",
            **ctx,
        )
        return HTMLResponse(text, status_code=status, headers={"Content-Security-Policy": CSP})

    def alert(text: str, status: int) -> HTMLResponse:
        body = _ENV.get_template("_alert.html").render(text=text)
        return HTMLResponse(body, status_code=status, headers={"Content-Security-Policy": CSP})

    @app.exception_handler(AccessDenied)
    async def denied(request: Request, exc: AccessDenied) -> Response:
        if exc.status == 401 and request.method == "GET" and request.url.path != "/stream":
            return RedirectResponse("/login", status_code=303)
        return alert(f"Refused: {exc.detail}", exc.status)

    @app.exception_handler(HeadendError)
    async def bad_form(request: Request, exc: HeadendError) -> Response:
        return alert(f"Refused: {exc}", 400)

    @app.get("/")
    async def home(request: Request) -> Response:
        where = "/work" if screen.who(request) else "/login"
        return RedirectResponse(where, status_code=303)

    @app.get("/login")
    async def login_page(request: Request) -> Response:
        if screen.who(request):
            return RedirectResponse("/work", status_code=303)
        return page("dashboard/login.html", None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        same_origin(request)
        form = await read_form(request)
        user, password = form.get("username", "")[:64], form.get("password", "")[:1024]
        answer = device.login(user, password, time.time())
        if not answer["ok"]:
            status = 429 if answer.get("retry_after") else 409 if answer["error"] == "busy" else 401
            return page("dashboard/login.html", None, status=status, error=answer["detail"])
        screen.technician = device.technician
        screen.token = secrets.token_urlsafe(32)
        out = RedirectResponse("/work", status_code=303)
        out.set_cookie(COOKIE, screen.token, httponly=True, samesite="strict", path="/")
        return out

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        screen.need(request)
        same_origin(request)
        screen.token = screen.technician = None
        await device.handle({"op": "logout"})
        out = RedirectResponse("/login", status_code=303)
        out.delete_cookie(COOKIE, path="/")
        return out

    @app.get("/work")
    async def work(request: Request) -> Response:
        tech = screen.need(request)
        return page("work.html", tech, parts=screen.parts(tech))

    @app.post("/work/start")
    async def start(request: Request) -> Response:
        screen.need(request)
        same_origin(request)
        form = await read_form(request)
        answer = await device.handle({"op": "start", "work_order": form.get("work_order", "")})
        if not answer["ok"]:
            return alert(f"Not started: {answer.get('detail', answer['error'])}",
                         403 if answer["error"] == "forbidden" else 409)  # fmt: skip
        return alert(f"Work order {answer['work_order']} started", 200)

    @app.post("/work/stop")
    async def stop(request: Request) -> Response:
        screen.need(request)
        same_origin(request)
        answer = await device.handle({"op": "stop"})
        text = f"Ended: {answer['ended']}" if answer["ok"] else f"Not stopped: {answer['error']}"
        return alert(text, 200 if answer["ok"] else 409)

    @app.post("/meters/{meter}/{operation}")
    async def act(meter: str, operation: str, request: Request) -> Response:
        tech = screen.need(request)
        same_origin(request)
        try:
            op = Operation(operation)
        except ValueError:
            return alert(f"Refused: no operation {operation[:32]!r}", 404)
        if op not in ACTIONS or meter not in screen.meter_ids:
            return alert("Refused: no such meter or operation here", 404)
        if op not in screen.actions(tech):  # the device refuses it too; no work needed to see
            device.desk.record(tech, f"handheld.{op.value}", meter, "denied", time.time())
            return alert(f"Refused: your roles do not allow {op.value}", 403)
        req = {"op": "read", "meter": meter} if op is Operation.READ else {
            "op": "command", "kind": op.value, "meter": meter}  # fmt: skip
        answer = await device.handle(req)
        if not answer["ok"]:
            status = 403 if answer["error"] == "forbidden" else 409
            return alert(f"Refused: {answer.get('detail', answer['error'])}", status)
        body = _ENV.get_template("_result.html").render(meter=meter, op=op.value, answer=answer)
        return HTMLResponse(body, headers={"Content-Security-Policy": CSP})

    @app.get("/stream")
    async def stream(request: Request) -> Response:
        screen.need(request)

        async def signed_in() -> bool:
            return screen.who(request) is not None

        async def render() -> dict[str, str]:
            tech = screen.who(request)
            return {} if tech is None else screen.parts(tech)

        return sse_response(request, signed_in, render, TICK_S)

    return app


async def serve_screen(device: HandheldDevice, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve the screen on `sock` (`api_server.bind_api`, loopback: the caller checks) until
    `stop`."""
    host = sock.getsockname()[0]
    hosts = [host, f"[{host}]", "localhost"] if ":" in host else [host, "localhost"]
    server = api_server(create_screen(device, hosts), None)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        await stop.wait()
    finally:
        server.should_exit = True
        await task
