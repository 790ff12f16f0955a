"""Settings common to every service, read from ``CICLO_*`` environment variables.

Each service subclasses :class:`CommonSettings`; instances are built in ``main``/bootstrap and
passed down, never created at import time. docs/configuration.md documents every field; a test
keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.bus.ports import STOP_TIMEOUT
from shared.errors import ConfigurationError


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CICLO_", extra="ignore", frozen=True)

    env: Literal["development", "production"] = Field(
        "development",
        description="`production` refuses placeholder secrets and demo bootstrapping.",
    )
    data_dir: Path = Field(
        Path(".ciclo"), description="Folder for the embedded SQLite database and bus."
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy async URL of the state database. Empty: SQLite in `data_dir`.",
    )
    database_pool_size: int = Field(
        10,
        ge=1,
        le=500,
        description="PostgreSQL connections per process (as many again may open under bursts).",
    )
    bus_url: str = Field(
        "",
        description="`sqlite:///path` (embedded log) or `kafka://host:port[,host:port]`. "
        "Empty: embedded log in `data_dir`.",
    )
    bus_partitions: int = Field(
        8, ge=1, le=1024, description="Partitions per topic when Ciclo creates topics."
    )
    bus_replication_factor: int = Field(
        1, ge=1, description="Replication factor when Ciclo creates Kafka topics."
    )
    bus_sync: Literal["normal", "full"] = Field(
        "normal",
        description="Embedded log fsync: `normal` survives a crash; `full` also power loss.",
    )
    bus_stop_timeout: float = Field(
        STOP_TIMEOUT,
        gt=0,
        le=30,
        description="Seconds each step of a stop may wait on a bus that does not answer before "
        "it is given up (a consumer's last commit and leaving its group, the outbox's last "
        "publish, its drain, closing the bus); what was given up comes again after the restart. "
        "A stop then waits at most about 4 times this plus 2 s after the requests: keep the "
        "grace period above that (docs/operations.md).",
    )
    kafka_idempotence: bool = Field(
        True, description="Idempotent Kafka producer (needs Apache Kafka; off for the test broker)."
    )
    kafka_client_id: str = Field("ciclo", description="Kafka client id prefix.")
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=100,
        description="Kafka consumer session timeout: how soon a dead member is replaced.",
    )
    kafka_heartbeat_interval_ms: int = Field(
        3_000,
        ge=50,
        description="Kafka consumer heartbeat interval (below a third of the session).",
    )
    kafka_linger_ms: int = Field(
        0,
        ge=0,
        le=1_000,
        description="How long the Kafka producer waits for more records before it sends a batch. "
        "0 sends at once: the records that come in while a batch is in flight still go together "
        "in the next one, and no request waits for a timer.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        100,
        ge=0,
        le=10_000,
        description="How long a Kafka fetch waits for data: an upper bound on the latency a "
        "broker that does not answer early adds per hop.",
    )
    kafka_max_partition_fetch_bytes: int = Field(
        1_048_576,
        ge=1_024,
        description="Most bytes a Kafka fetch brings of one partition. A consumer's poll takes "
        "at most one fetch per partition, so this bounds a batch: 1 MiB is about 2,000 events "
        "of 500 bytes. Raise it with `CICLO_JOURNEY_BATCH_SIZE` when a replica reads few "
        "partitions.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How Ciclo talks to Kafka (TLS and/or SASL for managed clusters)."
    )
    kafka_ssl_cafile: str = Field(
        "", description="CA bundle to verify the brokers (empty: the system's trust store)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str = Field("", description="SASL user when the protocol is SASL_*.")
    kafka_sasl_password: SecretStr = Field(
        SecretStr(""), description="SASL password when the protocol is SASL_*."
    )
    log_level: str = Field("INFO", description="Python log level.")
    log_format: Literal["json", "text"] = Field("json", description="Log line format.")

    @model_validator(mode="after")
    def _check(self) -> CommonSettings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise ConfigurationError(
                "CICLO_KAFKA_SASL_USERNAME and CICLO_KAFKA_SASL_PASSWORD are required with "
                f"CICLO_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
            )
        if self.resolved_bus_url().split(":", 1)[0] not in {"sqlite", "kafka"}:
            raise ConfigurationError(
                f"CICLO_BUS_URL must start with sqlite:// or kafka://, got {self.bus_url!r}"
            )
        return self

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'ciclo.db'}"

    def resolved_bus_url(self) -> str:
        return self.bus_url or f"sqlite:///{self.data_dir / 'bus.db'}"

    @property
    def embedded_bus(self) -> bool:
        return self.resolved_bus_url().startswith("sqlite:")


class ServerSettings(CommonSettings):
    """Where a process listens and what it does at start."""

    host: str = Field(
        "127.0.0.1", description="Address the HTTP server binds (0.0.0.0 in a container)."
    )
    port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP server.")
    key_cache_seconds: float = Field(
        10.0, ge=0, description="How long a verified API key is cached (revocation delay)."
    )
    rate_limit: float = Field(
        1000.0,
        ge=0,
        description="Requests per second per API key and process (0: no limit); 429 beyond.",
    )
    rate_limit_burst: float = Field(
        2000.0, ge=1, description="Requests a key may send at once before the rate applies."
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins allowed to call the API from a browser "
        "(storefront pages posting events); empty: none, `*`: any.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest accepted request body in bytes (413 beyond)."
    )
    auto_migrate: bool = Field(
        True, description="Run database migrations at start (off when a migration job does it)."
    )
    demo: bool = Field(
        True,
        description="On `ciclo run` with no workspace yet, create `demo` and print its keys "
        "(never in production).",
    )
