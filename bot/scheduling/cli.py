"""``baton schedule …``: the schedule parser from the command line (nothing is scheduled).

    baton schedule explain "every weekday at 9am run standup-report"
    baton schedule explain --tz Europe/Berlin --now 2026-03-27T12:00 --json "every day at 2:30 run X"

The lead mounts it with ``app.add_typer(schedule_app, name="schedule")`` in ``bot/cli.py``.
Exit codes: 0 understood; 1 not understood (the error, its position and a caret on
stderr; with ``--json`` also an ``{"error", "position", "fragment", "examples"}``
object on stdout); 2 bad options (``--now``/``--tz``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer

from .errors import ScheduleParseError
from .store import DEFAULT_MIN_INTERVAL_S
from .parse import explain

__all__ = ["schedule_app"]

schedule_app = typer.Typer(help="Schedule commands (parse and explain schedule phrases).", no_args_is_help=True)


@schedule_app.callback()
def _group() -> None:
    """Schedule commands (parse and explain schedule phrases)."""


@schedule_app.command("explain")
def explain_command(
    message: str = typer.Argument(..., help='the chat phrase, e.g. "every weekday at 9am run standup-report"'),
    now: str = typer.Option(None, "--now", help="current time, ISO 8601 (naive = wall time in the zone); default: now"),
    tz: str = typer.Option("UTC", "--tz", help="IANA zone used unless the phrase names one"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    min_interval: float = typer.Option(
        DEFAULT_MIN_INTERVAL_S, "--min-interval", help="policy minimum seconds between firings (reported, not refused)"
    ),
) -> None:
    """Print what a schedule phrase means: trigger, time zone, description, workflow,
    the next 5 firings (ISO 8601) and policy violations. Exit 1 with the position when
    the phrase is not understood."""
    try:
        at = datetime.fromisoformat(now) if now else datetime.now(UTC)
    except ValueError:
        typer.echo(f"error: --now {now!r} is not an ISO 8601 time (e.g. 2026-03-06T15:00 or 2026-03-06T15:00:00-05:00)", err=True)
        raise typer.Exit(2) from None
    try:
        result = explain(message, now=at, tz=tz, min_interval_seconds=min_interval)
    except ScheduleParseError as e:
        typer.echo(str(e), err=True)
        if as_json:
            typer.echo(json.dumps({"error": e.message, "position": e.position, "fragment": e.fragment,
                                   "examples": list(e.examples)}))
        raise typer.Exit(1) from None
    except ValueError as e:  # a bad --tz
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    typer.echo(_table(result))


def _table(r: dict[str, Any]) -> str:
    trig = r["trigger"]
    lines = [
        f"{'Trigger:':<13}{trig['kind']} {trig['expression']}" + (f" (from {trig['start']})" if "start" in trig else ""),
        f"{'Time zone:':<13}{r['timezone']}",
        f"{'Description:':<13}{r['description']}",
        f"{'Workflow:':<13}{r['workflow']}",
    ]
    nxt = r["next"] or ["(no firing after now)"]
    lines.append(f"{'Next:':<13}{nxt[0]}")
    lines += [" " * 13 + t for t in nxt[1:]]
    issues = [v["message"] for v in r["policy_violations"]]
    lines.append(f"{'Policy:':<13}" + ("; ".join(issues) if issues else "ok"))
    return "\n".join(lines)
