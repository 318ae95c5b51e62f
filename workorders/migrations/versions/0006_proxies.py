"""Family members acting for an elder (代办) with the elder's consent: the proxies table and
the proxy an order was made through

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OPEN = sa.text("status IN ('requested', 'active')")


def upgrade() -> None:
    op.create_table(
        "proxies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=False),
        sa.Column("identity_kind", sa.String(length=32), nullable=False),
        sa.Column("identity_value", sa.Text(), nullable=False),
        sa.Column("identity_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("relation", sa.String(length=32), nullable=False),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_via", sa.String(length=16), nullable=True),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["resident_id"], ["residents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["decided_by"], ["principals.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_proxies_resident_id", "proxies", ["resident_id"])
    op.create_index("ix_proxies_identity", "proxies", ["identity_kind", "identity_hash"])
    op.create_index(
        "uq_proxies_open",
        "proxies",
        ["resident_id", "identity_hash"],
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )
    with op.batch_alter_table("work_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("proxy_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_work_orders_proxy_id", "proxies", ["proxy_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("work_orders", schema=None) as batch_op:
        batch_op.drop_constraint("fk_work_orders_proxy_id", type_="foreignkey")
        batch_op.drop_column("proxy_id")
    op.drop_index("uq_proxies_open", table_name="proxies")
    op.drop_index("ix_proxies_identity", table_name="proxies")
    op.drop_index("ix_proxies_resident_id", table_name="proxies")
    op.drop_table("proxies")
