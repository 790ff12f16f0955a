"""Choosing the bus adapter from settings: the only code that knows both modes exist.

``sqlite:///path`` opens the embedded log (:class:`~shared.bus.embedded.EmbeddedBus`);
``kafka://host:port[,host:port]`` opens :class:`~shared.bus.kafka.KafkaBus`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.bus.ports import Bus, TopicSpec
from shared.contracts.topics import all_topics
from shared.errors import ConfigurationError
from shared.settings import CommonSettings


def open_bus(settings: CommonSettings) -> Bus:
    """Build (not start) the bus named by ``settings.resolved_bus_url()``."""
    url = settings.resolved_bus_url()
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        # Imported here so a Kafka deployment never loads the SQLite adapter, and vice versa.
        from shared.bus.embedded import EmbeddedBus

        # sqlite:///relative/path and sqlite:////absolute/path, as in SQLAlchemy URLs.
        path = Path(rest.removeprefix("/"))
        if not path.name:
            raise ConfigurationError(f"CICLO_BUS_URL names no file: {url!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return EmbeddedBus(path, partitions=settings.bus_partitions, sync=settings.bus_sync)
    if scheme == "kafka":
        from shared.bus.kafka import KafkaBus

        servers = [server.strip() for server in rest.split(",") if server.strip()]
        if not servers or any(":" not in server for server in servers):
            raise ConfigurationError(f"CICLO_BUS_URL must be kafka://host:port[,...]: {url!r}")
        return KafkaBus(
            ",".join(servers),
            client_id=settings.kafka_client_id,
            idempotence=settings.kafka_idempotence,
            linger_ms=settings.kafka_linger_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            max_partition_fetch_bytes=settings.kafka_max_partition_fetch_bytes,
            connection=kafka_connection(settings),
            stop_timeout=settings.bus_stop_timeout,
        )
    raise ConfigurationError(f"CICLO_BUS_URL must start with sqlite:// or kafka://: {url!r}")


def kafka_connection(settings: CommonSettings) -> dict[str, Any]:
    """aiokafka's TLS/SASL keyword arguments from the settings."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile or None)
    if protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return options


async def ensure_standard_topics(bus: Bus, settings: CommonSettings) -> None:
    """Create Ciclo's topics (events, messages, dead letters) where they are missing."""
    await bus.ensure_topics(
        [
            TopicSpec(
                name,
                partitions=settings.bus_partitions,
                replication_factor=settings.bus_replication_factor,
            )
            for name in all_topics()
        ]
    )
