"""``UtcDateTime`` binds on SQLite: its one-step processor writes the text that its
``process_bind_param`` followed by the SQLite dialect's own ``DATETIME`` processor wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from shared.db.types import UtcDateTime

SQLITE = sqlite.dialect()

INSTANTS = [
    datetime(2026, 11, 2, 9, 0, 8, 750000, tzinfo=UTC),
    datetime(2026, 11, 2, 9, 0, 8, tzinfo=UTC),  # no microseconds: still written with them
    datetime(2026, 3, 29, 2, 30, tzinfo=UTC),
    datetime(2026, 10, 25, 2, 30, 0, 1, tzinfo=ZoneInfo("Europe/Berlin")),
    datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=5, minutes=45))),
    datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-11))),
    datetime(1, 1, 1, 12, tzinfo=UTC),  # the year zero-padded to four digits
    datetime(999, 6, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


def _two_steps(value: datetime | None) -> str | None:
    """What SQLAlchemy's own composition writes: the decorator's parameter, then the
    dialect's ``DATETIME`` processor."""
    processor = sqlite.DATETIME().bind_processor(SQLITE)
    return processor(UtcDateTime().process_bind_param(value, SQLITE))


@pytest.mark.parametrize("value", INSTANTS, ids=str)
def test_sqlite_text_is_what_the_two_processors_wrote(value: datetime) -> None:
    bind = UtcDateTime()._cached_bind_processor(SQLITE)
    assert bind is not None
    assert bind(value) == _two_steps(value)


def test_sqlite_none_stays_none_and_a_naive_instant_is_refused() -> None:
    bind = UtcDateTime()._cached_bind_processor(SQLITE)
    assert bind is not None
    assert bind(None) is None
    with pytest.raises(ValueError, match="naive datetime"):
        bind(datetime(2026, 11, 2, 9))


def test_postgresql_keeps_the_aware_utc_instant() -> None:
    bind = UtcDateTime()._cached_bind_processor(postgresql.asyncpg.dialect())
    value = INSTANTS[4]
    bound = value if bind is None else bind(value)
    assert bound == value and bound.utcoffset() == timedelta(0)
