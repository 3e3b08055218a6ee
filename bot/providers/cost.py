"""Reply cost estimates from ``config/prices.toml`` (USD per 1M input / output tokens)."""

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
    """Model → :class:`ModelPrice`, plus glob patterns for zero-cost local models.

    Lookup (case-insensitive): exact key; else the longest key ``k`` such that the model
    id is ``k + "-" + suffix`` with a snapshot suffix (``YYYY-MM-DD``, ``YYYYMMDD``,
    ``MMDD``, ``latest``); else a ``local`` pattern (not an ``exclude`` one) → 0 USD;
    else unpriced. Unpriced models are remembered in :attr:`unpriced_models` and logged
    once each at WARNING.
    """

    def __init__(
        self,
        models: Mapping[str, ModelPrice],
        *,
        local_patterns: Sequence[str] = (),
        local_exclude: Sequence[str] = (),
    ) -> None:
        self._models = {k.lower(): v for k, v in models.items()}
        self._local = tuple(p.lower() for p in local_patterns)
        self._exclude = tuple(p.lower() for p in local_exclude)
        self._unpriced: set[str] = set()

    @classmethod
    def load(cls, path: str | os.PathLike[str] = DEFAULT_PRICES_PATH) -> PriceTable:
        """Read and validate a prices TOML file (see ``config/prices.toml`` for the format).

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
        """``(matched key, price)`` for ``model`` per the class rules, or ``None`` if unpriced."""
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
        """Estimated cost of ``usage`` on ``model`` (see :class:`Cost`)."""
        found = self.lookup(model)
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


_default_table: PriceTable | None = None


def default_price_table() -> PriceTable:
    """The table from ``config/prices.toml`` in the repository, loaded once."""
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
