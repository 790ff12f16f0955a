"""When each trait's value was given: ``journey_customers.trait_times``.

A JSON object, trait name → the instant (RFC 3339, UTC) of the event that gave the value held,
or of the run that set it; a trait a null removed keeps its time too. The journey service keeps
a trait's value unless an event gives one at least as recent, so history imported after live
events, or a delayed delivery, no longer brings back an address changed since or a consent
revoked since.

Rows from before this migration have none (NULL): their traits stay until an event gives a
value, as before, and from then on each trait is timed.

The downgrade drops the column.

Revision ID: j0008
Revises: j0007
"""

import sqlalchemy as sa
from alembic import op

revision = "j0008"
down_revision = "j0007"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (SQLite adds and drops a column in place): a batch
# operation could copy the table on SQLite and lose j0007's trigger.


def upgrade() -> None:
    op.add_column("journey_customers", sa.Column("trait_times", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("journey_customers", "trait_times")
