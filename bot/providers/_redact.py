"""Keeping credentials out of messages, reprs and logs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

# Key-shaped tokens: OpenAI (sk-..., sk-proj-...), Anthropic (sk-ant-...), including the
# masked form OpenAI echoes in 401 messages ("sk-ab************wxyz"), and bearer values.
_KEYLIKE = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-*]{3,}|(?i:bearer)\s+[A-Za-z0-9._\-~+/=*]+")
_MAX_DETAIL = 300


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` with each non-empty secret in ``secrets`` and any key-shaped token replaced by ``[redacted]``.

    Also truncates to 300 characters: this is for server-supplied detail in error
    messages, which should stay short.
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = _KEYLIKE.sub("[redacted]", text)
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 1] + "…"
    return text


def safe_url(url: str | None) -> str | None:
    """``url`` without userinfo (``user:pass@``) or query string, for reprs and logs."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
