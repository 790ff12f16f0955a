"""Errors of the dispatch service.

DispatchError
├── TemplateError          a template is missing or does not render (undefined variable…)
└── SendError              a provider refused or failed a send
    ├── PermanentSendError   never retried (4xx other than 408/429, bad address)
    ├── TransientSendError   retried with backoff (429, 5xx, connection refused); retry_after
    └── AmbiguousSendError   the request may have left but no answer came (read timeout)
"""

from __future__ import annotations

from shared.errors import CicloError


class DispatchError(CicloError):
    pass


class TemplateError(DispatchError):
    pass


class SendError(DispatchError):
    pass


class PermanentSendError(SendError):
    pass


class TransientSendError(SendError):
    """``retry_after``: how long the provider asked us to wait, if it said; ``throttled``: the
    provider refused for a rate limit (429), so it is healthy and its circuit stays closed."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, throttled: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled or retry_after is not None


class AmbiguousSendError(SendError):
    pass
