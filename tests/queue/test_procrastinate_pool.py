"""procrastinate's pool (bot.queue.scale.make_app) in a process with many descriptors open.

Its connection check looks at the idle socket without a round trip. A front serving many
clients (SSE streams, Slack, the API) or a worker with many shell steps' pipes holds more than
1,024 descriptors; a pool connection opened then has a descriptor past ``select()``'s
FD_SETSIZE, and the pool must still hand it out (PostgreSQL: BATON_TEST_POSTGRES_URL).
"""

from __future__ import annotations

import asyncio
import os
import resource

import pytest

from bot.queue.scale import make_app

pytestmark = pytest.mark.timeout(60)


async def test_the_pool_serves_connections_with_descriptors_past_1024(pg_url: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    filler: list[int] = []
    try:
        while not filler or filler[-1] <= 1100:  # every descriptor up to 1100 taken: the pool's sockets come after
            filler.append(os.open(os.devnull, os.O_RDONLY))
        proc = make_app(pg_url)
        async with proc.open_async():
            async with asyncio.timeout(15):  # a failing check makes the pool retry until its own 30 s timeout
                for _ in range(3):
                    row = await proc.connector.execute_query_one_async("select 1 as one")
                    assert row["one"] == 1
    finally:
        for fd in filler:
            os.close(fd)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
