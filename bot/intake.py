"""Run intake: the part of a turn that must be durable before the platform is acknowledged.

:meth:`RunIntake.accept` (part of :class:`bot.turn.Bot`) stores a message with its
delivery ids and, for a ``run:``/``/run``/``/rerun`` that compiles, its ``queued`` run
in one transaction (:mod:`bot.queue.admission`). Also here: the chat command syntax
(:func:`parse_command`) and the step selection of ``/rerun ID from STEP``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.core import Message
from bot.queue.admission import Admitted
from bot.routing import bind_arguments
from bot.scheduling.commands import parse_schedule_command
from bot.store import StoredMessage
from bot.store.audit import AuditEntry
from bot.store.sessions import COMMAND
from engine.errors import EngineError
from engine.graph import Graph, split_instance

if TYPE_CHECKING:
    from bot.queue.admission import Admission
    from bot.scheduling import SchedulerService
    from bot.store import RunStore, SessionStore
    from engine.catalog import Catalog

log = logging.getLogger("baton.turn")

__all__ = ["COMMANDS", "Accepted", "Command", "RunIntake", "parse_command"]

COMMANDS = ("help", "workflows", "run", "runs", "cancel", "rerun", "history", "recall", "context", "summary", "forget", "approve", "reject", "why", "reload", "audit")


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


_PLAIN: dict[int, Graph] = {}


def _without_arguments(graph: Graph) -> Graph:
    """``bind_arguments(graph, {})`` (raises ``KeyError`` for a placeholder), remembered for
    graphs without placeholders: compiled graphs are cached and immutable, and looking for
    placeholders costs a regex per step on every delivery's way to its ack."""
    if _PLAIN.get(id(graph)) is graph:
        return graph
    bound = bind_arguments(graph, {})
    if bound is graph:
        if len(_PLAIN) >= 256:
            _PLAIN.clear()
        _PLAIN[id(graph)] = graph
    return bound


class RunIntake:
    """Storing a delivery (and admitting the run it asks for) before anything acts on it."""

    admission: Admission | None
    scheduler: SchedulerService | None
    sessions: SessionStore
    runs: RunStore
    catalog: Catalog
    compile: Any
    run_scope: Any

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
        audit = None
        if getattr(self, "audit", None) is not None:  # the run's audit row commits with it (no second transaction)
            action = "run.rerun" if cmd.name == "rerun" else "run.start"
            audit = AuditEntry(msg.author, msg.platform, action, "ok", msg.channel, msg.thread, None, (graph.name or graph.source)[:200])
        admitted = await self.admission.admit(
            msg.key, graph, requested_by=msg.author, roles=msg.roles, text=msg.text, author=msg.author,
            dedupe_ids=msg.dedupe_ids, event_id=msg.event_id, created_at=msg.received_at, prior=prior, rerun_of=rerun_of, kind=kind,
            audit=audit,
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
                return _without_arguments(self.compile(cmd.arg)), {}, None
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
