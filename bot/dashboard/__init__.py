"""The web dashboard of ``baton serve``: runs, a run's live graph, workflows, schedules, threads, stats.

Server-rendered HTML (Jinja2) with small progressive enhancement: htmx swaps page
fragments, its SSE extension follows the server's event streams so the runs list and a
run's graph change without a reload, and Chart.js draws the stats. Every asset is
packaged under ``bot/dashboard/static`` (vendored from npm with its license file; see
``static/vendor/README.md``); no CDN.

Mount it with ``create_app(settings, extra_routers=[bot.dashboard.router])``; it reads
the running services from ``request.app.state.services`` and acts only through the
REST API's handlers (same permission checks and audit rows).
"""

from __future__ import annotations

from bot.dashboard._views import router

__all__ = ["router"]
