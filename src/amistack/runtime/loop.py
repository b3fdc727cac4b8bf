"""The event loop every runtime service runs on: uvloop when it is importable, asyncio otherwise."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from amistack.gctune import service_gc as service_gc  # where its users import it from

if TYPE_CHECKING:
    from amistack.access.audit import AuditTrail

log = logging.getLogger(__name__)

T = TypeVar("T")


def _uvloop() -> Any | None:
    try:
        import uvloop
    except ImportError:  # optional: pure asyncio works, just slower
        return None
    return uvloop


def uvloop_available() -> bool:
    """True when uvloop can be imported on this platform."""
    return _uvloop() is not None


def install_uvloop() -> bool:
    """Make uvloop the default event loop policy; False (and asyncio's policy) without uvloop."""
    uv = _uvloop()
    if uv is None:
        log.debug("uvloop not importable; using the asyncio event loop")
        return False
    asyncio.set_event_loop_policy(uv.EventLoopPolicy())
    return True


def new_event_loop(prefer_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """A fresh event loop: uvloop's when preferred and importable, else asyncio's default."""
    uv = _uvloop() if prefer_uvloop else None
    if uv is not None:
        loop: asyncio.AbstractEventLoop = uv.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    """True when `loop` is a uvloop loop."""
    return type(loop).__module__.startswith("uvloop")


def run(main: Callable[[], Awaitable[T]], prefer_uvloop: bool = True) -> T:
    """Run `main()` to completion on a new loop (uvloop when preferred), then close the loop."""
    loop = new_event_loop(prefer_uvloop)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def seal_audit_daily(trail: AuditTrail) -> None:
    """Sign the operator audit trail's head at each UTC midnight that has entries before it
    (the head-end's and the key server's trails; each also seals at shutdown)."""
    while True:
        due = trail.next_seal(time.time())
        await asyncio.sleep(60.0 if due is None else max(1.0, min(due - time.time(), 3600.0)))
        if due is not None and time.time() >= due:
            trail.seal(time.time())
