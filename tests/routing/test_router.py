"""Router layers and their order, with a deterministic bag-of-words encoder
(no model needed): commands, rules, embeddings (thresholds, ambiguity, negative
routes), the LLM hook, and the async path."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bot.routing import (
    Candidate,
    CommandLayer,
    EmbeddingConfig,
    Layer,
    LLMLayer,
    Outcome,
    Route,
    Router,
    RouterConfig,
    RuleLayer,
    load_routes,
)

from .conftest import EXAMPLE_YAML, BagOfWordsEncoder

ROUTES = (
    Route("deploy", "deploy-service", examples=("ship the api to staging", "deploy the web app", "release the new build"),
          patterns=(__import__("re").compile(r"^deploy (?P<service>[\w-]+) to (?P<env>\w+)$", 2),)),
    Route("disk-check", "disk-check", examples=("how full is the disk", "check disk space", "disk usage please"), keywords=("disk space",)),
    Route("restart", "restart-service", examples=("restart the api service", "bounce the web server"), keywords=("restart", "bounce")),
    Route("reboot", "reboot-host", examples=("reboot the host", "power cycle the machine"), keywords=("reboot", "restart")),
    Route("smalltalk", negative=True, examples=("hello there", "tell me a joke", "good morning friend")),
)


def router(encoder=None, **emb) -> Router:
    cfg = RouterConfig(embedding=EmbeddingConfig(**emb)) if emb else RouterConfig()
    return Router(ROUTES, encoder=encoder, config=cfg, extra_names=("help", "workflows"))


# -- commands -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, route, command, rest",
    [
        ("/deploy api now", "deploy", "deploy", "api now"),
        ("/DISK_CHECK", "disk-check", "disk_check", ""),
        ("/run disk-check --verbose", "disk-check", "run", "--verbose"),
        ("run: disk-check", "disk-check", "run", "disk-check"),
        ("RUN:   restart", "restart", "run", "restart"),
        ("run: disk-check AND system-report THEN echo done", None, "run", "disk-check AND system-report THEN echo done"),
        ("schedule disk-check every day at 9", "disk-check", "schedule", "disk-check every day at 9"),
        ("schedule every monday at 8 run: deploy", None, "schedule", "every monday at 8 run: deploy"),
        ("/help", None, "help", ""),
    ],
)
def test_explicit_commands(text, route, command, rest):
    d = router().route_sync(text)
    assert d.layer is Layer.COMMAND and d.route == route and d.score == 1.0
    assert d.args["command"] == command and d.args["text"] == rest
    assert d.suggestions == ()


def test_unknown_workflow_gets_did_you_mean():
    d = router().route_sync("/run dsk-check")
    assert d.layer is Layer.COMMAND and d.route is None
    assert d.suggestions[0] == "disk-check" and "did you mean disk-check" in d.reason
    d = router().route_sync("run: restrat")
    assert d.route is None and d.suggestions[0] == "restart"
    assert router().route_sync("/workflows").suggestions == ()  # a name the bot knows


def test_not_commands():
    layer = CommandLayer(ROUTES)
    for text in ("deploy api to prod", "a / b", "/ leading slash and space", "scheduled maintenance is done", "runner: x"):
        assert layer.decide(text) is None, text


def test_commands_layer_can_be_disabled():
    r = Router(ROUTES, config=RouterConfig(commands=False))
    assert r.route_sync("/deploy x").layer is not Layer.COMMAND
    assert Layer.COMMAND not in r.layers


# -- rules --------------------------------------------------------------------


def test_pattern_named_groups_become_args():
    d = router().route_sync("Deploy billing-api to production")
    assert d.layer is Layer.RULES and d.route == "deploy" and d.score == 1.0
    assert dict(d.args) == {"service": "billing-api", "env": "production"}
    assert "pattern" in d.reason


def test_keyword_matches_an_intent_not_a_word_anywhere():
    # whole phrase (greeting, polite words and punctuation aside)
    d = router().route_sync("hey baton, DISK  SPACE please?")
    assert d.layer is Layer.RULES and d.route == "disk-check" and d.score == 1.0
    # verb-object request
    d = router().route_sync("Can you check the DISK SPACE on db1")
    assert d.layer is Layer.RULES and d.route == "disk-check" and d.score == 0.9
    # a request led by the keyword itself; "restarted" is not the keyword "restart"
    d = router().route_sync("please bounce it")
    assert d.route == "restart" and d.score == 0.9
    layer = RuleLayer(ROUTES)
    assert layer.decide("it restarted itself") is None
    # mentions are not requests: statements and questions about the topic never match a rule
    for text in ("the disk space alert fired again", "How much DISK SPACE is left?", "we talked about disk space at lunch",
                 "fyi I will bounce the web server tonight"):
        assert layer.decide(text) is None or router().route_sync(text).layer is not Layer.RULES, text
        assert router().route_sync(text).layer is not Layer.RULES, text


def test_keyword_tie_is_ambiguous():
    d = router().route_sync("restart it")  # 'restart' is a keyword of restart and reboot
    assert d.layer is Layer.RULES and d.route is None and d.ambiguous
    assert [c.route for c in d.candidates] == ["restart", "reboot"]


def test_whole_phrase_beats_verb_object():
    routes = (Route("a", "x", keywords=("disk space",)), Route("b", "y", keywords=("check disk space",)))
    d = RuleLayer(routes).decide("check disk space")
    assert d.route == "b" and d.score == 1.0 and d.runner_up == Candidate("a", 0.9)


def test_rules_only_router_falls_back_to_chat():
    r = router()  # no encoder: commands + rules only
    assert r.embedding is None and r.layers == [Layer.COMMAND, Layer.RULES, Layer.CHAT]
    d = r.route_sync("what's for lunch?")
    assert d.is_chat and d.route is None and d.score == 0.0
    assert r.route_sync("   ").reason == "empty message"


# -- embeddings ---------------------------------------------------------------


def test_embedding_layer_routes_by_examples(bow):
    d = router(bow).route_sync("how full is the disk on db1")
    assert d.layer is Layer.EMBEDDING and d.route == "disk-check"
    assert 0.15 <= d.score <= 1.0 and d.runner_up is not None and d.runner_up.score < d.score
    assert "threshold" in d.reason


def test_rules_win_over_embeddings(bow):
    d = router(bow).route_sync("deploy api to staging")
    assert d.layer is Layer.RULES and d.route == "deploy"


def test_below_threshold_nothing_fires(bow):
    text = "how full is the disk on db1"
    hi = router(bow, threshold=0.999).route_sync(text)
    assert hi.is_chat and hi.route is None and "< threshold" in hi.reason
    assert hi.runner_up is not None and hi.runner_up.route == "disk-check"  # the closest route is reported
    assert router(bow, threshold=0.01).route_sync(text).route == "disk-check"


def test_per_route_threshold_overrides_default(bow):
    routes = tuple(Route(r.name, r.target, r.examples, negative=r.negative, threshold=0.999 if r.name == "disk-check" else None)
                   for r in ROUTES)
    d = Router(routes, encoder=bow).route_sync("how full is the disk on db1")
    assert d.is_chat and "threshold 0.999" in d.reason


def test_close_scores_are_ambiguous(bow):
    routes = (
        Route("restart-api", "x", examples=("restart the api service",)),
        Route("restart-web", "y", examples=("restart the web service",)),
        Route("disk", "z", examples=("how full is the disk",)),
    )
    cfg = RouterConfig(rules=False, embedding=EmbeddingConfig(head="centroid", threshold=0.3, margin=0.1, name_as_example=False))
    d = Router(routes, encoder=bow, config=cfg).route_sync("restart the service")
    assert d.layer is Layer.EMBEDDING and d.ambiguous and d.route is None
    assert {c.route for c in d.candidates} == {"restart-api", "restart-web"}
    assert d.candidates[0].score >= d.candidates[1].score and "ambiguous" in d.reason
    # margin 0 turns ambiguity off: the better one fires
    cfg0 = RouterConfig(rules=False, embedding=EmbeddingConfig(head="centroid", threshold=0.3, margin=0.0, name_as_example=False))
    assert Router(routes, encoder=bow, config=cfg0).route_sync("restart the service").matched
    # clearly separated scores are not ambiguous
    assert Router(routes, encoder=bow, config=cfg).route_sync("restart the api service").route == "restart-api"


def test_both_just_below_threshold_is_ambiguous_but_far_below_is_chat(bow):
    routes = (Route("restart-api", "x", examples=("restart the api service",)), Route("restart-web", "y", examples=("restart the web service",)))

    def dec(threshold, band):
        cfg = RouterConfig(embedding=EmbeddingConfig(head="centroid", threshold=threshold, margin=0.2, band=band, name_as_example=False))
        return Router(routes, encoder=bow, config=cfg).route_sync("restart the service")

    s = dec(0.0, 0.0).candidates[0].score
    assert dec(s + 0.01, 0.05).ambiguous  # top two within the band below the threshold
    far = dec(s + 0.2, 0.05)
    assert far.is_chat and not far.ambiguous


def test_negative_route_keeps_chitchat_out(bow):
    r = router(bow, head="centroid", threshold=-1.0)  # even with no threshold at all
    d = r.route_sync("hello there friend")
    assert d.is_chat and "negative route 'smalltalk'" in d.reason


def test_min_similarity_floor(bow):
    r = router(bow, threshold=0.0, min_similarity=0.99)
    d = r.route_sync("how full is the disk on db1")
    assert d.is_chat and "nearest example has cosine" in d.reason


def test_route_names_count_as_examples(bow):
    routes = (Route("calendar_update", "x", examples=("move my meeting",)), Route("weather", "y", examples=("is it raining",)))
    cfg = RouterConfig(embedding=EmbeddingConfig(head="centroid", threshold=0.3, name_as_example=True))
    assert Router(routes, encoder=bow, config=cfg).route_sync("calendar update please").route == "calendar_update"
    cfg_off = RouterConfig(embedding=EmbeddingConfig(head="centroid", threshold=0.3, name_as_example=False))
    assert Router(routes, encoder=bow, config=cfg_off).route_sync("calendar update please").route is None


def test_linear_scores_are_probabilities(bow):
    r = router(bow)
    layer = r.embedding
    layer.prepare()
    s = layer.scores(bow.embed_queries(["check disk space now"])[0])
    assert s.shape == (5,) and abs(float(s.sum()) - 1.0) < 1e-4 and (s >= 0).all()


def test_embedding_layer_needs_a_positive_route(bow):
    r = Router((Route("n", negative=True, examples=("hi",)),), encoder=bow)
    with pytest.raises(ValueError, match="positive route"):
        r.prepare_sync()


# -- LLM hook and async path --------------------------------------------------


class FakeLLM:
    def __init__(self, answer=("restart", 0.9), delay=0.0, exc=None):
        self.answer, self.delay, self.exc = answer, delay, exc
        self.calls: list[tuple[str, list[str]]] = []

    async def __call__(self, text, names):
        self.calls.append((text, list(names)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.exc:
            raise self.exc
        return self.answer


async def test_llm_decides_when_earlier_layers_do_not():
    llm = FakeLLM(("Reboot", 0.8))
    r = Router(ROUTES, classify=llm)
    d = await r.route("do something about the wedged box")
    assert d.layer is Layer.LLM and d.route == "reboot" and d.score == 0.8
    assert llm.calls == [("do something about the wedged box", ["deploy", "disk-check", "restart", "reboot"])]  # no negative route
    assert d.outcome is Outcome.ASK and "changes things" in d.why  # reboot declares no effect: asking is the default
    # a statement never runs: even a confident classifier only makes the bot ask, a weak one is chat
    sure = await Router(ROUTES, classify=FakeLLM(("reboot", 0.95))).route("the box is wedged again")
    assert sure.outcome is Outcome.ASK and "statement" in sure.why
    weak = await Router(ROUTES, classify=FakeLLM(("reboot", 0.8))).route("the box is wedged again")
    assert weak.outcome is Outcome.CHAT and weak.route is None


async def test_llm_not_called_when_rules_match():
    llm = FakeLLM()
    d = await Router(ROUTES, classify=llm).route("deploy api to prod")
    assert d.layer is Layer.RULES and llm.calls == []


@pytest.mark.parametrize(
    "llm, reason",
    [
        (FakeLLM(("restart", 0.3)), "0.30 < 0.50"),
        (FakeLLM(("nonexistent", 0.99)), "unknown route 'nonexistent'"),
        (FakeLLM((None, 0.9)), "chose no route"),
        (FakeLLM(exc=RuntimeError("provider down")), "failed: RuntimeError: provider down"),
        (FakeLLM(("restart", "high")), "unusable answer"),
        (FakeLLM(delay=5.0), "timed out"),
    ],
)
async def test_llm_failures_fall_back_to_chat(llm, reason):
    r = Router(ROUTES, classify=llm, config=RouterConfig(llm_timeout_s=0.05))
    d = await r.route("the box is wedged")
    assert d.is_chat and d.route is None and reason in d.reason


async def test_llm_breaks_an_embedding_tie(bow):
    routes = (Route("restart-api", "x", examples=("restart the api service",)), Route("restart-web", "y", examples=("restart the web service",)))
    cfg = RouterConfig(rules=False, embedding=EmbeddingConfig(head="centroid", threshold=0.3, margin=0.2, name_as_example=False))
    amb = await Router(routes, encoder=bow, config=cfg).route("restart the service")
    assert amb.ambiguous
    d = await Router(routes, encoder=bow, config=cfg, classify=FakeLLM(("restart-web", 0.9))).route("restart the service")
    assert d.layer is Layer.LLM and d.route == "restart-web"
    unsure = await Router(routes, encoder=bow, config=cfg, classify=FakeLLM(("restart-web", 0.1))).route("restart the service")
    assert unsure.ambiguous and "llm chose" in unsure.reason  # still asks the user


async def test_async_route_runs_the_encoder_off_the_event_loop(bow):
    loop_thread = threading.get_ident()
    seen = []

    class Spy(BagOfWordsEncoder):
        def embed_queries(self, texts):
            seen.append(threading.get_ident())
            return super().embed_queries(texts)

    r = router(Spy())
    await r.prepare()
    d = await r.route("how full is the disk on db1")
    assert d.route == "disk-check" and seen and all(t != loop_thread for t in seen)


async def test_encoder_runs_in_the_routers_own_thread_not_the_default_executor():
    """A decision must not queue behind unrelated ``asyncio.to_thread`` work: with the
    loop's default executor (one worker) blocked, routing still completes, and every
    encoder call happens in the same dedicated thread."""
    names = []

    class Spy(BagOfWordsEncoder):
        def embed_queries(self, texts):
            names.append(threading.current_thread().name)
            return super().embed_queries(texts)

    r = router(Spy())
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    release = threading.Event()
    blocker = asyncio.ensure_future(asyncio.to_thread(release.wait, 30))
    try:
        await r.prepare()
        ds = await asyncio.wait_for(asyncio.gather(*(r.route(f"how full is the disk on db{i}") for i in range(4))), timeout=20)
    finally:
        release.set()
        await blocker
    assert [d.route for d in ds] == ["disk-check"] * 4
    assert len(names) == 4 and len(set(names)) == 1 and names[0].startswith("baton-routing-encoder")


def test_repeated_message_is_embedded_once():
    enc = BagOfWordsEncoder()
    r = router(enc)
    r.prepare_sync()
    a, b = r.route_sync("how full is the disk on db1"), r.route_sync("how full is the disk on db1")
    assert a == b and enc.query_calls == 1
    assert r.embedding.query_cache_info() == (1, 1, 1)
    r.route_sync("how full is the disk on db2")
    assert enc.query_calls == 2
    v = r.embedding._query_vector("how full is the disk on db1")
    with pytest.raises(ValueError):
        v[0] = 1.0  # shared by every later hit: read-only

    off = BagOfWordsEncoder()
    r0 = router(off, query_cache=0)
    r0.route_sync("how full is the disk on db1")
    r0.route_sync("how full is the disk on db1")
    assert off.query_calls == 2 and r0.embedding.query_cache_info() is None


def test_llm_layer_validates_names_case_insensitively():
    layer = LLMLayer(FakeLLM(("DISK-CHECK", 0.7)), ["disk-check"])
    d = asyncio.run(layer.decide("x"))
    assert d.route == "disk-check" and d.layer is Layer.LLM


def test_example_file_routes_with_rules_only():
    r = Router(load_routes(EXAMPLE_YAML))
    assert r.route_sync("deploy web to staging").args["env"] == "staging"
    assert r.route_sync("check disk usage").route == "disk-check"
    assert r.route_sync("healthcheck please").route == "service-health"
    assert r.route_sync("/system_report").route == "system-report"
    assert r.route_sync("/smalltalk").route is None  # negative routes are never addressable


def test_duplicate_names_rejected():
    with pytest.raises(ValueError):
        Router((Route("a", "x"), Route("A", "y")))
