"""Domain values of the router: routes and decisions (frozen dataclasses, no I/O).

A :class:`Route` is one declared intent (loaded from YAML by
:func:`bot.routing.config.load_routes`). A :class:`Decision` is the record the
router returns for every message: which layer decided, which route fired (or
``None`` for plain chat), its score, the runner-up, a human-readable reason and the
arguments extracted from the text.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
"""Route names: a letter or digit, then letters, digits, ``_ . : -`` (no spaces, so
``/NAME`` and ``run: NAME`` can address them)."""


class Outcome(str, enum.Enum):
    """What the bot does with a routing decision (issue 16: act, ask, or chat)."""

    RUN = "run"
    """Confident enough, and allowed without asking: start the route's workflow."""
    ASK = "ask"
    """Medium confidence, a workflow that changes things, a statement that looks like a
    route, or a missing required argument: ask in the thread first."""
    CHAT = "chat"
    """Nothing to run: answer as chat."""


EFFECTS = ("read-only", "changes")
"""Declared effect of a route (``effect:`` in routes.yaml): a ``read-only`` route may run
from plain language at high confidence; one that ``changes`` things always asks first
(explicit ``run:`` / ``/run`` never ask)."""


@dataclass(frozen=True, slots=True)
class Param:
    """A declared argument of a route's workflow.

    Attributes:
        name: the argument's name (a regex named group or an LLM slot of that name fills it).
        required: a missing required argument is asked for before anything runs.
        choices: allowed values (case-insensitive); empty = any value matching ``pattern``.
        pattern: full-match regex for the value; default :data:`SAFE_VALUE`.
        default: value used when the text gives none.
    """

    name: str
    required: bool = True
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    default: str | None = None


SAFE_VALUE = r"[A-Za-z0-9_][A-Za-z0-9_.:@/+-]{0,63}"
"""Default shape of an argument value: one word of at most 64 characters that cannot
start with ``-`` (so it can never be read as an option when it becomes an argv element)
and holds no whitespace, quotes or shell metacharacters."""


class Layer(str, enum.Enum):
    """The router layer that produced a :class:`Decision`, in evaluation order."""

    COMMAND = "command"
    """Explicit command: text starting with ``/``, ``run:`` or ``schedule ``."""
    RULES = "rules"
    """A route's regex pattern (named groups become arguments) or keyword."""
    EMBEDDING = "embedding"
    """Similarity of the text to each route's example utterances."""
    LLM = "llm"
    """The optional LLM classifier hook."""
    CHAT = "chat"
    """Nothing fired: the message is plain chat."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A route and its score in the deciding layer (same units as :attr:`Decision.score`)."""

    route: str
    score: float


def _frozen_args(args: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(args or {}))


@dataclass(frozen=True, slots=True)
class Route:
    """One declared route.

    Attributes:
        name: unique identifier (``[A-Za-z0-9][A-Za-z0-9_.:-]*``); also what ``/NAME``
            and ``run: NAME`` address.
        target: what to do when the route fires: workflow text or a command (opaque
            to the router; ``""`` only for negative routes).
        examples: utterances that should reach this route (embedding layer).
        patterns: compiled regexes (searched case-insensitively); their named groups
            become :attr:`Decision.args`.
        keywords: words or phrases; a whole-word, case-insensitive hit fires the route.
        allowed_users: user ids allowed to trigger the route (the router carries it;
            the bot refuses anyone else before anything runs; empty with empty
            ``allowed_roles`` means no restriction).
        allowed_roles: roles allowed to trigger the route (same).
        threshold: minimum embedding score for this route, overriding the router's
            default (units of the embedding head: see
            :class:`bot.routing.embedding.EmbeddingConfig`); ``None`` = default.
        negative: a *negative* route never fires; its examples describe what should
            *not* be routed (e.g. out-of-scope chat) and pull scores away from the
            real routes.
        effect: ``"read-only"``, ``"changes"`` or ``None`` (undeclared: the workflow's own
            declaration decides, else it is treated as ``"changes"``).
        verbs: request verbs for the keyword rule (``check``, ``show`` …): a keyword
            fires when the message is a request ``VERB … KEYWORD`` or the keyword is the
            whole message (see :class:`bot.routing.layers.RuleLayer`).
        params: declared arguments of the route's workflow (:class:`Param`).

    Raises ``ValueError`` for an invalid name or threshold, or a non-negative route
    without a target.
    """

    name: str
    target: str = ""
    examples: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    keywords: tuple[str, ...] = ()
    allowed_users: tuple[str, ...] = ()
    allowed_roles: tuple[str, ...] = ()
    threshold: float | None = None
    negative: bool = False
    effect: str | None = None
    verbs: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"route name must match {_NAME_RE.pattern}, got {self.name!r}")
        if not self.negative and not self.target:
            raise ValueError(f"route {self.name!r} needs a target (only negative routes may omit it)")
        if self.threshold is not None and not (-1.0 <= self.threshold <= 1.0):
            raise ValueError(f"route {self.name!r}: threshold must be within [-1, 1], got {self.threshold}")
        if self.effect is not None and self.effect not in EFFECTS:
            raise ValueError(f"route {self.name!r}: effect must be one of {EFFECTS}, got {self.effect!r}")

    @property
    def workflow(self) -> str | None:
        """The workflow text the route runs (``target`` without a leading ``run:``), or
        ``None`` when it leads to chat (``target = "chat"``) or is negative."""
        text = self.target.removeprefix("run:").strip()
        return None if self.negative or text == "chat" else text

    @property
    def label_text(self) -> str:
        """The name as words (``calendar_update`` → ``"calendar update"``); used as an
        extra example when ``EmbeddingConfig.name_as_example`` is on."""
        return re.sub(r"[_.:-]+", " ", self.name).strip()


