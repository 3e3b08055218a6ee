"""The ``baton`` command (typer).

    baton console [--thread NAME]        chat in the terminal (SQLite by default, no keys)
    baton run --adapter console          the same, by adapter name (slack/discord come later)
    baton db upgrade                     apply database migrations
    baton workflow check TEXT|NAME|FILE  check a workflow (text, name or YAML file) and print its graph
    baton workflow list                  the named workflows
    baton serve [--host H] [--port P]    REST API, Slack events, metrics (bot/server)
    baton token create|list|revoke       API tokens;  baton webhooks log|test
    baton workflow visualize NAME|TEXT --output FILE   draw a workflow (.svg .png .dot .mmd)
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import typer

from bot.settings import ConfigError, Settings
from engine.errors import EngineError, UnknownWorkflowError, WorkflowSyntaxError

app = typer.Typer(
    help="Baton: a chat-ops bot with session memory and a workflow language.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database commands.", no_args_is_help=True)
workflow_app = typer.Typer(help="Workflow commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(workflow_app, name="workflow")


def _add_schedule_app() -> None:
    from bot.scheduling.cli import schedule_app

    app.add_typer(schedule_app, name="schedule")


_add_schedule_app()


def _add_server_commands() -> None:
    from bot.server.cli import register

    register(app)


_add_server_commands()


CONFIG_ERRORS = ("ConfigError", "SlackConfigError", "DiscordConfigError", "DefinitionError")
"""Exceptions that are configuration mistakes: printed as one ``baton: …`` line, exit code 2."""


def _settings() -> Settings:
    s = Settings.load()
    logging.basicConfig(level=s.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return s


#: Module with the adapters' entry points (``console``, ``serve``); looked up by name because
#: the core imports no adapter (the adapters depend on the core, not the other way round).
LAUNCHER = "adapters.launch"


def _launcher() -> Any:
    return importlib.import_module(LAUNCHER)


def _start(main: Callable[[], Coroutine[Any, Any, int | None]]) -> None:
    """Run ``main()`` (its result, when an int, is the exit code); a configuration mistake at
    start (any of :data:`CONFIG_ERRORS`) is one line on stderr and exit code 2, never a
    traceback; a KeyboardInterrupt is exit code 130."""
    try:
        code = asyncio.run(main())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as e:
        if type(e).__name__ in CONFIG_ERRORS:
            typer.echo(f"baton: {e}", err=True)
            raise typer.Exit(2) from None
        raise
    if code:
        raise typer.Exit(code)


@app.command()
def console(thread: str = typer.Option(None, help="thread name (the session key); default from settings")) -> None:
    """Chat with the bot in this terminal; piped input runs non-interactively."""
    _start(lambda: _launcher().console(_settings(), thread))


@app.command("run")
def run_adapter(
    adapter: str = typer.Option("console", help="console, slack or discord"),
    thread: str = typer.Option(None, help="console thread name"),
    socket_mode: bool = typer.Option(False, "--socket-mode", help="Slack: connect over Socket Mode instead of serving HTTP"),
) -> None:
    """Run the bot on one adapter: the console, Slack (HTTP Events API or Socket Mode) or Discord."""
    if adapter == "console":
        console(thread)
        return
    if adapter not in ("slack", "discord"):
        typer.echo(f"unknown adapter '{adapter}'; use console, slack or discord", err=True)
        raise typer.Exit(2)
    _start(lambda: _launcher().serve(_settings(), adapter, socket_mode=socket_mode))


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations to BATON_DATABASE_URL (or the default SQLite file)."""
    from bot.store import upgrade

    s = _settings()
    asyncio.run(upgrade(s.db_url, revision))
    typer.echo(f"database at revision {revision}: {s.db_url.split('@')[-1]}")
    if s.db_url.startswith("postgresql"):  # the job queue of `baton worker` (README "Scale out")
        from bot.queue.scale import apply_schema

        applied = asyncio.run(apply_schema(s.db_url))
        typer.echo("procrastinate schema " + ("applied" if applied else "already present"))


