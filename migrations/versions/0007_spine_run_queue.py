"""the durable run queue: who admitted a run, attempts, spend, cross-process control, ownership

Revision ID: 0007_spine_run_queue
Revises: 0006_graphs_step_cache
Create Date: 2026-12-06

``runs`` becomes the queue (issue 15): a run is admitted ``queued`` together with
the message that asked for it (``message_id``) in one transaction, and a worker
takes it from there.

* ``attempts``: how many times a worker started executing it (a poison run is failed
  after ``bot.queue.MAX_ATTEMPTS``).
* ``spent_usd``: the run's recorded LLM spend, checked and increased atomically
  against ``max_cost_per_workflow`` (kept across a resume).
* ``control``: a pending request from any process (``cancel``) for the worker
  that owns the run.
* ``worker`` / ``heartbeat_at``: who executes it and when it last said so.
* ``fired_by``: the note a schedule firing puts above the result.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_spine_run_queue"
down_revision = "0006_graphs_step_cache"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as b:
        b.add_column(sa.Column("message_id", sa.BigInteger, nullable=True))
        b.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        b.add_column(sa.Column("spent_usd", sa.Float, nullable=False, server_default="0"))
        b.add_column(sa.Column("control", sa.String(16), nullable=True))
        b.add_column(sa.Column("worker", sa.String(255), nullable=True))
        b.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("fired_by", sa.Text, nullable=True))
    op.create_index("ix_runs_thread_status", "runs", ["thread_id", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_thread_status", "runs")
    with op.batch_alter_table("runs") as b:
        for c in ("fired_by", "heartbeat_at", "worker", "control", "spent_usd", "attempts", "message_id"):
            b.drop_column(c)
