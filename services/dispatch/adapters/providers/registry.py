"""Builds the provider a configuration describes: the one place that knows every kind."""

from __future__ import annotations

from typing import assert_never

import httpx

from services.dispatch.adapters.providers.base import Provider, TransactionalProvider
from services.dispatch.adapters.providers.mailgun import MailgunProvider
from services.dispatch.adapters.providers.postmark import PostmarkProvider
from services.dispatch.adapters.providers.sendgrid import SendGridProvider
from services.dispatch.adapters.providers.sink import SinkProvider
from services.dispatch.adapters.providers.twilio import TwilioProvider
from services.dispatch.adapters.providers.vonage import VonageProvider
from services.dispatch.adapters.providers.webhook import WebhookProvider
from services.dispatch.domain.providers import (
    MailgunConfig,
    PostmarkConfig,
    ProviderConfig,
    SendGridConfig,
    SinkConfig,
    TwilioConfig,
    VonageConfig,
    WebhookConfig,
)

SMS_TEXT_LIMITS: dict[str, int] = {
    TwilioProvider.name: TwilioProvider.max_text,
    VonageProvider.name: VonageProvider.max_text,
}
"""The longest SMS text each SMS provider takes, in characters as they count them (UTF-16 code
units, see ``services.dispatch.domain.sms.characters``); each refuses a longer one before any
request. The generic webhook and the sink take any length."""


def build_provider(
    config: ProviderConfig, client: httpx.AsyncClient
) -> Provider | TransactionalProvider:
    """The provider for ``config``, sending through ``client`` (whose timeouts and connection
    limits apply to every HTTP provider it serves)."""
    match config:
        case SinkConfig():
            return SinkProvider()
        case SendGridConfig():
            return SendGridProvider.from_config(client, config)
        case MailgunConfig():
            return MailgunProvider(client, config)
        case PostmarkConfig():
            return PostmarkProvider(client, config)
        case TwilioConfig():
            return TwilioProvider(client, config)
        case VonageConfig():
            return VonageProvider(client, config)
        case WebhookConfig():
            return WebhookProvider(client, config)
        case _:
            assert_never(config)
