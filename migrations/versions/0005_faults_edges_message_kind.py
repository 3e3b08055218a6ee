"""messages.kind: commands and their answers are marked (issue 14 fault 17)

Revision ID: 0005_faults_edges_message_kind
Revises: 0004_api_server
Create Date: 2026-12-06

``kind`` is NULL for conversation and ``"command"`` for a command (``/history``,
``/recall`` …) or the bot's answer to one: stored (``/history`` shows them) but
left out of ``/recall`` and of what an LLM call sees. Existing rows stay NULL
(``/recall`` also skips any text starting with ``/``, as before).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_faults_edges_message_kind"
down_revision = "0004_api_server"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("kind", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("kind")
