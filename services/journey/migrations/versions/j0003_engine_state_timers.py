"""Engine state: profile aggregates for the engine, run timers and goals, durable timers,
activity (skips and deferrals with reasons), per-step counters and schedule backfills.

Revision ID: j0003
Revises: j0002
"""

import sqlalchemy as sa
from alembic import op

revision = "j0003"
down_revision = "j0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("journey_customers") as t:
        t.add_column(sa.Column("scores", sa.JSON, nullable=False, server_default="{}"))
        t.add_column(sa.Column("entries", sa.JSON, nullable=False, server_default="{}"))
        t.add_column(sa.Column("ledger", sa.JSON, nullable=False, server_default="[]"))
        t.add_column(sa.Column("schedules", sa.JSON, nullable=False, server_default="{}"))
    with op.batch_alter_table("journey_instances") as t:
        t.add_column(sa.Column("wake_at", _WHEN, nullable=True))
        t.add_column(sa.Column("waiting", sa.String(16), nullable=True))
        t.add_column(sa.Column("key", sa.String(200), nullable=True))
        t.add_column(sa.Column("trigger", sa.JSON, nullable=False, server_default="{}"))
        t.add_column(sa.Column("holdout", sa.Boolean, nullable=False, server_default=sa.false()))
        t.add_column(sa.Column("goal_until", _WHEN, nullable=True))
        t.add_column(sa.Column("goal_at", _WHEN, nullable=True))
        t.add_column(sa.Column("exit_reason", sa.String(32), nullable=True))
        t.add_column(sa.Column("visits", sa.JSON, nullable=False, server_default="{}"))
    op.create_index(
        "ix_journey_instances_journey",
        "journey_instances",
        ["workspace_id", "journey_id", "version", "status"],
    )
    op.create_table(
        "journey_timers",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(210), primary_key=True),
        sa.Column("name", sa.String(140), primary_key=True),
        sa.Column("due_at", _WHEN, nullable=False),
        sa.Column("leased_until", _WHEN, nullable=True),
    )
    op.create_index("ix_journey_timers_due", "journey_timers", ["due_at"])
    op.create_table(
        "journey_activity",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(210), nullable=False),
        sa.Column("journey_id", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("step", sa.String(100), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("at", _WHEN, nullable=False),
    )
    op.create_index(
        "ix_journey_activity_customer", "journey_activity", ["workspace_id", "customer_id", "at"]
    )
    op.create_index(
        "ix_journey_activity_journey",
        "journey_activity",
        ["workspace_id", "journey_id", "version", "at"],
    )
    op.create_table(
        "journey_step_counts",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("journey_id", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("step", sa.String(100), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("reason", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    op.create_table(
        "journey_backfills",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("journey_id", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("after_workspace", sa.String(64), nullable=True),
        sa.Column("after_customer", sa.String(210), nullable=True),
        sa.Column("finished_at", _WHEN, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("journey_backfills")
    op.drop_table("journey_step_counts")
    op.drop_table("journey_activity")
    op.drop_table("journey_timers")
    op.drop_index("ix_journey_instances_journey", "journey_instances")
    with op.batch_alter_table("journey_instances") as t:
        for column in (
            "visits",
            "exit_reason",
            "goal_at",
            "goal_until",
            "holdout",
            "trigger",
            "key",
            "waiting",
            "wake_at",
        ):
            t.drop_column(column)
    with op.batch_alter_table("journey_customers") as t:
        for column in ("schedules", "ledger", "entries", "scores"):
            t.drop_column(column)
