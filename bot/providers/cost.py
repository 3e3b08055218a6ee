"""Reply cost estimates: genai-prices' bundled price data, with a local override file.

Prices come from the ``genai-prices`` package (pydantic's maintained table of LLM
API prices, bundled with the package: no network at run time), which also knows
prompt-cache read/write rates and tiered prices. ``config/prices.toml`` is a local
*override*: a model listed there (USD per 1M input / output tokens) wins over the
bundled data, and its ``[local]`` glob patterns mark self-hosted models as free.
Lookup order: override file, local patterns, bundled data; anything else is
unpriced (counted as $0 and flagged once).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import genai_prices
from pydantic import BaseModel, ConfigDict, Field

from .types import Usage

log = logging.getLogger(__name__)

DEFAULT_PRICES_PATH = Path(__file__).resolve().parents[2] / "config" / "prices.toml"
_SNAPSHOT_SUFFIX = re.compile(r"^(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """List price of one model: USD per 1,000,000 input tokens and per 1,000,000 output tokens."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float


@dataclass(frozen=True, slots=True)
class Cost:
    """A cost estimate. ``usd``: dollars; ``priced``: False when the model is not in the table
    (``usd`` is then 0.0); ``matched``: the table key used (``"local"`` for local patterns)."""

    model: str
    usd: float
    priced: bool
    matched: str | None = None


class _PriceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class _LocalSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    patterns: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    meta: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, _PriceEntry] = Field(default_factory=dict)
    local: _LocalSection = Field(default_factory=_LocalSection)


class PriceTable:
    """Model → price: local overrides, zero-cost local patterns, then genai-prices' bundled data.

    Lookup (case-insensitive): an override key, exactly; else the longest override key
    ``k`` such that the model id is ``k + "-" + suffix`` with a snapshot suffix
    (``YYYY-MM-DD``, ``YYYYMMDD``, ``MMDD``, ``latest``); else a ``local`` pattern (not an
    ``exclude`` one) → 0 USD; else (with ``bundled``) the model as genai-prices knows it
    (its own matching of ids and snapshots; input/output/cache rates, tiers); else
    unpriced. Unpriced models are remembered in :attr:`unpriced_models` and logged once
    each at WARNING.

    Args:
        models: overrides, USD per 1M input / output tokens.
        local_patterns, local_exclude: fnmatch globs of free self-hosted models.
        bundled: also price from genai-prices' bundled data (default True).
    """

    def __init__(
        self,
        models: Mapping[str, ModelPrice],
        *,
        local_patterns: Sequence[str] = (),
        local_exclude: Sequence[str] = (),
        bundled: bool = True,
    ) -> None:
        self._models = {k.lower(): v for k, v in models.items()}
        self._local = tuple(p.lower() for p in local_patterns)
        self._exclude = tuple(p.lower() for p in local_exclude)
        self._bundled = bundled
        self._unpriced: set[str] = set()

    @classmethod
    def load(cls, path: str | os.PathLike[str] = DEFAULT_PRICES_PATH) -> PriceTable:
        """The bundled prices plus the overrides of a TOML file (see ``config/prices.toml`` for the format).

        Raises ``FileNotFoundError``, ``tomllib.TOMLDecodeError`` or ``pydantic.ValidationError``.
        """
        with open(path, "rb") as fh:
            parsed = _PriceFile.model_validate(tomllib.load(fh))
        return cls(
            {k: ModelPrice(v.input_per_mtok, v.output_per_mtok) for k, v in parsed.models.items()},
            local_patterns=parsed.local.patterns,
            local_exclude=parsed.local.exclude,
        )

    def __repr__(self) -> str:
        return f"PriceTable(models={len(self._models)}, local_patterns={list(self._local)!r})"

    @property
    def unpriced_models(self) -> frozenset[str]:
        """Model ids asked about that had no price."""
        return frozenset(self._unpriced)

    def lookup(self, model: str) -> tuple[str, ModelPrice] | None:
        """``(matched key, price)`` for ``model`` per the class rules, or ``None`` if unpriced.

        For bundled prices the key is genai-prices' model id and the price its base
        (first-tier, uncached) input and output rates.
        """
        found = self._lookup_local(model)
        if found is not None or not self._bundled:
            return found
        calc = _bundled(model, Usage(1_000_000, 0))
        if calc is None:
            return None
        out = _bundled(model, Usage(0, 1_000_000))
        return calc.model.id, ModelPrice(float(calc.total_price), float(out.total_price) if out else 0.0)

    def _lookup_local(self, model: str) -> tuple[str, ModelPrice] | None:
        wanted = model.lower()
        if wanted in self._models:
            return wanted, self._models[wanted]
        best: str | None = None
        for key in self._models:
            if wanted.startswith(key + "-") and _SNAPSHOT_SUFFIX.match(wanted[len(key) + 1 :]):
                if best is None or len(key) > len(best):
                    best = key
        if best is not None:
            return best, self._models[best]
        if any(fnmatch.fnmatchcase(wanted, p) for p in self._local) and not any(
            fnmatch.fnmatchcase(wanted, p) for p in self._exclude
        ):
            return "local", ModelPrice(0.0, 0.0)
        return None

    def cost(self, model: str, usage: Usage) -> Cost:
        """Estimated cost of ``usage`` on ``model`` (see :class:`Cost`); bundled prices apply
        the cache read/write rates to ``usage.cache_read_tokens``/``cache_write_tokens``."""
        found = self._lookup_local(model)
        if found is None and self._bundled:
            calc = _bundled(model, usage)
            if calc is not None:
                return Cost(model=model, usd=float(calc.total_price), priced=True, matched=calc.model.id)
        if found is None:
            if model not in self._unpriced:
                self._unpriced.add(model)
                log.warning("no price for model %r in the price table; counting its cost as $0 (unpriced)", model)
            return Cost(model=model, usd=0.0, priced=False)
        key, price = found
        usd = (
            usage.input_tokens * price.input_usd_per_mtok + usage.output_tokens * price.output_usd_per_mtok
        ) / 1_000_000
        return Cost(model=model, usd=usd, priced=True, matched=key)

    def cost_usd(self, model: str, usage: Usage) -> float:
        """Estimated cost in USD (0.0 for unpriced models, which are flagged — see :meth:`cost`)."""
        return self.cost(model, usage).usd


def _bundled(model: str, usage: Usage) -> Any:
    """genai-prices' calculation for ``usage`` on ``model`` (``None`` when it does not know the model).

    Its ``input_tokens`` is the total input, cache reads and writes included, like ours.
    """
    try:
        return genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens or None,
                cache_write_tokens=usage.cache_write_tokens or None,
            ),
            model,
        )
    except LookupError:
        return None


_default_table: PriceTable | None = None


def default_price_table() -> PriceTable:
    """genai-prices' bundled data with the overrides of ``config/prices.toml``, loaded once."""
    global _default_table
    if _default_table is None:
        _default_table = PriceTable.load(DEFAULT_PRICES_PATH)
    return _default_table


def cost_usd(model: str, usage: Usage, *, table: PriceTable | None = None) -> float:
    """Estimated USD cost of ``usage`` (tokens) on ``model``; unknown model → 0.0, flagged unpriced.

    Uses :func:`default_price_table` unless ``table`` is given. For the flag itself use
    ``table.cost(model, usage).priced`` or ``table.unpriced_models``.
    """
    return (table or default_price_table()).cost_usd(model, usage)
