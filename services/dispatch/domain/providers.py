"""Provider configuration: one model per provider kind, validated when it is saved.

A workspace configures a primary and an optional fallback provider per channel (table
``dispatch_providers``); a workspace with none uses the process-wide provider of the settings
(``CICLO_EMAIL_PROVIDER``…), which in development is the local sink. Secret fields are kept in the
database and never shown back: ``public()`` masks them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from pydantic_core import PydanticCustomError

Channel = Literal["email", "sms"]

MASK = "***"
"""How the API shows a secret; given back on save, it stands for the secret already stored."""

_WEBHOOK_SECRET_MIN = 16

_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
"""An E.164 phone number: ``+`` and 7 to 15 digits (senders here, recipients at send time)."""
_VONAGE_DIGITS = re.compile(r"^[1-9][0-9]{6,14}$")  # E.164 as Vonage writes it, without the +
# An alphanumeric sender id: up to 11 characters, at least one letter (all digits is a number).
_ALPHANUMERIC = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    secrets: ClassVar[tuple[str, ...]] = ()
    channels: ClassVar[tuple[Channel, ...]] = ()

    def problems(self) -> list[tuple[str, str]]:
        """What would make every send fail, as (field, message): checked when a configuration
        is saved over the API, not when a stored one is loaded (a row saved before a check was
        added must still load, and its sends say what is wrong)."""
        found = []
        base_url = getattr(self, "base_url", None)
        if isinstance(base_url, str) and not _URL.fullmatch(base_url):
            found.append(("base_url", "must be an absolute https:// (or http://) URL"))
        return found

    def public(self) -> dict[str, Any]:
        """The configuration as the API shows it: every secret replaced by ``"***"``."""
        data = self.model_dump(mode="json")
        for name in self.secrets:
            if data.get(name):
                data[name] = MASK
        return data

    def masked(self) -> list[str]:
        """The secrets given as ``"***"``: what ``public()`` showed, sent back unchanged."""
        return [name for name in self.secrets if getattr(self, name) == MASK]


class SinkConfig(_Config):
    kind: Literal["sink"] = "sink"
    channels = ("email", "sms")


class SendGridConfig(_Config):
    kind: Literal["sendgrid"] = "sendgrid"
    api_key: str = Field(min_length=1)
    base_url: str = "https://api.sendgrid.com"
    webhook_public_key: str | None = Field(
        None,
        description="The Event Webhook's ECDSA public key (base64 DER, as SendGrid shows it).",
    )
    secrets = ("api_key",)
    channels = ("email",)


class MailgunConfig(_Config):
    kind: Literal["mailgun"] = "mailgun"
    api_key: str = Field(min_length=1)
    domain: str = Field(min_length=1, description="The sending domain, e.g. mg.example.com.")
    base_url: str = Field("https://api.mailgun.net", description="EU: https://api.eu.mailgun.net")
    webhook_signing_key: str | None = None
    secrets = ("api_key", "webhook_signing_key")
    channels = ("email",)


class PostmarkConfig(_Config):
    kind: Literal["postmark"] = "postmark"
    server_token: str = Field(min_length=1)
    base_url: str = "https://api.postmarkapp.com"
    message_stream: str = Field(
        "outbound", description="Transactional stream; marketing uses `broadcast_stream`."
    )
    broadcast_stream: str = "broadcast"
    webhook_username: str | None = None
    webhook_password: str | None = None
    secrets = ("server_token", "webhook_password")
    channels = ("email",)


class TwilioConfig(_Config):
    kind: Literal["twilio"] = "twilio"
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: str = Field(min_length=1)
    from_number: str | None = Field(None, description="E.164 sender, or use a messaging service.")
    messaging_service_sid: str | None = Field(None, pattern=r"^MG[0-9a-fA-F]{32}$")
    base_url: str = "https://api.twilio.com"
    status_callback: str | None = Field(
        None, description="Public URL of Ciclo's Twilio webhook, sent as StatusCallback."
    )
    secrets = ("auth_token",)
    channels = ("sms",)

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if self.from_number is not None and not E164.fullmatch(self.from_number):
            found.append(("from_number", "must be an E.164 number, like +14155550100"))
        if self.status_callback is not None and not _URL.fullmatch(self.status_callback):
            found.append(("status_callback", "must be an absolute https:// (or http://) URL"))
        return found

    @model_validator(mode="after")
    def _sender(self) -> TwilioConfig:
        if not self.from_number and not self.messaging_service_sid:
            raise ValueError("give from_number or messaging_service_sid: Twilio needs a sender")
        return self


class VonageConfig(_Config):
    kind: Literal["vonage"] = "vonage"
    api_key: str = Field(min_length=1)
    api_secret: str = Field(min_length=1)
    from_number: str = Field(min_length=1, description="Sender number (E.164) or alphanumeric id.")
    base_url: str = "https://api.nexmo.com"
    signature_secret: str | None = Field(
        None, description="Signs Vonage's webhooks (JWT HS256 in the Authorization header)."
    )
    secrets = ("api_secret", "signature_secret")
    channels = ("sms",)

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        sender = self.from_number
        if not (
            E164.fullmatch(sender)
            or _VONAGE_DIGITS.fullmatch(sender)
            or _ALPHANUMERIC.fullmatch(sender)
        ):
            found.append(
                (
                    "from_number",
                    "must be an E.164 number (+14155550100) or an alphanumeric sender id of "
                    "up to 11 letters, digits and spaces",
                )
            )
        return found


class WebhookConfig(_Config):
    """A generic signed webhook: Ciclo POSTs the rendered message as JSON to ``url``."""

    kind: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://")
    secret: str = Field(description="Signs each request (HMAC-SHA256); at least 16 characters.")
    secrets = ("secret",)
    channels = ("email", "sms")

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        # Not min_length: the "***" that GET shows in its place (and the API swaps for the
        # stored secret before saving) must pass, or a read-edit-save of the provider fails.
        if value != MASK and len(value) < _WEBHOOK_SECRET_MIN:
            raise PydanticCustomError(
                "string_too_short",
                "String should have at least {min_length} characters",
                {"min_length": _WEBHOOK_SECRET_MIN},
            )
        return value


ProviderConfig = Annotated[
    SinkConfig
    | SendGridConfig
    | MailgunConfig
    | PostmarkConfig
    | TwilioConfig
    | VonageConfig
    | WebhookConfig,
    Field(discriminator="kind"),
]
PROVIDER_CONFIG: TypeAdapter[ProviderConfig] = TypeAdapter(ProviderConfig)
KINDS = ("sink", "sendgrid", "mailgun", "postmark", "twilio", "vonage", "webhook")


def parse_config(data: dict[str, Any]) -> ProviderConfig:
    """Validate a stored or posted configuration (raises pydantic's ValidationError)."""
    return PROVIDER_CONFIG.validate_python(data)
