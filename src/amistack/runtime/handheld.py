"""The handheld as a process: technician logins, work sessions over the secure channel, the
isolated mesh in-process, and a local control socket for the `amistack handheld` commands.

    amistack handheld login/start/meters/read/command/stop/logout  --(unix socket, JSON lines)-->
    HandheldDevice: TechnicianDesk (access.db + audit trail in DIR) and, while work runs,
        WorkSession <-> the isolated area (sim/handheld_area.py on the virtual clock, advanced
        with the loop's clock: radio frames between the meters' and the handheld's engines)
        WorkSession <-> ChannelPort <-> TLS 1.3 with the handheld's certificate <-> the gateway
        (runtime/handheld_gateway.py) <-> the real key server (and head-end) over UDP

The control socket is `DIR/handheld.sock`, 0600 in a 0700 directory: the handheld's own screen
and scripts on it. One technician is logged in at a time; every command but `login` and
`status` needs one, and operations are checked against their roles (`handheld.Operation`).
The handheld's data directory holds `access.db` (technicians' Argon2id hashes), `audit/` (the
signed operator audit trail) and `pki/` (its certificate and key, the CA): no meter credential,
key or reading is ever written there (the keys stay in the meters and the key server; results
live in the `WorkSession` and are dropped when it ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amistack.access.rights import role_names
from amistack.access.users import LoginRefused
from amistack.addr import Addr, TimerlessEngine
from amistack.crypto import RandomSource, system_random
from amistack.handheld.channel import ChannelError, FrameDecoder, Hello, Welcome, frame
from amistack.handheld.events import WorkEnded
from amistack.handheld.session import (
    OPERATION_RIGHT,
    WAN_ADDR,
    HandheldConfig,
    NotPermitted,
    Operation,
    WorkSession,
    WorkState,
)
from amistack.handheld.technician import TechnicianDesk, TechnicianSession
from amistack.mesh.node import radio_addr
from amistack.runtime.handheld_area import decode_radio, encode_radio
from amistack.runtime.keydist import TlsFiles, client_ssl_context
from amistack.sim.handheld_area import (
    AREA_PAN,
    AREA_PREFIX,
    AreaConfig,
    area_rpl,
    build_area,
    handheld_eui,
    mesh_pac_config,
    psk_peer,
)

__all__ = ["SOCKET_NAME", "ChannelPort", "DeviceConfig", "HandheldDevice", "control"]

log = logging.getLogger(__name__)

SOCKET_NAME = "handheld.sock"
MAX_REQUEST = 4096  # octets of one control line
TICK = 0.02  # s: the longest the isolated area's virtual clock lags the loop's


class ChannelPort(TimerlessEngine):
    """The area's node at `WAN_ADDR`: IPv6 packets from the handheld go into the channel,
    packets from the channel come out to the handheld (a driver adapter: no policy)."""

    def __init__(self, send: Callable[[bytes], None], handheld: Addr) -> None:
        self._send = send
        self._handheld = handheld
        self._in: list[bytes] = []

    def push(self, packet: bytes) -> None:
        self._in.append(packet)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self._send(data)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._in = [(p, self._handheld) for p in self._in], []
        return out


@dataclass(frozen=True)
class DeviceConfig:
    data_dir: Path
    device_id: str  # the handheld's PANA identity and certificate CN
    psk: bytes  # its own EAP-PSK credential (not a meter's)
    gateway: Addr
    server_name: str  # the gateway certificate's name or address
    area: AreaConfig  # the isolated area this process simulates
    idle_timeout: float = 900.0
    headend_api: str | None = None  # the head-end's REST API (https://... or loopback http)
    headend_token: str | None = None  # the handheld's bearer token there (never written)
    area_at: Addr | None = None  # the isolated area's process (None: simulated in this one)


@dataclass
class _Work:
    session: WorkSession
    field: _LocalArea | _RemoteArea
    writer: asyncio.StreamWriter
    reader_task: asyncio.Task[None]
    drive_task: asyncio.Task[None]
    t0: float


OnEvent = Callable[[Addr, object, float], None]


class _LocalArea:
    """The isolated area simulated in this process: the session is a node of its network."""

    def __init__(
        self, config: AreaConfig, session: WorkSession, send: Callable[[bytes], None],
        keyserver: Addr, headend: Addr | None, on_event: OnEvent,
    ) -> None:  # fmt: skip
        self.handheld = radio_addr(handheld_eui())
        self.port = ChannelPort(send, self.handheld)
        self.area = build_area(config, self.port, keyserver, start=0.0, headend=headend)
        self.area.net.on_event.append(on_event)
        self.area.attach(session)

    def wan_in(self, packets: list[bytes], now: float) -> None:
        for packet in packets:
            self.port.push(packet)
        self.area.net.run_until(now)
        self.area.net.service(WAN_ADDR)

    def kick(self, now: float) -> None:
        self.area.net.service(self.handheld)

    def advance(self, now: float) -> float | None:
        self.area.net.run_until(now)
        return self.area.net.clock.next_time()

    def flush(self, now: float) -> None:
        self.area.net.run_until(now + 0.05)  # the PTR crosses the area's WAN link

    def close(self) -> None:
        self.area.detach()


class _RemoteArea:
    """The isolated area in its own process (`amistack handheld area`): the session is driven
    here, its radio frames cross loopback UDP (runtime/handheld_area.py)."""

    def __init__(self, session: WorkSession, send: Callable[[bytes], None], on_event: OnEvent,
                 transport: asyncio.DatagramTransport) -> None:  # fmt: skip
        self.session = session
        self.send = send
        self.on_event = on_event
        self.transport = transport
        self.handheld = radio_addr(handheld_eui())

    def radio_in(self, data: bytes, now: float) -> None:
        got = decode_radio(data)
        if got is not None:
            self.session.receive_datagram(got[1], got[0], now)
            self.kick(now)

    def wan_in(self, packets: list[bytes], now: float) -> None:
        for packet in packets:
            self.session.receive_datagram(packet, WAN_ADDR, now)
        self.kick(now)

    def kick(self, now: float) -> None:
        for data, addr in self.session.datagrams_to_send(now):
            if addr == WAN_ADDR:
                self.send(data)
            elif not self.transport.is_closing():
                self.transport.sendto(encode_radio(addr, data))
        while (event := self.session.next_event()) is not None:
            self.on_event(self.handheld, event, now)

    def advance(self, now: float) -> float | None:
        when = self.session.get_timer()
        if when is not None and when <= now:
            self.session.handle_timer(now)
            self.kick(now)
            when = self.session.get_timer()
        return when

    def flush(self, now: float) -> None:
        self.kick(now)

    def close(self) -> None:
        self.transport.close()


class HandheldDevice:
    def __init__(
        self, config: DeviceConfig, desk: TechnicianDesk, rng: RandomSource = system_random
    ) -> None:
        self.config = config
        self.desk = desk
        self.rng = rng
        self.tls = TlsFiles.client(config.data_dir, config.device_id)
        self.technician: TechnicianSession | None = None
        self.work: _Work | None = None
        self.last_end: str | None = None
        self.ended_at: float | None = None

    # -- requests from the control socket ---------------------------------------------------

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        now = time.time()
        if op == "status":
            return self.status()
        if op == "login":
            return self.login(str(req.get("user", "")), str(req.get("password", "")), now)
        tech = self.technician
        if tech is None:
            return {"ok": False, "error": "not-logged-in"}
        if op == "logout":
            await self.stop_work("logout")
            self.desk.logout(tech, now)
            self.technician = None
            return {"ok": True}
        if op == "start":
            return await self.start_work(str(req.get("work_order", "")))
        if op == "stop":
            if self.work is None:
                return {"ok": False, "error": "no-work-session"}
            await self.stop_work("stopped by the technician")
            return {"ok": True, "ended": self.last_end}
        work = self.work
        if work is None:
            return {"ok": False, "error": "no-work-session"}
        vnow = self._vnow(work)
        if op == "meters":
            return await self._checked(
                work, tech, Operation.VIEW, "", vnow, lambda: self._view(work, vnow)
            )
        if op in ("read", "command"):
            kind = "read" if op == "read" else str(req.get("kind", ""))
            try:
                operation = Operation(kind)
            except ValueError:
                return {
                    "ok": False,
                    "error": "bad-request",
                    "detail": f"unknown operation {kind!r}",
                }
            meter = str(req.get("meter", ""))
            return await self._checked(
                work, tech, operation, meter, vnow, lambda: self._head_end(work, operation, meter)
            )
        return {"ok": False, "error": "unknown-op"}

    async def _checked(
        self, work: _Work, tech: TechnicianSession, op: Operation, target: str, vnow: float,
        then: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:  # fmt: skip
        try:
            work.session.authorize(op, vnow)
        except NotPermitted as exc:
            self.desk.record(tech, f"handheld.{op.value}", target, "denied", time.time())
            return {"ok": False, "error": "forbidden", "detail": str(exc)}
        if op is not Operation.VIEW:
            self.desk.record(tech, f"handheld.{op.value}", target, "ok", time.time())
        return {"ok": True, **await then()}

    async def _view(self, work: _Work, vnow: float) -> dict[str, Any]:
        return work.session.view(vnow)

    async def _head_end(self, work: _Work, op: Operation, meter: str) -> dict[str, Any]:
        """Claim 3's acquisition: the head-end executes the operation over C12.22 (through this
        handheld's channel and DODAG) and answers; the answer is kept for the display."""
        cfg = self.config
        if cfg.headend_api is None or cfg.headend_token is None:
            return {"executed": False, "operation": op.value,
                    "detail": "no head-end API configured (--headend-api)"}  # fmt: skip
        import httpx  # only a handheld that talks to a head-end loads it

        from amistack.access.http import TECHNICIAN_HEADER, TECHNICIAN_ROLES_HEADER

        tech = work.session.technician  # the head-end audits it as theirs, via this handheld
        auth = {
            "Authorization": f"Bearer {cfg.headend_token}",
            TECHNICIAN_HEADER: tech.name,
            TECHNICIAN_ROLES_HEADER: ",".join(role_names(tech.roles)),
        }
        try:
            # https: the head-end's certificate is checked against the project's CA alone
            trust = ssl.create_default_context(cafile=str(self.tls.ca))
            async with httpx.AsyncClient(base_url=cfg.headend_api, headers=auth, timeout=10.0,
                                         verify=trust) as api:  # fmt: skip
                result = await _operate(api, op, meter)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self._keep(work, meter, op, {"error": _refusal(exc)})
            return {"executed": False, "operation": op.value, "detail": f"head-end: {exc}"}
        self._keep(work, meter, op, result)
        return {"executed": True, "operation": op.value, "result": result}

    def _keep(self, work: _Work, meter: str, op: Operation, result: dict[str, Any]) -> None:
        """The answer into the work session's results (the screen's table), while it runs."""
        if work.session.state is not WorkState.ENDED:
            work.session.record_result(meter, op, result, self._vnow(work), time.time())

    def login(self, user: str, password: str, now: float) -> dict[str, Any]:
        if self.technician is not None:
            return {"ok": False, "error": "busy", "detail": "a technician is logged in"}
        try:
            self.technician = self.desk.login(user, password, now)
        except LoginRefused as exc:
            return {"ok": False, "error": "refused", "detail": exc.message,
                    "retry_after": round(exc.retry_after, 1)}  # fmt: skip
        p = self.technician.principal
        return {"ok": True, "technician": p.name, "roles": role_names(p.roles)}

    def status(self) -> dict[str, Any]:
        work = self.work
        tech = self.technician
        out: dict[str, Any] = {
            "ok": True,
            "device": self.config.device_id,
            "technician": None if tech is None else tech.principal.name,
            "state": "idle" if work is None else work.session.state.value,
            "last_end": self.last_end,
        }
        if work is not None:
            out["meters"] = len(self.route_table())
        return out

    def results(self) -> list[dict[str, Any]]:
        """The running work's answers, newest first ([] without one); like `route_table`, no
        technician's action."""
        work = self.work
        return [] if work is None else work.session.results()

    def route_table(self) -> dict[str, list[str]]:
        """The running work's route table ({} without one). Not the view: a status poll or the
        screen's stream is no technician's action (the idle timeout runs on)."""
        work = self.work
        return {} if work is None else work.session.route_table(self._vnow(work))

    # -- the work session -------------------------------------------------------------------

    def _vnow(self, work: _Work) -> float:
        return asyncio.get_running_loop().time() - work.t0

    async def start_work(self, work_order: str) -> dict[str, Any]:
        tech = self.technician
        assert tech is not None
        if self.work is not None:
            return {"ok": False, "error": "busy", "detail": "a work session is running"}
        if not tech.principal.may(OPERATION_RIGHT[Operation.VIEW]):
            self.desk.record(tech, "handheld.start", work_order[:64], "denied", time.time())
            return {"ok": False, "error": "forbidden", "detail": "the roles grant no work"}
        cfg = self.config
        try:
            hello = Hello(cfg.device_id, tech.principal.name, work_order)
            Hello.decode(hello.encode())
        except ChannelError as exc:
            return {"ok": False, "error": "bad-request", "detail": exc.reason}
        try:
            ctx = client_ssl_context(self.tls.ca, self.tls.cert, self.tls.key)
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(cfg.gateway[0], cfg.gateway[1], ssl=ctx,
                                        server_hostname=cfg.server_name), 10.0)  # fmt: skip
            writer.write(frame(hello.encode()))
            decoder = FrameDecoder()
            first = await asyncio.wait_for(_first_frame(reader, decoder), 10.0)
            welcome = Welcome.decode(first)
            keyserver = welcome.keyserver
        except (OSError, ssl.SSLError, TimeoutError, EOFError, ChannelError) as exc:
            self.desk.record(tech, "handheld.channel", cfg.device_id, "failed", time.time())
            return {"ok": False, "error": "channel", "detail": str(exc) or type(exc).__name__}
        except Exception as exc:  # a PkiError loading our own credentials
            return {"ok": False, "error": "channel", "detail": str(exc)}
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        headend = welcome.headend if cfg.area.headend_title is not None else None
        hcfg = HandheldConfig(cfg.device_id, handheld_eui(), AREA_PAN, AREA_PREFIX, keyserver,
                              rpl=area_rpl(), pac=mesh_pac_config(),
                              idle_timeout=cfg.idle_timeout)  # fmt: skip
        rng = self.rng
        session = WorkSession(hcfg, tech.principal, work_order,
                              psk_peer(cfg.device_id, cfg.psk, rng), rng, 0.0)  # fmt: skip
        wake = asyncio.Event()

        def send(packet: bytes) -> None:
            writer.write(frame(packet))

        field: _LocalArea | _RemoteArea
        if cfg.area_at is None:
            field = _LocalArea(cfg.area, session, send, keyserver, headend, self._on_event)
        else:
            radio = _RadioProtocol()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: radio, remote_addr=cfg.area_at
            )
            field = _RemoteArea(session, send, self._on_event, transport)
            remote = field

            def on_radio(data: bytes) -> None:
                remote.radio_in(data, loop.time() - t0)
                wake.set()

            radio.on_datagram = on_radio
            session.start(0.0)
            field.kick(loop.time() - t0)

        async def read_channel() -> None:
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    field.wan_in(decoder.feed(data), loop.time() - t0)
                    wake.set()
            except (OSError, ssl.SSLError, ChannelError) as exc:
                log.warning("handheld: channel: %s", exc)
            if session.state is not WorkState.ENDED:
                session.end("channel closed by the office", loop.time() - t0)
                field.kick(loop.time() - t0)
            wake.set()

        async def drive() -> None:
            while session.state is not WorkState.ENDED:
                nxt = field.advance(loop.time() - t0)
                delay = TICK if nxt is None else min(TICK, max(0.0, nxt - (loop.time() - t0)))
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)
            field.flush(loop.time() - t0)  # the PTR leaves
            await self._finish()

        self.work = _Work(session, field, writer, loop.create_task(read_channel()),
                          loop.create_task(drive()), t0)  # fmt: skip
        self.desk.record(tech, "handheld.start", work_order, "ok", time.time())
        return {"ok": True, "work_order": work_order, "keyserver": list(keyserver)}

    def _on_event(self, addr: Addr, event: object, now: float) -> None:
        log.info("handheld: %s", type(event).__name__, extra={"event": repr(event)})
        if isinstance(event, WorkEnded):
            self.last_end = event.reason
            self.ended_at = time.time()

    async def stop_work(self, reason: str) -> None:
        work = self.work
        if work is None:
            return
        work.session.end(reason, self._vnow(work))
        work.field.kick(self._vnow(work))
        with contextlib.suppress(asyncio.CancelledError):
            await work.drive_task

    async def _finish(self) -> None:
        work = self.work
        if work is None:
            return
        self.work = None
        work.field.close()
        work.reader_task.cancel()
        work.writer.close()
        with contextlib.suppress(Exception):
            await work.writer.wait_closed()


