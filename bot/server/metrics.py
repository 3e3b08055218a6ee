"""Prometheus metrics (``prometheus-client``), served by ``baton serve`` at ``/metrics``.

Names follow the Prometheus conventions (https://prometheus.io/docs/practices/naming/):
a ``baton_`` prefix, ``_total`` on counters, base units in the name (``_seconds``,
``_usd``), labels for dimensions with a small, bounded set of values (workflow names
come from configuration or are the literal ``adhoc`` for workflow text typed in chat).

The collectors live in one module-level registry (:data:`REGISTRY`), so importing
this module twice in one process (tests build several apps) registers them once.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "ADMISSION_TO_START",
    "API_REQUESTS",
    "API_REQUEST_SECONDS",
    "CIRCUIT_STATE",
    "CONTENT_TYPE_LATEST",
    "LLM_COST",
    "LLM_TOKENS",
    "QUEUE_DEPTH",
    "REGISTRY",
    "RUNS_FINISHED",
    "RUNS_STARTED",
    "RUN_SECONDS",
    "SLACK_ACK_SECONDS",
    "STEP_RETRIES",
    "STEP_SECONDS",
    "WEBHOOK_DELIVERIES",
    "WEBHOOK_SECONDS",
    "render",
]

REGISTRY = CollectorRegistry(auto_describe=True)

_DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

RUNS_STARTED = Counter("baton_runs_started", "Runs that started executing, by workflow.", ["workflow"], registry=REGISTRY)
RUNS_FINISHED = Counter(
    "baton_runs", "Runs that finished, by workflow and final status (succeeded, failed, cancelled).", ["workflow", "status"], registry=REGISTRY
)
RUN_SECONDS = Histogram("baton_run_duration_seconds", "Run wall time from start to finish.", ["workflow", "status"], buckets=_DURATIONS, registry=REGISTRY)
STEP_SECONDS = Histogram("baton_step_duration_seconds", "Step wall time (last attempt), by step kind and status.", ["kind", "status"], buckets=_DURATIONS, registry=REGISTRY)
STEP_RETRIES = Counter("baton_step_retries", "Step attempts beyond the first, by step kind.", ["kind"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("baton_run_queue_depth", "Runs admitted but not started yet (this process).", registry=REGISTRY)
ADMISSION_TO_START = Histogram(
    "baton_admission_to_start_seconds", "Time from a run's admission (queued row) to its start.", buckets=_DURATIONS, registry=REGISTRY
)
LLM_TOKENS = Counter("baton_llm_tokens", "LLM tokens used by workflow steps, by provider, model and direction (in/out).", ["provider", "model", "direction"], registry=REGISTRY)
LLM_COST = Counter("baton_llm_cost_usd", "USD spent on LLM steps, by provider and model.", ["provider", "model"], registry=REGISTRY)
CIRCUIT_STATE = Gauge("baton_provider_circuit_open", "1 while a provider's circuit breaker is open, else 0.", ["provider"], registry=REGISTRY)
SLACK_ACK_SECONDS = Histogram("baton_slack_ack_seconds", "Time to answer a Slack Events API request.", buckets=_DURATIONS, registry=REGISTRY)
WEBHOOK_DELIVERIES = Counter("baton_webhook_deliveries", "Webhook delivery attempts, by webhook and outcome (delivered, failed, error, gave_up).", ["webhook", "outcome"], registry=REGISTRY)
WEBHOOK_SECONDS = Histogram("baton_webhook_delivery_latency_seconds", "Time from an event's commit to its successful delivery.", ["webhook"], buckets=_DURATIONS, registry=REGISTRY)
API_REQUESTS = Counter("baton_api_requests", "REST API requests, by method, route template and status code.", ["method", "route", "code"], registry=REGISTRY)
API_REQUEST_SECONDS = Histogram("baton_api_request_duration_seconds", "REST API request handling time, by method and route template.", ["method", "route"], buckets=_DURATIONS, registry=REGISTRY)


def render() -> bytes:
    """The exposition text of every Baton metric (``text/plain; version=0.0.4``)."""
    return generate_latest(REGISTRY)
