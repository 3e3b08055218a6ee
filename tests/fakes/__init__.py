"""Reusable in-process fakes for Baton's tests (no network beyond 127.0.0.1)."""
