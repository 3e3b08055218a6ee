"""On-disk cache of example embeddings, keyed by (encoder name, text hash).

Layout under ``root``::

    <slug(encoder.name)>-<sha256(encoder.name)[:8]>/
        vectors/<h[:2]>/<h>.npy      h = sha256(text, UTF-8), one float32 vector each
        heads/<key>.npz              fitted classifier heads (see bot.routing.embedding)

One file per text means editing one route's examples re-embeds only those texts.
Writes go to a temporary file first and are renamed into place, so a crash or a
concurrent writer never leaves a half-written vector; an unreadable or wrong-shaped
file counts as a miss and is rewritten.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

try:
    import numpy as np
except ImportError:  # pragma: no cover - NumPy comes with every encoder package; commands/rules work without it
    np = None  # type: ignore[assignment]

from bot.routing.encoders import Encoder

log = logging.getLogger("baton.routing.cache")


def text_hash(text: str) -> str:
    """SHA-256 hex digest of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Outcome of one :meth:`EmbeddingCache.embed` call: vectors read vs computed."""

    hits: int
    misses: int


class EmbeddingCache:
    """Example-embedding cache in directory ``root`` (created on first write).

    Raises ``OSError`` only if ``root`` exists and is not a directory; failures to
    write a vector are logged and otherwise ignored (the cache is an optimisation).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"embedding cache path {self.root} is not a directory")

    def model_dir(self, model: str) -> Path:
        """The directory holding everything cached for encoder name ``model``."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model)[:80]
        return self.root / f"{slug}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"

    def _path(self, model: str, h: str) -> Path:
        return self.model_dir(model) / "vectors" / h[:2] / f"{h}.npy"

    def get(self, model: str, text: str, dim: int) -> np.ndarray | None:
        """The cached ``(dim,)`` float32 vector of ``text`` under ``model``, or ``None``."""
        p = self._path(model, text_hash(text))
        try:
            v = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if v.shape != (dim,) or v.dtype != np.float32 or not np.isfinite(v).all():
            return None
        return v

    def put(self, model: str, text: str, vector: np.ndarray) -> None:
        """Store ``vector`` (1-D float32) for ``text`` under ``model`` atomically."""
        p = self._path(model, text_hash(text))
        save_atomic(p, np.ascontiguousarray(vector, dtype=np.float32))

    def embed(self, encoder: Encoder, texts: Sequence[str]) -> tuple[np.ndarray, CacheStats]:
        """Example embeddings of ``texts`` via the cache: ``(len(texts), encoder.dim)``.

        Misses are embedded in one ``encoder.embed_examples`` call and written back.
        Duplicate texts are embedded once.
        """
        out = np.empty((len(texts), encoder.dim), np.float32)
        missing: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            if t in missing:
                missing[t].append(i)
                continue
            v = self.get(encoder.name, t, encoder.dim)
            if v is None:
                missing[t] = [i]
            else:
                out[i] = v
        if missing:
            todo = list(missing)
            vecs = encoder.embed_examples(todo)
            for t, v in zip(todo, vecs):
                out[missing[t]] = v
                try:
                    self.put(encoder.name, t, v)
                except OSError as e:  # pragma: no cover - disk full / read-only
                    log.warning("could not cache an embedding under %s: %s", self.root, e)
        n_miss = sum(len(v) for v in missing.values())
        return out, CacheStats(hits=len(texts) - n_miss, misses=n_miss)


def save_atomic(path: Path, array: np.ndarray | dict[str, np.ndarray]) -> None:
    """Write ``array`` (``.npy``) or a dict of arrays (``.npz``) to ``path`` via rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(array, dict):
                np.savez(f, **array)
            else:
                np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
