"""Time, in one place: always aware UTC. SQLite hands back naive datetimes."""

from __future__ import annotations

from datetime import UTC, datetime

from commcredits.errors import ValidationFailed


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC. A time given by a client near year 1 or 9999 may
    have no UTC form (0001-01-01T00:00:00+14:00): that is bad input, not a crash."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValidationFailed(_out_of_range("a time", value)) from exc


def client_instant(name: str, value: datetime | None) -> datetime | None:
    """A time from a query string or body, in UTC; 422 naming ``name`` when it
    has no UTC form."""
    if value is None:
        return None
    try:
        return as_utc(value)
    except ValidationFailed:
        raise ValidationFailed(_out_of_range(name, value)) from None


def _out_of_range(name: str, value: datetime) -> str:
    return (
        f"{name}: {value.isoformat()} is out of range; in UTC it would fall before "
        "year 1 or after year 9999"
    )


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = as_utc(value)
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")
