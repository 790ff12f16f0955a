"""Baseline of the ingest schema: the root of its chain (webhook delivery dedupe builds on it).

Revision ID: i0001
Revises:
"""

revision = "i0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
