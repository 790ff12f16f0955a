"""Errors the plumbing raises. Services define their own hierarchies on top.

CicloError
├── ConfigurationError      a setting is missing, malformed or unsafe
├── BusError                the bus refused or lost contact (adapters translate library errors)
│   └── BusClosedError      used after close()
└── DatabaseError           the database refused or lost contact
"""

from __future__ import annotations


class CicloError(Exception):
    """Base of every error raised by Ciclo code."""


class ConfigurationError(CicloError):
    """A setting is missing, malformed or unsafe for the chosen environment."""


class BusError(CicloError):
    """The bus could not accept or deliver records."""


class BusClosedError(BusError):
    """The publisher or consumer was used after it was closed."""


class DatabaseError(CicloError):
    """The database could not be reached or refused the operation."""


class PoisonRecordError(CicloError):
    """A consumed record can never be processed (undecodable, invalid contract): dead-letter it
    at once instead of retrying."""
