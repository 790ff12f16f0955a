"""Errors of the journey service.

JourneyError
└── InvalidJourney      a definition does not validate, or uses what the engine does not run
                        yet (names the file, JSON path and problem)
"""

from __future__ import annotations

from shared.errors import CicloError


class JourneyError(CicloError):
    pass


class InvalidJourney(JourneyError):
    pass
