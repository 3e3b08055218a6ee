"""schedules remember their author's roles, so a firing re-checks [permissions] (issue 15)

Revision ID: 0008_spinefeat_schedule_roles
Revises: 0007_spine_run_queue
Create Date: 2026-12-07

A schedule firing goes through admission like a chat request: ``[permissions]`` are
checked again when it fires, for the schedule's author. A rule may name a role
(``role:ops``), and platforms give roles only with a message, so the roles the author
had when creating the schedule are stored with it (``created_roles``: a JSON array of
role names; NULL for schedules made before this migration, which are checked with no
roles).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_spinefeat_schedule_roles"
down_revision = "0007_spine_run_queue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("schedules") as b:
        b.add_column(sa.Column("created_roles", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedules") as b:
        b.drop_column("created_roles")
