"""step cache for ``cache: {ttl}`` workflow steps, and step_runs.cached (issue 17)

Revision ID: 0006_graphs_step_cache
Revises: 0005_faults_edges_message_kind
Create Date: 2026-12-06

``step_cache`` holds one successful step result per cache key (SHA-256 of the
action, its resolved arguments and its inputs; see ``engine.cache``) until
``expires_at`` (UTC). ``step_runs.cached`` marks a step whose output came from it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_graphs_step_cache"
down_revision = "0005_faults_edges_message_kind"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "step_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("tokens_in", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tokens_out", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("ix_step_cache_expires_at", "step_cache", ["expires_at"])
    with op.batch_alter_table("step_runs") as batch:
        batch.add_column(sa.Column("cached", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("step_runs") as batch:
        batch.drop_column("cached")
    op.drop_index("ix_step_cache_expires_at", "step_cache")
    op.drop_table("step_cache")
