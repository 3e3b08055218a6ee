"""Persistence: threads, messages, summaries, runs and step checkpoints (SQLAlchemy async; SQLite worker)."""

from bot.store.db import Database, upgrade
from bot.store.errors import StoreError
from bot.store.runs import RunRow, RunStore
from bot.store.sessions import Forgotten, SessionStore, StoredMessage, ThreadKey

__all__ = ["Database", "Forgotten", "RunRow", "RunStore", "SessionStore", "StoreError", "StoredMessage", "ThreadKey", "upgrade"]
