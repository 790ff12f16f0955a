"""Erased customers (hashed), so that message requests already on the bus at an erasure are
dropped rather than sent.

Revision ID: d0003
Revises: d0002
"""

import sqlalchemy as sa
from alembic import op

revision = "d0003"
down_revision = "d0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatch_erasures",
        sa.Column("subject", sa.String(64), primary_key=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dispatch_erasures_erased_at", "dispatch_erasures", ["erased_at"])


def downgrade() -> None:
    op.drop_index("ix_dispatch_erasures_erased_at", table_name="dispatch_erasures")
    op.drop_table("dispatch_erasures")
