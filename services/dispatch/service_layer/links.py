"""The unsubscribe link of every message: a signed token naming workspace, customer, channel,
address and message, as List-Unsubscribe headers (marketing email) and as the template
variables ``unsubscribe_url`` and ``preferences_url`` (every message, for the link in the body)."""

from __future__ import annotations

from dataclasses import dataclass

from services.dispatch.domain.unsubscribe import (
    list_unsubscribe_headers,
    preferences_url,
    sign,
    unsubscribe_url,
)
from shared.contracts.messages import MessageRequest


@dataclass(frozen=True, slots=True)
class SignedLinks:
    public_url: str
    secret: str
    mailto: str = ""

    def for_message(
        self, request: MessageRequest, address: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        token = sign(
            workspace_id=request.workspace_id,
            customer_id=request.customer_id,
            channel=request.channel,
            address=address,
            message_id=request.message_id,
            secret=self.secret,
        )
        headers = list_unsubscribe_headers(
            public_url=self.public_url, token=token, mailto=self.mailto
        )
        return headers, {
            "unsubscribe_url": unsubscribe_url(self.public_url, token),
            "preferences_url": preferences_url(self.public_url, token),
        }
