"""Topic names. One events topic (keyed ``workspace_id:customer_id``), one messages topic, and a
dead-letter topic per consumer group."""

from __future__ import annotations

EVENTS = "ciclo.events"
MESSAGES = "ciclo.messages"


def dead_letter(group: str) -> str:
    """The dead-letter topic of a consumer group: records that failed for good, with the reason."""
    return f"ciclo.dlq.{group}"


def all_topics(groups: tuple[str, ...] = ("journey", "dispatch")) -> list[str]:
    return [EVENTS, MESSAGES, *(dead_letter(g) for g in groups)]
