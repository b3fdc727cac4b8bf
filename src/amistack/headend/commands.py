"""Command execution, sans-IO: remote disconnect/reconnect with relay read-back, demand
response (load limit, or curtailment by switch for a duration), time sync.

Every command lives in the repository (`commands` table) and moves pending -> sent ->
confirmed | failed there (`ReadingRepository.update_command`, conditional updates). Each step is
also written to the meter's event stream (`events`, kind `command_<state>`) as the audit trail.

- disconnect / reconnect: ST7 write of MP1 (remote switch) + ST8 read in one EPSEM, then a
  separate read-back (MP2) of the relay; confirmed only when the relay reads back the state asked
  for (`open` for a disconnect, `closed` for a reconnect), failed with the state read otherwise.
- demand_response: params `{"limit_w": W}` runs MP3 (set load limit, u32 W, 0 = none);
  `{"curtail_s": D}` opens the relay (confirmed by read-back) and creates a reconnect command
  due D seconds later (direct load control, 1 s .. 7 days).
- time_sync: SP10 with the head-end's time, ST8 and ST52 read in the same EPSEM; the
  confirmation records the meter's clock after the set.
- read: an on-demand read of the current registers (ST23); the confirmation is their JSON
  (`register_json`: energy both ways, maximum and cumulative demand, the TOU tiers).

Parameters are checked per kind by `check_params` before a command is queued (the API calls it);
the executor checks them again and fails a command whose stored parameters do not hold, so no
parameter can make it raise inside the timer loop.

A step that times out (after the C12.22 engine's own retransmissions) is retried `attempts`
times (switching is idempotent by target state), then the command fails with the reason.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.events import C1222Event, RequestTimedOut, ResponseReceived
from amistack.c1222.services import Read, ReadResult, Request, Write
from amistack.c1222.tables import (
    Clock,
    CurrentRegisters,
    ProcedureResponse,
    ProcedureResult,
    Table,
    load_limit,
    read_switch,
    remote_switch,
    set_date_time,
)
from amistack.headend.collector import MeterTarget
from amistack.headend.registry import HeadendError
from amistack.headend.schema import Command, CommandKind, CommandState, MeterEvent
from amistack.headend.storage import ReadingRepository

log = logging.getLogger(__name__)


MAX_LIMIT_W = 0xFFFFFFFF  # MP3's load limit is a u32 in watts
MAX_CURTAIL_S = 7 * 86400


def _number(params: Mapping[str, Any], name: str, low: float, high: float) -> float:
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise HeadendError("invalid", f"{name} must be a number")
    if not low <= value <= high:
        raise HeadendError("invalid", f"{name} must be between {low:g} and {high:g}")
    return value


def check_params(kind: CommandKind, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of a `kind` command, checked and normalised; HeadendError("invalid")
    says what is wrong. demand_response takes exactly one of limit_w (integer watts) and
    curtail_s (seconds); the other kinds take none."""
    kind = CommandKind(kind)
    if kind is not CommandKind.DEMAND_RESPONSE:
        if params:
            raise HeadendError("invalid", f"a {kind.value} command takes no parameters")
        return {}
    names = set(params)
    if names not in ({"limit_w"}, {"curtail_s"}):
        raise HeadendError(
            "invalid", 'demand_response takes exactly one of {"limit_w": W} or {"curtail_s": S}'
        )
    if "limit_w" in params:
        watts = _number(params, "limit_w", 0, MAX_LIMIT_W)
        if watts != int(watts):
            raise HeadendError("invalid", "limit_w must be a whole number of watts")
        return {"limit_w": int(watts)}
    return {"curtail_s": _number(params, "curtail_s", 1, MAX_CURTAIL_S)}


def register_json(regs: CurrentRegisters) -> str:
    """An on-demand read's confirmation: the registers as a JSON object."""
    return json.dumps(
        {
            "active_forward_wh": regs.active_forward_wh,
            "active_reverse_wh": regs.active_reverse_wh,
            "max_demand_w": regs.max_demand_w,
            "max_demand_time": regs.max_demand_time,
            "cumulative_demand_w": regs.cumulative_demand_w,
            "demand_resets": regs.demand_resets,
            "tiers_wh": list(regs.tiers_wh),
        },
        separators=(",", ":"),
    )


