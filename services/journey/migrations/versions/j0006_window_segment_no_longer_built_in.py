"""The segment ``viewed_product_3x_7d`` is no longer built in (it is a documented example a
workspace may add with ``PUT /v1/segments/viewed_product_3x_7d``).

A workspace that never saved a segment of that id had it only as a built-in one. Its membership
rows go, and every workspace's revision moves, so that each customer is decided in full when next
processed: a full decision forgets the state of a segment that no longer exists (its window
times, its membership), without a ``segment_exited`` event, as deleting a segment does. A
workspace with its own ``viewed_product_3x_7d`` keeps the segment and its members.

The downgrade changes nothing: the built-in segment is back with the older code, and customers
enter it again as their product views are counted from then on.

Revision ID: j0006
Revises: j0005
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from shared.db.types import UtcDateTime

revision = "j0006"
down_revision = "j0005"
branch_labels = None
depends_on = None

SEGMENT = "viewed_product_3x_7d"


def upgrade() -> None:
    now = datetime.now(UTC)  # bound by ``UtcDateTime``, as the service writes instants
    members = sa.table(
        "journey_segment_members", sa.column("workspace_id"), sa.column("segment_id")
    )
    own = sa.table("journey_segments", sa.column("workspace_id"), sa.column("segment_id"))
    customers = sa.table("journey_customers", sa.column("workspace_id"))
    settings = sa.table(
        "journey_intelligence_settings",
        sa.column("workspace_id"),
        sa.column("revision"),
        sa.column("updated_at", UtcDateTime()),
    )
    with_own = sa.select(own.c.workspace_id).where(own.c.segment_id == SEGMENT)
    op.execute(
        members.delete().where(
            members.c.segment_id == SEGMENT, members.c.workspace_id.not_in(with_own)
        )
    )
    op.execute(settings.update().values(revision=settings.c.revision + 1, updated_at=now))
    known = sa.select(settings.c.workspace_id)
    missing = (
        sa.select(
            customers.c.workspace_id,
            sa.literal(1, sa.BigInteger).label("revision"),
            sa.literal(now, UtcDateTime()).label("updated_at"),
        )
        .where(customers.c.workspace_id.not_in(known))
        .distinct()
    )
    op.execute(settings.insert().from_select(["workspace_id", "revision", "updated_at"], missing))


def downgrade() -> None:
    pass