@dataclass(frozen=True, slots=True)
class Decision:
    """What the router decided for one message.

    Attributes:
        layer: the layer that decided (:attr:`Layer.CHAT` when nothing fired).
        route: the route that fired (outcome run) or is proposed (outcome ask);
            ``None`` for chat, for an ambiguous decision (two close candidates), and for
            an explicit command that names no known route.
        score: the deciding score: ``1.0`` for commands and patterns, the keyword
            score for keywords, the embedding head's score (see
            :class:`bot.routing.embedding.EmbeddingConfig`), or the LLM's confidence.
            For chat it is the best score that did not reach its threshold (``0.0``
            if no layer produced one).
        runner_up: the second-best route and its score in the deciding layer, if any.
        reason: one line for logs and "why did you do that?" answers.
        args: arguments extracted from the text (regex named groups; for commands
            ``command`` and ``text``). Read-only.
        candidates: for an ambiguous decision, the two closest routes, best first
            (the bot asks "Run X? Reply yes, or pick 1) … 2) …"); empty otherwise.
        suggestions: for an explicit command naming an unknown route, the closest
            known names (:func:`bot.routing.names.close_names`).
        outcome: run / ask / chat (:class:`Outcome`). Defaults from the other fields:
            ``RUN`` when ``route`` is set, ``ASK`` with candidates, else ``CHAT``.
        why: why the router asked (or did not ask): one line for ``/why``.
        missing: required arguments the text did not give (the bot asks for them).
    """

    layer: Layer
    route: str | None
    score: float
    runner_up: Candidate | None = None
    reason: str = ""
    args: Mapping[str, str] = field(default_factory=dict, hash=False)
    candidates: tuple[Candidate, ...] = ()
    suggestions: tuple[str, ...] = ()
    outcome: Outcome | None = None
    why: str = ""
    missing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", _frozen_args(self.args))
        if self.outcome is None:
            if self.candidates and self.route is None:
                out = Outcome.ASK
            elif self.route is not None and self.layer is not Layer.CHAT:
                out = Outcome.RUN
            else:
                out = Outcome.CHAT
            object.__setattr__(self, "outcome", out)
        if self.outcome is Outcome.RUN and self.route is None and self.layer is not Layer.COMMAND:
            raise ValueError("a run decision must name a route")
        if self.candidates and self.route is not None and self.outcome is not Outcome.ASK:
            raise ValueError("only an ask decision may carry both a route and candidates")

    @property
    def ambiguous(self) -> bool:
        """True when two routes were too close to call (see :attr:`candidates`): the bot
        asks "Run X? Reply yes, or pick 1) … 2) …"."""
        return self.route is None and len(self.candidates) >= 2

    @property
    def asks(self) -> bool:
        """True when the bot should ask before running anything."""
        return self.outcome is Outcome.ASK

    @property
    def runs(self) -> bool:
        """True when the route should run now (outcome RUN and a route)."""
        return self.outcome is Outcome.RUN and self.route is not None

    @property
    def options(self) -> tuple[str, ...]:
        """Routes offered in an ask prompt, best first: ``route`` (if any) then the other
        candidates, without duplicates."""
        out = [self.route] if self.route else []
        out += [c.route for c in self.candidates if c.route not in out]
        return tuple(out)

    @property
    def matched(self) -> bool:
        """True when a route fired (outcome RUN) or was proposed (outcome ASK with a route)."""
        return self.route is not None

    @property
    def is_chat(self) -> bool:
        """True when nothing fired and the message should go to chat."""
        return self.outcome is Outcome.CHAT


def chat_decision(reason: str, score: float = 0.0, runner_up: Candidate | None = None) -> Decision:
    """A :attr:`Layer.CHAT` decision (no route) with ``reason``."""
    return Decision(layer=Layer.CHAT, route=None, score=score, runner_up=runner_up, reason=reason)
