"""The one clock. Services take `now` from here so tests can move time."""
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

_frozen: datetime | None = None


def now() -> datetime:
    """The current instant, timezone-aware, in UTC."""
    return _frozen if _frozen is not None else datetime.now(timezone.utc)


@contextmanager
def frozen_at(instant: datetime) -> Iterator[None]:
    """Make `now()` answer `instant` inside the block (tests and `--as-of` runs)."""
    global _frozen
    previous, _frozen = _frozen, as_utc(instant)
    try:
        yield
    finally:
        _frozen = previous


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def local_date(instant: datetime, tz_name: str) -> date:
    """The calendar date of `instant` in the deployment's time zone."""
    return as_utc(instant).astimezone(ZoneInfo(tz_name)).date()


def start_of_local_day(day: date, tz_name: str) -> datetime:
    """The UTC instant at which local `day` begins."""
    return datetime.combine(day, time.min, ZoneInfo(tz_name)).astimezone(timezone.utc)


def end_of_local_day(day: date, tz_name: str) -> datetime:
    """The UTC instant at which local `day` ends (the next day's start): an exclusive bound."""
    return start_of_local_day(day + timedelta(days=1), tz_name)