COMMAND_KIND = {Operation.CONNECT: "reconnect", Operation.DISCONNECT: "disconnect"}
COMMAND_WAIT = 30.0  # s for the head-end to confirm or fail a command


async def _operate(api: Any, op: Operation, meter: str) -> dict[str, Any]:
    """One operation through the head-end's REST API (docs/access-control.md's routes)."""
    if op is Operation.READ:
        r = await api.get(f"/meters/{meter}/readings", params={"start": 0, "end": 2**40})
        r.raise_for_status()
        items = r.json()["items"]
        return {"readings": len(items), "newest": items[-1] if items else None}
    if op is Operation.COMMISSION:
        r = await api.post(f"/meters/{meter}/commission")
        r.raise_for_status()
        return {"commissioned": True}
    r = await api.post("/commands", json={"meter_id": meter, "kind": COMMAND_KIND[op]})
    r.raise_for_status()
    command = r.json()
    deadline = time.monotonic() + COMMAND_WAIT
    while command["state"] in ("pending", "sent") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        r = await api.get(f"/commands/{command['id']}")
        r.raise_for_status()
        command = r.json()
    return {k: command.get(k) for k in ("id", "kind", "state", "relay_state", "reason")}


def _refusal(exc: Exception) -> str:
    """One line for the screen: the head-end's status and its {"detail"} when it answered."""
    response = getattr(exc, "response", None)
    if response is None:
        return str(exc) or type(exc).__name__
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail", "") if isinstance(body, dict) else ""
    return f"head-end {response.status_code}" + (f": {str(detail)[:200]}" if detail else "")


