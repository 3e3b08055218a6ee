"""Example-embedding cache: reuse across restarts, partial re-embedding, corrupt
files, fitted-head cache."""

from __future__ import annotations

import numpy as np

from bot.routing import EmbeddingCache, EmbeddingConfig, Route, Router, RouterConfig
from bot.routing.cache import text_hash

from .conftest import BagOfWordsEncoder

ROUTES = (
    Route("disk", "x", examples=("how full is the disk", "check disk space")),
    Route("deploy", "y", examples=("ship the api", "release the build")),
)


def test_second_start_reads_every_example_from_disk(tmp_path):
    first = BagOfWordsEncoder()
    s1 = Router(ROUTES, encoder=first, cache_dir=tmp_path).prepare_sync()
    assert (s1.cache_hits, s1.cache_misses, s1.head_cached) == (0, 6, False)  # 4 examples + 2 names
    assert len(first.example_calls) == 1 and len(first.example_calls[0]) == 6  # one batch

    second = BagOfWordsEncoder()  # a "restart": new encoder object, same name
    r2 = Router(ROUTES, encoder=second, cache_dir=tmp_path)
    s2 = r2.prepare_sync()
    assert (s2.cache_hits, s2.cache_misses, s2.head_cached) == (6, 0, True)
    assert second.example_calls == []  # nothing re-embedded
    assert r2.route_sync("is the disk full").route == "disk"


def test_cache_is_keyed_by_model_name(tmp_path):
    Router(ROUTES, encoder=BagOfWordsEncoder(name="model-a"), cache_dir=tmp_path).prepare_sync()
    other = BagOfWordsEncoder(name="model-b")
    assert Router(ROUTES, encoder=other, cache_dir=tmp_path).prepare_sync().cache_misses == 6
    cache = EmbeddingCache(tmp_path)
    assert cache.model_dir("model-a") != cache.model_dir("model-b")
    assert (cache.model_dir("model-a") / "vectors" / text_hash("check disk space")[:2] / f"{text_hash('check disk space')}.npy").is_file()


def test_changed_examples_embed_only_the_new_text(tmp_path):
    Router(ROUTES, encoder=BagOfWordsEncoder(), cache_dir=tmp_path).prepare_sync()
    enc = BagOfWordsEncoder()
    changed = (ROUTES[0], Route("deploy", "y", examples=("ship the api", "roll out the frontend")))
    stats = Router(changed, encoder=enc, cache_dir=tmp_path).prepare_sync()
    assert enc.example_calls == [["roll out the frontend"]]
    assert stats.head_cached is False  # different examples → the head is refitted


def test_corrupt_or_wrong_shape_file_is_recomputed(tmp_path):
    enc = BagOfWordsEncoder()
    cache = EmbeddingCache(tmp_path)
    vecs, st = cache.embed(enc, ["a b", "c d"])
    assert (st.hits, st.misses) == (0, 2)
    path = cache.model_dir(enc.name) / "vectors" / text_hash("a b")[:2] / f"{text_hash('a b')}.npy"
    path.write_bytes(b"garbage")
    np.save(cache.model_dir(enc.name) / "vectors" / text_hash("c d")[:2] / f"{text_hash('c d')}.npy", np.zeros(3, np.float32))
    again, st2 = cache.embed(enc, ["a b", "c d"])
    assert (st2.hits, st2.misses) == (0, 2)
    np.testing.assert_allclose(again, vecs)
    _, st3 = cache.embed(enc, ["a b", "c d", "a b"])
    assert (st3.hits, st3.misses) == (3, 0)


def test_duplicate_texts_are_embedded_once(tmp_path):
    enc = BagOfWordsEncoder()
    vecs, st = EmbeddingCache(tmp_path).embed(enc, ["same", "same", "other"])
    assert enc.example_calls == [["same", "other"]] and st.misses == 3
    np.testing.assert_array_equal(vecs[0], vecs[1])


def test_no_cache_dir_keeps_nothing_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    enc = BagOfWordsEncoder()
    Router(ROUTES, encoder=enc).prepare_sync()
    Router(ROUTES, encoder=enc).prepare_sync()
    assert len(enc.example_calls) == 2 and list(tmp_path.iterdir()) == []


def test_prepare_is_idempotent_and_cached_head_gives_same_scores(tmp_path):
    cfg = RouterConfig(embedding=EmbeddingConfig(head="linear"))
    r1 = Router(ROUTES, encoder=BagOfWordsEncoder(), cache_dir=tmp_path, config=cfg)
    assert r1.prepare_sync() is r1.prepare_sync()
    r2 = Router(ROUTES, encoder=BagOfWordsEncoder(), cache_dir=tmp_path, config=cfg)
    assert r2.prepare_sync().head_cached
    q = BagOfWordsEncoder().embed_queries(["release the api"])[0]
    np.testing.assert_allclose(r1.embedding.scores(q), r2.embedding.scores(q), atol=1e-6)
