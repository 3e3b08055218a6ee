"""The non-embedding router layers: explicit commands, rules, and the LLM hook.

Each layer's ``decide`` returns a :class:`~bot.routing.types.Decision` when it
decides and ``None`` when it has no opinion (the router then tries the next layer).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from bot.routing.names import _canon, close_names
from bot.routing.types import Candidate, Decision, Layer, Outcome, Route, chat_decision

log = logging.getLogger("baton.routing")

ClassifyFn = Callable[[str, Sequence[str]], Awaitable[tuple[Any, ...]]]
"""LLM classifier hook: ``await classify(text, route_names) -> (route_name, confidence[, slots])``.

``route_name`` must be one of ``route_names`` (or ``None``/``""`` for "none of
them"); ``confidence`` is in [0, 1]; the optional third item is a mapping of slot
name -> value that becomes the decision's ``args`` (validated later against the
route's declared parameters, like a pattern's named groups)."""

_RUN_RE = re.compile(r"^run:\s*(.*)$", re.S | re.I)
_SCHEDULE_RE = re.compile(r"^schedule\s+(.*)$", re.S | re.I)


class CommandLayer:
    """Explicit commands: text starting with ``/``, ``run:`` or ``schedule ``.

    Forms (``args`` always holds ``command`` and ``text``; score is ``1.0``):

    * ``/NAME rest`` where NAME is a route → that route, ``command=NAME``, ``text=rest``.
    * ``/run NAME rest`` → route NAME if known, ``command="run"``, ``text=rest``.
    * ``run: NAME`` (just a route name) → route NAME; ``run: any workflow text`` →
      no route, ``command="run"``, ``text`` = the workflow text (compiled by the bot,
      as ``bot.turn.parse_command`` does).
    * ``schedule NAME …`` → route NAME if the first word is a route, ``command="schedule"``,
      ``text`` = everything after ``schedule`` (the scheduler parses it).
    * any other ``/word`` → no route, ``command=word`` (a bot command such as ``/help``).

    When the addressed name is neither a route nor one of ``extra_names`` (e.g. the
    bot's own commands and catalog workflows), the decision carries
    :attr:`~bot.routing.types.Decision.suggestions` from :func:`close_names`.
    Names match case-insensitively with ``-``/``_``/``.``/``:`` interchangeable.
    """

    def __init__(self, routes: Sequence[Route], extra_names: Iterable[str] = ()) -> None:
        self._routes = {_canon(r.name): r for r in routes if not r.negative}
        self._extra = {_canon(n): n for n in extra_names}
        self._all_names = [r.name for r in routes if not r.negative] + [n for n in extra_names]

    def _route(self, name: str) -> Route | None:
        return self._routes.get(_canon(name))

    def _decision(self, command: str, name: str | None, rest: str, *, text: str | None = None) -> Decision:
        args = {"command": command, "text": rest if text is None else text}
        route = self._route(name) if name else None
        if route is not None:
            return Decision(Layer.COMMAND, route.name, 1.0, reason=f"explicit {command} command for route {route.name!r}", args=args)
        known = name is not None and _canon(name) in self._extra
        suggestions: tuple[str, ...] = ()
        if name and not known:
            suggestions = tuple(close_names(name, self._all_names))
            reason = f"explicit {command} command: unknown workflow {name!r}"
            if suggestions:
                reason += "; did you mean " + ", ".join(suggestions) + "?"
        else:
            reason = f"explicit {command} command"
        return Decision(Layer.COMMAND, None, 1.0, reason=reason, args=args, suggestions=suggestions)

    def decide(self, text: str) -> Decision | None:
        """The command decision for ``text``, or ``None`` if it is not a command."""
        t = text.strip()
        m = _RUN_RE.match(t)
        if m:
            body = m.group(1).strip()
            words = body.split()
            if len(words) == 1:
                return self._decision("run", words[0], "", text=body)
            return self._decision("run", None, body)
        m = _SCHEDULE_RE.match(t)
        if m:
            body = m.group(1).strip()
            first = body.split()[0]
            route = self._route(first)
            return self._decision("schedule", route.name if route else None, body)
        if t.startswith("/") and len(t) > 1 and not t[1].isspace():
            head, _, rest = t[1:].partition(" ")
            rest = rest.strip()
            if head.lower() == "run":
                name, _, after = rest.partition(" ")
                if not name:
                    return self._decision("run", None, "")
                return self._decision("run", name, after.strip())
            if self._route(head) is not None:
                return self._decision(head.lower(), head, rest)
            return self._decision(head.lower(), head, rest)
        return None


def _phrase_re(phrase: str) -> str:
    return r"\s+".join(re.escape(w) for w in phrase.split())


_FILLER_TAIL = r"(?:[\s,]+(?:please|pls|plz|now|thanks|thank\s+you|thx|asap|right\s+now|for\s+me|again|quickly))*"
_OBJECT_GAP = r"(?:\s+(?!and\b|but\b|then\b|because\b)[\w'./:-]+){0,4}?"
"""Up to four words between the verb and the keyword ("check the root disk usage")."""


class RuleLayer:
    """Regex patterns, then intent keywords (issue 16: statements are not requests).

    * Patterns: routes are tried in declaration order, each route's patterns in
      order (``re.search``, case-insensitive); the first match fires with score
      ``1.0`` and its named groups (those that matched) as ``args``. The next route
      whose pattern also matches is the runner-up. Write patterns as intents
      (``^restart (the )?(?P<service>\\w+)``), not single words.
    * Keywords (only if no pattern matched) match an *intent*, never a word anywhere:

      - **whole phrase**: the message, without a greeting, polite words and
        punctuation, *is* the keyword (``disk usage``, ``disk usage please?``) —
        score ``1.0``;
      - **verb–object**: the message is a request whose verb is one of the route's
        ``verbs`` (default: the common request verbs of :mod:`bot.routing.speech`),
        followed within four words by the keyword (``check the disk space``,
        ``can you show me disk usage``), or a request that *starts* with the keyword
        (``bounce the api``, ``disk usage on db1``) — score ``0.9``.

      Rules are only consulted for requests and questions
      (:func:`bot.routing.speech.speech_act`).

      "the disk team lunch is at noon" matches neither. Two routes matching at the
      same score are ambiguous (the bot asks).
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        from bot.routing.speech import _VERBS

        self._patterns = [(r, r.patterns) for r in routes if r.patterns and not r.negative]
        self._keywords = []
        for r in routes:
            if not r.keywords or r.negative:
                continue
            phrases = "|".join(_phrase_re(k) for k in sorted(r.keywords, key=len, reverse=True))
            verbs = "|".join(_phrase_re(v) for v in sorted(r.verbs or _VERBS, key=len, reverse=True))
            whole = re.compile(rf"^(?:{phrases}){_FILLER_TAIL}$", re.I)
            verb_object = re.compile(
                rf"^(?:(?:{verbs})(?:\s+(?:me|us|up))?{_OBJECT_GAP}\s+(?:{phrases})|(?:{phrases}))(?!\w)(?:\s+\S+){{0,5}}$", re.I
            )
            self._keywords.append((r, whole, verb_object))

    @staticmethod
    def _core(text: str) -> str:
        """``text`` without a greeting, polite request words and end punctuation."""
        from bot.routing.speech import _LEAD, _POLITE

        t = _LEAD.sub("", text.strip()).strip()
        t = _POLITE.sub("", t, count=1).strip()
        t = re.sub(r"[\s?!.,;:]+$", "", t)
        t = re.sub(r"^(?:(?:please|pls|plz|just)\b[\s,]*)+", "", t, flags=re.I)
        return re.sub(r"\s+", " ", t)

    def decide(self, text: str) -> Decision | None:
        """The rules decision for ``text`` or ``None``."""
        hits: list[tuple[Route, dict[str, str], str]] = []
        for route, patterns in self._patterns:
            for p in patterns:
                m = p.search(text)
                if m:
                    groups = {k: v for k, v in m.groupdict().items() if v is not None}
                    hits.append((route, groups, p.pattern))
                    break
            if len(hits) == 2:
                break
        if hits:
            route, groups, src = hits[0]
            runner = Candidate(hits[1][0].name, 1.0) if len(hits) > 1 else None
            return Decision(Layer.RULES, route.name, 1.0, runner_up=runner, reason=f"pattern {src!r} matched", args=groups)
        core = self._core(text)
        if not core:
            return None
        scored: list[tuple[float, Route, str]] = []
        for route, whole, verb_object in self._keywords:
            if whole.match(core):
                scored.append((1.0, route, f"the whole message is a keyword of {route.name!r}"))
            elif verb_object.match(core):
                scored.append((0.9, route, f"request verb + keyword of {route.name!r}"))
        if not scored:
            return None
        scored.sort(key=lambda x: -x[0])  # stable: declaration order breaks ties
        s1, r1, why1 = scored[0]
        runner = Candidate(scored[1][1].name, scored[1][0]) if len(scored) > 1 else None
        if len(scored) > 1 and scored[1][0] == s1:
            return Decision(
                Layer.RULES,
                None,
                s1,
                runner_up=runner,
                reason=f"ambiguous keywords: {r1.name!r} and {scored[1][1].name!r} both matched",
                candidates=(Candidate(r1.name, s1), Candidate(scored[1][1].name, scored[1][0])),
            )
        return Decision(Layer.RULES, r1.name, s1, runner_up=runner, reason=why1)


class LLMLayer:
    """Asks the optional LLM classifier hook (see :data:`ClassifyFn`).

    Args:
        classify: the hook.
        route_names: the routes it may choose from.
        threshold: minimum confidence to propose a route at all (default 0.5): between
            it and ``run_threshold`` the outcome is *ask*.
        timeout_s: seconds to wait for the hook (default 10 s).
        run_threshold: minimum confidence to run without asking (default 0.8).
            Both are uncalibrated policy values on the hook's self-reported
            confidence; see :class:`bot.routing.router.RouterConfig`.

    ``decide`` never raises for a failing hook: an exception, a timeout, an unknown
    route name or a confidence below ``threshold`` give a :attr:`Layer.CHAT`
    decision whose reason says so (and the failure is logged). Slots the hook
    returns become ``args``.
    """

    def __init__(
        self, classify: ClassifyFn, route_names: Sequence[str], threshold: float = 0.5, timeout_s: float = 10.0, run_threshold: float = 0.8
    ) -> None:
        self.classify = classify
        self.route_names = list(route_names)
        self._by_key = {n.lower(): n for n in self.route_names}
        self.threshold = threshold
        self.run_threshold = max(run_threshold, threshold)
        self.timeout_s = timeout_s

    async def decide(self, text: str) -> Decision:
        """Await the hook and turn its answer into a decision."""
        try:
            answer = await asyncio.wait_for(self.classify(text, list(self.route_names)), self.timeout_s)
        except asyncio.TimeoutError:
            log.warning("LLM route classifier timed out after %.1f s", self.timeout_s)
            return chat_decision(f"llm classifier timed out after {self.timeout_s:g} s")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the hook is third-party code; never let it break routing
            log.warning("LLM route classifier failed: %s", e, exc_info=True)
            return chat_decision(f"llm classifier failed: {type(e).__name__}: {e}")
        try:
            name, confidence, *more = answer
            slots = more[0] if more else None
            if slots is not None and not isinstance(slots, Mapping):
                raise TypeError("slots must be a mapping")
            confidence = float(confidence)
        except (TypeError, ValueError) as e:
            return chat_decision(f"llm classifier returned an unusable answer {answer!r}: {e}")
        if not name:
            return chat_decision(f"llm classifier chose no route ({confidence:.2f})", confidence)
        route = self._by_key.get(str(name).strip().lower())
        if route is None:
            return chat_decision(f"llm classifier returned unknown route {name!r}")
        if confidence < self.threshold:
            return chat_decision(f"llm chose {route!r} at {confidence:.2f} < {self.threshold:.2f}", confidence, Candidate(route, confidence))
        args = {str(k): str(v) for k, v in (slots or {}).items() if v is not None and str(v).strip()}
        if confidence < self.run_threshold:
            return Decision(
                Layer.LLM, route, confidence, reason=f"llm classifier chose {route!r} ({confidence:.2f})", args=args,
                outcome=Outcome.ASK, why=f"llm confidence {confidence:.2f} < run threshold {self.run_threshold:.2f}",
            )
        return Decision(Layer.LLM, route, confidence, reason=f"llm classifier chose {route!r} ({confidence:.2f} >= {self.threshold:.2f})", args=args)
