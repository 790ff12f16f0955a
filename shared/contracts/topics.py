"""Topic names. One events topic (keyed ``workspace_id:customer_id``), one messages topic, one
erasures topic (GDPR erasure requests, keyed ``workspace_id:customer_id``), and a dead-letter
topic per consumer group."""

from __future__ import annotations

EVENTS = "ciclo.events"
MESSAGES = "ciclo.messages"
ERASURES = "ciclo.erasures"

GROUPS = ("journey", "dispatch", "dispatch-erasure", "ingest-erasure")
"""Every consumer group Ciclo runs: each has a dead-letter topic."""


def dead_letter(group: str) -> str:
    """The dead-letter topic of a consumer group: records that failed for good, with the reason."""
    return f"ciclo.dlq.{group}"


def all_topics(groups: tuple[str, ...] = GROUPS) -> list[str]:
    return [EVENTS, MESSAGES, ERASURES, *(dead_letter(g) for g in groups)]
