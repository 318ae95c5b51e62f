"""Photos residents send about their orders (a WeChat picture after a repair report),
encrypted at rest

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        # AES-GCM ciphertext of the image (crypto.EncryptedBytes): bytea / BLOB.
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["work_orders.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("order_id", "sha256", name="uq_order_photos_sha256"),
    )
    op.create_index("ix_order_photos_order_id", "order_photos", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_order_photos_order_id", table_name="order_photos")
    op.drop_table("order_photos")
