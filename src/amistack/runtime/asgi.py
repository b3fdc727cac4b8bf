"""An ASGI application (the head-end's REST API) served by uvicorn on the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from amistack.addr import Addr


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, host: str, port: int) -> AsyncIterator[Addr]:
    """Serve `app` on (host, port) - port 0 picks a free one - as a task of this loop; yields
    the bound address once it listens (raises why it did not start: port in use, ...), and on
    exit asks the server to stop and waits for it (at most 5 s)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        sock = server.servers[0].sockets[0].getsockname()
        yield (str(sock[0]), int(sock[1]))
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 5.0)


__all__ = ["serve_asgi"]
