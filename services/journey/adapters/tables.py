"""Tables of the journey service.

Prefix ``journey_``; version table ``alembic_version_journey``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    text,
)

from shared.db.types import UtcDateTime
from shared.outbox import outbox_table

metadata = MetaData()

customers = Table(
    "journey_customers",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("customer_id", String(210), primary_key=True),
    Column("traits", JSON, nullable=False),
    Column(
        "trait_times",
        JSON,
        nullable=True,
        doc="trait name -> when its value was given (RFC 3339, UTC): an older event never "
        "overwrites it (j0008; NULL on rows saved before)",
    ),
    Column("first_seen_at", UtcDateTime(), nullable=False),
    Column("last_seen_at", UtcDateTime(), nullable=False),
    Column("scores", JSON, nullable=False),
    Column("entries", JSON, nullable=False, doc="journey id -> last entry (RFC 3339)"),
    Column("ledger", JSON, nullable=False, doc="recent marketing sends [[at, channel]]"),
    Column("schedules", JSON, nullable=False, doc="journey id -> trigger due (RFC 3339)"),
    # Customer intelligence (issue #6). The JSON documents are the domain's own ``to_json``;
    # the plain columns repeat what the scheduled RFM / prediction job and the customer API
    # filter or scan on, so they never parse a document per customer.
    Column("profile", JSON, nullable=True, doc="profile.Profile.to_json()"),
    Column("lead", JSON, nullable=True, doc="scoring.ScoreState.to_json() + last band"),
    Column("segment_state", JSON, nullable=True, doc="segments.SegmentState.to_json()"),
    Column("insights", JSON, nullable=True, doc="{rfm, predictions, computed_at} (scheduled)"),
    Column("timeline", JSON, nullable=True, doc="recent events [[at, type, id]], newest last"),
    Column("stage", String(20), nullable=True, doc="lifecycle stage (NULL: subscriber)"),
    Column("lead_band", String(40), nullable=True),
    Column("order_count", Integer, nullable=False, server_default=text("0")),
    Column("first_order_at", UtcDateTime(), nullable=True),
    Column("last_order_at", UtcDateTime(), nullable=True),
    Column("revenue", Float, nullable=False, server_default=text("0")),
    Column(
        "stamp",
        BigInteger,
        nullable=True,
        doc="random number written by each save; NULL once another writer changed the row "
        "(j0007's trigger): a cached state is trusted only while its stamp is still there",
    ),
    Index("ix_journey_customers_stage", "workspace_id", "stage"),
)

instances = Table(
    "journey_instances",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("run_id", String(32), primary_key=True),
    Column("customer_id", String(210), nullable=False),
    Column("journey_id", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("step", String(100), nullable=True),
    Column("status", String(16), nullable=False),
    Column("entered_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("wake_at", UtcDateTime(), nullable=True),
    Column("waiting", String(16), nullable=True),
    Column("key", String(200), nullable=True),
    Column("trigger", JSON, nullable=False),
    Column("holdout", Boolean, nullable=False),
    Column("goal_until", UtcDateTime(), nullable=True),
    Column("goal_at", UtcDateTime(), nullable=True),
    Column("exit_reason", String(32), nullable=True),
    Column("visits", JSON, nullable=False),
    Index("ix_journey_instances_customer", "workspace_id", "customer_id", "journey_id"),
    Index("ix_journey_instances_journey", "workspace_id", "journey_id", "version", "status"),
)

# Durable timers: one row per pending timer, named run:<run_id> or trigger:<journey_id>. The
# poller reads them by due time and leases a batch (leased_until) so that several replicas never
# fire the same timer; the firing transaction re-reads the customer's state under its lock.
timers = Table(
    "journey_timers",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("customer_id", String(210), primary_key=True),
    Column("name", String(140), primary_key=True),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("leased_until", UtcDateTime(), nullable=True),
    Index("ix_journey_timers_due", "due_at"),
)

# Skips and deferrals with their reasons (frequency cap, send window, step holdout, ...).
activity = Table(
    "journey_activity",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("customer_id", String(210), nullable=False),
    Column("journey_id", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("run_id", String(32), nullable=False),
    Column("step", String(100), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("reason", String(32), nullable=True),
    Column("detail", JSON, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Index("ix_journey_activity_customer", "workspace_id", "customer_id", "at"),
    Index("ix_journey_activity_journey", "workspace_id", "journey_id", "version", "at"),
)

# How many runs did what at each step, per journey version: the stats API reads these counters
# (one upsert per (version, step, kind, reason) per batch) instead of scanning runs.
step_counts = Table(
    "journey_step_counts",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("journey_id", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("step", String(100), primary_key=True, doc="'' for the journey as a whole"),
    Column("kind", String(16), primary_key=True),
    Column("reason", String(32), primary_key=True, doc="'' when there is none"),
    Column("count", BigInteger, nullable=False, server_default=text("0")),
)

# Idempotency: an event id is recorded in the same transaction as the state it changed.
processed_events = Table(
    "journey_processed_events",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("processed_at", UtcDateTime(), nullable=False),
)

# Progress of computing trigger schedules for customers who were already there when a dated
# journey (a birthday) was published: resumable, one chunk of customers at a time.
backfills = Table(
    "journey_backfills",
    metadata,
    Column("scope", String(64), primary_key=True, doc="workspace id; '' for journeys/ files"),
    Column("journey_id", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("after_workspace", String(64), nullable=True),
    Column("after_customer", String(210), nullable=True),
    Column("finished_at", UtcDateTime(), nullable=True),
)

outbox = outbox_table(metadata, "journey_outbox")

# Journeys managed over HTTP, one row per (workspace, journey id). ``status`` is draft (nothing
# published yet), published, paused or archived; ``current_version`` is the published version new
# customers enter. ``revision`` grows by one with every change that alters the catalog (publish,
# pause, resume, archive): the worker's catalog reloads when the sum of revisions moved.
definitions = Table(
    "journey_definitions",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("journey_id", String(100), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("current_version", Integer, nullable=True),
    Column("revision", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Every version of those journeys: at most one draft (the highest version), the rest published
# and immutable. ``document`` is the journey JSON as sent, with the id and version set.
versions = Table(
    "journey_versions",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("journey_id", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("state", String(16), nullable=False, doc="draft or published"),
    Column("document", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("published_at", UtcDateTime(), nullable=True),
)

# What a workspace decides for all its journeys; a NULL column takes the service's default.
workspace_settings = Table(
    "journey_workspace_settings",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("live_from", UtcDateTime(), nullable=True),
    Column("max_event_age", String(40), nullable=True, doc="ISO-8601 duration"),
    Column("default_timezone", String(100), nullable=True),
    Column("frequency_caps", JSON, nullable=True, doc="[{channel, limit, per}]"),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Segment membership, one row per (segment, customer) while the customer is in it: listing and
# counting a segment read this table, never the customers' JSON.
segment_members = Table(
    "journey_segment_members",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("segment_id", String(100), primary_key=True),
    Column("customer_id", String(210), primary_key=True),
    Column("entered_at", UtcDateTime(), nullable=False),
    Index("ix_journey_segment_members_customer", "workspace_id", "customer_id"),
)

# Segments a workspace defines over HTTP (the built-in ones live in the package); the same id
# as a built-in one takes its place in that workspace.
segments = Table(
    "journey_segments",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("segment_id", String(100), primary_key=True),
    Column("document", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Customer-intelligence settings of a workspace; a NULL column takes the built-in default.
intelligence_settings = Table(
    "journey_intelligence_settings",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("currency", String(3), nullable=True),
    Column("rates", JSON, nullable=True, doc="currency -> value of one unit, as a decimal string"),
    Column("score_rules", JSON, nullable=True, doc="scoring.ScoreRules document"),
    Column("lifecycle", JSON, nullable=True, doc="lifecycle.LifecycleRules document"),
    Column("revision", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Every order once, as the models need them: the fits as of a past date read the orders placed
# before it (and the ones after it as the holdout). ``value`` is in the workspace currency
# (NULL when no rate converted it).
orders = Table(
    "journey_orders",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("customer_id", String(210), primary_key=True),
    Column("order_id", String(200), primary_key=True),
    Column("placed_at", UtcDateTime(), nullable=False),
    Column("value", Float, nullable=True),
    Column("cancelled", Boolean, nullable=False, server_default=text("false")),
)

# Identity resolution: an anonymous id or an old customer id merged into a customer. Events of
# the alias go to the customer from then on.
identities = Table(
    "journey_identities",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("alias", String(210), primary_key=True, doc="subject merged away (anon:<id> or id)"),
    Column("customer_id", String(210), nullable=False),
    Column("merged_at", UtcDateTime(), nullable=False),
    Index("ix_journey_identities_customer", "workspace_id", "customer_id"),
)

# The scheduled RFM scoring and model fits, per workspace: when they last ran and the fit report.
insight_runs = Table(
    "journey_insight_runs",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("ran_at", UtcDateTime(), nullable=False),
    Column("as_of", UtcDateTime(), nullable=False),
    Column("customers", Integer, nullable=False),
    Column("report", JSON, nullable=True, doc="predictions.ModelReport.to_json()"),
)

# GDPR erasures, logged without personal data: which workspace, when, and how much was removed.
erasures = Table(
    "journey_erasures",
    metadata,
    Column("erasure_id", String(40), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("requested_at", UtcDateTime(), nullable=False),
    Column("removed", JSON, nullable=False, doc="table -> rows removed"),
)
