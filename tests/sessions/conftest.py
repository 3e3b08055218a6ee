"""Fixtures for the session-memory tests (bot/sessions)."""

from __future__ import annotations

import itertools
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Sequence

import pytest

# The repo root is not necessarily on sys.path (package not installed, plain
# `pytest` instead of `python -m pytest`); harmless when it already is.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bot.sessions import MemoryMessage, TokenCounter

WORDS = (
    "deploy server error log database restart user kubernetes pod memory limit python "
    "release rollback incident alert latency cache queue worker timeout config secret"
).split()


@pytest.fixture(scope="session")
def counter() -> TokenCounter:
    """A cl100k-compatible counter (offline fallback on air-gapped machines)."""
    return TokenCounter("cl100k_base")


MessageFactory = Callable[..., list[MemoryMessage]]


@pytest.fixture
def make_messages(counter: TokenCounter) -> MessageFactory:
    """``make_messages(texts, start_id=1, step=1, roles=None)`` → MemoryMessages
    with exact cached counts, ids ``start_id, start_id+step, ...`` and
    alternating user/assistant roles."""

    def make(
        texts: Sequence[str],
        start_id: int = 1,
        step: int = 1,
        roles: Sequence[str] | None = None,
    ) -> list[MemoryMessage]:
        t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
        out = []
        for i, (text, mid) in enumerate(zip(texts, itertools.count(start_id, step))):
            role = roles[i] if roles else ("user" if i % 2 == 0 else "assistant")
            out.append(
                MemoryMessage(
                    id=mid,
                    role=role,  # type: ignore[arg-type]
                    author="alice" if role == "user" else "baton",
                    text=text,
                    tokens=counter.count_message(role, text),
                    created_at=t0 + timedelta(seconds=i),
                    encoding=counter.encoding,
                )
            )
        return out

    return make


@pytest.fixture
def new_message(counter: TokenCounter) -> Callable[..., MemoryMessage]:
    """``new_message(text, id=10_000)`` → the incoming user message."""

    def make(text: str, id: int = 10_000, role: str = "user") -> MemoryMessage:
        return MemoryMessage(
            id=id,
            role=role,  # type: ignore[arg-type]
            author="alice",
            text=text,
            tokens=counter.count_message(role, text),
            encoding=counter.encoding,
        )

    return make
