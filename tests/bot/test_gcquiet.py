"""bot.gcquiet: full collections run in quiet moments of admission, or at the latest after
``max_interval``; CPython's automatic full collections are off while a collector is installed."""

from __future__ import annotations

import gc
import time
from pathlib import Path

from bot.gcquiet import NO_AUTOMATIC_FULL, QuietCollector
from bot.queue.admission import Priority


def test_install_switches_automatic_full_collections_off_until_the_last_uninstall() -> None:
    before = gc.get_threshold()
    a, b = QuietCollector(Priority()), QuietCollector(Priority())
    a.install()
    b.install()
    try:
        assert gc.get_threshold() == (before[0], before[1], NO_AUTOMATIC_FULL)
        a.uninstall()
        assert gc.get_threshold()[2] == NO_AUTOMATIC_FULL  # b still installed
    finally:
        a.uninstall()
        b.uninstall()
    assert gc.get_threshold() == before


def test_collects_when_due_and_quiet_never_mid_request() -> None:
    gate = Priority()
    c = QuietCollector(gate, min_interval=10, max_interval=60, quiet=0.05)
    start = c.last
    assert not c.collect_if_due(start + 5)  # not due yet
    with gate.arriving():  # a request under way: not a quiet moment
        assert not c.collect_if_due(start + 20)
        assert c.collections == 0
    now = time.monotonic() + 20  # quiet for 20 s since the request ended, and due
    assert gate.quiet_for(now) >= 19
    assert c.collect_if_due(now)
    assert (c.collections, c.forced) == (1, 0)
    assert not c.collect_if_due(c.last + 1)  # the next one is due min_interval later


def test_collects_at_max_interval_under_any_load() -> None:
    gate = Priority()
    c = QuietCollector(gate, min_interval=10, max_interval=60)
    with gate.arriving():  # requests never stop
        assert not c.collect_if_due(c.last + 59)
        assert c.collect_if_due(c.last + 61)
    assert (c.collections, c.forced) == (1, 1)


async def test_the_app_installs_one_for_its_lifetime(tmp_path: Path) -> None:
    from bot.app import App
    from bot.settings import Settings

    before = gc.get_threshold()
    repo = Path(__file__).resolve().parents[2]
    app = await App.start(Settings(config_dir=repo / "config", database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"), {})
    try:
        assert app.collector is not None and gc.get_threshold()[2] == NO_AUTOMATIC_FULL
    finally:
        await app.aclose()
    assert gc.get_threshold() == before
