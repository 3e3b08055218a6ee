"""Errors of the persistence layer."""


class StoreError(RuntimeError):
    """The database failed (after retries where retrying is safe); the message says what was being done."""
