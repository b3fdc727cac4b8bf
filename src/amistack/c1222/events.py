"""What the C12.22 engines report (`next_event()`), as small frozen dataclasses (one per message:
`frozen_init` builds them at half the cost of the generated `__init__`)."""

from __future__ import annotations

from dataclasses import dataclass

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.c1222.services import Request, Response
from amistack.frozeninit import frozen_init


@frozen_init
@dataclass(frozen=True)
class ResponseReceived:
    """The answer to `request(...)` number `request_id`: one response per request served
    (fewer than requested if the peer stopped at an error)."""

    request_id: int
    peer: ApTitle
    addr: Addr
    requests: tuple[Request, ...]
    responses: tuple[Response, ...]

    @property
    def ok(self) -> bool:
        return len(self.responses) == len(self.requests) and all(r.ok for r in self.responses)


@frozen_init
@dataclass(frozen=True)
class RequestTimedOut:
    """No (authentic) answer after every retry."""

    request_id: int
    peer: ApTitle
    requests: tuple[Request, ...]


@frozen_init
@dataclass(frozen=True)
class RequestReceived:
    """A peer's authenticated request and what we answered (a meter's pushed interval data at
    the head-end; any served request at the meter)."""

    peer: ApTitle
    addr: Addr
    requests: tuple[Request, ...]
    responses: tuple[Response, ...]
    key_id: int | None


C1222Event = ResponseReceived | RequestTimedOut | RequestReceived
