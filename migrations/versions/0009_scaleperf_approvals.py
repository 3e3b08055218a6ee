"""approval decisions recorded for the process that executes the run

Revision ID: 0009_scaleperf_approvals
Revises: 0008_spinefeat_schedule_roles
Create Date: 2026-12-07

``/approve`` and ``/reject`` may come from any process (a front's chat command, the
HTTP API, a button) while the ``approve`` step waits in another (a ``baton worker``).
The deciding process inserts the decision here (the primary key makes the first
decision win); the waiting step reads and deletes it (bot/approvals.py).
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_scaleperf_approvals"
down_revision = "0008_spinefeat_schedule_roles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_decisions",
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("node_id", sa.String(255), primary_key=True),
        sa.Column("approve", sa.Boolean, nullable=False),
        sa.Column("decided_by", sa.String(255), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("approval_decisions")
