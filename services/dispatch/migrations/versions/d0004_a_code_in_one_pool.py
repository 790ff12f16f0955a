"""A discount code sits in one pool of its workspace: ``(workspace_id, code)`` is unique, so a
code uploaded to a second pool cannot be handed to a second customer.

Codes already in more than one pool are made single before the index is built: the row kept is
the one a message drew (the earliest draw when several did: those customers already have it),
else the one in the first pool by name; the others are deleted. A deleted row was never drawn,
or was drawn after the same code had already gone to another customer.

Revision ID: d0004
Revises: d0003
"""

from alembic import op

revision = "d0004"
down_revision = "d0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DELETE FROM dispatch_discount_codes
        WHERE (workspace_id, pool, code) IN (
            SELECT workspace_id, pool, code FROM (
                SELECT workspace_id, pool, code,
                       ROW_NUMBER() OVER (
                           PARTITION BY workspace_id, code
                           ORDER BY CASE WHEN message_id IS NULL THEN 1 ELSE 0 END,
                                    claimed_at, pool
                       ) AS rank
                FROM dispatch_discount_codes
            ) ranked
            WHERE rank > 1
        )
        """
    )
    op.create_index(
        "uq_dispatch_discount_codes_code",
        "dispatch_discount_codes",
        ["workspace_id", "code"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_dispatch_discount_codes_code", table_name="dispatch_discount_codes")
