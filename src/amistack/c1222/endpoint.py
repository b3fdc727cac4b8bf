"""The C12.22 engines, sans-IO (ARCHITECTURE.md): `C1222Server` on the meter, `C1222Client` on
the head-end. UDP port 1153 (C12.22 §5.3.1, IANA "ansi-c12-22").

Both are one `_Endpoint`: each can send requests (the client reads and commands; the meter
pushes interval data as a write to the head-end) and answer requests. Every datagram in:

1. segments are reassembled (bounded, timed out);
2. the ACSE APDU is decoded; it must be addressed to our ApTitle and name its sender (calling
   AP title) and its calling AP invocation id;
3. the replay window refuses an invocation id already accepted from that sender, or one too old
   (stale), before any crypto is spent;
4. the key-id byte and the sender's device select candidate keys (`KeyLookup`); EAX' verifies
   (and decrypts); a cleartext message is refused unless `allow_cleartext`;
5. only then is the id entered in the window and the EPSEM served or matched to our request
   (responses carry our invocation id as their called AP invocation id).

Our own calling AP invocation ids only ever grow, across restarts too: a peer's replay window
(per sender and key) refuses an id at or below what it has seen as stale, so an endpoint that
started again at 1 under the same keys (a restarted head-end; the meters' PANA sessions and keys
live on) would be refused for as long as its ids stay behind. With an `InvocationIdStore` the
endpoint starts at the id the store says was reserved, and reserves `invocation_block` ids
ahead (the store writes the mark durably before the first of them is used), as wisun-br-linux
stores frame counters ahead: at most a block is skipped per restart, none is ever reused.

Whatever is refused is counted in `counters` and dropped; nothing is raised to the caller.
A reply uses the key generation that authenticated the request, so a rotation never strands a
request in flight.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle, Fields, decode_fields
from amistack.c1222.epsem import EpsemControl, ResponseControl, SecurityMode
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.events import C1222Event, RequestReceived, RequestTimedOut, ResponseReceived
from amistack.c1222.registration import Registration, grant
from amistack.c1222.security import (
    C1222SecurityError,
    KeyLookup,
    KeyRejected,
    SendKey,
    open_epsem,
    seal,
)
from amistack.c1222.segmentation import SEGMENT_TAG, Reassembler, Segment, segment
from amistack.c1222.services import (
    Identify,
    IdentifyResult,
    Logoff,
    Logon,
    LogonResult,
    Read,
    ReadResult,
    Request,
    Response,
    ResponseCode,
    Security,
    ServiceCode,
    Terminate,
    Wait,
    Write,
    decode_request,
    decode_response,
    is_request,
    plain_response,
)
from amistack.c1222.tables import MeterTables, ProcedureInitiate, Table, TableProvider
from amistack.crypto import RandomSource
from amistack.crypto.replay import ReplayWindows

log = logging.getLogger(__name__)

C1222_PORT = 1153  # IANA ansi-c12-22, TCP and UDP
_MAX_INVOCATION_ID = 0xFFFFFFFF  # ids are sent as 32-bit unsigned values


_SEGMENT_PREFIX = bytes((SEGMENT_TAG,))
_FIRST_REQUEST = 0x20  # C12.22 §5.3.4: service codes from 0x20, response codes below
# module names for the enum members the per-message path compares with (a class attribute of
# an enum costs a look-up through its metaclass each time)
_CLEARTEXT = SecurityMode.CLEARTEXT
_ALWAYS = ResponseControl.ALWAYS
_NEVER = ResponseControl.NEVER
_ON_EXCEPTION = ResponseControl.ON_EXCEPTION
_OK_CODE = ResponseCode.OK
_OK = plain_response(ResponseCode.OK)
_ISC = plain_response(ResponseCode.ISC)


@dataclass(frozen=True)
class EndpointConfig:
    ap_title: ApTitle
    security_mode: SecurityMode = SecurityMode.CIPHERTEXT_AUTH
    allow_cleartext: bool = False  # accept unprotected messages at all (never writes)
    replay_window: int = 64
    max_datagram: int = 1232  # IPv6 minimum MTU 1280 - IPv6/UDP headers
    response_timeout: float = 5.0
    retries: int = 2
    reassembly_timeout: float = 30.0
    max_apdu: int = 1 << 16
    max_reassembly: int = 64
    max_outstanding: int = 100_000
    first_invocation_id: int = 1
    invocation_block: int = 1024  # ids reserved ahead in the InvocationIdStore at a time
    calling_ae_qualifier: int | None = None
    ed_class: bytes | None = None
    session_idle_timeout: int = 60  # seconds, granted at logon


@dataclass(slots=True)
class _Pending:
    request_id: int
    addr: Addr
    peer: ApTitle
    requests: tuple[Request, ...]
    mode: SecurityMode
    deadline: float
    retries_left: int
    timeout: float
    invocation_ids: list[int] = field(default_factory=list)


class InvocationIdStore(Protocol):
    """Where an endpoint keeps its invocation-id mark across restarts (e.g. a file)."""

    def reserved(self) -> int:
        """The mark last reserved: ids below it may have been used (0: none yet)."""
        ...

    def reserve(self, mark: int) -> None:
        """Make `mark` durable: ids below it may be used from the moment this returns."""
        ...


class _Endpoint:
    def __init__(
        self,
        config: EndpointConfig,
        key_lookup: KeyLookup,
        send_key: SendKey,
        rng: RandomSource,
        *,
        invocation_ids: InvocationIdStore | None = None,
        key_rejected: KeyRejected | None = None,
    ) -> None:
        self.config = config
        self._id_store = invocation_ids
        self._key_lookup = key_lookup
        self._key_rejected = key_rejected
        self._send_key = send_key
        self._rng = rng
        self.counters: Counter[str] = Counter()
        # why the message of the last `receive_datagram` was refused by security (a counter
        # name: auth-failed, no-key, missing-auth, cleartext-refused, replayed, stale), or None
        self.last_refusal: str | None = None
        self._own_id = config.ap_title.device_id
        # (sender's device id, `hash` of the key that authenticated, None in clear): the key's
        # name is Python's keyed 64-bit hash (SipHash under the process's random seed), so the
        # windows are not keyed by key material; two keys of one sender colliding would share a
        # window, which can only refuse more, never accept a replay
        self._replay: ReplayWindows[tuple[bytes, int | None]] = ReplayWindows(config.replay_window)
        self._reassembler = Reassembler(
            config.reassembly_timeout, config.max_apdu, config.max_reassembly
        )
        self._outbox: list[tuple[bytes, Addr]] = []
        self._events: list[C1222Event] = []  # not a deque: 760 bytes empty, per meter
        self._pending: dict[int, _Pending] = {}
        # (deadline, request id) of the pending requests, a heap: an entry whose request is
        # gone or has another deadline now is stale and skipped, so the next deadline costs
        # O(log n), not a walk over every request in flight (a head-end has thousands)
        self._deadlines: list[tuple[float, int]] = []
        self._by_invocation: dict[int, int] = {}
        self._next_invocation = config.first_invocation_id & 0xFFFFFFFF
        self._reserved_until = 0
        if invocation_ids is not None:
            start = invocation_ids.reserved()
            if not 0 <= start <= _MAX_INVOCATION_ID:
                raise ValueError(f"invocation-id mark {start} out of range")
            self._next_invocation = max(self._next_invocation, start)
            self._reserved_until = start
        self._next_request = 1
        self._apdu_seq = 0

    # ------------------------------------------------------------------ sans-IO surface

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.counters["datagrams-received"] += 1
        self.last_refusal = None
        try:
            if data[:1] == _SEGMENT_PREFIX:
                apdu = self._reassembler.receive(Segment.decode(data), addr, now)
                if apdu is None:
                    return
                data = apdu
            fields = decode_fields(data)
        except C1222DecodeError as exc:
            self.counters["decode-error"] += 1
            log.debug("c1222: undecodable datagram", extra={"addr": addr, "reason": exc.reason})
            return
        self._receive_message(fields, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> C1222Event | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        best = self._next_deadline() if self._deadlines else None
        t = self._reassembler.get_timer()
        if t is not None and (best is None or t < best):
            best = t
        t = self._own_timer()
        if t is not None and (best is None or t < best):
            best = t
        return best

    def handle_timer(self, now: float) -> None:
        dropped = self._reassembler.expire(now)
        if dropped:
            self.counters["reassembly-timeout"] += dropped
        for pending in self._due(now):
            if pending.retries_left > 0:
                pending.retries_left -= 1
                pending.deadline = now + pending.timeout
                heapq.heappush(self._deadlines, (pending.deadline, pending.request_id))
                self.counters["retransmissions"] += 1
                self._transmit(pending, now)
            else:
                self._forget(pending)
                self.counters["timeouts"] += 1
                self._events.append(
                    RequestTimedOut(pending.request_id, pending.peer, pending.requests)
                )
        self._own_handle_timer(now)

    def request(
        self,
        addr: Addr,
        peer: ApTitle,
        requests: Sequence[Request],
        now: float,
        *,
        response_control: ResponseControl = ResponseControl.ALWAYS,
        security_mode: SecurityMode | None = None,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> int:
        """Send `requests` in one EPSEM to `peer` at `addr`; the request id. With
        ResponseControl.ALWAYS the answer arrives as `ResponseReceived` (or `RequestTimedOut`
        after `retries` retransmissions, each with a fresh invocation id and IV); with the other
        controls nothing is tracked. Raises ValueError when no key is available to send."""
        if not requests:
            raise ValueError("at least one request")
        cfg = self.config
        mode = cfg.security_mode if security_mode is None else security_mode
        rid = self._next_request
        self._next_request += 1
        t = cfg.response_timeout if timeout is None else timeout
        n = cfg.retries if retries is None else retries
        pending = _Pending(rid, addr, peer, tuple(requests), mode, now + t, n, t)
        if response_control != _ALWAYS:
            if self._send(addr, peer, pending.requests, mode, response_control, now) is None:
                raise ValueError(f"no C12.22 key to send to {peer}")
            return rid
        if len(self._pending) >= cfg.max_outstanding:
            raise ValueError("too many outstanding C12.22 requests")
        if self._transmit(pending, now) is None:
            raise ValueError(f"no C12.22 key to send to {peer}")
        self._pending[rid] = pending
        heapq.heappush(self._deadlines, (pending.deadline, rid))
        return rid

    def _next_deadline(self) -> float | None:
        heap, pending = self._deadlines, self._pending
        while heap:
            deadline, rid = heap[0]
            p = pending.get(rid)
            if p is not None and p.deadline == deadline:
                return deadline
            heapq.heappop(heap)  # stale
        return None

    def _due(self, now: float) -> list[_Pending]:
        """The pending requests whose deadline has come, in the order they were made."""
        heap, due = self._deadlines, []
        while heap and heap[0][0] <= now:
            deadline, rid = heapq.heappop(heap)
            p = self._pending.get(rid)
            if p is not None and p.deadline == deadline:
                due.append(p)
        due.sort(key=lambda p: p.request_id)
        return due

    # ------------------------------------------------------------------------ sending

    def _invocation_id(self) -> int:
        inv = self._next_invocation
        store = self._id_store
        if store is not None and inv >= self._reserved_until:
            # durable before use; near the top of the range the mark stops there (a wrap
            # would be refused as stale by every peer until its keys change)
            self._reserved_until = min(inv + self.config.invocation_block, _MAX_INVOCATION_ID)
            store.reserve(self._reserved_until)
        self._next_invocation = (inv + 1) & _MAX_INVOCATION_ID
        return inv

    def _transmit(self, pending: _Pending, now: float) -> int | None:
        inv = self._send(pending.addr, pending.peer, pending.requests, pending.mode, _ALWAYS, now)
        if inv is not None:
            pending.invocation_ids.append(inv)
            self._by_invocation[inv] = pending.request_id
        return inv

    def _forget(self, pending: _Pending) -> None:
        self._pending.pop(pending.request_id, None)
        for inv in pending.invocation_ids:
            self._by_invocation.pop(inv, None)

    def _send(
        self,
        addr: Addr,
        peer: ApTitle,
        services: Sequence[Request | Response],
        mode: SecurityMode,
        response_control: ResponseControl,
        now: float,
        *,
        called_invocation_id: int | None = None,
        key: tuple[int, bytes] | None = None,
    ) -> int | None:
        """Protect and queue one message; our calling AP invocation id, or None (no key)."""
        if mode != _CLEARTEXT and key is None:
            key = self._send_key(peer.device_id, now)
            if key is None:
                self.counters["no-send-key"] += 1
                return None
        inv = self._invocation_id()
        cfg = self.config
        wire = seal(
            peer,
            cfg.ap_title,
            inv,
            [services[0].encode()] if len(services) == 1 else [s.encode() for s in services],
            mode,
            response_control,
            None if key is None else key[1],
            0 if key is None else key[0],
            b"" if key is None else self._rng(4),
            called_invocation_id=called_invocation_id,
            calling_ae_qualifier=cfg.calling_ae_qualifier,
            ed_class=cfg.ed_class,
        )
        self._apdu_seq = (self._apdu_seq + 1) & 0xFFFF
        if len(wire) <= cfg.max_datagram:  # `segment` would give it back alone
            self._outbox.append((wire, addr))
        else:
            self.counters["segmented-sent"] += 1
            self._outbox.extend((p, addr) for p in segment(wire, self._apdu_seq, cfg.max_datagram))
        self.counters["messages-sent"] += 1
        return inv

    # ---------------------------------------------------------------------- receiving

    def _refuse(self, reason: str) -> None:
        self.counters[reason] += 1
        self.last_refusal = reason

    def _receive_message(self, fields: Fields, addr: Addr, now: float) -> None:
        # the message's fields, not an `AcseMessage`, and its services, not an `Unprotected`
        # EPSEM: every message passes here, and the objects were only taken apart again
        called, peer, inv, called_inv, _, key_id, _, ui, cleartext = fields
        if called is None or called.device_id != self._own_id:  # `same_node`, by the cache
            self.counters["wrong-called-title"] += 1
            return
        if peer is None or inv is None:
            self.counters["missing-calling"] += 1
            return
        sender = peer.device_id
        try:
            control = EpsemControl.decode(ui[0])
            keys: list[bytes] = []
            if control.security_mode == _CLEARTEXT:
                if not self.config.allow_cleartext:
                    self._refuse("cleartext-refused")
                    return
            elif key_id is not None:
                keys = self._key_lookup(sender, key_id, now)
            services, _, key = open_epsem(control, ui, key_id, cleartext, keys)
        except C1222SecurityError as exc:
            self._refuse(exc.reason)
            if exc.reason == "auth-failed" and keys and self._key_rejected is not None:
                assert key_id is not None  # keys were looked up under it
                self._key_rejected(sender, key_id, now)
            log.info("c1222: message refused (%s)", exc.reason, extra={"sender": sender})
            return
        except C1222DecodeError:
            self.counters["decode-error"] += 1
            return
        # One window per sender and per key that authenticated the message: a restarted meter
        # has a new PANA session, so new keys and a fresh invocation-id sequence, even when its
        # key-id byte (the generation) repeats; a forged message never reaches a window.
        window = (sender, None if key is None else hash(bytes(key)))
        verdict = self._replay.admit(window, inv)
        if verdict is not None:
            self._refuse(verdict)
            log.info("c1222: %s message refused", verdict, extra={"sender": sender, "inv": inv})
            return
        self.counters["messages-accepted"] += 1
        requests = services[0][0] >= _FIRST_REQUEST  # `is_request`: services are non-empty
        if len(services) > 1 and any(is_request(s) != requests for s in services[1:]):
            self.counters["decode-error"] += 1
            return
        if requests:
            # a reply uses the key (and so the key-id byte) that authenticated the request
            self._on_requests(peer, inv, services, control, key, key_id, addr, now)
        else:
            self._on_responses(peer, called_inv, services, key, addr)

    def _on_responses(
        self,
        peer: ApTitle,
        called_inv: int | None,
        services: tuple[bytes, ...],
        key: bytes | None,
        addr: Addr,
    ) -> None:
        rid = self._by_invocation.get(called_inv or -1)
        pending = self._pending.get(rid) if rid is not None else None
        if pending is None or pending.peer.device_id != peer.device_id:  # `same_node`
            self.counters["unmatched-response"] += 1
            return
        if pending.mode != _CLEARTEXT and key is None:
            self._refuse("cleartext-refused")
            return
        try:
            if len(services) == 1:
                responses: tuple[Response, ...] = (decode_response(services[0]),)
            else:
                responses = tuple([decode_response(s) for s in services])
        except C1222DecodeError:
            self.counters["decode-error"] += 1
            return
        if len(responses) > len(pending.requests):
            self.counters["decode-error"] += 1
            return
        self._forget(pending)
        self._events.append(
            ResponseReceived(pending.request_id, pending.peer, addr, pending.requests, responses)
        )

    def _on_requests(
        self,
        peer: ApTitle,
        inv: int,
        services: tuple[bytes, ...],
        control: EpsemControl,
        key: bytes | None,
        key_id: int | None,
        addr: Addr,
        now: float,
    ) -> None:
        protected = key is not None
        requests: list[Request] = []
        responses: list[Response] = []
        for raw in services:
            try:
                req = decode_request(raw)
            except C1222DecodeError:
                known = raw[0] in ServiceCode._value2member_map_
                responses.append(Response(ResponseCode.ERR if known else ResponseCode.SNS))
                self.counters["bad-request"] += 1
                break
            resp = self._serve(req, peer, protected, now)
            requests.append(req)
            responses.append(resp)
            if not resp.ok:
                break
        key_id = key_id if protected else None  # as received in clear: none
        self._events.append(RequestReceived(peer, addr, tuple(requests), tuple(responses), key_id))
        rc = control.response_control
        if rc == _NEVER or (rc == _ON_EXCEPTION and all(r.ok for r in responses)):
            return
        self._send(
            addr,
            peer,
            responses,
            control.security_mode,
            _NEVER,
            now,
            called_invocation_id=inv,
            key=None if key is None else (key_id or 0, key),
        )

    # ---------------------------------------------------------------- for subclasses

    def _serve(self, req: Request, peer: ApTitle, protected: bool, now: float) -> Response:
        if isinstance(req, Identify):
            return Response(ResponseCode.OK, IdentifyResult().encode())
        return Response(ResponseCode.SNS)

    def _own_timer(self) -> float | None:
        return None

    def _own_handle_timer(self, now: float) -> None:
        return None


@dataclass
class _Session:
    user_id: int
    expires: float
    idle: int
    authorized: bool = False


class C1222Server(_Endpoint):
    """The meter side: serves the C12.19 table subset from a `TableProvider`, keeps C12.22
    sessions (logon/security/wait/logoff/terminate; sessionless requests are served too, the
    EAX' key being the authentication), and can push table data to the head-end (`push`)."""

    def __init__(
        self,
        config: EndpointConfig,
        tables: TableProvider,
        key_lookup: KeyLookup,
        send_key: SendKey,
        rng: RandomSource,
        *,
        invocation_ids: InvocationIdStore | None = None,
    ) -> None:
        super().__init__(config, key_lookup, send_key, rng, invocation_ids=invocation_ids)
        self.tables = MeterTables(tables, config.ed_class or b"AMST")
        self._sessions: dict[bytes, _Session] = {}

    def push(
        self,
        addr: Addr,
        headend: ApTitle,
        table: int,
        data: bytes,
        now: float,
        *,
        offset: int | None = None,
        response_control: ResponseControl = ResponseControl.ALWAYS,
    ) -> int:
        """Unsolicited: write `data` (e.g. the newest load-profile intervals) to the head-end's
        copy of `table`; acknowledged as a `ResponseReceived` (ALWAYS) like any request."""
        return self.request(  # a tuple: `request` keeps it as it is
            addr, headend, (Write(table, data, offset),), now, response_control=response_control
        )

    def sessions(self) -> int:
        return len(self._sessions)

    def _own_timer(self) -> float | None:
        if not self._sessions:  # the usual case: asked after every datagram
            return None
        return min(s.expires for s in self._sessions.values())

    def _own_handle_timer(self, now: float) -> None:
        for who in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[who]
            self.counters["session-timeouts"] += 1

    def _serve(self, req: Request, peer: ApTitle, protected: bool, now: float) -> Response:
        who = peer.device_id
        session = self._sessions.get(who)
        if session is not None and session.expires <= now:
            del self._sessions[who]
            session = None
        if session is not None:
            session.expires = now + session.idle
        # reads (polled collection) and writes (commands) first: nearly every request is one
        if isinstance(req, Read):
            if not protected and session is None:
                return Response(ResponseCode.ISC)
            if req.offset is None or req.count is None:
                data = self.tables.read(req.table, now, who)
            else:
                data = self.tables.read_partial(req.table, req.offset, req.count, now, who)
            if isinstance(data, ResponseCode):
                return Response(data)
            if len(data) > 0xFFFF:
                return Response(ResponseCode.RSTL)
            return Response(_OK_CODE, ReadResult(data).encode())
        if isinstance(req, Write):
            if not protected:
                return Response(ResponseCode.ISC)
            return Response(self.tables.write(req.table, req.offset, req.data, now, who))
        if isinstance(req, Identify):
            return Response(ResponseCode.OK, IdentifyResult(3, 1, 0).encode())
        if isinstance(req, Logon):
            if session is not None:
                return Response(ResponseCode.ISSS)
            idle = min(req.session_idle_timeout or self.config.session_idle_timeout,
                       self.config.session_idle_timeout)  # fmt:skip
            self._sessions[who] = _Session(req.user_id, now + idle, idle)
            return Response(ResponseCode.OK, LogonResult(idle).encode())
        if isinstance(req, Security):
            if session is None:
                return Response(ResponseCode.ISSS)
            session.authorized = protected  # the EAX' key, not the password, authorises
            return Response(ResponseCode.OK if protected else ResponseCode.ISC)
        if isinstance(req, Logoff | Terminate):
            self._sessions.pop(who, None)
            return Response(ResponseCode.OK)
        if isinstance(req, Wait):
            if session is None:
                return Response(ResponseCode.ISSS)
            session.expires = now + max(session.idle, req.seconds)
            return Response(ResponseCode.OK)
        return Response(ResponseCode.SNS)


class C1222Client(_Endpoint):
    """The head-end side: requests with ids, timeouts and retries, responses matched by the
    called AP invocation id; answers a meter's pushed writes with OK (`RequestReceived`)."""

    def read(
        self,
        addr: Addr,
        meter: ApTitle,
        table: int,
        now: float,
        *,
        offset: int | None = None,
        count: int | None = None,
    ) -> int:
        return self.request(addr, meter, (Read(table, offset, count),), now)  # kept as it is

    def procedure(self, addr: Addr, meter: ApTitle, init: ProcedureInitiate, now: float) -> int:
        """Write ST7 and read ST8 in one EPSEM (C12.19 §9.1.7): the ST8 read is the outcome."""
        return self.request(
            addr,
            meter,
            [Write(Table.PROC_INITIATE, init.encode()), Read(Table.PROC_RESPONSE)],
            now,
        )

    def _serve(self, req: Request, peer: ApTitle, protected: bool, now: float) -> Response:
        if isinstance(req, Write):
            return _OK if protected else _ISC
        if isinstance(req, Registration):  # as master relay (docs/mesh.md): only itself, signed
            if not protected:
                return Response(ResponseCode.ISC)
            if not req.ap_title.same_node(peer):
                return Response(ResponseCode.IAR)
            return Response(ResponseCode.OK, grant(req, self.config.ap_title).encode())
        return super()._serve(req, peer, protected, now)
