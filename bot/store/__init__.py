"""Persistence: threads, messages, runs and step checkpoints (SQLAlchemy async)."""

from bot.store.db import Database, StoreError, upgrade
from bot.store.runs import RunRow, RunStore
from bot.store.sessions import SessionStore, StoredMessage, ThreadKey

__all__ = ["Database", "RunRow", "RunStore", "SessionStore", "StoreError", "StoredMessage", "ThreadKey", "upgrade"]
