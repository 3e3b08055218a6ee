"""The ``api`` platform's outlet: threads started over the API have no chat to post to.

Replies and results of API runs are still stored in their thread (the run manager
stores every reply before posting it), so ``GET /api/v1/threads/{key}/messages`` shows
them; live progress reaches clients through ``GET /api/v1/runs/{id}/events``.
"""

from __future__ import annotations

from bot.store import ThreadKey
from engine.events import RunEvent

PLATFORM = "api"


class _QuietView:
    def on_event(self, event: RunEvent) -> None:
        return None

    async def aclose(self) -> None:
        return None


class ApiOutlet:
    """An :class:`adapters.base.Outlet` that posts nowhere (see the module docstring)."""

    platform = PLATFORM

    async def send(self, key: ThreadKey, text: str) -> None:
        """Nothing to post to: the text is already stored in the thread."""
        return None

    def run_view(self, key: ThreadKey, run_id: int, title: str) -> _QuietView:
        """A view that shows nothing (SSE clients follow the run store's events instead)."""
        return _QuietView()
