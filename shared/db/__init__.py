"""Database plumbing: async engines for SQLite and PostgreSQL, unit of work, migrations."""
