from services.dispatch.adapters.tables import metadata
from shared.db.alembic_env import run_migrations

run_migrations(metadata, version_table="alembic_version_dispatch")
