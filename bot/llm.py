"""The bot's use of LLM providers: workflow LLM steps, chat replies and summaries.

* LLM steps (``engine.actions.LLMRunner``): a step's prompt plus the outputs of the
  steps it depends on ("automatic context passing between steps", seed
  *Advanced Orchestration*), on the provider named by ``with <name>`` or the default.
  Usage comes from the provider's own usage fields; USD from genai-prices (overrides: ``config/prices.toml``).
* Budget controls from the same seed (``[workflow.cost_control]``):
  ``max_cost_per_workflow`` (USD) refuses a step whose worst case (prompt tokens plus
  ``max_tokens`` of output at the model's price) would take the run over the limit;
  ``budget_alert_threshold`` (a fraction of it) posts one warning in the run's thread.
  With a :class:`SpendLedger` (the App passes :class:`bot.store.budget.RunBudget`) the
  spend is the run's ``spent_usd`` in the database: each step *reserves* its worst case
  atomically before it calls the provider and *settles* to the actual cost after, so
  parallel steps cannot both pass the check and a resumed run keeps what it spent.
  Without one (or for a call outside a stored run) the spend is counted in memory.
* Chat: the thread's context window streamed through the default provider.
* Summaries: abstractive through the default provider (the session manager falls
  back to extractive when this fails).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from bot.providers import PriceTable, ProviderError, ProviderRegistry, StreamInterrupted
from bot.providers.config import implicit_providers
from bot.providers.errors import TransientProviderError
from bot.providers.types import ChatMessage, StreamEnd, StreamEvent, TextDelta, Usage
from bot.sessions import ContextWindow, MemoryMessage, TokenCounter
from bot.store import StoreError
from engine.actions import StepOutput
from engine.context import current_run_id
from engine.errors import StepError

log = logging.getLogger("baton.llm")

STEP_SYSTEM = (
    "You are one step of a chat-ops workflow. Do exactly what the step asks, concisely. "
    "The outputs of the earlier steps it depends on follow the task."
)
SUMMARY_SYSTEM = "Summarize this part of a chat thread in a few sentences. Keep names, numbers, decisions and open questions."


def step_prompt(prompt: str, inputs: Mapping[str, str]) -> str:
    """The user message of an LLM step: the task, then each earlier step's output under its name."""
    if not inputs:
        return prompt
    parts = [prompt, "", "Outputs of the earlier steps:"]
    for label, output in inputs.items():
        parts.append(f"### {label}\n{output.strip() or '(no output)'}")
    return "\n".join(parts)


AlertFn = Callable[[str, str], Awaitable[None]]


class SpendLedger(Protocol):
    """Where runs' LLM spend is kept (USD; :class:`bot.store.budget.RunBudget`).

    Methods raise :class:`LookupError` for an unknown run and :class:`StoreError` when the
    database fails."""

    async def reserve(self, run_id: int, usd: float, limit: float) -> tuple[bool, float]:
        """Atomically add ``usd`` if the run's spend stays ≤ ``limit``: ``(reserved?, spend)``."""
        ...

    async def settle(self, run_id: int, reserved: float, actual: float) -> float:
        """Replace a reservation by the actual cost; the spend afterwards."""
        ...

    async def spent(self, run_id: int) -> float:
        """The run's spend so far."""
        ...


