"""Fixtures for the Discord adapter: a real discord.py client against the local fake API.

The client logs in over REST to :class:`tests.fakes.discord_api.FakeDiscordAPI`
(served as ``discord.com`` through the client's ``connector`` option, nothing patched) and receives gateway events through its
own parsers (see :mod:`tests.discord.support`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.discord.support import APP_ID, BOT_ID, GUILD_ID, TOKEN, DiscordEnv, start_env, stop_env
from tests.fakes.discord_api import FakeDiscordAPI


@pytest.fixture
def discord_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``@pytest.mark.parametrize("discord_overrides", [{...}], indirect=True)``: Settings/DiscordSettings overrides."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
async def api() -> AsyncIterator[FakeDiscordAPI]:
    async with FakeDiscordAPI(token=TOKEN, user_id=BOT_ID, application_id=APP_ID, guild_id=GUILD_ID) as server:
        yield server


@pytest.fixture
async def env(api: FakeDiscordAPI, sqlite_url: str, discord_overrides: dict[str, Any]) -> AsyncIterator[DiscordEnv]:
    """Baton + a logged-in client that has seen READY and GUILD_CREATE."""
    e = await start_env(api, sqlite_url, discord_overrides)
    try:
        yield e
    finally:
        await stop_env(e)
