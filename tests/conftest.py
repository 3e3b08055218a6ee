"""Shared fixtures: databases (SQLite always, PostgreSQL when configured) and an in-process bot."""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
"""Vendored test data with licenses (tests/fixtures/README.md); tests never skip for missing data."""
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


#: Start-up, before the bot serves anything, may block: finding and reading configuration
#: (settings, workflow files, routes, price overrides), creating the data folder and the
#: database engine, migrating. Everything our code does while serving (turns, runs,
#: checkpoints, schedules, adapters) must not block: blockbuster raises BlockingError.
STARTUP: tuple[tuple[str, frozenset[str]], ...] = (
    ("bot/app.py", frozenset({"start", "build_catalog", "build_router"})),
    ("bot/settings.py", frozenset({"default_config_dir", "settings_customise_sources"})),
    ("bot/store/db.py", frozenset({"__init__", "_ensure_sqlite_folder", "make_engine", "upgrade"})),
    ("bot/providers/cost.py", frozenset({"load"})),
    ("bot/routing/config.py", frozenset({"load_routes"})),
    # cron-descriptor looks up its gettext catalogue (a few stat calls) for each new description
    ("bot/scheduling/_describe.py", frozenset({"describe_cron"})),
    ("bot/providers/config.py", frozenset({"load_providers_config"})),
    ("bot/routing/cache.py", frozenset({"__init__"})),
    # resuming after a restart reads the few small child records left by a dead process
    ("engine/children.py", frozenset({"reap_orphans"})),
    # asyncpg reads ~/.pgpass (stat) when it opens a connection (the pool opens few, and rarely)
    ("asyncpg/connect_utils.py", frozenset({"_parse_connect_arguments"})),
)


#: Blocking calls found by blockbuster on the serving path and not moved off the loop yet
#: (each is small; listed so that any *new* blocking call fails): removing a shell step's child
#: record when the step is cancelled (one unlink; engine/children.py, a finally that must
#: not await; the record is written off the loop), the first LLM call importing and
#: building the SDK client (bot/providers/registry.py), the embedding layer's file cache and
#: encoder probe (bot/routing), summaries through the LLM (the same lazy SDK import), the
#: picture command's check for Graphviz (engine/picture.py).
KNOWN_BLOCKING: tuple[tuple[str, frozenset[str]], ...] = (
    ("engine/children.py", frozenset({"forget"})),
    ("bot/providers/registry.py", frozenset({"build_provider", "get"})),
    ("bot/routing/cache.py", frozenset({"get", "put", "embed", "save_atomic"})),
    ("bot/routing/encoders.py", frozenset({"available_encoders"})),
    # the first use of a time zone reads its tzdata file (zoneinfo caches it afterwards)
    ("bot/scheduling/_tz.py", frozenset({"get_zone"})),
    # the dashboard's Jinja templates are read (and checked for changes) from disk
    ("jinja2/loaders.py", frozenset({"get_source", "uptodate"})),
    # the dashboard's static handler resolves and stats the asset path before streaming it
    ("bot/dashboard/_views.py", frozenset({"static"})),
    # /run show N graph: looking for Graphviz's dot on PATH (the drawing itself runs in a thread)
    ("engine/picture.py", frozenset({"layout_available"})),
)


@pytest.fixture(autouse=True)
def _no_blocking_calls_on_the_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    """``blockbuster`` in every async test: a blocking call (file or socket I/O, ``time.sleep``,
    sqlite3, a lock …) made by our code (``bot``, ``engine``, ``adapters``) while the event loop
    runs raises ``BlockingError`` (start-up may block: :data:`STARTUP`). Sync tests are not checked."""
    if not inspect.iscoroutinefunction(request.function):
        yield
        return
    from blockbuster import blockbuster_ctx

    from engine.parse import prepare_parser

    prepare_parser()  # what App.start does before serving: the grammar file is read once, here
    with blockbuster_ctx(["bot", "engine", "adapters"]) as bb:
        for function in bb.functions.values():
            for filename, functions in (*STARTUP, *KNOWN_BLOCKING):
                function.can_block_in(filename, set(functions))
        yield
