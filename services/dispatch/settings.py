"""Settings of the dispatch service."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from services.dispatch.domain.unsubscribe import public_base
from shared.errors import ConfigurationError
from shared.settings import CommonSettings


class DispatchSettings(CommonSettings):
    templates_dir: Path = Field(Path("templates"), description="Folder of Liquid templates.")
    email_provider: Literal["sink", "sendgrid"] = Field(
        "sink", description="Where email goes: the local sink (development) or SendGrid."
    )
    email_from: str = Field("hello@example.com", description="Sender address of emails.")
    email_from_name: str = Field("Ciclo Demo", description="Sender name of emails.")
    sendgrid_api_key: str = Field("", description="SendGrid API key (needed for `sendgrid`).")
    sendgrid_base_url: str = Field(
        "https://api.sendgrid.com", description="SendGrid API base URL (regional or test)."
    )
    send_timeout: float = Field(10.0, gt=0, description="Seconds before a provider call times out.")
    send_max_attempts: int = Field(
        4, ge=1, description="Tries of a send that fails transiently (429, 5xx, network)."
    )
    send_concurrency: int = Field(32, ge=1, description="Sends in flight per dispatch process.")
    ambiguous_policy: Literal["skip", "resend"] = Field(
        "skip",
        description="A send that may have left but has no answer (timeout, crash): `skip` "
        "(never twice, may lose one) or `resend` (never lost, may duplicate).",
    )
    public_url: str = Field(
        "http://localhost:8000",
        description="Base URL where recipients reach Ciclo (unsubscribe links, preference centre); "
        "https:// and not localhost when `CICLO_ENV=production`.",
    )
    unsubscribe_secret: SecretStr = Field(
        SecretStr("ciclo-development-unsubscribe-secret"),
        description="Signs unsubscribe links (HMAC-SHA256); set your own in production.",
    )
    unsubscribe_mailto: str = Field(
        "", description="Optional mailto address also offered in List-Unsubscribe."
    )
    send_hold_over: float = Field(
        60.0,
        gt=0,
        description="A provider asking to wait longer than this many seconds (Retry-After, an "
        "open circuit) gets the message held and sent later instead of waiting in memory.",
    )
    breaker_threshold: int = Field(
        5, ge=1, description="Failed sends in a row that open a provider's circuit breaker."
    )
    breaker_cooldown: float = Field(
        30.0, gt=0, description="Seconds an open circuit breaker waits before a trial send."
    )
    held_poll_interval: float = Field(
        5.0, gt=0, description="Seconds between looks for held messages that are due."
    )
    dispatch_config_refresh: float = Field(
        10.0, gt=0, description="Seconds a workspace's providers and settings are cached."
    )
    dispatch_batch_size: int = Field(200, ge=1, le=10_000, description="Requests per batch.")
    dispatch_claim_chunk: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Requests of a batch claimed per transaction (checked, rendered and written "
        "as `sending`): the sends of one chunk are in flight while the next is claimed, and each "
        "chunk's outcomes are recorded as soon as its sends are done.",
    )
    dispatch_poll_timeout: float = Field(0.5, gt=0, description="Seconds a poll waits.")

    @model_validator(mode="after")
    def _provider_configured(self) -> DispatchSettings:
        if self.email_provider == "sendgrid" and not self.sendgrid_api_key:
            raise ConfigurationError(
                "CICLO_SENDGRID_API_KEY is required when CICLO_EMAIL_PROVIDER=sendgrid"
            )
        if self.env == "production" and self.email_provider == "sink":
            raise ConfigurationError(
                "CICLO_ENV=production needs a real CICLO_EMAIL_PROVIDER, not the local sink"
            )
        try:
            base = public_base(self.public_url)
        except ValueError as exc:
            # Every send builds its links from it: refuse at start, not on each message.
            raise ConfigurationError(f"CICLO_PUBLIC_URL {exc}") from None
        parts = urlsplit(base)
        if self.env == "production" and (
            parts.scheme != "https" or parts.hostname in ("localhost", "127.0.0.1", "::1")
        ):
            raise ConfigurationError(
                "CICLO_ENV=production needs CICLO_PUBLIC_URL to be the https:// address where "
                "recipients reach Ciclo (one-click unsubscribe links must be HTTPS, RFC 8058), "
                f"not {self.public_url!r}"
            )
        if (
            self.env == "production"
            and self.unsubscribe_secret.get_secret_value() == "ciclo-development-unsubscribe-secret"
        ):
            raise ConfigurationError(
                "CICLO_ENV=production needs its own CICLO_UNSUBSCRIBE_SECRET (it signs "
                "unsubscribe links)"
            )
        return self
