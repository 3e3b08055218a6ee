"""Context variables the executor sets for the actions it runs."""

from contextvars import ContextVar

current_run_id: ContextVar[str | None] = ContextVar("baton_current_run_id", default=None)
"""The id of the run whose step is executing (set by :mod:`engine.run` for its step tasks)."""
