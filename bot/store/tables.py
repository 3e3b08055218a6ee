"""The database schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create it.

Tables:
    threads           one row per (platform, channel, thread): the session key.
    messages          every message of a thread, in arrival order; token count cached.
    runs              one row per workflow run, with its compiled graph (JSON); also the run
                      queue: admitted ``queued``, taken by a worker (see bot/queue).
    step_runs         one row per (run, node): the checkpoint of each step.
    summaries         stored conversation summaries (level, message span, text, tokens).
    processed_events  platform event ids already handled (redelivery dedupe).
    schedules         chat-created schedules (migration 0003; used by bot.scheduling).
    approval_decisions  /approve and /reject recorded for the process whose run waits (migration 0009_scaleperf_approvals).
    step_cache        results of ``cache: {ttl}`` steps by cache key, until expires_at (migration 0006_graphs_step_cache).
    messages_fts      (SQLite only, created by migration 0002) FTS5 index over messages.text;
                      PostgreSQL uses a GIN index on to_tsvector('english', text).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
_Id = BigInteger().with_variant(Integer(), "sqlite")

threads = Table(
    "threads",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("platform", String(32), nullable=False),
    Column("channel", String(255), nullable=False),
    Column("thread", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("platform", "channel", "thread", name="uq_threads_key"),
    Index("ix_threads_updated_at", "updated_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("thread_id", _Id, ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("author", String(255), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("event_id", String(255), nullable=True),
    Column("tokens", Integer, nullable=True),
    Column("encoding", String(64), nullable=True),
    # NULL: conversation; "command": a command (/history, /recall …) or the bot's answer to one,
    # kept for /history but out of /recall and the LLM context (migration 0005_faults_edges_message_kind)
    Column("kind", String(16), nullable=True),
    Index("ix_messages_thread_id_id", "thread_id", "id"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("thread_id", _Id, ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
    Column("source", Text, nullable=False),
    Column("name", String(255), nullable=True),
    Column("graph", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("requested_by", String(255), nullable=False),
    Column("rerun_of", _Id, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # the run queue (migration 0007_spine_run_queue, see bot/queue)
    Column("message_id", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("spent_usd", Float, nullable=False, server_default="0"),
    Column("control", String(16), nullable=True),
    Column("worker", String(255), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("fired_by", Text, nullable=True),
    Index("ix_runs_status", "status"),
    Index("ix_runs_thread_id", "thread_id", "id"),
    Index("ix_runs_thread_status", "thread_id", "status", "id"),
    Index("ix_runs_finished_at", "finished_at"),
)

step_runs = Table(
    "step_runs",
    metadata,
    Column("run_id", _Id, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("node_id", String(255), primary_key=True),
    Column("label", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("output", Text, nullable=False, default=""),
    Column("error", Text, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("tokens_in", Integer, nullable=False, default=0),
    Column("tokens_out", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("reused", Boolean, nullable=False, default=False),
    Column("cached", Boolean, nullable=False, default=False, server_default=false()),
)

approval_decisions = Table(
    "approval_decisions",
    metadata,
    Column("run_id", _Id, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("node_id", String(255), primary_key=True),
    Column("approve", Boolean, nullable=False),
    Column("decided_by", String(255), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)

step_cache = Table(
    "step_cache",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("output", Text, nullable=False),
    Column("tokens_in", Integer, nullable=False, server_default="0"),
    Column("tokens_out", Integer, nullable=False, server_default="0"),
    Column("cost_usd", Float, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_step_cache_expires_at", "expires_at"),
)

summaries = Table(
    "summaries",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("thread_id", _Id, ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
    Column("level", Integer, nullable=False),
    Column("first_id", BigInteger, nullable=False),
    Column("last_id", BigInteger, nullable=False),
    Column("text", Text, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("message_count", Integer, nullable=False),
    Column("encoding", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("thread_id", "level", "first_id", "last_id", name="uq_summaries_span"),
)

processed_events = Table(
    "processed_events",
    metadata,
    Column("platform", String(32), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("meta", JSON, nullable=True),
)

# -- operating Baton as a service (issue 18; migration 0004_api_server) --------------

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False),  # sha256 hex of the token; the token itself is never stored
    Column("scopes", String(255), nullable=False),  # comma-separated, e.g. "runs:read,runs:write"
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
    Index("ix_api_tokens_name", "name"),
)

webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),  # the Standard Webhooks ``webhook-id``: stable across retries
    Column("webhook", String(64), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("payload", Text, nullable=False),  # the JSON body, exactly as signed
    Column("status", String(16), nullable=False),  # pending | delivered | failed (gave up)
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("event_id", "webhook", name="uq_webhook_outbox_event"),
    Index("ix_webhook_outbox_due", "status", "next_attempt_at"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("outbox_id", _Id, ForeignKey("webhook_outbox.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("webhook", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("outcome", String(16), nullable=False),  # delivered | failed | error
    Column("error", Text, nullable=True),
    Column("duration_ms", Float, nullable=False),
    Index("ix_webhook_deliveries_webhook_id", "webhook", "id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(255), nullable=False),  # platform user id, or api:TOKEN_NAME
    Column("platform", String(32), nullable=False),
    Column("channel", String(255), nullable=True),
    Column("thread", String(255), nullable=True),
    Column("action", String(32), nullable=False),  # run.start, run.cancel, run.rerun, run.approve, …
    Column("target", String(255), nullable=True),  # e.g. "run:12", "schedule:3", "token:ci"
    Column("outcome", String(16), nullable=False),  # ok | denied | failed
    Column("detail", Text, nullable=True),
    Index("ix_audit_log_at", "at"),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("thread_id", _Id, ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("phrase", Text, nullable=False),
    Column("workflow", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("expression", Text, nullable=False),
    Column("start", String(64), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_fired_at", DateTime(timezone=True), nullable=True),
    Column("next_fire_at", DateTime(timezone=True), nullable=True),
    Column("overlap", String(16), nullable=False),
    Column("misfire_grace_s", Integer, nullable=False),
    # the author's roles when the schedule was made, a JSON array (migration 0008_spinefeat_schedule_roles)
    Column("created_roles", Text, nullable=True),
    Index("ix_schedules_thread_id", "thread_id"),
    Index("ix_schedules_status", "status"),
)
"""One row per schedule (migration 0003). ``status``: ``active`` | ``paused`` |
``finished`` (a one-off that fired, or a rule with no firing left); ``next_fire_at``
is NULL unless active; ``last_fired_at`` is the *scheduled* instant of the latest
firing that ran; ``overlap``: ``skip`` | ``queue`` | ``allow``; ``created_roles``: the
author's roles at creation (JSON array), with which a firing re-checks ``[permissions]``."""
