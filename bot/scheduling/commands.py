"""Chat commands for schedules: create, list, pause, resume, remove.

Recognised (:func:`parse_schedule_command`)::

    schedule <phrase>          e.g. "schedule every weekday at 9am run standup-report"
    /schedule <phrase>         the same; "/schedule overlap=queue every hour run X" sets the overlap policy
    /schedules [all]           this channel's schedules; "all" (admins) every channel's
    /unschedule ID             delete a schedule
    /pause ID  /resume ID      stop / restart its firings (firings due while paused are not caught up)

A message starting with "schedule " without the slash is a command only when it
also has a stand-alone "run" (the parser needs "run <workflow>" anyway), so chat such
as "schedule review is at noon, can you summarise?" stays chat. A phrase without the
"schedule" prefix ("every day at 9am run X") is never a command.

Nothing is scheduled from a message that is not fully understood: the phrase must
parse completely (:func:`bot.scheduling.parse_schedule`), fire no more often than the
service's minimum interval, compile as a workflow, and be a workflow the author may
run (``[permissions]``). Every refusal says why and how to fix it. Replies go through
``bot.reply`` so they are stored in the thread's memory.

Who may change a schedule: anyone in the channel it was created in; admins
(``[permissions] admin = [...]``: user ids, ``role:NAME`` or ``*``) anywhere.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bot.settings import permits
from bot.store import StoreError
from engine.errors import DefinitionError, EngineError, UnknownWorkflowError, WorkflowSyntaxError

from .errors import ScheduleParseError
from .service import SchedulerService, human_seconds
from .store import OVERLAP_POLICIES, ScheduleRow
from .triggers import format_when
from .parse import parse_schedule

if TYPE_CHECKING:
    from bot.core import Message, Outlet
    from bot.turn import Bot

__all__ = ["parse_schedule_command", "handle_schedule_command", "SCHEDULE_COMMANDS", "HELP_LINES"]

SCHEDULE_COMMANDS = ("schedule", "schedules", "unschedule", "pause", "resume")
"""Command names :func:`handle_schedule_command` handles."""

HELP_LINES = """  schedule <when> run <workflow>   e.g. schedule every weekday at 9am run standup-report
  /schedules [all]       schedules in this channel (all: every channel, admins)
  /pause ID, /resume ID  stop or restart a schedule's firings
  /unschedule ID         delete a schedule"""
"""Lines for the bot's /help text."""

_EXAMPLES = ("schedule every weekday at 9am run standup-report", "schedule every 15 minutes run disk-check")
_SLASH = re.compile(r"^/(schedule|schedules|unschedule|pause|resume)(?:\s+(.*))?$", re.S | re.I)
_BARE = re.compile(r"^schedule\s+(.*)$", re.S | re.I)
_RUN = re.compile(r"(?<!\S)run(?!\S)", re.I)
_ID = re.compile(r"^#?(\d+)$")
_OPTION = re.compile(r"^overlap=(\S*)\s*", re.I)


def parse_schedule_command(text: str) -> tuple[str, str] | None:
    """Recognise a schedule command: ``(name, arg)`` with ``name`` in
    :data:`SCHEDULE_COMMANDS`, or ``None`` (not a schedule command).

    ``"/schedule every day at 9 run X"`` → ``("schedule", "every day at 9 run X")``;
    ``"schedule every day at 9 run X"`` → the same; ``"/pause 3"`` → ``("pause", "3")``.
    """
    t = text.strip()
    m = _SLASH.match(t)
    if m:
        return m.group(1).lower(), (m.group(2) or "").strip()
    m = _BARE.match(t)
    if m and _RUN.search(m.group(1)):
        return "schedule", m.group(1).strip()
    return None


async def handle_schedule_command(
    service: SchedulerService, bot: Bot, msg: Message, outlet: Outlet, name: str, arg: str
) -> bool:
    """Answer a schedule command in ``msg``'s thread; False when ``name`` is not one.

    Args:
        service: the running :class:`SchedulerService` (table and scheduler).
        bot: the bot (``compile``, ``allowed``, ``reply``, ``settings.permissions``).
        msg: the stored message (author, roles, thread key).
        outlet: where to reply.
        name: ``schedule`` | ``schedules`` | ``unschedule`` | ``pause`` | ``resume`` (a
            leading ``/`` is ignored).
        arg: the rest of the message (the phrase, ``all``, or an id).

    Returns:
        True when the command was handled (a reply was sent), False for other names.
        Database failures are answered in the thread, not raised.
    """
    name = name.lstrip("/").lower()
    if name not in SCHEDULE_COMMANDS:
        return False
    try:
        text = await _answer(service, bot, msg, name, arg.strip())
    except StoreError as e:
        text = f"Database error: {e}. Nothing was changed; try again."
    await bot.reply(msg.key, outlet, text)
    return True


