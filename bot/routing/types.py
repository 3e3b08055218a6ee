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

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"route name must match {_NAME_RE.pattern}, got {self.name!r}")
        if not self.negative and not self.target:
            raise ValueError(f"route {self.name!r} needs a target (only negative routes may omit it)")
        if self.threshold is not None and not (-1.0 <= self.threshold <= 1.0):
            raise ValueError(f"route {self.name!r}: threshold must be within [-1, 1], got {self.threshold}")

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
        route: the route that fired; ``None`` for chat, for an ambiguous decision, and
            for an explicit command that names no known route.
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
            (the bot asks "did you mean 1) … 2) …"); empty otherwise.
        suggestions: for an explicit command naming an unknown route, the closest
            known names (:func:`bot.routing.names.close_names`).
    """

    layer: Layer
    route: str | None
    score: float
    runner_up: Candidate | None = None
    reason: str = ""
    args: Mapping[str, str] = field(default_factory=dict, hash=False)
    candidates: tuple[Candidate, ...] = ()
    suggestions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", _frozen_args(self.args))
        if self.candidates and self.route is not None:
            raise ValueError("an ambiguous decision (with candidates) must not name a route")

    @property
    def ambiguous(self) -> bool:
        """True when two routes were too close to call (see :attr:`candidates`)."""
        return len(self.candidates) >= 2

    @property
    def matched(self) -> bool:
        """True when a route fired."""
        return self.route is not None

    @property
    def is_chat(self) -> bool:
        """True when nothing fired and the message should go to chat."""
        return self.layer is Layer.CHAT


def chat_decision(reason: str, score: float = 0.0, runner_up: Candidate | None = None) -> Decision:
    """A :attr:`Layer.CHAT` decision (no route) with ``reason``."""
    return Decision(layer=Layer.CHAT, route=None, score=score, runner_up=runner_up, reason=reason)
