"""Customer intelligence: profile, lead score, stage and segment state per customer; segment
membership; workspace segments and intelligence settings; the order log; identities; scheduled
insight runs; the erasure log.

Revision ID: j0005
Revises: j0004
"""

import sqlalchemy as sa
from alembic import op

revision = "j0005"
down_revision = "j0004"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def _customer_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("profile", sa.JSON, nullable=True),
        sa.Column("lead", sa.JSON, nullable=True),
        sa.Column("segment_state", sa.JSON, nullable=True),
        sa.Column("insights", sa.JSON, nullable=True),
        sa.Column("timeline", sa.JSON, nullable=True),
        sa.Column("stage", sa.String(20), nullable=True),
        sa.Column("lead_band", sa.String(40), nullable=True),
        sa.Column("order_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("first_order_at", _WHEN, nullable=True),
        sa.Column("last_order_at", _WHEN, nullable=True),
        sa.Column("revenue", sa.Float, nullable=False, server_default=sa.text("0")),
    ]


def upgrade() -> None:
    with op.batch_alter_table("journey_customers") as batch:
        for column in _customer_columns():
            batch.add_column(column)
    op.create_index("ix_journey_customers_stage", "journey_customers", ["workspace_id", "stage"])
    op.create_table(
        "journey_segment_members",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("segment_id", sa.String(100), primary_key=True),
        sa.Column("customer_id", sa.String(210), primary_key=True),
        sa.Column("entered_at", _WHEN, nullable=False),
    )
    op.create_index(
        "ix_journey_segment_members_customer",
        "journey_segment_members",
        ["workspace_id", "customer_id"],
    )
    op.create_table(
        "journey_segments",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("segment_id", sa.String(100), primary_key=True),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
    )
    op.create_table(
        "journey_intelligence_settings",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("rates", sa.JSON, nullable=True),
        sa.Column("score_rules", sa.JSON, nullable=True),
        sa.Column("lifecycle", sa.JSON, nullable=True),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("updated_at", _WHEN, nullable=False),
    )
    op.create_table(
        "journey_orders",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(210), primary_key=True),
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("placed_at", _WHEN, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.text("false")),
    )
    op.create_table(
        "journey_identities",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("alias", sa.String(210), primary_key=True),
        sa.Column("customer_id", sa.String(210), nullable=False),
        sa.Column("merged_at", _WHEN, nullable=False),
    )
    op.create_index(
        "ix_journey_identities_customer", "journey_identities", ["workspace_id", "customer_id"]
    )
    op.create_table(
        "journey_insight_runs",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("ran_at", _WHEN, nullable=False),
        sa.Column("as_of", _WHEN, nullable=False),
        sa.Column("customers", sa.Integer, nullable=False),
        sa.Column("report", sa.JSON, nullable=True),
    )
    op.create_table(
        "journey_erasures",
        sa.Column("erasure_id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("requested_at", _WHEN, nullable=False),
        sa.Column("removed", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "journey_erasures",
        "journey_insight_runs",
        "journey_identities",
        "journey_orders",
        "journey_intelligence_settings",
        "journey_segments",
        "journey_segment_members",
    ):
        op.drop_table(table)
    op.drop_index("ix_journey_customers_stage", "journey_customers")
    with op.batch_alter_table("journey_customers") as batch:
        for column in reversed(_customer_columns()):
            batch.drop_column(column.name)