class _RadioProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.on_datagram: Callable[[bytes], None] = lambda data: None

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.on_datagram(data)


async def _first_frame(reader: asyncio.StreamReader, decoder: FrameDecoder) -> bytes:
    while True:
        data = await reader.read(4096)
        if not data:
            raise EOFError("the gateway closed the channel")
        frames = decoder.feed(data)
        if frames:
            return frames[0]


async def serve_control(device: HandheldDevice, path: Path, stop: asyncio.Event) -> None:
    """The control socket (0600) until `stop`; a work session running then is ended."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                if len(line) > MAX_REQUEST:
                    answer: dict[str, Any] = {"ok": False, "error": "too-large"}
                else:
                    try:
                        req = json.loads(line)
                        answer = (
                            await device.handle(req) if isinstance(req, dict)
                            else {"ok": False, "error": "bad-request"}
                        )  # fmt: skip
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        answer = {"ok": False, "error": "bad-request"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(client, str(path), limit=MAX_REQUEST * 2)
    finally:
        os.umask(old)
    try:
        await stop.wait()
    finally:
        server.close()
        await device.stop_work("the handheld shut down")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def control(path: Path, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """One request to a running handheld's control socket."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    answer = json.loads(line)
    assert isinstance(answer, dict)
    return answer
