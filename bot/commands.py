"""The bot's read-only commands and the adapters' API, as parts of :class:`bot.turn.Bot`.

:class:`CoreAPIMethods` is :class:`bot.core.CoreAPI` (what adapters call besides
``handle``); :class:`ReadOnlyCommands` answers the commands that only read or stop
things (``/help``, ``/workflows``, ``/runs``, ``/run show``, ``/history``, ``/why``,
``/reload``, ``/approve``, ``/recall``, ``/context``, ``/summary``, ``/forget``,
``/cancel``, ``/audit``) at once, outside the thread's lane. Both use the Bot's stores,
catalogue, manager, memory, approvals, router and audit store.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from bot import texts
from bot.core import Ability, FilesOutlet, Message, Outlet, RunInfo, StepInfo, has_ability
from bot.routing import Outcome, load_routes
from bot.settings import permits
from bot.store import RunRow, StoreError, ThreadKey
from bot.store.audit import AuditEntry, format_entries
from bot.store.sessions import COMMAND
from engine.catalog import close_names
from engine.errors import EngineError

if TYPE_CHECKING:
    from bot.turn import Command

log = logging.getLogger("baton.turn")

__all__ = ["CoreAPIMethods", "ReadOnlyCommands"]

FORGET_WINDOW_S = 60.0


def _run_id(arg: str) -> int:
    m = re.match(r"^#?(\d+)$", arg.strip())
    if not m:
        raise _UsageError(f"expected a run id like 12 or #12, got {arg!r}")
    return int(m.group(1))


class _UsageError(ValueError):
    pass


def _hms(dt: datetime | None) -> str:
    return dt.strftime("%H:%M:%S.%f")[:-3] if dt else "-"


class CoreAPIMethods:
    """:class:`bot.core.CoreAPI` for adapters (mixed into :class:`bot.turn.Bot`)."""

    runs: Any
    sessions: Any
    catalog: Any
    manager: Any
    approvals: Any

    # -- the adapters' API (bot.core.CoreAPI) ----------------------------------

    async def preflight(self, msg: Message, text: str) -> str | None:
        """Would ``text`` start work for ``msg``'s author? ``None`` if so, else the refusal to show.

        Compiles (``run: …``, ``/run NAME``) or loads the run (``/rerun ID …``) and checks
        ``[permissions]``; nothing is stored or run. Other texts pass (they are decided
        when handled). Adapters call this before they commit to a public answer, e.g. to
        make a refusal visible only to its author.
        """
        from bot.turn import parse_command  # the turn defines the command syntax

        cmd = parse_command(text)
        if cmd is None:
            return None
        if cmd.name == "run":
            graph = self._compile_for_chat(cmd.arg)
            if isinstance(graph, str):
                return graph
        elif cmd.name == "rerun":
            m = re.match(r"^#?(\d+)", cmd.arg.strip())
            if not m:
                return texts.usage("Usage: /rerun ID [from STEP]")
            got = await self.runs.get(int(m.group(1)))
            if got is None:
                return texts.no_run(int(m.group(1)))
            graph = got[0].graph
        else:
            return None
        denied = self.allowed(msg, graph)
        return texts.not_run(denied) if denied else None

    async def run_info(self, run_id: int) -> RunInfo | None:
        """A read-only view of stored run ``run_id`` (its thread, status, steps in graph order).

        Raises:
            StoreError: the database failed.
        """
        got = await self.runs.get(run_id)
        if got is None:
            return None
        row, steps = got
        by_id = {s.node_id: s for s in steps}
        shown = tuple(StepInfo(s.node_id, s.label, s.status) for n in row.graph.nodes if (s := by_id.get(n.id)) is not None)
        return RunInfo(row.id, await self.sessions.key_for(row.thread_id), row.status, row.source, shown)

    async def seen(self, platform: str, event_ids: Sequence[str]) -> bool:
        """Whether one of ``event_ids`` was recorded with a stored message (a cheap early drop;
        :meth:`handle` decides atomically). Raises :class:`StoreError` when the database fails."""
        return await self.sessions.seen_any(platform, list(event_ids))

    async def knows(self, key: ThreadKey) -> bool:
        """Whether thread ``key`` has stored messages (Baton takes part in it)."""
        return await self.sessions.count(key) > 0

    def may_decide(self, author: str, roles: Sequence[str]) -> bool:
        """Whether ``author`` may approve or reject waiting runs (True when approvals are off)."""
        return self.approvals is None or self.approvals.may_decide(author, tuple(roles))

    def workflow_names(self) -> list[tuple[str, str]]:
        """``(name, description)`` of the named workflows and actions, sorted (for autocomplete)."""
        return [(n, d.description if (d := self.catalog.workflows.get(n)) else "action") for n in self.catalog.names()]

    async def resume_unfinished(self, platforms: set[str]) -> list[int]:
        """Start again the unfinished runs of ``platforms`` (after a restart); returns their ids."""
        return await self.manager.resume_unfinished(platforms)


class ReadOnlyCommands:
    """The commands answered at once (mixed into :class:`bot.turn.Bot`)."""

    runs: Any
    sessions: Any
    catalog: Any
    manager: Any
    approvals: Any
    memory: Any
    router: Any
    settings: Any
    audit: Any
    queue: Any

    # -- read-only commands ------------------------------------------------

    async def _command_answer(self, key: ThreadKey, outlet: Outlet, text: str) -> None:
        """A command's answer: stored marked (:data:`bot.store.sessions.COMMAND`), then sent."""
        await self.reply(key, outlet, text, kind=COMMAND)

    async def _immediate(self, msg: Message, outlet: Outlet, cmd: Command) -> None:
        from bot.turn import COMMANDS, HELP  # the turn defines the command syntax

        key = msg.key
        if cmd.name == "help":
            await self._command_answer(key, outlet, HELP)
        elif cmd.name == "workflows":
            await self._command_answer(key, outlet, self._workflows_text())
        elif cmd.name == "runs":
            await self._command_answer(key, outlet, await self._runs_text(msg, everywhere=cmd.arg.strip() == "all"))
        elif cmd.name == "run_show" and cmd.arg.lower().endswith(" graph"):
            await self._run_graph(key, outlet, cmd.arg.split()[0])
        elif cmd.name == "run_show":
            await self._command_answer(key, outlet, await self._run_show(cmd.arg, msg))
        elif cmd.name == "history":
            await self._command_answer(key, outlet, await self._history(key, cmd.arg))
        elif cmd.name == "cancel":
            await self._command_answer(key, outlet, await self._cancel(msg, cmd.arg))
        elif cmd.name == "audit":
            await self._command_answer(key, outlet, await self._audit_text(msg, cmd.arg))
        elif cmd.name == "why":
            await self._command_answer(key, outlet, self._why(key))
        elif cmd.name == "reload":
            await self._command_answer(key, outlet, await self.reload_routes(msg))
        elif cmd.name in ("approve", "reject"):
            await self._command_answer(key, outlet, await self._decide(msg, cmd))
        elif cmd.name in ("recall", "context", "summary", "forget"):
            if self.memory is None:
                await self._command_answer(key, outlet, "Session memory is not enabled in this process.")
            else:
                await self._command_answer(key, outlet, await getattr(self, f"_{cmd.name}")(key, cmd.arg))
        else:
            await self._command_answer(key, outlet, texts.unknown_command(cmd.arg, close_names(cmd.arg, COMMANDS)))

    # -- run scope -------------------------------------------------------------

    def _granted(self, msg: Message, action: str) -> bool:
        """Whether ``[permissions] <action>_any`` names ``msg``'s author or one of their roles."""
        return permits(self.settings.permissions.get(f"{action}_any", ()), msg.author, msg.roles)

    async def run_scope(self, msg: Message, row: RunRow, action: str) -> str | None:
        """``None`` when ``msg``'s author may ``action`` (one of :data:`bot.turn.RUN_ACTIONS`) run ``row``:
        the message comes from the thread that started the run, its author started it, or
        ``[permissions] <action>_any`` grants it to them (issue 14 fault 7); else the reason."""
        if row.requested_by == msg.author or self._granted(msg, action):
            return None
        if row.thread_id == await self.sessions.thread_id(msg.key):
            return None
        return (
            f"it was started in another thread by someone else (the thread that started it, its starter, "
            f"or [permissions] {action}_any in config/baton.toml may)"
        )

    async def refuse(self, msg: Message, action: str, run_id: int, reason: str, *, reply: str | None = None) -> str:
        """Every refused run action goes through here: it is recorded (one log line at WARNING
        on ``baton.turn`` and a ``permission.denied`` audit row) and the reply text is
        returned (``reply``, or one made from ``action`` and ``reason``)."""
        log.warning("refused %s of run #%s for %s (%s) in %s: %s", action, run_id, msg.author, ",".join(msg.roles) or "-", msg.key, reason)
        await self.record(msg, "permission.denied", "denied", f"run:{run_id}", f"{action}: {reason}"[:500])
        if reply is not None:
            return reply
        verb = {"view": "see", "approve": "approve or reject"}.get(action, action)
        return f"You may not {verb} run #{run_id}: {reason}."

    def _workflows_text(self) -> str:
        lines = ["Workflows:"]
        for name, d in sorted(self.catalog.workflows.items()):
            lines.append(f"  {name:<18} {d.description}")
            try:
                params = self.catalog.graph_for(name, stack=(name,)).inputs
            except EngineError:
                params = ()
            if params:
                lines.append(f"  {'':<18} parameters: {', '.join(p.describe() for p in params)}")
        if self.catalog.actions:
            lines.append("Actions:")
            for name, (kind, args) in sorted(self.catalog.actions.items()):
                lines.append(f"  {name:<18} {kind}: {args.get('description') or args.get('argv') or args.get('url')}")
        lines.append("Built-ins: echo <text>, sleep <seconds>, fail [message]")
        return "\n".join(lines)

    async def _runs_text(self, msg: Message, *, everywhere: bool) -> str:
        here = await self.sessions.thread_id(msg.key)
        if not everywhere:
            rows = await self.runs.list(thread_id=here, limit=10)
        elif self._granted(msg, "view"):
            rows = await self.runs.list(limit=10)
        else:  # everywhere the author may look: this thread and the runs they started
            rows = await self.runs.list(limit=10, visible_to=(here, msg.author))
        return texts.runs_list(rows, everywhere=everywhere)

    async def _run_show(self, arg: str, msg: Message | None = None) -> str:
        """One run's details; for ``msg``'s author only when :meth:`run_scope` allows ("view")."""
        run_id = _run_id(arg)
        got = await self.runs.get(run_id)
        if got is None:
            return texts.no_run(run_id)
        denied = await self.run_scope(msg, got[0], "view") if msg is not None else None
        if msg is not None and denied:
            return await self.refuse(msg, "view", run_id, denied)
        return texts.run_details(*got)

    async def _run_graph(self, key: ThreadKey, outlet: Outlet, arg: str) -> None:
        """``/run show ID graph``: post the run's picture through the outlet's ``send_file``."""
        from bot.pictures import PictureError, run_png

        run_id = _run_id(arg)
        if not has_ability(outlet, Ability.FILES):
            await self.reply(key, outlet, f"This platform cannot show pictures; try /run show {run_id}.")
            return
        try:
            png = await run_png(self.runs, run_id)
        except PictureError as e:
            await self.reply(key, outlet, str(e))
            return
        await self.sessions.append(key, "assistant", "baton", f"[picture of run #{run_id}]")
        await cast(FilesOutlet, outlet).send_file(key, f"baton-run-{run_id}.png", png, f"Run #{run_id} graph")

    async def _history(self, key: ThreadKey, arg: str) -> str:
        n = int(arg) if arg.strip().isdigit() else 20
        msgs = await self.sessions.history(key, limit=n + 1)
        msgs = msgs[:-1] if msgs and msgs[-1].text.strip().startswith("/history") else msgs
        if not msgs:
            return "This thread has no history yet."
        return "\n".join(f"[{_hms(m.created_at)}] {m.author}: {m.text}" for m in msgs[-n:])

    def _why(self, key: ThreadKey) -> str:
        got = self._decisions.get(key)
        if got is None:
            return "No plain message has been routed in this thread yet (commands and run: are explicit)."
        text, d = got
        outcome = d.outcome.value if d.outcome else "chat"
        if d.ambiguous:
            head = f"{outcome}: ambiguous between " + " and ".join(f"{c.route} ({c.score:.2f})" for c in d.candidates)
        elif d.route:
            head = f"{outcome} route {d.route}, decided by the {d.layer.value} layer with score {d.score:.2f}"
        else:
            head = f"chat: no route reached its threshold (best score {d.score:.2f})"
        lines = [f"For {text!r}: {head}.", f"Reason: {d.reason}"]
        if d.runner_up is not None:
            lines.append(f"Runner-up: {d.runner_up.route} ({d.runner_up.score:.2f})")
        else:
            lines.append("Runner-up: none")
        if d.args:
            lines.append("Arguments: " + ", ".join(f"{k}={v}" for k, v in d.args.items()))
        if d.missing:
            lines.append("Missing: " + ", ".join(d.missing))
        if d.why:
            lines.append(("Why it asked: " if d.outcome is Outcome.ASK else "Why it did not ask: ") + d.why)
        return "\n".join(lines)

    async def reload_routes(self, msg: Message | None = None) -> str:
        """Re-read ``config/routes.yaml`` into the running router (``/reload``).

        Only new or changed examples are embedded (the cache is keyed by text). Needs
        ``[permissions] reload`` (default: everyone allowed by ``"*"``). A broken file
        leaves the old routes in place and says where the problem is.
        """
        if self.router is None:
            return "Routing is not enabled in this process (no config/routes.yaml, or [routing] enabled = false)."
        if msg is not None:
            rules = self.settings.permissions
            allowed = rules.get("reload", rules.get("*", ["*"]))
            if not permits(allowed, msg.author, msg.roles):
                return f"You may not reload routes (allowed: {', '.join(allowed) or 'nobody'}; set [permissions] reload in config/baton.toml)."
        from bot.routing import RouteConfigError

        path = self.settings.config_dir / "routes.yaml"
        try:
            routes = await asyncio.to_thread(load_routes, path)
            for r in routes:
                if r.workflow is not None:
                    self.compile(r.workflow)
            stats = await self.router.reload(routes)
        except (RouteConfigError, ValueError, EngineError) as e:
            return f"Routes not reloaded (the old ones stay): {e}"
        self._asks.clear()
        n = sum(not r.negative for r in routes)
        emb = f"; {stats.cache_misses} example(s) embedded, {stats.cache_hits} from the cache" if stats is not None else ""
        return f"Reloaded {n} route(s) from {path.name}{emb}."

    async def _decide(self, msg: Message, cmd: Command) -> str:
        if self.approvals is None:
            return "Approvals are not enabled in this process."
        m = re.match(r"^#?(\d+)(?:\s+(\S+))?$", cmd.arg.strip())
        if not m:
            return f"Usage: /{cmd.name} ID [STEP]"
        if not self.approvals.may_decide(msg.author, msg.roles):
            text = texts.may_not_decide(cmd.name, self.approvals.approvers)
            return await self.refuse(msg, "approve", int(m.group(1)), f"{cmd.name}: not an approver", reply=text)
        run_id = int(m.group(1))
        got = await self.runs.get(run_id)
        if got is not None:
            denied = await self.run_scope(msg, got[0], "approve")
            if denied:
                return await self.refuse(msg, "approve", run_id, denied)
        elif not await self.approvals.waiting(run_id):
            await self.record(msg, f"run.{cmd.name}", "failed", f"run:{run_id}", "no such run")
            return texts.no_run(run_id)  # not "has no step waiting": there is no such run at all
        who = msg.author_name or msg.author
        text = await self.approvals.decide_async(run_id, m.group(2), who, cmd.name == "approve")
        ok = text.startswith(("Approved", "Rejected"))
        await self.record(msg, f"run.{cmd.name}", "ok" if ok else "failed", f"run:{run_id}", text)
        return text

    async def record(self, msg: Message, action: str, outcome: str = "ok", target: str | None = None, detail: str | None = None) -> None:
        """Append an audit row for ``msg``'s author (a failure is logged, never shown as the answer)."""
        if self.audit is None:
            return
        try:
            await self.audit.record(AuditEntry(msg.author, msg.platform, action, outcome, msg.channel, msg.thread, target, detail))
        except StoreError as e:
            log.error("audit row for %s not recorded: %s", action, e)

    async def _audit_text(self, msg: Message, arg: str) -> str:
        if not permits(self.settings.permissions.get("admin", []), msg.author, msg.roles):
            await self.record(msg, "permission.denied", "denied", None, "audit: not an admin")
            return "Only admins may read the audit trail (set [permissions] admin in config/baton.toml)."
        if self.audit is None:
            return "The audit trail is not enabled in this process."
        n = int(arg) if arg.strip().isdigit() else 20
        return format_entries(await self.audit.recent(min(n, 200)))

    async def _recall(self, key: ThreadKey, arg: str) -> str:
        assert self.memory is not None
        if not arg.strip():
            return "Usage: /recall WORDS — e.g. /recall canary region"
        found = await self.memory.recall(key, arg)
        if not found:
            return f"Nothing in this thread matches {arg.strip()!r}."
        return "\n".join(f"[{_hms(m.created_at)}] {m.author}: {m.text}" for m in found)

    async def _context(self, key: ThreadKey, arg: str) -> str:
        assert self.memory is not None
        from bot.sessions import render_breakdown

        window = await self.memory.context(key, arg.strip() or "(your next message)")
        cfg = self.memory.config_for(key)
        return f"Session mode: {cfg.mode}; strategy: {window.strategy}; encoding: {window.encoding}\n" + render_breakdown(window)

    async def _summary(self, key: ThreadKey, arg: str) -> str:
        assert self.memory is not None
        got = await self.memory.summaries(key)
        if not got:
            return "No summaries stored for this thread yet (they are made as the thread grows past the summary frequency)."
        return "\n".join(f"level {s.level}, messages {s.first_id}–{s.last_id} ({s.message_count}), {s.tokens} tokens:\n  {s.text}" for s in got)

    async def _forget(self, key: ThreadKey, arg: str) -> str:
        assert self.memory is not None
        now = asyncio.get_running_loop().time()
        if arg.strip().lower() != "confirm":
            self._forget_pending[key] = now + FORGET_WINDOW_S
            n = await self.sessions.count(key)
            return f"This deletes this thread's {n} stored messages and its summaries (runs are kept). Send /forget confirm within {FORGET_WINDOW_S:.0f} s to go ahead."
        deadline = self._forget_pending.pop(key, None)
        if deadline is None or deadline < now:
            return "Nothing to confirm: send /forget first."
        gone = await self.memory.forget(key)
        return f"Forgot {gone.messages} messages and {gone.summaries} summaries of this thread."

    async def _cancel(self, msg: Message, arg: str) -> str:
        run_id = _run_id(arg)
        got = await self.runs.get(run_id)
        if got is not None:
            denied = await self.run_scope(msg, got[0], "cancel")
            if denied:
                return await self.refuse(msg, "cancel", run_id, denied)
        if await self.manager.cancel(run_id):
            await self.record(msg, "run.cancel", target=f"run:{run_id}")
            return texts.cancelling(run_id)
        if self.queue is not None and self.queue.cancel_queued(run_id):
            await self.runs.set_status(run_id, "cancelled", error="cancelled by request while queued")
            return f"Cancelled run #{run_id} before it started (it was queued)."
        if self.queue is not None and await self.queue.request_cancel(run_id):
            return f"Cancelling run #{run_id} (its worker stops it)."
        got = await self.runs.get(run_id)
        await self.record(msg, "run.cancel", "failed", f"run:{run_id}", "not running" if got else "no such run")
        if got is None:
            return texts.no_run(run_id)
        return texts.not_running(run_id, got[0].status)
