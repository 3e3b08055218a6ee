"""A real uvicorn server on a free loopback port for tests that drive ``baton serve``'s app over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def served(app: Any, *, timeout: float = 10) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """Serve the ASGI ``app`` (lifespan on) until the block ends; yields its base URL and an
    httpx client on it (``timeout`` seconds per request and for the start-up).

    Raises:
        TimeoutError: the server did not start within ``timeout`` seconds.
    """
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(timeout):
            while not server.started:
                if task.done():
                    await task  # the server failed to start: its error, not a timeout
                await asyncio.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
            yield url, http
    finally:
        server.should_exit = True
        await task
