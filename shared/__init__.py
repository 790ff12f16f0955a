"""Ciclo's shared package: contracts and plumbing used by every service.

Nothing here knows a business rule. What lives here:

- ``contracts``: versioned wire models (event envelope, message request), topic names,
  CloudEvents headers.
- ``bus``: the publisher/consumer ports and their two adapters (embedded SQLite log, Kafka).
- ``db``: async SQLAlchemy engines, unit-of-work base, per-component Alembic migrations.
- ``outbox``: the transactional outbox table and its relay.
- ``consumer``: the batch consumer loop (commit after the database, dead letters, drain on stop).
- ``tenancy``: workspaces and hashed API keys.
- ``settings``, ``clock``, ``logging``, ``http``: configuration, time, JSON logs, health/metrics.
"""