def relay_text(connected: bool) -> str:
    return "closed" if connected else "open"


@dataclass
class _Exec:
    command: Command
    target: MeterTarget
    params: dict[str, Any]
    step: str  # operate | readback
    attempts: int = 0
    request_id: int | None = None


class CommandExecutor:
    """Executes repository commands through the head-end's `C1222Client` (see module doc)."""

    def __init__(
        self,
        repo: ReadingRepository,
        client: object,
        *,
        attempts: int = 3,
        timeout: float = 5.0,
        retries: int = 1,
    ) -> None:
        self.repo = repo
        self.client = client
        self.attempts = attempts
        self.timeout = timeout
        self.retries = retries
        self.counters: Counter[str] = Counter()
        self._by_request: dict[int, _Exec] = {}
        self._seq: Counter[str] = Counter()
        self._later: list[tuple[float, str, CommandKind, dict[str, Any]]] = []

    # -- entry points --------------------------------------------------------------------------

    def execute(self, command: Command, target: MeterTarget, now: float) -> None:
        """Start a pending command: sent now, confirmed or failed when the meter answers."""
        try:
            raw = json.loads(command.params) if command.params else {}
            params = check_params(command.kind, raw if isinstance(raw, dict) else {"?": raw})
        except (ValueError, HeadendError) as exc:
            ex = _Exec(command, target, {}, "operate")
            self._fail(ex, f"bad parameters: {getattr(exc, 'message', exc)}", now)
            return
        ex = _Exec(command, target, params, "operate")
        if not self._send(ex, now):
            return
        self._move(ex, CommandState.SENT, now)

    def get_timer(self) -> float | None:
        if not self._later:  # the usual case, asked after every datagram
            return None
        return min(t for t, *_ in self._later)

    def handle_timer(self, now: float) -> list[Command]:
        """Create the commands that fall due (a curtailment's reconnect); returns them so the
        caller executes them with their targets."""
        due = [x for x in self._later if x[0] <= now]
        self._later = [x for x in self._later if x[0] > now]
        made = []
        for _, meter_id, kind, params in due:
            try:
                made.append(self.repo.create_command(meter_id, kind, params, now))
            except HeadendError as exc:
                log.warning("scheduled %s for %s not created: %s", kind, meter_id, exc)
        return made

    def handle_event(self, ev: C1222Event, now: float) -> bool:
        if not isinstance(ev, ResponseReceived | RequestTimedOut):
            return False
        ex = self._by_request.pop(ev.request_id, None)
        if ex is None:
            return False
        if isinstance(ev, RequestTimedOut):
            ex.attempts += 1
            self.counters["timeouts"] += 1
            if ex.attempts < self.attempts:
                self._send(ex, now)
            else:
                self._fail(ex, f"no answer from the meter ({ex.step})", now)
            return True
        try:
            self._answer(ex, ev, now)
        except (C1222DecodeError, IndexError) as exc:  # IndexError: fewer responses than asked
            self._fail(ex, f"unreadable answer: {exc}", now)
        return True

    # -- steps ---------------------------------------------------------------------------------

    def _next_seq(self, meter_id: str) -> int:
        self._seq[meter_id] += 1
        return self._seq[meter_id] & 0xFF

    def _requests(self, ex: _Exec, now: float) -> Sequence[Request]:
        kind, seq = ex.command.kind, self._next_seq(ex.command.meter_id)
        if ex.step == "readback":
            init = read_switch(seq)
        elif kind in (CommandKind.DISCONNECT, CommandKind.RECONNECT):
            init = remote_switch(seq, kind is CommandKind.RECONNECT)
        elif kind is CommandKind.READ:
            return [Read(Table.CURRENT_REGISTER_DATA)]
        elif kind is CommandKind.TIME_SYNC:
            return [
                Write(Table.PROC_INITIATE, set_date_time(seq, now).encode()),
                Read(Table.PROC_RESPONSE),
                Read(Table.CLOCK),
            ]
        elif "curtail_s" in ex.params:
            init = remote_switch(seq, False)
        else:
            init = load_limit(seq, int(ex.params.get("limit_w", 0)))
        return [Write(Table.PROC_INITIATE, init.encode()), Read(Table.PROC_RESPONSE)]

    def _send(self, ex: _Exec, now: float) -> bool:
        addr = ex.target.addr
        try:
            if addr is None:
                raise ValueError("no address known for the meter")
            rid: int = self.client.request(  # type: ignore[attr-defined]
                addr,
                ex.target.ap_title,
                self._requests(ex, now),
                now,
                timeout=self.timeout,
                retries=self.retries,
            )
        except (ValueError, OverflowError) as exc:
            self._fail(ex, f"not sent: {exc}", now)
            return False
        ex.request_id = rid
        self._by_request[rid] = ex
        self.counters["requests"] += 1
        return True

    def _answer(self, ex: _Exec, ev: ResponseReceived, now: float) -> None:
        if not ev.ok:
            codes = ",".join(r.code.name for r in ev.responses)
            self._fail(ex, f"meter refused the request ({codes})", now)
            return
        kind = ex.command.kind
        if kind is CommandKind.READ:
            regs = CurrentRegisters.decode(ReadResult.decode(ev.responses[0].data).data)
            self._confirm(ex, register_json(regs), now)
            return
        st8 = ProcedureResponse.decode(ReadResult.decode(ev.responses[1].data).data)
        if ex.step == "readback":
            if not st8.data:
                self._fail(ex, "relay read-back carried no state", now)
                return
            state = relay_text(bool(st8.data[0]))
            want = "closed" if kind is CommandKind.RECONNECT else "open"
            if state == want:
                self._confirm(ex, f"relay read back {state}", now, relay_state=state)
                if kind is CommandKind.DEMAND_RESPONSE:
                    due = now + float(ex.params.get("curtail_s", 0))
                    self._later.append((due, ex.command.meter_id, CommandKind.RECONNECT, {}))
            else:
                self._fail(ex, f"relay read back {state}, expected {want}", now, relay_state=state)
            return
        if st8.result != ProcedureResult.COMPLETED:
            self._fail(ex, f"procedure {st8.procedure:#x} result {st8.result.name}", now)
            return
        if kind in (CommandKind.DISCONNECT, CommandKind.RECONNECT) or "curtail_s" in ex.params:
            ex.step, ex.attempts = "readback", 0
            self._audit(ex, "command_readback", "", now)
            self._send(ex, now)
            return
        if kind is CommandKind.TIME_SYNC:
            clock = Clock.decode(ReadResult.decode(ev.responses[2].data).data)
            self._confirm(ex, f"clock set; meter reads {clock.time:.0f} (head-end {now:.0f})", now)
            return
        self._confirm(ex, f"load limit {int(ex.params.get('limit_w', 0))} W set", now)

    # -- repository ----------------------------------------------------------------------------

    def _move(
        self,
        ex: _Exec,
        state: CommandState,
        now: float,
        *,
        confirmation: str | None = None,
        relay_state: str | None = None,
        reason: str | None = None,
    ) -> None:
        try:
            ex.command = self.repo.update_command(
                ex.command.id,
                state,
                now,
                confirmation=confirmation,
                relay_state=relay_state,
                reason=reason,
            )
        except HeadendError as exc:  # cancelled or moved by another collector meanwhile
            self.counters["transition-refused"] += 1
            log.warning("command %d: %s", ex.command.id, exc.message)
            return
        self.counters[state.value] += 1
        self._audit(ex, f"command_{state.value}", confirmation or reason or "", now)

    def _confirm(self, ex: _Exec, text: str, now: float, relay_state: str | None = None) -> None:
        self._move(ex, CommandState.CONFIRMED, now, confirmation=text, relay_state=relay_state)

    def _fail(self, ex: _Exec, reason: str, now: float, relay_state: str | None = None) -> None:
        self._by_request.pop(ex.request_id or -1, None)
        if ex.command.state is CommandState.PENDING:
            self._move(ex, CommandState.SENT, now)
        self._move(ex, CommandState.FAILED, now, reason=reason, relay_state=relay_state)

    def _audit(self, ex: _Exec, kind: str, detail: str, now: float) -> None:
        text = json.dumps(
            {"command": ex.command.id, "kind": ex.command.kind.value, "detail": detail},
            sort_keys=True,
        )
        self.repo.add_events([MeterEvent(ex.command.meter_id, now, kind, text)], now)

    def in_flight(self) -> int:
        return len(self._by_request)


__all__ = ["CommandExecutor", "check_params", "relay_text"]
