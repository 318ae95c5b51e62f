"""SOS terminals and emergency escalation chains

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 08:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "terminals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Text(), nullable=False),
        sa.Column("device_hash", sa.String(length=64), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.JSON(), nullable=True),
        sa.Column("last_self_test_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("silent_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("visit_order_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["resident_id"], ["residents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["principal_id"], ["principals.id"]),
        sa.ForeignKeyConstraint(["visit_order_id"], ["work_orders.id"]),
        sa.ForeignKeyConstraint(["created_by"], ["principals.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_hash"),
    )
    with op.batch_alter_table("terminals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_terminals_resident_id"), ["resident_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_terminals_silent_since"), ["silent_since"], unique=False
        )

    op.create_table(
        "emergency_escalations",
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.Integer(), nullable=True),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finish_reason", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["work_orders.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("order_id"),
    )
    with op.batch_alter_table("emergency_escalations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_emergency_escalations_next_due_at"), ["next_due_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("emergency_escalations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_emergency_escalations_next_due_at"))
    op.drop_table("emergency_escalations")
    with op.batch_alter_table("terminals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_terminals_silent_since"))
        batch_op.drop_index(batch_op.f("ix_terminals_resident_id"))
    op.drop_table("terminals")
