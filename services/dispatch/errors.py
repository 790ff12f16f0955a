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
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AmbiguousSendError(SendError):
    pass
