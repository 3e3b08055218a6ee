"""Errors of the persistence layer."""


class StoreError(RuntimeError):
    """The database failed (after retries where retrying is safe); the message says what was being done."""


class ConstraintError(StoreError):
    """A statement broke a constraint (a foreign key to a deleted row, a duplicate key); nothing was committed."""
