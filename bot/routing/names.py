"""Fuzzy name suggestions ("unknown workflow: did you mean …")."""

from __future__ import annotations

import re
from collections.abc import Iterable

from rapidfuzz import fuzz, process


def _canon(s: str) -> str:
    """Case- and separator-insensitive form: ``Disk_Check`` and ``disk-check`` compare equal."""
    return re.sub(r"[\s_.:-]+", "-", s.strip().lower())


def close_names(name: str, known: Iterable[str], limit: int = 3, cutoff: float = 60.0) -> list[str]:
    """The ``known`` names closest to ``name``, best first, at most ``limit``.

    Scoring is rapidfuzz ``WRatio`` (0–100) on a case-folded form where runs of
    ``space _ . : -`` count as one separator, so ``disk_chek`` suggests
    ``disk-check``; names scoring below ``cutoff`` are dropped (60 is the value
    ``engine.catalog.close_names`` uses). Ties keep the order of ``known``;
    duplicates are returned once. An empty ``name`` or ``limit <= 0`` gives ``[]``.
    """
    if limit <= 0 or not name.strip():
        return []
    names = list(dict.fromkeys(known))
    if not names:
        return []
    hits = process.extract(_canon(name), [_canon(n) for n in names], scorer=fuzz.WRatio, limit=limit, score_cutoff=cutoff)
    # process.extract on a list returns (choice, score, index); stable on ties.
    hits = sorted(hits, key=lambda h: (-h[1], h[2]))
    return [names[h[2]] for h in hits]
