"""Settings of the ingest service.

Authentication, rate limits and body limits are server settings (every HTTP process has them,
see shared.settings.ServerSettings); what is ingest's alone goes here.
"""

from __future__ import annotations

from shared.settings import CommonSettings


class IngestSettings(CommonSettings):
    """The ingest service's settings (currently only the common ones)."""
