"""A BERT encoder forward pass in NumPy (float32), for all-MiniLM-L6-v2's weights.

Why: on this project's 2-core CPU, PyTorch's eager forward for one short query of
all-MiniLM-L6-v2 costs ~16–20 ms (per-op overhead dominates at 10–30 tokens); the
same arithmetic as a handful of NumPy GEMMs costs about half of that, and importing
NumPy instead of torch + transformers cuts start-up from ~7 s to well under 1 s.
The maths is the Hugging Face ``BertModel`` forward (post-LayerNorm, exact-erf GELU,
absolute positions, token type 0, no padding since one text is run at a time);
``tests/routing/test_encoders.py`` checks it against sentence-transformers
(cosine ≥ 0.9999).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def load_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file into NumPy arrays with the ``safetensors`` library
    (``safetensors.numpy.load_file``; no torch involved).

    Raises ``ImportError`` when ``safetensors`` is missing (it is in the ``minilm``
    extra) and ``ValueError`` for a file that is not valid safetensors.
    """
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read safetensors weights: {e}") from e
    except Exception as e:  # safetensors raises its own SafetensorError for corrupt headers
        raise ValueError(f"{path}: cannot read safetensors weights: {type(e).__name__}: {e}") from e


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), vectorised float32."""
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return np.copysign(y, x)


class NumpyBert:
    """BERT encoder (no pooler) from a Hugging Face ``BertModel`` state dict.

    Args:
        weights: tensor name → array, as :func:`load_safetensors` returns (names with
            or without a ``bert.`` prefix).
        config: the model's ``config.json`` (``hidden_size``, ``num_attention_heads``,
            ``num_hidden_layers``, ``layer_norm_eps``, ``max_position_embeddings``).

    Raises ``KeyError`` if a tensor is missing, ``ValueError`` for a non-BERT config
    (``hidden_act`` other than ``gelu``).
    """

    def __init__(self, weights: Mapping[str, np.ndarray], config: Mapping[str, object]) -> None:
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {config.get('hidden_act')!r}")
        p = "" if "embeddings.word_embeddings.weight" in weights else "bert."

        def g(k: str) -> np.ndarray:
            return np.ascontiguousarray(weights[p + k], dtype=np.float32)

        self.hidden = int(config["hidden_size"])  # type: ignore[arg-type]
        self.heads = int(config["num_attention_heads"])  # type: ignore[arg-type]
        self.n_layers = int(config["num_hidden_layers"])  # type: ignore[arg-type]
        self.eps = float(config.get("layer_norm_eps", 1e-12))  # type: ignore[arg-type]
        self.max_len = int(config.get("max_position_embeddings", 512))  # type: ignore[arg-type]
        dh = self.hidden // self.heads
        scale = np.float32(1.0 / np.sqrt(dh))
        self._word = g("embeddings.word_embeddings.weight")
        self._pos_type = g("embeddings.position_embeddings.weight") + g("embeddings.token_type_embeddings.weight")[0]
        self._eln = (g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"))
        self._layers = []
        for i in range(self.n_layers):
            q = f"encoder.layer.{i}."
            # Fold 1/sqrt(d_head) into the query projection; fuse Q, K, V into one GEMM.
            wqkv = np.concatenate(
                [g(q + "attention.self.query.weight") * scale, g(q + "attention.self.key.weight"), g(q + "attention.self.value.weight")], 0
            ).T.copy()
            bqkv = np.concatenate([g(q + "attention.self.query.bias") * scale, g(q + "attention.self.key.bias"), g(q + "attention.self.value.bias")])
            self._layers.append(
                (
                    wqkv,
                    bqkv,
                    g(q + "attention.output.dense.weight").T.copy(),
                    g(q + "attention.output.dense.bias"),
                    g(q + "attention.output.LayerNorm.weight"),
                    g(q + "attention.output.LayerNorm.bias"),
                    g(q + "intermediate.dense.weight").T.copy(),
                    g(q + "intermediate.dense.bias"),
                    g(q + "output.dense.weight").T.copy(),
                    g(q + "output.dense.bias"),
                    g(q + "output.LayerNorm.weight"),
                    g(q + "output.LayerNorm.bias"),
                )
            )

    def _ln(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        x = x - x.mean(-1, keepdims=True)
        var = (x * x).mean(-1, keepdims=True)
        return x * (1.0 / np.sqrt(var + np.float32(self.eps))) * w + b

    def mean_pooled(self, ids: Sequence[int], layers: Sequence[int]) -> np.ndarray:
        """Mean over tokens of the hidden states after each of ``layers`` (1-based).

        ``ids``: token ids including ``[CLS]``/``[SEP]`` (length ≤ ``max_len``).
        Returns ``(len(layers), hidden)`` float32, unnormalised. Raises ``ValueError``
        for an empty or too-long id list or a layer outside ``1..n_layers``.
        """
        t = len(ids)
        if t == 0 or t > self.max_len:
            raise ValueError(f"need 1..{self.max_len} token ids, got {t}")
        want = set(layers)
        if not want or min(want) < 1 or max(want) > self.n_layers:
            raise ValueError(f"layers must be within 1..{self.n_layers}, got {list(layers)}")
        h, nh = self.hidden, self.heads
        dh = h // nh
        x = self._ln(self._word[np.asarray(ids)] + self._pos_type[:t], *self._eln)
        pooled: dict[int, np.ndarray] = {}
        for i, (wqkv, bqkv, wo, bo, l1w, l1b, wi, bi, wf, bf, l2w, l2b) in enumerate(self._layers, start=1):
            qkv = x @ wqkv
            qkv += bqkv
            qkv = qkv.reshape(t, 3, nh, dh).transpose(1, 2, 0, 3).copy()  # (3, heads, t, dh)
            s = qkv[0] @ qkv[1].transpose(0, 2, 1)
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ qkv[2]).transpose(1, 0, 2).reshape(t, h)
            a = ctx @ wo
            a += bo
            a += x
            x = self._ln(a, l1w, l1b)
            m = x @ wi
            m += bi
            m = m * (0.5 + 0.5 * _erf(m * np.float32(0.7071067811865476)))
            f = m @ wf
            f += bf
            f += x
            x = self._ln(f, l2w, l2b)
            if i in want:
                pooled[i] = x.mean(0)
            if i >= max(want):
                break
        return np.stack([pooled[i] for i in layers]).astype(np.float32, copy=False)
