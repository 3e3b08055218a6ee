"""The audit trail (the store lives in :mod:`bot.store.audit`; re-exported for the server)."""

from bot.store.audit import AUDIT_SQL, AuditEntry, AuditStore, format_entries, sqlite_params

__all__ = ["AUDIT_SQL", "AuditEntry", "AuditStore", "format_entries", "sqlite_params"]
