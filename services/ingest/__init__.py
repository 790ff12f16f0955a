"""Ingest: the storefront event API. Authenticates, validates, normalises, and produces events to
the bus; answers 202 only after the bus has durably accepted them. Flat on purpose: it has no
domain of its own."""
