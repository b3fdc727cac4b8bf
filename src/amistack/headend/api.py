"""The head-end REST API (FastAPI; the OpenAPI document is at /openapi.json, docs at /docs).

Meters (list/get/register/commission/decommission), readings by meter and time range (JSON pages
or a whole-range CSV/JSON export), commands (create/list/get), events and alarms. Lists are
keyset-paginated: each page carries the cursor of the next one (`next_after`), null at the end.
Errors are JSON `{"error": code, "detail": message}`: 404 unknown, 409 exists or wrong state,
400 invalid, 422 malformed request (FastAPI's validation).

`create_app(repo, clock)` builds the app over any ReadingRepository; the clock stamps
registrations, commands and acknowledgements (the API is the I/O edge, so it may read one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from amistack.eventlog.record import iso_ms, parse_head_line
from amistack.eventlog.verify import Verdict
from amistack.headend.eventlog_intake import MAX_EXPORT_BYTES, EventLogIntake
from amistack.headend.export import csv_lines, iter_readings, json_lines, reading_dict
from amistack.headend.registry import MAX_ID, HeadendError, Meter, MeterState
from amistack.headend.schema import (
    Alarm,
    Command,
    CommandKind,
    CommandState,
    StoredEvent,
)
from amistack.headend.storage import MAX_PAGE, ReadingRepository
from amistack.headend.vee import VeeConfig, run_vee

_STATUS = {
    "not_found": 404,
    "exists": 409,
    "invalid_transition": 409,
    "invalid": 400,
    "no_key": 409,
    "too_large": 413,
}


class MeterIn(BaseModel):
    meter_id: str = Field(min_length=1, max_length=MAX_ID, description="key-server device id")
    ap_title: str = Field(description="ANSI C12.22 AP title, dotted OID")
    concentrator: str = ""
    cell: str = ""
    eventlog_key: str | None = Field(
        None, description="the meter's event-log public key (SPKI PEM, EC P-256)"
    )


class CommandIn(BaseModel):
    meter_id: str = Field(min_length=1, max_length=MAX_ID)
    kind: CommandKind
    params: dict[str, Any] = Field(default_factory=dict)


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
    items: list[Command]
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
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
}


def _time_range(start: int, end: int) -> None:
    if end <= start:
        raise HeadendError("invalid", "end must be after start")


def create_app(
    repo: ReadingRepository,
    clock: Callable[[], float] = time.time,
    *,
    max_eventlog_bytes: int = MAX_EXPORT_BYTES,
) -> FastAPI:
    intake = EventLogIntake(repo)
    app = FastAPI(
        title="amistack head-end",
        version="1",
        description="Meter registry, interval readings, commands, events and alarms.",
    )

    @app.exception_handler(HeadendError)
    async def _headend_error(request: Request, exc: HeadendError) -> JSONResponse:
        return JSONResponse(
            status_code=_STATUS.get(exc.code, 400),
            content={"error": exc.code, "detail": exc.message},
        )

    # -- meters --------------------------------------------------------------------------------

    @app.get("/meters", response_model=MeterPage, tags=["meters"])
    def list_meters(
        state: MeterState | None = None,
        concentrator: str | None = None,
        after: str | None = Query(None, description="the previous page's next_after"),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> MeterPage:
        items = repo.list_meters(state=state, concentrator=concentrator, after=after, limit=limit)
        return MeterPage(
            items=items, next_after=items[-1].meter_id if len(items) == limit else None
        )

    @app.post("/meters", status_code=201, response_model=Meter, responses=_ERRORS, tags=["meters"])
    def register_meter(body: MeterIn) -> Meter:
        return repo.register_meter(
            body.meter_id,
            body.ap_title,
            body.concentrator,
            body.cell,
            clock(),
            eventlog_key=body.eventlog_key,
        )

    @app.get("/meters/{meter_id}", response_model=Meter, responses=_ERRORS, tags=["meters"])
    def get_meter(meter_id: str) -> Meter:
        meter = repo.get_meter(meter_id)
        if meter is None:
            raise HeadendError("not_found", f"no meter {meter_id!r}")
        return meter

    @app.post(
        "/meters/{meter_id}/commission", response_model=Meter, responses=_ERRORS, tags=["meters"]
    )
    def commission_meter(meter_id: str) -> Meter:
        return repo.commission_meter(meter_id, clock())

    @app.post(
        "/meters/{meter_id}/decommission",
        response_model=Meter,
        responses=_ERRORS,
        tags=["meters"],
    )
    def decommission_meter(meter_id: str) -> Meter:
        return repo.decommission_meter(meter_id, clock())

    # -- event log -----------------------------------------------------------------------------

    async def _body(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HeadendError("too_large", f"the body is larger than {limit} bytes")
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
    async def put_eventlog_key(meter_id: str, request: Request) -> EventLogKeyOut:
        """Register (or replace) the meter's event-log public key: the PEM as the body."""
        pem = await _body(request, 4096)
        now = clock()
        await run_in_threadpool(repo.set_eventlog_key, meter_id, pem, now)
        return await run_in_threadpool(get_eventlog_key, meter_id)

    @app.get(
        "/meters/{meter_id}/eventlog-key",
        response_model=EventLogKeyOut,
        responses=_ERRORS,
        tags=["event log"],
    )
    def get_eventlog_key(meter_id: str) -> EventLogKeyOut:
        key = repo.eventlog_key(meter_id)
        if key is None:
            raise HeadendError("not_found", f"no event-log key for meter {meter_id!r}")
        return EventLogKeyOut(meter_id=meter_id, key_id=key[1], public_key_pem=key[0])

    @app.post(
        "/meters/{meter_id}/eventlog",
        response_model=VerdictOut,
        responses={
            **_ERRORS,
            413: {"model": ErrorOut},
            422: {"model": VerdictOut, "description": "the log does not hold (alarm raised)"},
        },
        tags=["event log"],
        openapi_extra={"requestBody": {"content": {"text/plain": {}}}},
    )
    async def upload_eventlog(meter_id: str, request: Request) -> Any:
        """Upload a meter's exported event log (the `amistack log export` file as the body).
        Verified on arrival against the meter's key and the last accepted head: 200 and stored
        when it holds, 422 with the reason (and an alarm raised) when it does not."""
        body = await _body(request, max_eventlog_bytes)
        now = clock()

        verdict, stored = await run_in_threadpool(intake.receive_counted, meter_id, body, now)
        out = _verdict_out(verdict, stored if verdict.ok else 0)
        if verdict.ok:
            return out
        return JSONResponse(status_code=422, content=out.model_dump())

    @app.get(
        "/meters/{meter_id}/eventlog/head",
        response_model=EventLogHeadOut,
        responses=_ERRORS,
        tags=["event log"],
    )
    def eventlog_head(meter_id: str) -> EventLogHeadOut:
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
        meter_id: str,
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
                    headers={
                        "Content-Disposition": f'attachment; filename="{meter_id}-readings.csv"'
                    },
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
        meter_id: str,
        start: int,
        end: int,
        spike_factor: float = Query(5.0, gt=1.0),
    ) -> VeeOut:
        """Validate a range: gaps reported, spikes and sum mismatches flagged (values kept)."""
        _time_range(start, end)
        if start % 1800:
            raise HeadendError("invalid", "start must be on a half-hour boundary")
        if repo.get_meter(meter_id) is None:
            raise HeadendError("not_found", f"no meter {meter_id!r}")
        report = run_vee(repo, meter_id, start, end, VeeConfig(spike_factor=spike_factor))
        return VeeOut(
            gaps=[GapOut(length_min=g.length_min, start=g.start, end=g.end) for g in report.gaps],
            findings=len(report.findings),
            flagged=report.flagged,
        )

    # -- commands ------------------------------------------------------------------------------

    @app.post(
        "/commands", status_code=201, response_model=Command, responses=_ERRORS, tags=["commands"]
    )
    def create_command(body: CommandIn) -> Command:
        return repo.create_command(body.meter_id, body.kind, body.params, clock())

    @app.get("/commands", response_model=CommandPage, tags=["commands"])
    def list_commands(
        meter_id: str | None = None,
        state: CommandState | None = None,
        after: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> CommandPage:
        items = repo.commands(meter_id=meter_id, state=state, after_id=after, limit=limit)
        return CommandPage(items=items, next_after=items[-1].id if len(items) == limit else None)

    @app.get("/commands/{command_id}", response_model=Command, responses=_ERRORS, tags=["commands"])
    def get_command(command_id: int) -> Command:
        cmd = repo.get_command(command_id)
        if cmd is None:
            raise HeadendError("not_found", f"no command {command_id}")
        return cmd

    # -- events and alarms ---------------------------------------------------------------------

    @app.get("/events", response_model=EventPage, tags=["events"])
    def list_events(
        meter_id: str | None = None,
        after: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> EventPage:
        items = repo.events(meter_id=meter_id, after_id=after, limit=limit)
        return EventPage(items=items, next_after=items[-1].id if len(items) == limit else None)

    @app.get("/alarms", response_model=AlarmPage, tags=["alarms"])
    def list_alarms(
        meter_id: str | None = None,
        unacknowledged: bool = False,
        after: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> AlarmPage:
        items = repo.alarms(
            meter_id=meter_id, unacknowledged=unacknowledged, after_id=after, limit=limit
        )
        return AlarmPage(items=items, next_after=items[-1].id if len(items) == limit else None)

    @app.post(
        "/alarms/{alarm_id}/acknowledge", response_model=Alarm, responses=_ERRORS, tags=["alarms"]
    )
    def acknowledge_alarm(alarm_id: int) -> Alarm:
        return repo.acknowledge_alarm(alarm_id, clock())

    return app
