"""Shared fixtures: databases (SQLite always, PostgreSQL when configured) and an in-process bot."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PG_URL = os.environ.get("BATON_TEST_POSTGRES_URL")
PG_SKIP = "PostgreSQL tests need BATON_TEST_POSTGRES_URL (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test); .ci/run sets it"


async def _pg_admin(sql: str) -> None:
    import asyncpg

    dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")  # type: ignore[union-attr]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    if not PG_URL:
        pytest.skip(PG_SKIP)
    name = f"baton_t_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The contract suite's backends: every store test runs on both."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}"
        return
    if not PG_URL:
        pytest.skip(PG_SKIP)
    name = f"baton_t_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RecordingOutlet:
    """An outlet that records replies and run events (the test adapter)."""

    def __init__(self, platform: str = "test") -> None:
        self.platform = platform
        self.sent: list[tuple[object, str]] = []
        self.events: list[object] = []
        self._new = asyncio.Event()

    async def send(self, key, text: str) -> None:  # type: ignore[no-untyped-def]
        self.sent.append((key, text))
        self._new.set()

    def run_view(self, key, run_id: int, title: str):  # type: ignore[no-untyped-def]
        outlet = self

        class _View:
            def on_event(self, event) -> None:  # type: ignore[no-untyped-def]
                outlet.events.append(event)

            async def aclose(self) -> None:
                return None

        return _View()

    @property
    def texts(self) -> list[str]:
        return [t for _, t in self.sent]

    async def wait_for(self, needle: str, timeout: float = 10.0) -> str:
        """Wait until a reply containing ``needle`` was sent; returns it."""
        async with asyncio.timeout(timeout):
            while True:
                for t in self.texts:
                    if needle in t:
                        return t
                self._new.clear()
                await self._new.wait()


@pytest.fixture(autouse=True)
def _no_vendor_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never use real vendor keys: with none set, "no provider" behaviour is what is tested."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    # Routing by rules only unless a test asks for an encoder (loading a model per App is slow).
    monkeypatch.setenv("BATON_ROUTING__ENCODER", "none")


@pytest.fixture
def outlet() -> RecordingOutlet:
    return RecordingOutlet()
