"""One turn: store the message, decide what it is, act, reply — in the thread's order.

Ordering: every message is stored the moment it arrives (nothing typed is lost).
Everything that starts work (a run, a rerun, chat) goes through the thread's *lane*,
a FIFO served by one task, so a thread's requests are handled in arrival order.
Commands that only read (``/why``, ``/run show``, ``/runs``, ``/history`` …) answer
in the thread's order too: after every earlier message of the thread is answered (its
run started or queued, its question asked, its reply sent), never before; they do not
wait for runs to finish. ``/cancel``, ``/approve`` and ``/reject`` act at once. A run
request that has to wait behind an active run is acknowledged at once ("Queued behind
run #3 (waiting for approval)"). A request that
arrives while a run is active in the same thread follows ``workflow.busy_policy``:
``queue`` (wait for it; the default), ``reject`` (say so), ``allow`` (run alongside).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from adapters.base import Message, Outlet
from bot.approvals import ApprovalBroker
from bot.chat import CHAT_NEEDS_PROVIDER, Chat
from bot.memory import Memory
from bot.queue.admission import Admission, Admitted, permission_problem
from bot.queue.local import LocalWorker
from bot.scheduling import ScheduleParseError, SchedulerService, parse_schedule
from bot.scheduling.commands import HELP_LINES, handle_schedule_command, parse_schedule_command
from bot.routing import Decision, Outcome, Router, bind_arguments, load_routes
from bot.routing.args import placeholders, value_problem
from bot.routing.types import Param
from bot.runs import RunManager, result_text
from bot.settings import Settings, permits
from bot.store import RunRow, RunStore, SessionStore, StoreError, StoredMessage, ThreadKey
from bot.store.audit import AuditEntry, AuditStore, format_entries
from bot.store.sessions import COMMAND
from engine.catalog import Catalog, close_names
from engine.errors import DefinitionError, EngineError, UnknownWorkflowError, WorkflowSyntaxError
from engine.graph import Graph, split_instance
from engine.inputs import InputError, bind_inputs, split_arguments
from engine.parse import compile_text

if TYPE_CHECKING:
    from bot.queue.scale import ScaleOut

log = logging.getLogger("baton.turn")

HELP = """Baton — run workflows from chat.
  run: <workflow>        run workflow text, e.g. run: disk-check AND system-report THEN echo done
  /run NAME [k=v …]      run a named workflow (see /workflows), with its parameters
  /workflows             list named workflows and actions
  /runs [all]            recent runs in this thread (or everywhere)
  /run show ID           one run's steps, times, outputs and cost
  /run show ID graph     the run's graph as a picture, coloured by step status
  /cancel ID             stop a run, cancelling its running steps
  /rerun ID [from STEP]  run again; with "from STEP" (or STEP#N, a loop iteration), reuse the steps before it
  /approve ID [STEP]     let a run waiting at an approve step go on (/reject ID [STEP] stops it)
  /why                   how the bot understood your last plain message (run / ask / chat, layer, score, why)
  /reload                re-read config/routes.yaml (new examples take effect without a restart)
  /history [N]           the last N messages of this thread
  /recall WORDS          find earlier messages of this thread (full-text search, no LLM)
  /context               what the next LLM call would receive, with its token budget
  /summary               the stored summaries of this thread
  /forget                delete this thread's memory (asks for confirmation)
  /audit [N]             the last N audit rows: who started, cancelled, approved… (admins)
  /help                  this text
""" + HELP_LINES.rstrip("\n") + """
Workflow language: A THEN B (sequence), A AND B (parallel), THEN IF_SUCCESS x ELSE y,
THEN IF_FAILURE x, THEN IF_ANY_FAILED x, ( ) grouping, step (retry 3) (timeout 30s);
keywords are upper case, quotes escape: echo "A THEN B"."""


RUN_ACTIONS = ("cancel", "view", "rerun", "approve")
"""What a user can do to a run someone else started elsewhere, each granted by ``[permissions] <action>_any``
(user ids or ``role:NAME``; never by the ``"*"`` rule): ``cancel`` (/cancel), ``view`` (/run show, /runs all),
``rerun`` (/rerun), ``approve`` (/approve, /reject)."""

COMMANDS = ("help", "workflows", "run", "runs", "cancel", "rerun", "history", "recall", "context", "summary", "forget", "approve", "reject", "why", "reload", "audit")
_IMMEDIATE = {"help", "workflows", "runs", "run_show", "cancel", "history", "recall", "context", "summary", "forget", "approve", "reject", "why", "reload", "audit", "unknown"}
_YES = {"yes", "y", "yep", "yeah", "ok", "okay", "sure", "go", "go ahead", "do it", "run it", "please do", "confirm"}
_NO = {"no", "n", "nope", "cancel", "stop", "don't", "dont", "never mind", "nevermind"}
FORGET_WINDOW_S = 60.0
_NEVER_WAIT = {"cancel", "approve", "reject"}
"""Commands answered the moment they arrive; every other command waits until the thread's
earlier messages are answered (a run started or queued, a question asked, a reply sent)."""
_TURN: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("baton_turn", default=None)
"""The event of the lane item being handled (set once it is answered; see :meth:`Bot.handle`)."""


@dataclass(frozen=True)
class Accepted:
    """A stored message (:meth:`Bot.accept`), with what admission decided when it asked for a run."""

    msg: Message
    stored: StoredMessage
    admitted: Admitted | None = None
    plan: tuple[Graph, dict] | None = None


@dataclass(frozen=True)
class Command:
    """A parsed chat command: ``name`` and its argument text."""

    name: str
    arg: str = ""


def parse_command(text: str) -> Command | None:
    """Recognise an explicit command; ``None`` for anything else (chat or routing).

    ``run: TEXT`` and ``/run TEXT`` start TEXT as a workflow; ``/run show ID`` shows one.
    """
    t = text.strip()
    m = re.match(r"^run:\s*(.*)$", t, re.S | re.I)
    if m:
        return Command("run", m.group(1).strip())
    if not t.startswith("/"):
        return None
    head, _, rest = t[1:].partition(" ")
    head, rest = head.lower(), rest.strip()
    if head == "run" and re.match(r"^show\s+\S+(\s+graph)?$", rest, re.I):
        return Command("run_show", " ".join(rest.split()[1:]))
    if head in COMMANDS:
        return Command(head, rest)
    return Command("unknown", head)


class Bot:
    """The core: takes :class:`Message` objects from adapters and answers through their outlet.

    Args:
        settings: all settings.
        sessions, runs: the stores.
        manager: owns run tasks.
        catalog: workflows and actions.
        chat: answers plain chat (:class:`bot.chat.Chat`); without one, plain chat
            gets an answer saying how to configure a provider.
    """

    def __init__(
        self,
        settings: Settings,
        sessions: SessionStore,
        runs: RunStore,
        manager: RunManager,
        catalog: Catalog,
        *,
        memory: Memory | None = None,
        approvals: ApprovalBroker | None = None,
        chat: Chat | None = None,
        router: Router | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.runs = runs
        self.manager = manager
        self.catalog = catalog
        self.chat = chat
        self.memory = memory
        self.approvals = approvals
        self.router = router
        self._decisions: dict[ThreadKey, tuple[str, Decision]] = {}
        self._asks: dict[ThreadKey, PendingAsk] = {}
        self.scheduler: SchedulerService | None = None  # set by the App once it exists
        self.audit: AuditStore | None = None  # set by the App: who started, cancelled, approved… (bot.store.audit)
        self._forget_pending: dict[ThreadKey, float] = {}
        self._schedule_pending: dict[ThreadKey, tuple[float, str]] = {}
        self._compiled: dict[str, Graph] = {}
        self._lanes: dict[ThreadKey, deque[tuple[Message, Outlet, Command | None, int, int | None, asyncio.Event]]] = {}
        self.admission: Admission | None = None  # set by the App (bot.queue): runs are admitted through it
        self.queue: LocalWorker | ScaleOut | None = None
        self._admitted: dict[int, tuple[Graph, dict, bool] | None] = {}  # admitted run → (graph, reused steps, is a rerun)
        self._lane_tasks: dict[ThreadKey, asyncio.Task[None]] = {}
        self._unanswered: dict[ThreadKey, list[asyncio.Event]] = {}  # per thread, in arrival order
        self._waiting_answers: set[asyncio.Task[None]] = set()

    # -- entry -------------------------------------------------------------

    async def handle(self, msg: Message, outlet: Outlet) -> None:
        """Store ``msg`` (:meth:`accept`), then answer it now or in thread order (:meth:`process`).

        A database failure while storing is reported in the thread and the message
        is not acted on (so nothing runs that was not recorded). A message carrying
        ``dedupe_ids`` is stored together with them, or dropped as a redelivery.
        """
        try:
            accepted = await self.accept(msg)
        except StoreError as e:
            log.error("storing a message failed: %s", e)
            await outlet.send(msg.key, f"I could not record your message ({e}); nothing was run. Please try again.")
            return
        if accepted is not None:
            await self.process(accepted, outlet)

    async def accept(self, msg: Message) -> Accepted | None:
        """The part of a turn that must be durable before the platform is acknowledged:
        store ``msg`` with its delivery ids and, for a ``run:``/``/run``/``/rerun`` that
        compiles, its ``queued`` run, in one transaction (bot.queue.admission). Returns
        ``None`` for a redelivery (nothing stored).

        Raises:
            StoreError: nothing was recorded; do not acknowledge (the platform redelivers).
        """
        kind = COMMAND if msg.text.lstrip().startswith("/") else None  # commands are not conversation
        got = await self._admit(msg, kind)
        if got is not None:
            admitted, plan = got
            if admitted.duplicate:
                log.info("dropping a redelivery of %s in %s (already handled)", msg.event_id or msg.dedupe_ids[0], msg.key)
                return None
            assert admitted.message is not None
            return Accepted(msg, admitted.message, admitted, plan)
        if msg.dedupe_ids:
            got = await self.sessions.append_once(
                msg.key, "user", msg.author, msg.text, dedupe_ids=msg.dedupe_ids, event_id=msg.event_id, created_at=msg.received_at, kind=kind
            )
            if got is None:
                log.info("dropping a redelivery of %s in %s (already handled)", msg.event_id or msg.dedupe_ids[0], msg.key)
                return None
            return Accepted(msg, got)
        return Accepted(
            msg, await self.sessions.append(msg.key, "user", msg.author, msg.text, event_id=msg.event_id, created_at=msg.received_at, kind=kind)
        )

    async def process(self, accepted: Accepted, outlet: Outlet) -> None:
        """Act on an accepted message: read-only commands at once, the rest in thread order."""
        msg, stored, admitted = accepted.msg, accepted.stored, accepted.admitted
        if admitted is not None:
            if admitted.run_id is None:
                if admitted.refusal and admitted.refusal.startswith("Not run:"):
                    await self.record(msg, "permission.denied", "denied", None, admitted.refusal)
                await self._safely(lambda m, o, c: self.reply(m.key, o, admitted.refusal or "Not run."), msg, outlet, None)
            else:
                graph = accepted.plan[0] if accepted.plan else None
                action = "run.rerun" if parse_command(msg.text) and parse_command(msg.text).name == "rerun" else "run.start"  # type: ignore[union-attr]
                await self.record(msg, action, target=f"run:{admitted.run_id}", detail=(graph.name or graph.source)[:200] if graph else None)
                self._admitted[admitted.run_id] = (*accepted.plan, action == "run.rerun") if accepted.plan else None
                await self._enqueue(msg, outlet, Command("admitted", str(admitted.run_id)), stored.id, stored.tokens)
            return
        sc = parse_schedule_command(msg.text) if self.scheduler is not None else None
        if sc is None and self.scheduler is not None:
            sc = await self._schedule_phrase(msg, outlet)
            if sc == ("", ""):  # asked to confirm a schedule: nothing runs now
                return
        if sc is not None:  # schedule …, /schedules, /pause ID, /resume ID, /unschedule ID
            await self._safely(lambda m, o, c: handle_schedule_command(self.scheduler, self, m, o, *sc), msg, outlet, None)
            if sc[0] != "schedules":
                await self.record(msg, f"schedule.{sc[0]}", detail=sc[1][:200] or None)
            return
        cmd = parse_command(msg.text)
        if cmd is not None and cmd.name in _IMMEDIATE:
            earlier = [e for e in self._unanswered.get(msg.key, ()) if not e.is_set()]
            if cmd.name in _NEVER_WAIT or not earlier:
                await self._safely(self._immediate, msg, outlet, cmd)
                return
            # answered in the thread's order, without holding up the adapter (a /cancel typed next must act now)
            task = asyncio.create_task(self._in_turn(earlier, self._turn(msg.key), msg, outlet, cmd), name=f"answer-{msg.key}")
            self._waiting_answers.add(task)
            task.add_done_callback(self._waiting_answers.discard)
            return
        await self._enqueue(msg, outlet, cmd, stored.id, stored.tokens)

    async def _admit(self, msg: Message, kind: str | None = None) -> tuple[Admitted, tuple[Graph, dict]] | None:
        """A ``run:``/``/run``/``/rerun`` message that compiles goes through admission;
        ``None`` when the message is not such a request (the caller stores it).

        Raises:
            StoreError: nothing was recorded.
        """
        if self.admission is None or self.scheduler is not None and parse_schedule_command(msg.text) is not None:
            return None
        cmd = parse_command(msg.text)
        if cmd is None or cmd.name not in ("run", "rerun"):
            return None
        try:
            planned = await self._plan(cmd, msg)
        except EngineError:
            return None  # the ordered path stores the message and explains the error
        if planned is None:
            return None
        graph, prior, rerun_of = planned
        admitted = await self.admission.admit(
            msg.key, graph, requested_by=msg.author, roles=msg.roles, text=msg.text, author=msg.author,
            dedupe_ids=msg.dedupe_ids, event_id=msg.event_id, created_at=msg.received_at, prior=prior, rerun_of=rerun_of, kind=kind,
        )
        return admitted, (graph, prior)

    async def _plan(self, cmd: Command, msg: Message) -> tuple[Graph, dict, int | None] | None:
        """The graph (and reused steps) a run/rerun command asks for, or ``None`` when it
        needs the ordered path to explain something (usage, unknown run or step)."""
        if cmd.name == "run":
            m = re.match(r"^(\S+)\s+[A-Za-z_][A-Za-z0-9_]*=", cmd.arg)
            if not cmd.arg or (m and m.group(1) in self.catalog.workflows):
                return None  # "run: NAME key=value": arguments are checked and bound on the ordered path
            try:
                return bind_arguments(self.compile(cmd.arg), {}), {}, None
            except KeyError:
                return None  # a missing argument: the ordered path says which
        m = re.match(r"^#?(\d+)(?:\s+from\s+(.+))?$", cmd.arg.strip())
        if not m:
            return None
        got = await self.runs.get(int(m.group(1)))
        if got is None:
            return None
        row, steps = got
        if await self.run_scope(msg, row, "rerun"):
            return None  # out of the requester's run scope: the ordered path refuses and records it
        step = (m.group(2) or "").strip()
        if not step:
            return row.graph, {}, row.id
        prior = _reused_steps(row.graph, steps, step)
        if prior is None:
            return None  # no such step or iteration: the ordered path says so
        return row.graph, prior, row.id

    async def _enqueue(self, msg: Message, outlet: Outlet, cmd: Command | None, message_id: int, tokens: int | None) -> None:
        """Put a stored message in its thread's lane (answered in arrival order)."""
        turn = self._turn(msg.key)
        if cmd is not None and cmd.name in ("run", "rerun", "admitted") and msg.key in self._lane_tasks:
            busy = self.manager.in_thread(msg.key)
            if busy and self.settings.workflow.busy_policy == "queue":  # say so at once, not when the thread frees up
                await self._command_answer(msg.key, outlet, f"Queued behind {self._describe(busy)}; it starts when that is done.")
                self._answered(msg.key, turn)
        lane = self._lanes.get(msg.key)
        if lane is None:
            lane = self._lanes[msg.key] = deque()
        lane.append((msg, outlet, cmd, message_id, tokens, turn))
        if msg.key not in self._lane_tasks:
            self._lane_tasks[msg.key] = asyncio.create_task(self._serve_lane(msg.key), name=f"lane-{msg.key}")

    async def _serve_lane(self, key: ThreadKey) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                msg, outlet, cmd, message_id, tokens, turn = lane.popleft()
                queue = self._unanswered.get(key, [])
                earlier = queue[: queue.index(turn)] if turn in queue else []
                await asyncio.gather(*(e.wait() for e in earlier))  # commands that arrived before it are answered first
                token = _TURN.set(turn)
                try:
                    await self._safely(lambda m, o, c: self._ordered(m, o, c, message_id, tokens), msg, outlet, cmd)
                finally:
                    _TURN.reset(token)
                    self._answered(key, turn)
        except asyncio.CancelledError:
            self._lane_tasks.pop(key, None)
            raise
        self._lane_tasks.pop(key, None)
        if not lane:
            self._lanes.pop(key, None)
        else:  # raced with a put after the loop ended
            self._lane_tasks[key] = asyncio.create_task(self._serve_lane(key), name=f"lane-{key}")

    def _turn(self, key: ThreadKey) -> asyncio.Event:
        """A new message's place in its thread's order: set once the message is answered."""
        turn = asyncio.Event()
        self._unanswered.setdefault(key, []).append(turn)
        return turn

    def _answered(self, key: ThreadKey, turn: asyncio.Event) -> None:
        turn.set()
        got = self._unanswered.get(key)
        if got is not None:
            if turn in got:
                got.remove(turn)
            if not got:
                self._unanswered.pop(key, None)

    async def _in_turn(self, earlier: list[asyncio.Event], turn: asyncio.Event, msg: Message, outlet: Outlet, cmd: Command) -> None:
        try:
            await asyncio.gather(*(e.wait() for e in earlier))
            await self._safely(self._immediate, msg, outlet, cmd)
        finally:
            self._answered(msg.key, turn)

    def _describe(self, busy: list) -> str:  # type: ignore[type-arg]
        """"run #3 (waiting for approval)" / "runs #3 (running), #4 (running)"."""
        def state(run_id: int) -> str:
            return "waiting for approval" if self.approvals is not None and self.approvals.pending(run_id) else "running"

        return ("run " if len(busy) == 1 else "runs ") + ", ".join(f"#{r.id} ({state(r.id)})" for r in busy)

    async def drain(self) -> None:
        """Wait until every lane is empty, every command waiting its turn is answered, every
        queued run has been served and every run has finished."""
        while self._lane_tasks or self._waiting_answers or self.manager.active or (self.queue is not None and self.queue.busy):
            await asyncio.gather(*self._lane_tasks.values(), *self._waiting_answers, return_exceptions=True)
            if self.queue is not None:
                await self.queue.wait_idle()
            await self.manager.wait_idle()

    async def aclose(self) -> None:
        """Stop serving lanes (queued requests are stored; they are not acted on)."""
        tasks = [*self._lane_tasks.values(), *self._waiting_answers]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._lane_tasks.clear()
        self._lanes.clear()
        self._unanswered.clear()

    async def _schedule_phrase(self, msg: Message, outlet: Outlet) -> tuple[str, str] | None:
        """A plain message that parses as a schedule ("every weekday at 9am run standup-report")
        is a schedule to confirm, never an immediate run (issue 14 fault 15).

        Returns ``("schedule", phrase)`` when ``msg`` confirms a pending one ("yes"), ``("", "")``
        after asking for confirmation, ``None`` for anything else (including a pending question
        answered otherwise, which drops it).
        """
        assert self.scheduler is not None
        key, text = msg.key, msg.text.strip()
        now = asyncio.get_running_loop().time()
        pending = self._schedule_pending.pop(key, None)
        if pending is not None and pending[0] > now and text.lower().rstrip(".!") in ("yes", "y", "ok", "confirm"):
            return "schedule", pending[1]
        if parse_command(text) is not None:
            return None
        try:
            spec = parse_schedule(text, now=self.scheduler.clock.now(), default_tz=self.scheduler.default_tz)
        except (ScheduleParseError, ValueError):
            return None
        self._schedule_pending[key] = (now + self.settings.routing.choice_timeout, text)
        await self.reply(
            key,
            outlet,
            f"That reads as a schedule: {spec.description} ({spec.timezone}) — run {spec.workflow}. Nothing was run now. "
            f'Reply "yes" to create it (or send: schedule {text}).',
        )
        return "", ""

    async def _safely(self, fn, msg: Message, outlet: Outlet, cmd: Command | None) -> None:  # type: ignore[no-untyped-def]
        try:
            await fn(msg, outlet, cmd)
        except _UsageError as e:
            await outlet.send(msg.key, f"{e} (/help lists the commands)")
        except StoreError as e:
            log.error("%s", e)
            await outlet.send(msg.key, f"Database error: {e}. Nothing was lost that was already recorded; try again.")
        except Exception as e:  # reported in the thread and the log, never swallowed silently
            log.exception("handling %r failed", msg.text)
            await outlet.send(msg.key, f"Internal error while handling that: {type(e).__name__}: {e}")

    async def reply(self, key: ThreadKey, outlet: Outlet, text: str, *, kind: str | None = None) -> None:
        """Store the bot's reply in the thread's memory, then send it.

        ``kind=COMMAND`` marks the answer to a command (``/history``, ``/recall`` …): kept
        for ``/history``, never returned by ``/recall`` nor put in an LLM context.
        """
        await self.sessions.append(key, "assistant", "baton", text, kind=kind)
        await outlet.send(key, text)

    async def _command_answer(self, key: ThreadKey, outlet: Outlet, text: str) -> None:
        """A command's answer: stored marked (:data:`COMMAND`), then sent."""
        await self.reply(key, outlet, text, kind=COMMAND)

    # -- read-only commands ------------------------------------------------

    async def _immediate(self, msg: Message, outlet: Outlet, cmd: Command) -> None:
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
            near = close_names(cmd.arg, COMMANDS)
            hint = f"; did you mean {', '.join('/' + n for n in near)}?" if near else ""
            await self._command_answer(key, outlet, f"Unknown command /{cmd.arg}{hint} (/help lists them)")

    # -- run scope -------------------------------------------------------------

    def _granted(self, msg: Message, action: str) -> bool:
        """Whether ``[permissions] <action>_any`` names ``msg``'s author or one of their roles."""
        return permits(self.settings.permissions.get(f"{action}_any", ()), msg.author, msg.roles)

    async def run_scope(self, msg: Message, row: RunRow, action: str) -> str | None:
        """``None`` when ``msg``'s author may ``action`` (one of :data:`RUN_ACTIONS`) run ``row``:
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
        if not rows:
            return "No runs yet in this thread." if not everywhere else "No runs yet."
        lines = []
        for r in rows:
            took = f" {(r.finished_at - r.started_at).total_seconds():.2f}s" if r.finished_at and r.started_at else ""
            lines.append(f"#{r.id:<4} {r.status:<9}{took:>8}  {r.source[:70]}")
        return "\n".join(lines)

    async def _run_show(self, arg: str, msg: Message | None = None) -> str:
        """One run's details; for ``msg``'s author only when :meth:`run_scope` allows ("view")."""
        run_id = _run_id(arg)
        got = await self.runs.get(run_id)
        if got is None:
            return f"No run #{run_id}."
        row, steps = got
        denied = await self.run_scope(msg, row, "view") if msg is not None else None
        if msg is not None and denied:
            return await self.refuse(msg, "view", run_id, denied)
        ordered = _in_order(row.graph, steps)
        lines = [f"Run #{row.id}: {row.status} — {row.source}", f"requested by {row.requested_by} at {_hms(row.created_at)}"]
        if row.rerun_of:
            lines.append(f"rerun of #{row.rerun_of}")
        for s in ordered:
            t = f"{_hms(s.started_at)} → {_hms(s.finished_at)}" if s.started_at and s.finished_at else ""
            extra = f" {s.tokens_in}+{s.tokens_out} tokens ${s.cost_usd:.4f}" if (s.tokens_in or s.cost_usd) else ""
            reused = " (reused)" if s.reused else ""
            lines.append(f"  {s.node_id:<8} {s.status:<9} attempt {s.attempt} {t}{extra}{reused}  {s.label}")
            if s.error:
                lines.append(f"           error: {s.error}")
            if s.output:
                lines.append("           " + s.output.strip().replace("\n", "\n           ")[:600])
        if row.error:
            lines.append(f"Error: {row.error}")
        total = sum(s.cost_usd for s in ordered)
        if total:
            lines.append(f"Cost: ${total:.4f}")
        return "\n".join(lines)

    async def _run_graph(self, key: ThreadKey, outlet: Outlet, arg: str) -> None:
        """``/run show ID graph``: post the run's picture through the outlet's ``send_file``."""
        from bot.pictures import PictureError, run_png

        run_id = _run_id(arg)
        send_file = getattr(outlet, "send_file", None)
        if send_file is None:
            await self.reply(key, outlet, f"This platform cannot show pictures; try /run show {run_id}.")
            return
        try:
            png = await run_png(self.runs, run_id)
        except PictureError as e:
            await self.reply(key, outlet, str(e))
            return
        await self.sessions.append(key, "assistant", "baton", f"[picture of run #{run_id}]")
        await send_file(key, f"baton-run-{run_id}.png", png, f"Run #{run_id} graph")

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
            allowed = ", ".join(self.approvals.approvers) or "nobody"
            text = f"You may not {cmd.name} runs (allowed: {allowed}; set [permissions] approve in config/baton.toml)."
            return await self.refuse(msg, "approve", int(m.group(1)), f"{cmd.name}: not an approver", reply=text)
        run_id = int(m.group(1))
        got = await self.runs.get(run_id)
        if got is not None:
            denied = await self.run_scope(msg, got[0], "approve")
            if denied:
                return await self.refuse(msg, "approve", run_id, denied)
        elif not self.approvals.pending(run_id):
            await self.record(msg, f"run.{cmd.name}", "failed", f"run:{run_id}", "no such run")
            return f"No run #{run_id}."  # not "has no step waiting": there is no such run at all
        who = msg.author_name or msg.author
        text = self.approvals.decide(run_id, m.group(2), who, cmd.name == "approve")
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
            return f"Cancelling run #{run_id}."
        if self.queue is not None and self.queue.cancel_queued(run_id):
            await self.runs.set_status(run_id, "cancelled", error="cancelled by request while queued")
            return f"Cancelled run #{run_id} before it started (it was queued)."
        if self.queue is not None and await self.queue.request_cancel(run_id):
            return f"Cancelling run #{run_id} (its worker stops it)."
        got = await self.runs.get(run_id)
        await self.record(msg, "run.cancel", "failed", f"run:{run_id}", "not running" if got else "no such run")
        if got is None:
            return f"No run #{run_id}."
        return f"Run #{run_id} is not running (it is {got[0].status})."

    # -- ordered work --------------------------------------------------------

    async def _ordered(self, msg: Message, outlet: Outlet, cmd: Command | None, message_id: int = 0, tokens: int | None = None) -> None:
        key = msg.key
        args: dict[str, str] | None = None
        if cmd is None:
            routed = await self._route(msg, outlet)
            if routed is None:
                return
            target, args = routed
            if target == "":
                if self.chat is not None:
                    await self.chat.reply(msg, outlet, message_id, tokens=tokens)
                else:
                    await self.reply(key, outlet, CHAT_NEEDS_PROVIDER, kind=COMMAND)  # a notice, not conversation
                return
            cmd = Command("run", target)
        if cmd.name == "admitted":
            await self._start_admitted(msg.key, int(cmd.arg))
        elif cmd.name == "run":
            await self._run(msg, outlet, cmd.arg, args)
        elif cmd.name == "rerun":
            await self._rerun(msg, outlet, cmd.arg)

    async def _route(self, msg: Message, outlet: Outlet) -> tuple[str, dict[str, str]] | None:
        """What a plain message asks for: ``(workflow text, arguments)`` to run, ``("", {})``
        for chat, or ``None`` when the bot asked a question instead (issue 16: run, ask or
        chat) or refused."""
        key, text = msg.key, msg.text.strip()
        if text in self.catalog.workflows:
            return text, {}
        pending = self._asks.pop(key, None)
        if pending is not None and pending.deadline > asyncio.get_running_loop().time():
            handled = await self._answer(msg, outlet, pending)
            if handled is not _NOT_AN_ANSWER:
                return handled  # type: ignore[return-value]
        if self.router is None:
            return "", {}
        decision = await self.router.route(text)
        self._decisions[key] = (text, decision)
        if decision.outcome is Outcome.RUN and decision.route:
            return await self._routed(msg, outlet, decision.route, dict(decision.args))
        if decision.outcome is Outcome.ASK and decision.options:
            await self._ask(msg, outlet, decision.options, dict(decision.args), decision.missing, decision.why)
            return None
        return "", {}

    async def _ask(
        self, msg: Message, outlet: Outlet, options: tuple[str, ...], args: dict[str, str], missing: tuple[str, ...], why: str = ""
    ) -> None:
        """Ask in the thread before running: "Run X? Reply yes, or pick 1) … 2) …", or for a
        missing argument "Which SERVICE for X? …". The reply is handled by :meth:`_answer`;
        the question stays open ``[routing] choice_timeout`` seconds. Permissions are
        checked first: nobody is asked to confirm what they may not run."""
        assert self.router is not None
        options = tuple(o for o in options if self._route_allowed(msg, o))[:3] or options[:1]
        if not self._route_allowed(msg, options[0]):
            await self._routed(msg, outlet, options[0], args)  # says why not
            return
        deadline = asyncio.get_running_loop().time() + self.settings.routing.choice_timeout
        first = options[0]
        if len(options) == 1 and missing:
            route = self.router.route_by_name(first)
            param = next((p for p in self.router.params_of(route) if p.name == missing[0]), None) if route else None
            hint = f" (one of {', '.join(param.choices)})" if param is not None and param.choices else ""
            self._asks[msg.key] = PendingAsk(deadline, options, args, missing, msg.author)
            got = "".join(f" {k}={v}" for k, v in args.items())
            text = f"{first}{got} needs {missing[0]}{hint}. Which {missing[0]}? Reply with the value, or no to cancel."
            await self._send_choices(msg, outlet, text, [(c, c) for c in (param.choices if param else ())][:5])
            return
        self._asks[msg.key] = PendingAsk(deadline, options, args, (), msg.author)
        shown = "".join(f" {k}={v}" for k, v in args.items())
        if len(options) == 1:
            text = f"Run {first}{shown}? Reply yes or no."
            buttons = [(f"Run {first}", "yes"), ("No", "no")]
        else:
            picks = " ".join(f"{i}) {o}" for i, o in enumerate(options, 1))
            text = f"Run {first}{shown}? Reply yes, or pick {picks} (or no)."
            buttons = [(f"{i}) {o}", str(i)) for i, o in enumerate(options, 1)] + [("No", "no")]
        await self._send_choices(msg, outlet, text, buttons)

    async def _send_choices(self, msg: Message, outlet: Outlet, text: str, buttons: list[tuple[str, str]]) -> None:
        """Store and send ``text``; platforms that can show buttons (``send_choices``)
        get one per ``(label, reply)``: a click answers as if the clicker typed ``reply``."""
        send = getattr(outlet, "send_choices", None)
        if send is None or not buttons:
            await self.reply(msg.key, outlet, text)
            return
        await self.sessions.append(msg.key, "assistant", "baton", text)
        await send(msg.key, text, buttons)

    async def _answer(self, msg: Message, outlet: Outlet, pending: PendingAsk) -> object:
        """Handle a reply to an open question; :data:`_NOT_AN_ANSWER` when the message is
        something else (it is then routed as usual and the question is dropped)."""
        assert self.router is not None
        reply = msg.text.strip().lower().rstrip(".!")
        if reply in _NO:
            await self.reply(msg.key, outlet, "OK, nothing was run.")
            return None
        if pending.missing:
            name = pending.missing[0]
            route = self.router.route_by_name(pending.options[0])
            param = next((p for p in self.router.params_of(route) if p.name == name), None) if route else None
            value = msg.text.strip()
            if param is None or route is None:
                return _NOT_AN_ANSWER
            if len(value.split()) > 1:
                return _NOT_AN_ANSWER
            problem = value_problem(param, value)
            if problem:
                self._asks[msg.key] = pending
                await self.reply(msg.key, outlet, f"{name}={value!r} {problem}. Which {name}? Reply with the value, or no to cancel.")
                return None
            args = {**pending.args, name: value.lower() if param.choices else value}
            rest = pending.missing[1:]
            if rest:
                await self._ask(msg, outlet, pending.options[:1], args, rest)
                return None
            return await self._confirmed(msg, outlet, route.name, args)
        choice: str | None = None
        if reply in _YES:
            choice = pending.options[0]
        elif reply.isdigit() and 1 <= int(reply) <= len(pending.options):
            choice = pending.options[int(reply) - 1]
        else:
            choice = next((o for o in pending.options if o.lower() == reply), None)
        if choice is None:
            return _NOT_AN_ANSWER
        return await self._confirmed(msg, outlet, choice, dict(pending.args) if choice == pending.options[0] else {})

    async def _confirmed(self, msg: Message, outlet: Outlet, name: str, args: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        """The author confirmed route ``name``: check its arguments again (asking for a
        missing one), then hand it to :meth:`_routed`."""
        assert self.router is not None
        route = self.router.route_by_name(name)
        if route is None:
            await self.reply(msg.key, outlet, f"The route {name!r} no longer exists (routes were reloaded).")
            return None
        from bot.routing import check_arguments

        checked = check_arguments(args, self.router.params_of(route))
        if checked.missing:
            await self._ask(msg, outlet, (route.name,), dict(checked.values), checked.missing)
            return None
        return await self._routed(msg, outlet, route.name, dict(checked.values))

    def _route_allowed(self, msg: Message, name: str) -> bool:
        assert self.router is not None
        route = self.router.route_by_name(name)
        who = [*route.allowed_users, *(f"role:{r}" for r in route.allowed_roles)] if route else []
        return not who or permits(who, msg.author, msg.roles)

    async def _routed(self, msg: Message, outlet: Outlet, name: str, args: dict[str, str] | None = None) -> tuple[str, dict[str, str]] | None:
        """The target of route ``name`` for ``msg`` (``""`` for chat) with its arguments, or
        ``None`` after telling the author the route's ``allowed_users`` / ``allowed_roles``
        (config/routes.yaml) exclude them. The workflows it starts are checked against
        ``[permissions]`` as well."""
        assert self.router is not None
        route = self.router.route_by_name(name)
        assert route is not None
        who = [*route.allowed_users, *(f"role:{r}" for r in route.allowed_roles)]
        if who and not permits(who, msg.author, msg.roles):
            await self.record(msg, "permission.denied", "denied", f"route:{name}", "route allowed_users/allowed_roles")
            await self.reply(msg.key, outlet, f"Not run: you may not use the route '{name}' (allowed: {', '.join(who)}; see config/routes.yaml).")
            return None
        return route.workflow or "", dict(args or {})

    def compile(self, text: str) -> Graph:
        """Compile workflow text (or a bare workflow name) against the catalogue.

        Graphs are immutable and the catalogue is fixed for the process, so compiled
        graphs are cached by text (parsing costs milliseconds on the event loop).
        Errors are not cached: they raise every time.
        """
        graph = self._compiled.get(text)
        if graph is None:
            graph = compile_text(text, self.catalog, name=text if text in self.catalog.workflows else None)
            if text in self.catalog.workflows:  # the workflow's own limits hold when it is run by name (issue 17)
                own = self.catalog.graph_for(text, stack=(text,))
                graph = replace(
                    graph,
                    on_max_iterations=own.on_max_iterations,
                    max_parallel_steps=own.max_parallel_steps,
                    fail_fast=own.fail_fast,
                )
            if len(self._compiled) >= 1024:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[text] = graph
        return graph

    async def _run(self, msg: Message, outlet: Outlet, text: str, args: dict[str, str] | None = None) -> None:
        if not text:
            await self.reply(msg.key, outlet, "Run what? e.g. run: disk-check AND system-report (see /workflows)")
            return
        if args is None:  # explicit: "run: NAME key=value ..." gives arguments by name (quotes allowed)
            split = split_arguments(text)
            if split is not None and split[0] in self.catalog.workflows:
                text, args = split
        try:
            graph = self.compile(text)
        except WorkflowSyntaxError as e:
            await self.reply(msg.key, outlet, f"I could not parse that workflow: {e.reason} (line {e.line}, column {e.column})\n{e.caret()}")
            return
        except UnknownWorkflowError as e:
            await self.reply(msg.key, outlet, f"{e.sentence()} Known workflows: {', '.join(self.catalog.names()) or 'none'}.")
            return
        except (DefinitionError, EngineError) as e:
            await self.reply(msg.key, outlet, f"That workflow is invalid: {e}")
            return
        typed = {i.name for i in graph.inputs}  # issue 17: typed inputs, used as ${inputs.name}
        marked = placeholders(graph)  # issue 16: {name} placeholders bound into argv elements, echo text, labels
        if args:
            # one plain word for what goes into a {placeholder} (or when nothing typed declares it)
            bad = [f"{k}={v!r}: {p}" for k, v in args.items() if (k in marked or k not in typed) and (p := value_problem(_ANY, v))]
            declared = self.router.workflow_params.get(text, ()) if self.router is not None else ()
            if declared and not bad:  # the workflow's declared inputs (choices, pattern) hold for explicit runs too
                from bot.routing import check_arguments

                checked = check_arguments(args, declared)
                bad = list(checked.problems) + [f"{m}: missing" for m in checked.missing if m not in args]
                args = {**args, **checked.values}
            if bad:
                await self.reply(msg.key, outlet, "Not run: " + "; ".join(bad) + ".")
                return
        try:
            graph = bind_arguments(graph, args or {})
        except KeyError as e:
            await self.reply(msg.key, outlet, f"Not run: the workflow needs the argument {e.args[0]} (e.g. run: {text} {e.args[0]}=VALUE).")
            return
        if graph.inputs:  # typed, defaults filled, allowed values; refused before anything runs
            try:
                values = bind_inputs(graph.name or text, graph.inputs, {k: v for k, v in (args or {}).items() if k in typed or k not in marked})
            except InputError as e:
                await self.reply(msg.key, outlet, f"Not run: {e}")
                return
            graph = replace(graph, input_values=values)
        await self.start_run(msg, outlet, graph)

    def allowed(self, msg: Message, graph: Graph) -> str | None:
        """``None`` when ``msg.author`` may run ``graph``, else the reason (names the rule)."""
        return permission_problem(self.settings, msg.author, msg.roles, graph)

    async def _start_admitted(self, key: ThreadKey, run_id: int) -> None:
        """Hand an admitted run to the worker; under ``busy_policy = "queue"`` the thread's
        later messages wait for it (thread order)."""
        assert self.queue is not None
        plan = self._admitted.pop(run_id, None)
        done = self.queue.submit(run_id, key, graph=plan[0] if plan else None, prior=plan[1] if plan else None, rerun=plan[2] if plan else False)
        turn = _TURN.get()
        if turn is not None:
            turn.set()  # handed on: the thread's later commands (/why, /run show …) may answer now
        if self.settings.workflow.busy_policy == "queue":
            await done

    async def start_run(self, msg: Message, outlet: Outlet, graph: Graph, **kw) -> int | None:  # type: ignore[no-untyped-def]
        """Check permission and the busy policy, then start ``graph`` in ``msg``'s thread
        (through admission when the run queue is wired: a queued run, then the worker)."""
        if self.admission is not None and self.queue is not None:
            got = await self.admission.admit(
                msg.key, graph, requested_by=msg.author, roles=msg.roles, prior=kw.get("prior"), rerun_of=kw.get("rerun_of")
            )
            if got.run_id is None:
                if got.refusal and got.refusal.startswith("Not run:"):
                    await self.record(msg, "permission.denied", "denied", None, got.refusal)
                await self.reply(msg.key, outlet, got.refusal or "Not run.")
                return None
            await self.record(msg, "run.rerun" if kw.get("rerun_of") else "run.start", target=f"run:{got.run_id}", detail=(graph.name or graph.source)[:200])
            self._admitted[got.run_id] = (graph, kw.get("prior") or {}, bool(kw.get("rerun_of")))
            await self._start_admitted(msg.key, got.run_id)
            return got.run_id
        denied = self.allowed(msg, graph)
        if denied:
            await self.record(msg, "permission.denied", "denied", None, denied)
            await self.reply(msg.key, outlet, f"Not run: {denied}.")
            return None
        busy = self.manager.in_thread(msg.key)
        policy = self.settings.workflow.busy_policy
        if busy and policy == "reject":
            ids = ", ".join(f"#{r.id}" for r in busy)
            await self.reply(msg.key, outlet, f"Run {ids} is still active in this thread; wait for it or /cancel it.")
            return None
        turn = _TURN.get()
        if busy and policy == "queue":
            if turn is not None and not turn.is_set():
                await self._command_answer(msg.key, outlet, f"Queued behind {self._describe(busy)}; it starts when that is done.")
                turn.set()  # answered: the thread's later commands need not wait for the run
            await asyncio.gather(*(r.task for r in busy), return_exceptions=True)
        active = await self.manager.start(msg.key, graph, requested_by=msg.author, **kw)
        await self.record(msg, "run.rerun" if kw.get("rerun_of") else "run.start", target=f"run:{active.id}", detail=(graph.name or graph.source)[:200])
        if turn is not None:
            turn.set()  # started: the thread's later commands (/why, /run show …) may answer now
        if policy == "queue":
            for queued in self._lanes.get(msg.key, ()):  # run requests already waiting behind this run: say so now
                q_msg, q_outlet, q_cmd, *_, q_turn = queued
                if q_cmd is not None and q_cmd.name in ("run", "rerun") and not q_turn.is_set():
                    await self._command_answer(q_msg.key, q_outlet, f"Queued behind {self._describe([active])}; it starts when that is done.")
                    q_turn.set()
            await asyncio.gather(active.task, return_exceptions=True)
        return active.id

    async def _rerun(self, msg: Message, outlet: Outlet, arg: str) -> None:
        m = re.match(r"^#?(\d+)(?:\s+from\s+(.+))?$", arg.strip())
        if not m:
            await self.reply(msg.key, outlet, "Usage: /rerun ID [from STEP]")
            return
        run_id, step = int(m.group(1)), (m.group(2) or "").strip()
        got = await self.runs.get(run_id)
        if got is None:
            await self.reply(msg.key, outlet, f"No run #{run_id}.")
            return
        row, steps = got
        denied = await self.run_scope(msg, row, "rerun")
        if denied:
            await self.reply(msg.key, outlet, await self.refuse(msg, "rerun", run_id, denied))
            return
        prior = {}
        if step:
            base, iteration = split_instance(step)
            node = _find_step(row.graph, base)
            if node is None:
                names = [n.id for n in row.graph.steps] + [n.label for n in row.graph.steps]
                near = close_names(step, names)
                await self.reply(msg.key, outlet, f"Run #{run_id} has no step '{step}'" + (f"; did you mean {', '.join(near)}?" if near else "."))
                return
            loop = next((lp for lp in row.graph.loops() if node in lp.nodes), None)
            if loop is not None and iteration > 1 and not any(s.node_id == f"{node}#{iteration}" for s in steps):
                await self.reply(msg.key, outlet, f"Run #{run_id} has no iteration {iteration} of '{node}'.")
                return
            prior = _reused_steps(row.graph, steps, step) or {}
        await self.start_run(msg, outlet, row.graph, prior=prior, rerun_of=run_id)


def _reused_steps(graph: Graph, steps: list, step: str) -> dict | None:  # type: ignore[type-arg]
    """The succeeded step records ``/rerun ID from STEP`` keeps: the step's ancestors and,
    inside a loop, its earlier iterations. ``None`` when the graph has no such step or
    iteration (``STEP`` may name one as ``node#N``)."""
    base, iteration = split_instance(step)
    node = _find_step(graph, base)
    if node is None:
        return None
    loop = next((lp for lp in graph.loops() if node in lp.nodes), None)
    if loop is not None and iteration > 1 and not any(s.node_id == f"{node}#{iteration}" for s in steps):
        return None
    before = _ancestors(graph, node)
    members = set(loop.nodes) if loop is not None else set()
    prior = {}
    for s in steps:
        if s.status != "succeeded":
            continue
        b, it = split_instance(s.node_id)
        if b in members:
            if it < iteration:  # earlier iterations of the loop are kept
                prior[s.node_id] = s
        elif b in before:
            prior[s.node_id] = s
    return prior


def _run_id(arg: str) -> int:
    m = re.match(r"^#?(\d+)$", arg.strip())
    if not m:
        raise _UsageError(f"expected a run id like 12 or #12, got {arg!r}")
    return int(m.group(1))


class _UsageError(ValueError):
    pass


@dataclass(frozen=True)
class PendingAsk:
    """An open question in a thread (issue 16's ask outcome).

    Attributes:
        deadline: event-loop time after which the question is dropped.
        options: routes offered, best first ("yes" picks the first).
        args: arguments gathered so far.
        missing: required arguments still to ask for (asked one at a time); empty for a
            "Run X? / pick 1) 2)" question.
        asked: who asked (anyone in the thread may answer; permissions are checked for
            the one who answers).
    """

    deadline: float
    options: tuple[str, ...]
    args: dict[str, str]
    missing: tuple[str, ...]
    asked: str


_NOT_AN_ANSWER = object()
_ANY = Param("value", required=False)


def _hms(dt: datetime | None) -> str:
    return dt.strftime("%H:%M:%S.%f")[:-3] if dt else "-"


def _find_step(graph: Graph, step: str) -> str | None:
    for n in graph.steps:
        if n.id == step:
            return n.id
    for n in graph.steps:
        if n.label == step:
            return n.id
    for n in graph.steps:  # an inlined workflow's node: s1.critique
        if n.id.endswith("." + step):
            return n.id
    return None


def _in_order(graph: Graph, steps: list) -> tuple:  # type: ignore[type-arg]
    """Step records in graph order; a loop's later iterations (``node#N``) follow its last node, by iteration."""
    order = {n.id: i for i, n in enumerate(graph.nodes)}
    last = {nid: order[lp.nodes[-1]] for lp in graph.loops() for nid in lp.nodes}

    def key(s):  # type: ignore[no-untyped-def]
        base, it = split_instance(s.node_id)
        return (order[base], 0, 0) if it == 1 else (last.get(base, order[base]), it, order[base])

    return tuple(sorted((s for s in steps if split_instance(s.node_id)[0] in order), key=key))


def _ancestors(graph: Graph, node_id: str) -> set[str]:
    preds = {n.id: [e.source for e in n.edges if not e.back] for n in graph.nodes}
    seen: set[str] = set()
    stack = list(preds[node_id])
    while stack:
        nid = stack.pop()
        if nid not in seen:
            seen.add(nid)
            stack.extend(preds[nid])
    return seen


__all__ = ["Accepted", "Bot", "Command", "parse_command", "result_text"]
