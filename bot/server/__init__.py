"""``baton serve``: Baton as a service (issue 18).

One ASGI process (FastAPI on uvicorn) serving the REST API v1 (``/api/v1``), the Slack
Events endpoint, ``/metrics``, ``/healthz``, ``/readyz`` and OpenAPI docs at ``/docs``.

Modules: ``app`` (the factory :func:`create_app` and :func:`serve`), ``api_runs`` /
``api_more`` (routers; runs are admitted through the app's :mod:`bot.queue.admission`,
the same path as chat), ``fastpath`` (``POST /api/v1/runs`` as a pure ASGI middleware, the
hot path without FastAPI's dependency solving), ``auth`` (API tokens, scopes, rate limit), ``events`` (outbox rows, metrics and live events at the
run store), ``webhooks`` (delivery), ``audit``, ``metrics``, ``tracing``, ``problems``
(RFC 9457 errors), ``cli`` (``baton serve|token|webhooks``).

Importing this package does not import FastAPI; import :mod:`bot.server.app` for that.
"""

__all__: list[str] = []
