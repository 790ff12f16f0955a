from shared.db.alembic_env import run_migrations
from shared.tenancy.tables import metadata

run_migrations(metadata, version_table="alembic_version_tenancy")
