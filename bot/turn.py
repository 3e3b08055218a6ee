"""One turn: store the message, decide what it is, act, reply — in the thread's order.

Ordering: every message is stored the moment it arrives (nothing typed is lost),
and a thread's messages are processed in the order they were stored, whichever
adapter task hands them on (:mod:`bot.lanes`; adapters keep no locks of their own).
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
import contextlib
import logging
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

from opentelemetry import trace

from bot import texts
from bot.approvals import ApprovalBroker
from bot.chat import Chat
from bot.commands import FORGET_WINDOW_S, CoreAPIMethods, ReadOnlyCommands, _UsageError
from bot.compiler import WorkflowCompiler
from bot.core import Ability, ChoicesOutlet, Message, Outlet, has_ability
from bot.intake import COMMANDS, Accepted, Command, _ancestors, _find_step, _reused_steps, parse_command
from bot.lanes import TURN, ThreadLanes
from bot.memory import Memory
from bot.queue.admission import Admission, permission_problem
from bot.queue.local import LocalWorker
from bot.scheduling import ScheduleParseError, SchedulerService, parse_schedule
from bot.scheduling.commands import HELP_LINES, handle_schedule_command, parse_schedule_command
from bot.routing import Decision, Outcome, Router, bind_arguments
from bot.routing.args import placeholders, value_problem
from bot.routing.types import Param
from bot.runs import RunManager
from bot.server import tracing
from bot.server.tracing import route_attributes
from bot.texts import result_text
from bot.settings import Settings, permits
from bot.store import RunStore, SessionStore, StoreError, ThreadKey
from bot.store.audit import AuditStore
from bot.store.sessions import COMMAND
from bot.tasks import TaskOwner
from engine.catalog import Catalog, close_names
from engine.errors import DefinitionError, EngineError, UnknownWorkflowError, WorkflowSyntaxError
from engine.graph import Graph, split_instance
from engine.inputs import InputError, bind_inputs, split_arguments

if TYPE_CHECKING:
    from bot.queue.scale import ScaleOut

log = logging.getLogger("baton.turn")

HELP = texts.help_text(HELP_LINES)


RUN_ACTIONS = ("cancel", "view", "rerun", "approve")
"""What a user can do to a run someone else started elsewhere, each granted by ``[permissions] <action>_any``
(user ids or ``role:NAME``; never by the ``"*"`` rule): ``cancel`` (/cancel), ``view`` (/run show, /runs all),
``rerun`` (/rerun), ``approve`` (/approve, /reject)."""

_IMMEDIATE = {"help", "workflows", "runs", "run_show", "cancel", "history", "recall", "context", "summary", "forget", "approve", "reject", "why", "reload", "audit", "unknown"}
_YES = {"yes", "y", "yep", "yeah", "ok", "okay", "sure", "go", "go ahead", "do it", "run it", "please do", "confirm"}
_NO = {"no", "n", "nope", "cancel", "stop", "don't", "dont", "never mind", "nevermind"}
_NEVER_WAIT = {"cancel", "approve", "reject"}
"""Commands answered the moment they arrive; every other command waits until the thread's
earlier messages are answered (a run started or queued, a question asked, a reply sent)."""
_TURN = TURN


class Bot(ThreadLanes, CoreAPIMethods, ReadOnlyCommands):
    """The core: takes the :class:`Message` objects adapters hand in and answers through their outlet.

    Args:
        settings: all settings.
        sessions, runs: the stores.
        manager: owns run tasks.
        catalog: workflows and actions.
        chat: answers plain chat (:class:`bot.chat.Chat`); without one, plain chat
            gets an answer saying how to configure a provider.
        scheduler: the schedule commands' service (``None``: no schedule commands).
        compiler: the shared workflow compiler (default: a new one over ``catalog``).
        audit: where audit rows go (``None``: not recorded).
        tasks: the owner of the lanes' tasks (the App's; default a new one).
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
        scheduler: SchedulerService | None = None,
        compiler: WorkflowCompiler | None = None,
        audit: AuditStore | None = None,
        tasks: TaskOwner | None = None,
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
        self.scheduler = scheduler
        self.compiler = compiler or WorkflowCompiler(catalog)
        self.audit = audit  # who started, cancelled, approved… (bot.store.audit)
        self._forget_pending: dict[ThreadKey, float] = {}
        self._schedule_pending: dict[ThreadKey, tuple[float, str]] = {}
        self.admission: Admission | None = None  # set by the App (bot.queue): runs are admitted through it
        self.queue: LocalWorker | ScaleOut | None = None
        self._admitted: dict[int, tuple[Graph, dict, bool] | None] = {}  # admitted run → (graph, reused steps, is a rerun)
        self._init_lanes(tasks)  # bot.lanes: intake order, lanes (tasks started through ``tasks``), turn spans

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
            await outlet.send(msg.key, texts.not_recorded(e))
            return
        if accepted is not None:
            await self.process(accepted, outlet)

    async def process(self, accepted: Accepted, outlet: Outlet) -> None:
        """Act on an accepted message: read-only commands at once, the rest in thread order.

        Messages of one thread are processed in the order :meth:`accept` stored them
        (:mod:`bot.lanes`), whatever task calls this; a ``turn`` span covers the message
        until it is answered.
        """
        async with self._intake_turn(accepted) as span:
            handed_on = False
            try:
                with trace.use_span(span, end_on_exit=False):
                    handed_on = await self._process(accepted, outlet, span)
            finally:
                if not handed_on:
                    span.end()

    async def _process(self, accepted: Accepted, outlet: Outlet, span: trace.Span) -> bool:
        """:meth:`process`'s body; ``True`` when ``span`` was handed to a lane or answer task (which ends it)."""
        msg, stored, admitted = accepted.msg, accepted.stored, accepted.admitted
        if admitted is not None:
            if admitted.run_id is None:
                if admitted.refusal and admitted.refusal.startswith("Not run:"):
                    await self.record(msg, "permission.denied", "denied", None, admitted.refusal)
                await self._safely(lambda m, o, c: self.reply(m.key, o, admitted.refusal or "Not run."), msg, outlet, None)
            else:
                graph = accepted.plan[0] if accepted.plan else None
                action = "run.rerun" if parse_command(msg.text) and parse_command(msg.text).name == "rerun" else "run.start"  # type: ignore[union-attr]
                if not admitted.audited:
                    await self.record(msg, action, target=f"run:{admitted.run_id}", detail=(graph.name or graph.source)[:200] if graph else None)
                self._admitted[admitted.run_id] = (*accepted.plan, action == "run.rerun") if accepted.plan else None
                await self._enqueue(msg, outlet, Command("admitted", str(admitted.run_id)), stored.id, stored.tokens, span)
                return True
            return False
        sc = parse_schedule_command(msg.text) if self.scheduler is not None else None
        if sc is None and self.scheduler is not None:
            sc = await self._schedule_phrase(msg, outlet)
            if sc == ("", ""):  # asked to confirm a schedule: nothing runs now
                return False
        if sc is not None:  # schedule …, /schedules, /pause ID, /resume ID, /unschedule ID
            await self._safely(lambda m, o, c: handle_schedule_command(self.scheduler, self, m, o, *sc), msg, outlet, None)
            if sc[0] != "schedules":
                await self.record(msg, f"schedule.{sc[0]}", detail=sc[1][:200] or None)
            return False
        cmd = parse_command(msg.text)
        if cmd is not None and cmd.name in _IMMEDIATE:
            earlier = [e for e in self._unanswered.get(msg.key, ()) if not e.is_set()]
            if cmd.name in _NEVER_WAIT or not earlier:
                await self._safely(self._immediate, msg, outlet, cmd)
                return False
            # answered in the thread's order, without holding up the adapter (a /cancel typed next must act now)
            self._answer_in_turn(earlier, msg, outlet, cmd, span)
            return True
        await self._enqueue(msg, outlet, cmd, stored.id, stored.tokens, span)
        return True

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
            await outlet.send(msg.key, texts.usage(str(e)))
        except StoreError as e:
            log.error("%s", e)
            await outlet.send(msg.key, texts.database_error(e))
        except Exception as e:  # reported in the thread and the log, never swallowed silently
            log.exception("handling %r failed", msg.text)
            await outlet.send(msg.key, texts.internal_error(e))

    async def reply(self, key: ThreadKey, outlet: Outlet, text: str, *, kind: str | None = None) -> None:
        """Store the bot's reply in the thread's memory, then send it.

        ``kind=COMMAND`` marks the answer to a command (``/history``, ``/recall`` …): kept
        for ``/history``, never returned by ``/recall`` nor put in an LLM context.
        """
        await self.sessions.append(key, "assistant", "baton", text, kind=kind)
        await outlet.send(key, text)

    # -- ordered work --------------------------------------------------------

    async def _ordered(self, msg: Message, outlet: Outlet, cmd: Command | None, message_id: int = 0, tokens: int | None = None) -> None:
        key = msg.key
        args: dict[str, str] | None = None
        route_span: trace.Span | None = None
        if cmd is None:
            before = self._decisions.get(key)
            route_span = tracing.start_span("route", {"baton.thread": ":".join(key)})
            with trace.use_span(route_span, end_on_exit=True):
                routed = await self._route(msg, outlet)
                decided = self._decisions.get(key)
                route_attributes(route_span, routed, decided[1] if decided is not None and decided is not before else None)
            if routed is None:
                return
            target, args = routed
            if target == "":
                if self.chat is not None:
                    await self.chat.reply(msg, outlet, message_id, tokens=tokens)
                else:
                    await self.reply(key, outlet, texts.CHAT_NEEDS_PROVIDER, kind=COMMAND)  # a notice, not conversation
                return
            cmd = Command("run", target)
        if cmd.name == "admitted":
            await self._start_admitted(msg.key, int(cmd.arg))
        elif cmd.name == "run":
            # a routed run's span is a child of the route span that chose it (bot.server.tracing)
            with trace.use_span(route_span, end_on_exit=False) if route_span is not None else contextlib.nullcontext():
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
        """Store and send ``text``; outlets with :attr:`~bot.core.Ability.CHOICES` show one
        button per ``(label, reply)``: a click answers as if the clicker typed ``reply``."""
        if not buttons or not has_ability(outlet, Ability.CHOICES):
            await self.reply(msg.key, outlet, text)
            return
        await self.sessions.append(msg.key, "assistant", "baton", text)
        await cast(ChoicesOutlet, outlet).send_choices(msg.key, text, buttons)

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
        return self.compiler.compile(text)

    async def _run(self, msg: Message, outlet: Outlet, text: str, args: dict[str, str] | None = None) -> None:
        if args is None:  # explicit: "run: NAME key=value ..." gives arguments by name (quotes allowed)
            text, args = self._explicit_args(text)
        graph = self._compile_for_chat(text)
        if isinstance(graph, str):
            await self.reply(msg.key, outlet, graph)
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

    def _explicit_args(self, text: str) -> tuple[str, dict[str, str] | None]:
        """``"NAME key=value ..."`` of a named workflow → ``(NAME, arguments)``; other text unchanged."""
        split = split_arguments(text)
        if split is not None and split[0] in self.catalog.workflows:
            return split
        return text, None

    def _compile_for_chat(self, text: str) -> Graph | str:
        """The graph of ``text``, or the reply explaining why it cannot run (parse or definition error)."""
        if not text:
            return texts.run_what()
        try:
            return self.compile(text)
        except WorkflowSyntaxError as e:
            return texts.workflow_syntax_error(e.reason, e.line, e.column, e.caret())
        except UnknownWorkflowError as e:
            return texts.unknown_workflow(e.sentence(), self.catalog.names())
        except (DefinitionError, EngineError) as e:
            return texts.invalid_workflow(str(e))

    def allowed(self, msg: Message, graph: Graph) -> str | None:
        """``None`` when ``msg.author`` may run ``graph``, else the reason (names the rule)."""
        return permission_problem(self.settings, msg.author, msg.roles, graph)

    async def _start_admitted(self, key: ThreadKey, run_id: int) -> None:
        """Hand an admitted run to the worker; under ``busy_policy = "queue"`` the thread's
        later messages wait for it (thread order)."""
        assert self.queue is not None
        plan = self._admitted.pop(run_id, None)
        tracing.remember_run_parent(run_id)  # its run span's parent: the current route or turn span
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
            await self.reply(msg.key, outlet, texts.not_run(denied))
            return None
        busy = self.manager.in_thread(msg.key)
        policy = self.settings.workflow.busy_policy
        if busy and policy == "reject":
            await self.reply(msg.key, outlet, texts.busy([r.id for r in busy]))
            return None
        turn = _TURN.get()
        if busy and policy == "queue":
            if turn is not None and not turn.is_set():
                await self._command_answer(msg.key, outlet, texts.queued_behind(self._describe(busy)))
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
                    await self._command_answer(q_msg.key, q_outlet, texts.queued_behind(self._describe([active])))
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
            await self.reply(msg.key, outlet, texts.no_run(run_id))
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
                await self.reply(msg.key, outlet, texts.no_step(run_id, step, near))
                return
            loop = next((lp for lp in row.graph.loops() if node in lp.nodes), None)
            if loop is not None and iteration > 1 and not any(s.node_id == f"{node}#{iteration}" for s in steps):
                await self.reply(msg.key, outlet, f"Run #{run_id} has no iteration {iteration} of '{node}'.")
                return
            prior = _reused_steps(row.graph, steps, step) or {}
        await self.start_run(msg, outlet, row.graph, prior=prior, rerun_of=run_id)


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


__all__ = ["COMMANDS", "Accepted", "Bot", "Command", "FORGET_WINDOW_S", "_ancestors", "_find_step", "parse_command", "result_text"]
