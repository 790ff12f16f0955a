"""Which verification and parsing a provider's webhook gets, chosen by the workspace's provider
configuration. Pure: the caller supplies the request, the configuration and the time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from services.dispatch.domain.providers import (
    MailgunConfig,
    PostmarkConfig,
    ProviderConfig,
    SendGridConfig,
    TwilioConfig,
    VonageConfig,
)
from services.dispatch.webhooks import mailgun, postmark, sendgrid, twilio, vonage
from services.dispatch.webhooks.model import Batch, WebhookAuthError, WebhookRequest
from services.dispatch.webhooks.wire import digest, form

KINDS = ("sendgrid", "mailgun", "postmark", "twilio", "vonage")


@dataclass(frozen=True, slots=True)
class Nonce:
    """A single-use value of a verified request that must be recorded, and refused if it was
    recorded before (Mailgun's token): ``namespace`` is its provider in the dedupe table."""

    namespace: str
    value: str


def authenticate(config: ProviderConfig, request: WebhookRequest, *, now: datetime) -> Nonce | None:
    """Raise ``WebhookAuthError`` unless the request comes from the configured provider account;
    the nonce to record, for a provider that has one."""
    headers = request.headers
    if isinstance(config, SendGridConfig):
        sendgrid.verify(
            public_key=_secret(config.webhook_public_key, "sendgrid", "webhook_public_key"),
            body=request.body,
            signature=headers.get(sendgrid.SIGNATURE_HEADER.lower()),
            timestamp=headers.get(sendgrid.TIMESTAMP_HEADER.lower()),
            now=now,
        )
        return None
    if isinstance(config, MailgunConfig):
        key = _secret(config.webhook_signing_key, "mailgun", "webhook_signing_key")
        timestamp, token, signature = mailgun.signature_block(request.body)
        mailgun.verify(
            signing_key=key, timestamp=timestamp, token=token, signature=signature, now=now
        )
        # Mailgun's tokens are 50 characters; a longer one still fits the key column as a hash.
        value = token if len(token) <= 200 else digest(token)
        return Nonce(mailgun.TOKEN_PROVIDER, value)
    if isinstance(config, PostmarkConfig):
        postmark.verify(
            username=_secret(config.webhook_username, "postmark", "webhook_username"),
            password=_secret(config.webhook_password, "postmark", "webhook_password"),
            authorization=headers.get("authorization"),
        )
        return None
    if isinstance(config, TwilioConfig):
        twilio.verify(
            auth_token=config.auth_token,
            urls=_twilio_urls(request.url, config.status_callback),
            params=form(request.body, provider="Twilio"),
            signature=headers.get(twilio.SIGNATURE_HEADER.lower()),
        )
        return None
    if isinstance(config, VonageConfig):
        vonage.verify(
            signature_secret=_secret(config.signature_secret, "vonage", "signature_secret"),
            body=request.body,
            authorization=headers.get("authorization"),
            now=now,
        )
        return None
    raise WebhookAuthError(f"{config.kind} sends no webhooks Ciclo reads")


def parse(kind: str, request: WebhookRequest, *, received_at: datetime) -> Batch:
    """The engagements of a verified request; ``received_at`` stands in for a provider that
    tells no event time (Twilio). A batch (SendGrid) skips and lists its malformed events; a
    provider that sends one event per request raises ``WebhookPayloadError`` for a malformed one,
    as there is nothing else in the request to record."""
    if kind == "sendgrid":
        return sendgrid.parse(request.body)
    if kind == "mailgun":
        return Batch(mailgun.parse(request.body))
    if kind == "postmark":
        return Batch(postmark.parse(request.body))
    if kind == "twilio":
        return Batch(twilio.parse(request.body, url=request.url, received_at=received_at))
    if kind == "vonage":
        return Batch(vonage.parse(request.body))
    raise ValueError(f"no webhook parser for {kind!r}")


def _secret(value: str | None, provider: str, name: str) -> str:
    if not value:
        raise WebhookAuthError(
            f"this workspace's {provider} configuration has no {name}: set it to accept "
            f"{provider}'s webhooks"
        )
    return value


def _twilio_urls(called: str, configured: str | None) -> list[str]:
    """The URL as Ciclo saw it, and the configured StatusCallback with the query actually
    called: the latter is right even behind a proxy that hides the public host."""
    urls = [called]
    if configured:
        base = urlsplit(configured)
        query = urlsplit(called).query
        urls.append(urlunsplit(base._replace(query=query)))
    return urls
