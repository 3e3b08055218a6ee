"""Store tests compile workflows inside async tests: load the workflow grammar first, off the event loop."""

from __future__ import annotations

import pytest

from engine.catalog import Catalog
from engine.parse import compile_text


@pytest.fixture(scope="session", autouse=True)
def _grammar_loaded() -> None:
    """The parser reads ``engine/grammar.lark`` on first use; doing that inside a test's event
    loop is a blocking file read (blockbuster fails the test that happens to run first)."""
    compile_text("echo warm", Catalog())