async def _answer(service: SchedulerService, bot: Bot, msg: Message, name: str, arg: str) -> str:
    if name == "schedule":
        return await _schedule(service, bot, msg, arg)
    if name == "schedules":
        return await _list(service, bot, msg, arg)
    m = _ID.match(arg)
    if not m:
        return f"Usage: /{name} ID (the number /schedules shows, e.g. /{name} 3)"
    sid = int(m.group(1))
    row = await service.get(sid)
    if row is None or row.status == "finished" or not _in_scope(bot, msg, row):
        return f"No schedule #{sid} in this channel (/schedules lists them)."
    try:
        if name == "unschedule":
            gone = await service.remove(sid)
            return f"Removed schedule #{sid} ({gone.description} — run {gone.workflow}). Runs it started are kept."
        if name == "pause":
            row, changed = await service.pause(sid)
            if not changed:
                return f"Schedule #{sid} is already paused; /resume {sid} starts it again."
            return f"Paused schedule #{sid} ({row.description} — run {row.workflow}). /resume {sid} starts it again."
        row, changed = await service.resume(sid)
    except LookupError:
        return f"No schedule #{sid} in this channel (/schedules lists them)."
    if not changed:
        return f"Schedule #{sid} is already active.\n" + _next_line(service, row)
    if row.status == "finished":
        return f"Schedule #{sid} has no firing left after now; it is finished."
    return f"Resumed schedule #{sid} ({row.description} — run {row.workflow}).\n" + _next_line(service, row)


async def _schedule(service: SchedulerService, bot: Bot, msg: Message, arg: str) -> str:
    overlap = None
    opt = _OPTION.match(arg)
    if opt:
        overlap = opt.group(1).lower()
        if overlap not in OVERLAP_POLICIES:
            return (f"Not scheduled: unknown overlap policy {opt.group(1)!r}; use one of "
                    f"{', '.join('overlap=' + p for p in OVERLAP_POLICIES)}.")
        arg = arg[opt.end():]
    if not arg:
        return "Schedule what? e.g. " + " or ".join(f'"{e}"' for e in _EXAMPLES)
    now = service.clock.now()
    try:
        spec = parse_schedule(arg, now=now, default_tz=service.default_tz)
    except ScheduleParseError as e:
        return f"Not scheduled: {e}"
    gap = spec.min_interval_seconds()
    if gap < service.min_interval_s:
        return (f"Not scheduled: this schedule ({spec.description}) would fire as often as every "
                f"{human_seconds(gap)}; the minimum interval here is {human_seconds(service.min_interval_s)}. "
                f"Try e.g. \"schedule every 15 minutes run {spec.workflow}\".")
    try:
        graph = bot.compile(spec.workflow)
    except WorkflowSyntaxError as e:
        return f"Not scheduled: I could not parse the workflow {spec.workflow!r}: {e.reason} (column {e.column})\n{e.caret()}"
    except UnknownWorkflowError as e:
        known = ", ".join(bot.catalog.names()) or "none"
        return f"Not scheduled: {e} Known workflows: {known}."
    except (DefinitionError, EngineError) as e:
        return f"Not scheduled: that workflow is invalid: {e}"
    denied = bot.allowed(msg, graph)
    if denied:
        return f"Not scheduled: {denied}."
    if not spec.next_fire_times(now, 1):
        return f"Not scheduled: {spec.description} is already past; it would never fire."
    row = await service.add(msg.key, msg.author, spec, overlap=overlap, roles=msg.roles)
    return _confirmation(service, row)


def _confirmation(service: SchedulerService, row: ScheduleRow) -> str:
    lines = [f"Scheduled #{row.id}: {row.description} — run {row.workflow}", f"Time zone: {row.timezone}", _next_line(service, row)]
    once = row.kind == "date"
    lines.append(
        f"Job id: {row.id}. "
        + ("" if once else f"If a firing is due while the previous one still runs: {row.overlap}. ")
        + f"/pause {row.id}, /resume {row.id}, /unschedule {row.id}."
    )
    return "\n".join(lines)


def _next_line(service: SchedulerService, row: ScheduleRow) -> str:
    times = service.upcoming(row, 3)
    if not times:
        return "Next: none"
    label = "Next" if len(times) == 1 else f"Next {len(times)}"
    return f"{label}: " + "; ".join(format_when(t, row.timezone) for t in times)


async def _list(service: SchedulerService, bot: Bot, msg: Message, arg: str) -> str:
    everywhere = arg.lower() == "all"
    if arg and not everywhere:
        return "Usage: /schedules [all]"
    if everywhere and not _is_admin(bot, msg):
        return "Only admins may list every channel's schedules (set admin = [...] under [permissions] in config/baton.toml)."
    rows = await service.list(msg.key, everywhere=everywhere)
    if not rows:
        where = "anywhere" if everywhere else "in this channel"
        return f"No schedules {where}. Create one with: {_EXAMPLES[0]}"
    head = "All schedules:" if everywhere else "Schedules in this channel:"
    lines = [head]
    for r in rows:
        where = f" [{r.key.platform}:{r.key.channel}/{r.key.thread}]" if everywhere else ""
        nxt = f" — next {format_when(r.next_fire_at, r.timezone)}" if r.status == "active" and r.next_fire_at else ""
        lines.append(f"  #{r.id:<4} {r.status:<7} {r.description} ({r.timezone}){nxt} — run {r.workflow} — by {r.created_by}{where}")
    return "\n".join(lines)


def _is_admin(bot: Bot, msg: Message) -> bool:
    return permits(bot.settings.permissions.get("admin", []), msg.author, msg.roles)


def _in_scope(bot: Bot, msg: Message, row: ScheduleRow) -> bool:
    same = row.key.platform == msg.key.platform and row.key.channel == msg.key.channel
    return same or _is_admin(bot, msg)
