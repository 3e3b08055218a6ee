"""Fault 10 (issue 14): any text a platform hands over is stored and read back, never a crash.

Runs on SQLite and on PostgreSQL (when BATON_TEST_POSTGRES_URL is set).
"""

from __future__ import annotations

import pytest

from adapters.base import Message
from bot.sessions.records import safe_text
from bot.store import Database, SessionStore, ThreadKey, upgrade

K = ThreadKey("discord", "C1", "T1")


@pytest.fixture
async def sessions(db_url: str):  # type: ignore[no-untyped-def]
    await upgrade(db_url)
    db = Database(db_url)
    yield SessionStore(db)
    await db.dispose()


async def test_lone_surrogates_and_nul_are_stored_as_replacement_characters(sessions: SessionStore) -> None:
    raw = b"hello \xff\xfe junk".decode("utf-8", "surrogateescape")
    await sessions.append(K, "user", "U\udcff1", raw)
    await sessions.append(K, "user", "U2", "nul\x00inside and half an emoji \ud83d")
    got = await sessions.history(K)
    assert [m.text for m in got] == ["hello \ufffd\ufffd junk", "nul\ufffdinside and half an emoji \ufffd"]
    assert got[0].author == "U\ufffd1"
    assert [m.text for m in await sessions.search(K, "junk")] == ["hello \ufffd\ufffd junk"]


def test_safe_text_keeps_valid_text_and_the_message_is_clean_at_the_seam() -> None:
    text = "déjà vu 😀 — ok"
    assert safe_text(text) is text
    m = Message("console", "local", "t", "me", b"run: echo \xff".decode("utf-8", "surrogateescape"))
    assert m.text == "run: echo \ufffd"
    m.text.encode("utf-8")
