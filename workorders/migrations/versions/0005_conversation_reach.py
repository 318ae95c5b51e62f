"""A conversation's reach on its channel (WeChat's 48 h window and sends left), and a staff
reply the channel refused (the error code and what was done instead)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workorders.models import TZDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reach_until", TZDateTime(), nullable=True))
        batch_op.add_column(sa.Column("reach_left", sa.Integer(), nullable=True))
    with op.batch_alter_table("conversation_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("undelivered_code", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("undelivered_fallback", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversation_messages", schema=None) as batch_op:
        batch_op.drop_column("undelivered_fallback")
        batch_op.drop_column("undelivered_code")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("reach_left")
        batch_op.drop_column("reach_until")
