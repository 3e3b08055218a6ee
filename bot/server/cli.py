"""``baton serve``, ``baton token …`` and ``baton webhooks …`` (added to the ``baton`` CLI).

    baton serve [--host H] [--port P]                    REST API, Slack events, metrics (default 127.0.0.1:8700)
    baton token create NAME --scopes runs:read,runs:write  prints the token once (last line of stdout)
    baton token list | baton token revoke NAME
    baton webhooks log [NAME] [--limit N]                 delivery attempts, newest first
    baton webhooks test NAME                              send one signed test event now
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import typer

token_app = typer.Typer(help="API tokens for baton serve.", no_args_is_help=True)
webhooks_app = typer.Typer(help="Webhook deliveries.", no_args_is_help=True)


def _settings():  # type: ignore[no-untyped-def]
    from bot.cli import _settings as settings

    return settings()


async def _with_db(fn):  # type: ignore[no-untyped-def]
    """Run ``fn(db, settings)`` against the configured database (SQLite is migrated first)."""
    from bot.store import Database, upgrade

    s = _settings()
    if s.db_url.startswith("sqlite"):
        await upgrade(s.db_url)
    db = Database(s.db_url)
    try:
        return await fn(db, s)
    finally:
        await db.dispose()


def serve(
    host: str = typer.Option(None, help="address to bind (default [server] host, 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default [server] port, 8700; 0 picks a free one)"),
) -> None:
    """Serve the REST API, the Slack Events endpoint, /metrics, /healthz, /readyz and /docs in one process."""
    import uvicorn

    from bot.server.app import create_app
    from bot.server.tracing import setup_json_logs

    s = _settings()
    if s.server.json_logs:
        setup_json_logs(s.log_level)
    bind_host, bind_port = host or s.server.host, s.server.port if port is None else port
    sock = socket.socket(socket.AF_INET6 if ":" in bind_host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:  # bind before anything starts, so a taken port is one clear line
        sock.bind((bind_host, bind_port))
    except OSError as e:
        sock.close()
        typer.echo(f"baton serve: cannot listen on {bind_host}:{bind_port}: {e.strerror or e}; pick another with --port or [server] port", err=True)
        raise typer.Exit(2) from None
    from bot.dashboard import router as dashboard

    app = create_app(s, extra_routers=[dashboard])  # the web dashboard at /
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    logging.getLogger("baton.server").warning("baton serve listening on http://%s:%d (API docs at /docs)", bind_host, sock.getsockname()[1])
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if not server.started:
        typer.echo("baton serve: start-up failed (see the log above)", err=True)
        raise typer.Exit(2)


@token_app.command("create")
def token_create(
    name: str = typer.Argument(..., help="the token's name; it acts as the principal api:NAME"),
    scopes: str = typer.Option("runs:read", "--scopes", help="comma-separated: runs:read, runs:write, admin"),
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from bot.server.audit import AuditEntry, AuditStore
    from bot.server.auth import TokenError, TokenStore, parse_scopes

    try:
        sc = parse_scopes(scopes)
    except TokenError as e:
        typer.echo(f"baton: {e}", err=True)
        raise typer.Exit(2) from None

    async def go(db, s):  # type: ignore[no-untyped-def]
        tok = await TokenStore(db).create(name, sc)
        await AuditStore(db).record(AuditEntry("cli", "cli", "token.create", target=f"token:{name}", detail=",".join(sc)))
        return tok

    try:
        token = asyncio.run(_with_db(go))
    except TokenError as e:
        typer.echo(f"baton: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"Created token {name!r} (principal api:{name}, scopes {','.join(sc)}). It is shown once; store it now:", err=True)
    typer.echo(token)


@token_app.command("list")
def token_list() -> None:
    """List tokens (names, scopes, dates; never the tokens)."""
    from bot.server.auth import TokenStore

    async def go(db, s):  # type: ignore[no-untyped-def]
        return await TokenStore(db).list()

    rows = asyncio.run(_with_db(go))
    if not rows:
        typer.echo("No API tokens. Create one: baton token create NAME --scopes runs:read,runs:write")
    for t in rows:
        state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
        typer.echo(f"{t.name:<20} {','.join(t.scopes):<28} created {t.created_at:%Y-%m-%d %H:%M}  {state}")


@token_app.command("revoke")
def token_revoke(name: str) -> None:
    """Revoke the active token NAME (a running server stops accepting it within seconds)."""
    from bot.server.audit import AuditEntry, AuditStore
    from bot.server.auth import TokenStore

    async def go(db, s):  # type: ignore[no-untyped-def]
        ok = await TokenStore(db).revoke(name)
        await AuditStore(db).record(AuditEntry("cli", "cli", "token.revoke", "ok" if ok else "failed", target=f"token:{name}"))
        return ok

    if not asyncio.run(_with_db(go)):
        typer.echo(f"baton: no active token named {name!r} (baton token list shows them)", err=True)
        raise typer.Exit(1)
    typer.echo(f"Revoked token {name!r}.")


@webhooks_app.command("log")
def webhooks_log(name: str = typer.Argument(None, help="one webhook (default: all)"), limit: int = typer.Option(20, help="rows")) -> None:
    """Delivery attempts, newest first: time, webhook, event, attempt, outcome, status, error."""
    from bot.server.webhooks import delivery_log

    async def go(db, s):  # type: ignore[no-untyped-def]
        return await delivery_log(db, name, limit=limit)

    rows = asyncio.run(_with_db(go))
    if not rows:
        typer.echo("No webhook deliveries yet.")
    for d in rows:
        code = d.status_code if d.status_code is not None else "-"
        typer.echo(f"{d.at:%Y-%m-%d %H:%M:%S} {d.webhook:<14} {d.event_type or '':<19} {d.event_id} try {d.attempt:<2} {d.outcome:<9} {code} {d.duration_ms:.0f}ms {d.error or ''}".rstrip())


@webhooks_app.command("test")
def webhooks_test(name: str) -> None:
    """Send one signed ``webhook.test`` event to NAME now and print the outcome (exit 1 if it failed)."""
    from bot.server.webhooks import Dispatcher

    async def go(db, s):  # type: ignore[no-untyped-def]
        d = Dispatcher(db, s)
        try:
            return await d.send_test(name)
        finally:
            await d.aclose()

    try:
        res = asyncio.run(_with_db(go))
    except KeyError as e:
        typer.echo(f"baton: {e.args[0]}", err=True)
        raise typer.Exit(2) from None
    code = res.status_code if res.status_code is not None else "-"
    typer.echo(f"{name}: {res.outcome} (status {code}, {res.duration_ms:.0f} ms){' — ' + res.error if res.error else ''}")
    if res.outcome != "delivered":
        sys.exit(1)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``token`` and ``webhooks`` to the ``baton`` CLI."""
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")
    app.add_typer(webhooks_app, name="webhooks")
