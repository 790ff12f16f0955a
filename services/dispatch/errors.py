"""Errors of the dispatch service.

DispatchError
├── TemplateError          a template is missing or does not render (undefined variable…)
└── SendError              a provider refused or failed a send
    ├── PermanentSendError   never retried (4xx other than 408/429, bad address)
    │   └── NotSentError       refused before any request reached the provider (wrong
    │                          channel, a number not in E.164, an id too long): says nothing
    │                          about the provider's health
    ├── TransientSendError   retried with backoff (429, 5xx, connection refused); retry_after
    │                        (seconds, or the time the provider named), turned into a wait on
    │                        the dispatcher's clock by ``wait``
    └── AmbiguousSendError   the request may have left but no answer came (read timeout)
"""

from __future__ import annotations

from datetime import datetime

from shared.errors import CicloError

MAX_RETRY_AFTER = 86_400.0
"""The longest wait a provider's answer is taken to ask for (a day): a larger value still holds
the message, for a day, rather than overflow the date it is held until."""


class DispatchError(CicloError):
    pass


class TemplateError(DispatchError):
    pass


class SendError(DispatchError):
    pass


class PermanentSendError(SendError):
    pass


class OptedOutError(PermanentSendError):
    """The provider refused because the recipient opted out with it (an SMS STOP reply, Twilio
    21610): the message fails, and the address is suppressed for marketing and its marketing
    consent revoked, as when the provider reports the opt-out in a status callback."""


class NotSentError(PermanentSendError):
    """The provider adapter refused the message before sending anything: the provider was not
    asked, so its circuit breaker neither closes nor opens on it."""


class TransientSendError(SendError):
    """``retry_after``: how long the provider asked us to wait, if it said: seconds, or the time
    to come back at (an HTTP date, an epoch reset), which only a clock turns into a wait (see
    ``wait``). ``throttled``: the provider refused for a rate limit (429), so it is healthy and
    its circuit stays closed."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | datetime | None = None,
        throttled: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled or retry_after is not None

    def wait(self, now: datetime) -> float | None:
        """Seconds to wait from ``now`` (the dispatcher's clock, so a simulation or a test on a
        fake clock waits what the provider asked): 0 for a time already past, at most
        ``MAX_RETRY_AFTER``; None when the provider did not say."""
        if isinstance(self.retry_after, datetime):
            seconds = (self.retry_after - now).total_seconds()
            return min(MAX_RETRY_AFTER, max(0.0, seconds))
        return self.retry_after


class AmbiguousSendError(SendError):
    pass