@app.command()
def worker(
    concurrency: int = typer.Option(20, help="runs this worker executes at the same time"),
    name: str = typer.Option(None, help="worker name in logs and the runs table (default host:pid)"),
) -> None:
    """Execute queued runs from PostgreSQL (scale-out; start any number, on any machine)."""
    s = _settings()
    if not s.db_url.startswith("postgresql"):
        typer.echo(
            "baton: `baton worker` needs PostgreSQL: set BATON_DATABASE_URL=postgresql+asyncpg://USER@HOST/DB "
            "(the embedded SQLite default runs its queue inside `baton console` / `baton run`; see README \"Scale out\")",
            err=True,
        )
        raise typer.Exit(2)
    try:
        asyncio.run(_launcher().worker(s, concurrency=concurrency, name=name))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@workflow_app.command("check")
def workflow_check(target: str = typer.Argument(..., metavar="TEXT|NAME|FILE.yaml")) -> None:
    """Check a workflow and print its graph: inputs, nodes with their conditions, cycles with
    their bounds, limits. TARGET is workflow text, a named workflow, or a YAML file. Exit 1
    with the position (text: line/column and a caret; YAML: file:line:column) on error:
    syntax, unknown keys, unknown references, unbounded cycles, unreachable nodes."""
    from pathlib import Path

    from bot.app import build_catalog
    from engine.definitions import compile_definition, parse_definition
    from engine.parse import compile_text

    catalog = build_catalog(_settings())
    path = Path(target)
    try:
        if target.endswith((".yaml", ".yml")) and path.is_file():
            defn = parse_definition(path.read_text(), str(path))
            catalog.workflows = {**catalog.workflows, defn.name: defn}
            graph = compile_definition(defn, catalog, stack=(defn.name,))
        elif target in catalog.workflows:
            graph = catalog.graph_for(target, stack=(target,))
        else:
            graph = compile_text(target, catalog)
    except WorkflowSyntaxError as e:
        typer.echo(f"syntax error: {e}", err=True)
        raise typer.Exit(1) from None
    except UnknownWorkflowError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except EngineError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(graph.describe())


@workflow_app.command("visualize")
def workflow_visualize(
    workflow: str = typer.Argument(..., help="a workflow name or workflow text"),
    output: str = typer.Option(..., "--output", "-o", help="file to write: .svg, .png, .dot or .mmd (Mermaid)"),
) -> None:
    """Draw a workflow's graph to a file (exit 1 with the position on a workflow error, 2 on a bad output)."""
    from pathlib import Path

    from bot.app import build_catalog
    from engine.parse import compile_text
    from engine.picture import FORMATS, LayoutUnavailable, picture, write

    path = Path(output)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        typer.echo(f"baton: --output {output}: unknown format '{path.suffix}'; use one of .svg .png .dot .mmd", err=True)
        raise typer.Exit(2)
    catalog = build_catalog(_settings())
    try:
        graph = compile_text(workflow, catalog, name=workflow if workflow in catalog.workflows else None)
    except WorkflowSyntaxError as e:
        typer.echo(f"syntax error: {e}", err=True)
        raise typer.Exit(1) from None
    except EngineError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    try:
        data = write(picture(graph), fmt)
    except LayoutUnavailable as e:
        typer.echo(f"baton: {e}", err=True)
        raise typer.Exit(2) from None
    try:
        path.write_bytes(data)
    except OSError as e:
        typer.echo(f"baton: --output {output}: {e.strerror}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path} ({len(graph.steps)} steps, {fmt})")


@workflow_app.command("list")
def workflow_list() -> None:
    """List the named workflows."""
    from bot.app import build_catalog

    catalog = build_catalog(_settings())
    for name, d in sorted(catalog.workflows.items()):
        typer.echo(f"{name:<20} {d.description}")


def main() -> None:
    """Entry point of the ``baton`` script: a configuration mistake exits 2 and a database
    error 1, each with one line."""
    from bot.store import StoreError
    from engine.errors import DefinitionError

    try:
        app()
    except (ConfigError, DefinitionError) as e:
        typer.echo(f"baton: {e}", err=True)
        sys.exit(2)
    except StoreError as e:
        typer.echo(f"baton: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
