"""Ciclo's three services (ingest, journey, dispatch), the runtime that hosts them and the CLI."""
