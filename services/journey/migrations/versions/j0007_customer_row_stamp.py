"""A stamp on every customer row, so that a journey process may keep the states it committed
and trust one only while the row still carries the stamp it wrote (``StateCache``).

``journey_customers.stamp`` is a random 63-bit number that the journey service writes with each
save (one per transaction). A trigger clears it when an UPDATE leaves it as it was: a writer that
does not know the column (a replica of an older version during a rolling upgrade, a statement
typed by hand) changes the row without a stamp, and no cache trusts the row again until the
service saves it anew. Rows from before this migration have none. Inserts by such a writer leave
it NULL too.

The downgrade drops the trigger (and on PostgreSQL its function) and the column.

Revision ID: j0007
Revises: j0006
"""

import sqlalchemy as sa
from alembic import op

revision = "j0007"
down_revision = "j0006"
branch_labels = None
depends_on = None

TRIGGER = "journey_customers_unstamped"

_PG_FUNCTION = f"""
CREATE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.stamp := NULL;
    RETURN NEW;
END
$$
"""
# WHEN is evaluated without calling the function: the service's own saves, which always
# change the stamp, pay only the comparison.
_PG_TRIGGER = f"""
CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON journey_customers
FOR EACH ROW WHEN (NEW.stamp IS NOT DISTINCT FROM OLD.stamp AND NEW.stamp IS NOT NULL)
EXECUTE FUNCTION {TRIGGER}()
"""
# SQLite cannot change NEW: the row is updated once more (its only column in the statement is
# the stamp, and SQLite runs no trigger recursively unless told to).
_SQLITE_TRIGGER = f"""
CREATE TRIGGER {TRIGGER} AFTER UPDATE ON journey_customers
FOR EACH ROW WHEN NEW.stamp IS OLD.stamp AND NEW.stamp IS NOT NULL
BEGIN
    UPDATE journey_customers SET stamp = NULL
    WHERE workspace_id = NEW.workspace_id AND customer_id = NEW.customer_id;
END
"""


def upgrade() -> None:
    with op.batch_alter_table("journey_customers") as batch:
        batch.add_column(sa.Column("stamp", sa.BigInteger(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER {TRIGGER} ON journey_customers")
        op.execute(f"DROP FUNCTION {TRIGGER}()")
    else:
        op.execute(f"DROP TRIGGER {TRIGGER}")
    with op.batch_alter_table("journey_customers") as batch:
        batch.drop_column("stamp")