class LLM:
    """Providers as the bot uses them.

    Args:
        registry: named providers.
        prices: USD per 1M tokens by model.
        counter: counts prompt tokens for budget estimates.
        max_tokens: reply cap per call (tokens).
        max_cost_per_workflow: USD per run (``None``: no limit).
        budget_alert_threshold: fraction of the limit at which the thread is warned.
        alert: ``(run_id, text)`` → posts a warning in the run's thread.
        ledger: keeps each stored run's spend (``None``: in memory, this process only).
    """

    def __init__(
        self,
        registry: ProviderRegistry,
        prices: PriceTable,
        counter: TokenCounter,
        *,
        max_tokens: int = 1024,
        max_cost_per_workflow: float | None = None,
        budget_alert_threshold: float = 0.8,
        alert: AlertFn | None = None,
        ledger: SpendLedger | None = None,
    ) -> None:
        self.registry = registry
        self.prices = prices
        registry.prices = prices  # provider spans report cost with the same prices
        self.counter = counter
        self.max_tokens = max_tokens
        self.max_cost = max_cost_per_workflow
        self.alert_threshold = budget_alert_threshold
        self.alert = alert
        self.ledger = ledger
        self._spent: dict[str, float] = {}
        self._alerted: set[str] = set()

    @classmethod
    def from_settings(cls, providers: Mapping[str, Any], counter: TokenCounter, **kw: Any) -> LLM | None:
        """An :class:`LLM` for ``[providers]`` (or, when none are configured, for the vendor keys
        set in the environment: OPENAI_API_KEY / ANTHROPIC_API_KEY); ``None`` when there is neither."""
        mapping = dict(providers) or implicit_providers(os.environ)
        if not mapping:
            return None
        return cls(ProviderRegistry.from_mapping(mapping), PriceTable.load(), counter, **kw)

    @property
    def names(self) -> tuple[str, ...]:
        return self.registry.names

    def spent(self, run_id: str) -> float:
        """USD counted in memory for run ``run_id`` (runs without a ledger; see :meth:`spent_by`)."""
        return self._spent.get(run_id, 0.0)

    async def spent_by(self, run_id: str) -> float:
        """USD spent (and reserved by steps in flight) by run ``run_id``: the ledger's record
        of a stored run, else this process's count.

        Raises:
            StoreError: the database failed.
        """
        rid = self._stored(run_id)
        if rid is not None:
            try:
                return await self.ledger.spent(rid)  # type: ignore[union-attr]
            except LookupError:
                pass
        return self.spent(run_id)

    def _stored(self, run_id: str) -> int | None:
        """The ledger's run id for ``run_id`` (``None``: no ledger, or not a stored run's id)."""
        return int(run_id) if self.ledger is not None and run_id.isdigit() else None

    async def _reserve(self, run_id: str, est: float) -> float:
        """Hold ``est`` USD of the run's budget; returns what is held (settled by :meth:`_account`).

        Raises:
            StepError: the step could take the run over ``max_cost_per_workflow`` (not retryable),
                or the ledger failed (retryable).
        """
        assert self.max_cost is not None
        rid = self._stored(run_id)
        ok: bool | None = None
        if rid is not None:
            try:
                ok, spent = await self.ledger.reserve(rid, est, self.max_cost)  # type: ignore[union-attr]
            except LookupError:
                ok = None  # not a stored run (an engine test, a direct call): counted in memory
            except StoreError as e:
                raise StepError(f"not run: checking the run's budget failed ({e})", retryable=True) from None
        if ok is None:  # in memory: check and hold without an await in between
            spent = self.spent(run_id)
            ok = spent + est <= self.max_cost
            if ok:
                self._spent[run_id] = spent + est
        if not ok:
            raise StepError(
                f"not run: this step could cost up to ${est:.4f} and the run has spent ${spent:.4f} "
                f"of its max_cost_per_workflow ${self.max_cost:.2f} ([workflow.cost_control])",
                retryable=False,
            )
        return est

    async def _settle(self, run_id: str, held: float, cost: float) -> float:
        """Replace ``held`` by ``cost`` in the run's spend; returns the new total."""
        rid = self._stored(run_id)
        if rid is not None:
            try:
                return await self.ledger.settle(rid, held, cost)  # type: ignore[union-attr]
            except LookupError:
                pass
        self._spent[run_id] = total = max(0.0, self.spent(run_id) - held + cost)
        return total

    def _estimate(self, model: str, prompt_tokens: int, max_out: int) -> float:
        return self.prices.cost_usd(model, Usage(prompt_tokens, max_out))

    # -- workflow steps ----------------------------------------------------------

    async def __call__(self, prompt: str, provider: str | None, inputs: Mapping[str, str]) -> StepOutput:
        """Run one LLM step (the engine's ``LLMRunner``).

        Raises:
            StepError: provider errors (retryable when transient), or a budget refusal (not retryable).
        """
        run_id = current_run_id.get() or "-"
        text = step_prompt(prompt, inputs)
        try:
            p = self.registry.get(provider)
        except ProviderError as e:
            raise StepError(str(e), retryable=False) from None
        held = 0.0
        if self.max_cost is not None:
            est = self._estimate(p.model, self.counter.count_message("user", text) + self.counter.count(STEP_SYSTEM), self.max_tokens)
            held = await self._reserve(run_id, est)
        try:
            result = await self._step(p, text)
        except BaseException:  # failed, interrupted or cancelled: the reservation is given back
            if held:
                await asyncio.shield(self._release(run_id, held))
            raise
        try:
            await self._account(run_id, held, result.cost_usd)
        except StoreError as e:  # the answer was paid for: keep it (the reservation stays counted)
            log.error("run %s: recording the step's spend failed: %s", run_id, e)
        return result

    async def _release(self, run_id: str, held: float) -> None:
        try:
            await self._settle(run_id, held, 0.0)
        except StoreError as e:
            log.error("run %s: giving back a budget reservation failed: %s", run_id, e)

    async def _step(self, p: Any, text: str) -> StepOutput:
        out: list[str] = []
        end: StreamEnd | None = None
        try:
            async for ev in p.stream([ChatMessage("user", text)], system=STEP_SYSTEM, max_tokens=self.max_tokens):
                if isinstance(ev, TextDelta):
                    out.append(ev.text)
                else:
                    end = ev
        except StreamInterrupted as e:
            raise StepError(f"{e} (partial output kept)", retryable=False, output=e.partial_text + "\n…[cut off]") from None
        except ProviderError as e:
            raise StepError(str(e), retryable=isinstance(e, TransientProviderError)) from None
        usage = end.usage if end else Usage(0, 0)
        model = end.model if end and end.model else p.model
        cost = self.prices.cost_usd(model, usage)
        return StepOutput("".join(out), usage.input_tokens, usage.output_tokens, cost)

    async def _account(self, run_id: str, held: float, cost: float) -> None:
        total = await self._settle(run_id, held, cost)
        if self.max_cost and self.alert and run_id not in self._alerted and total >= self.alert_threshold * self.max_cost:
            self._alerted.add(run_id)
            await self.alert(
                run_id,
                f"Budget alert: run #{run_id} has spent ${total:.4f}, {100 * total / self.max_cost:.0f}% of its "
                f"max_cost_per_workflow ${self.max_cost:.2f}.",
            )

    # -- chat ----------------------------------------------------------------------

    def chat(self, window: ContextWindow, provider: str | None = None) -> AsyncIterator[StreamEvent]:
        """Stream a reply to ``window``: :class:`TextDelta` events, then one :class:`StreamEnd`
        (the provider's own stream, no extra layer per token).

        Raises:
            ProviderNotConfigured: no such provider (at call time).
            ProviderError: while iterating, as :meth:`bot.providers.Provider.stream`
                (``StreamInterrupted`` after text).
        """
        system = "\n\n".join(m.content for m in window.messages if m.role == "system")
        msgs = [ChatMessage(m.role, m.content) for m in window.messages if m.role != "system"]
        return self.registry.get(provider).stream(msgs, system=system or None, max_tokens=self.max_tokens)

    # -- routing ---------------------------------------------------------------------

    async def classify(self, text: str, route_names: Sequence[str]) -> tuple[str | None, float, dict[str, str]]:
        """The routing layer's LLM classifier: which route ``text`` asks for (or none).

        Asks the default provider for JSON ``{"route": NAME|null, "confidence": 0..1,
        "args": {slot: value}}`` constrained to ``route_names``; anything else counts as
        no route. ``args`` are the slots the message fills (``restart the api`` →
        ``{"service": "api"}``); the router keeps only the route's declared parameters
        and validates their values before anything runs.

        Raises:
            ProviderError: the provider failed (the router then falls back to chat).
        """
        system = (
            "You route chat-ops requests. Answer with JSON only: "
            '{"route": <one of the names or null>, "confidence": <0 to 1>, "args": {<slot>: <one-word value>}}. '
            "Names: " + ", ".join(route_names) + ". Use null for anything that is not clearly one of them, "
            "and for statements or questions about a topic that do not ask for the action. "
            "args: only values the message states (e.g. service, host, env); {} if none."
        )
        p = self.registry.get(None)
        reply = []
        async for ev in p.stream([ChatMessage("user", text)], system=system, max_tokens=100):
            if isinstance(ev, TextDelta):
                reply.append(ev.text)
        raw = "".join(reply)
        try:
            data = json.loads(raw[raw.index("{") : raw.rindex("}") + 1])
            name, conf = data.get("route"), float(data.get("confidence", 0))
            args = data.get("args") or {}
            if not isinstance(args, dict):
                args = {}
        except (ValueError, TypeError, AttributeError):
            return None, 0.0, {}
        slots = {str(k): str(v) for k, v in args.items() if isinstance(v, (str, int, float)) and str(v).strip()}
        return (name if name in route_names else None), max(0.0, min(1.0, conf)), slots

    # -- summaries -------------------------------------------------------------------

    async def summarize(self, messages: Sequence[MemoryMessage], max_tokens: int) -> str:
        """Abstractive summary of ``messages`` in at most about ``max_tokens`` tokens."""
        transcript = "\n".join(f"{m.author} ({m.role}): {m.text}" for m in messages)
        p = self.registry.get(None)
        reply = []
        async for ev in p.stream([ChatMessage("user", transcript)], system=SUMMARY_SYSTEM, max_tokens=max_tokens):
            if isinstance(ev, TextDelta):
                reply.append(ev.text)
        return "".join(reply)

    async def aclose(self) -> None:
        await self.registry.aclose()
