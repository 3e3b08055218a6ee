"""schedules: chat-created recurring and one-off workflow firings (issue 9)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

One row per schedule; the table is the source of truth and the in-memory
The scheduler's timer jobs are rebuilt from it at start (``bot.scheduling.service``).
All timestamps are UTC instants. ``kind``/``expression``/``start``/``timezone``
are the fields of ``bot.scheduling.ScheduleSpec`` (enough to rebuild it).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("thread_id", Id, sa.ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("phrase", sa.Text, nullable=False),
        sa.Column("workflow", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("expression", sa.Text, nullable=False),
        sa.Column("start", sa.String(64), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_fired_at", TS, nullable=True),
        sa.Column("next_fire_at", TS, nullable=True),
        sa.Column("overlap", sa.String(16), nullable=False),
        sa.Column("misfire_grace_s", sa.Integer, nullable=False),
    )
    op.create_index("ix_schedules_thread_id", "schedules", ["thread_id"])
    op.create_index("ix_schedules_status", "schedules", ["status"])


def downgrade() -> None:
    op.drop_index("ix_schedules_status", "schedules")
    op.drop_index("ix_schedules_thread_id", "schedules")
    op.drop_table("schedules")
