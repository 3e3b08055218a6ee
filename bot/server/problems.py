"""RFC 9457 problem documents: every API error, never a traceback.

A handler raises :class:`Problem`; the app's exception handlers turn it (and
FastAPI's validation errors, unknown routes and any unexpected exception) into
``application/problem+json`` with ``type``, ``title``, ``status``, ``detail`` and,
where useful, extension members (``line``/``column`` for workflow text errors,
``errors`` for request validation).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("baton.server")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://baton.dev/problems/"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(Exception):
    """An API error. ``slug`` becomes the ``type`` URI; ``extra`` adds members.

    Args:
        status: HTTP status code.
        slug: short problem kind, e.g. ``not-found``, ``workflow-syntax``.
        detail: a human-readable explanation of this occurrence.
        title: short summary of the kind (default from the status).
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        """The problem document as a dict."""
        doc: dict[str, Any] = {"type": TYPE_BASE + self.slug, "title": self.title, "status": self.status, "detail": self.detail}
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc


def problem_response(p: Problem, request: Request | None = None) -> JSONResponse:
    """The HTTP response for ``p``."""
    return JSONResponse(p.body(request.url.path if request else None), status_code=p.status, headers=p.headers, media_type=MEDIA_TYPE)


def install_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` a problem document."""

    async def _problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc, request)

    async def _http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "error")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such resource: {request.method} {request.url.path}"
        return problem_response(Problem(exc.status_code, slug, detail, headers=dict(exc.headers or {})), request)

    async def _validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
        return problem_response(Problem(422, "invalid-request", detail, errors=errors), request)

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return problem_response(
            Problem(500, "internal-error", f"an internal error occurred ({type(exc).__name__}); it was logged on the server"), request
        )

    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)
