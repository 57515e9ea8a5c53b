"""Minute pools: the tenant's month, and how many included seconds each pool holds.

SPEC §2 "Minute pools": calling-plan minutes are pooled per tenant, per
country (the users' `usage_location`), per calendar month in the tenant's
timezone; domestic and international pools are separate; audio conferencing
has one dial-out pool per tenant and month, whose country is None.

Pool sizes are in seconds: the pools are drawn in billed seconds (after the
rate deck's increments), so a 61 s call on a 60/60 deck takes 120 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

from commcredits.core.catalog import Plans

__all__ = [
    "POOL_KINDS",
    "SKUS",
    "SKU_AUDIO_CONFERENCING",
    "SKU_CALLING_PLAN_DOMESTIC",
    "SKU_CALLING_PLAN_INTERNATIONAL",
    "SKU_CALLING_PLAN_PAYG",
    "SKU_COMMUNICATIONS_CREDITS",
    "InvalidMonth",
    "LicensedUser",
    "PoolKey",
    "PoolKind",
    "current_month",
    "month_bounds",
    "month_of",
    "pool_sizes",
]

# The licenses of SPEC §2.
SKU_CALLING_PLAN_DOMESTIC: Final = "calling_plan_domestic"
SKU_CALLING_PLAN_INTERNATIONAL: Final = "calling_plan_international"
SKU_CALLING_PLAN_PAYG: Final = "calling_plan_payg"
SKU_AUDIO_CONFERENCING: Final = "audio_conferencing"
SKU_COMMUNICATIONS_CREDITS: Final = "communications_credits"
SKUS: Final[tuple[str, ...]] = (
    SKU_CALLING_PLAN_DOMESTIC,
    SKU_CALLING_PLAN_INTERNATIONAL,
    SKU_CALLING_PLAN_PAYG,
    SKU_AUDIO_CONFERENCING,
    SKU_COMMUNICATIONS_CREDITS,
)

PoolKind = Literal["domestic", "international", "conference_dialout"]
POOL_KINDS: Final[tuple[PoolKind, ...]] = ("domestic", "international", "conference_dialout")
# (pool kind, usage_location); the country is None for the conferencing pool.
PoolKey = tuple[PoolKind, str | None]

SECONDS_PER_MINUTE: Final = 60

_MONTH_PATTERN: Final = re.compile(r"([0-9]{4})-([0-9]{2})")
# Months outside these years are typos; the upper bound also keeps the month
# after the last one (and its UTC conversion) inside datetime's range.
MIN_MONTH_YEAR: Final = 1970
MAX_MONTH_YEAR: Final = 9998


class InvalidMonth(ValueError):
    """A month that is not written YYYY-MM (01 to 12)."""


@dataclass(frozen=True)
class LicensedUser:
    usage_location: str  # ISO 3166 alpha-2
    licenses: frozenset[str]


def month_of(instant: datetime, timezone: str) -> str:
    """The calendar month ("YYYY-MM") `instant` falls in, in the tenant's timezone."""
    # A naive datetime would be read as the server's local time: a silent wrong month.
    assert instant.tzinfo is not None and instant.utcoffset() is not None, instant
    local = instant.astimezone(ZoneInfo(timezone))
    return f"{local.year:04d}-{local.month:02d}"


def current_month(now: datetime, timezone: str) -> str:
    """This month in the tenant's timezone; `now` is passed in to keep the core clock-free."""
    return month_of(now, timezone)


def month_bounds(month: str, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) of a month of the tenant's timezone, as aware UTC datetimes."""
    year, month_number = _parse_month(month)
    zone = ZoneInfo(timezone)
    next_year, next_month_number = (year + 1, 1) if month_number == 12 else (year, month_number + 1)
    # Local midnight of the 1st; if a DST gap swallows that midnight, fold=0
    # resolves it with the offset in force before the gap, which is exactly the
    # instant the gap starts, so the bound is still the month's first instant.
    start_utc = datetime(year, month_number, 1, tzinfo=zone).astimezone(UTC)
    end_utc = datetime(next_year, next_month_number, 1, tzinfo=zone).astimezone(UTC)
    assert start_utc < end_utc
    assert month_of(start_utc, timezone) == month, (month, timezone, start_utc)
    assert month_of(end_utc - timedelta(microseconds=1), timezone) == month
    return start_utc, end_utc


def pool_sizes(users: Iterable[LicensedUser], plans: Plans) -> dict[PoolKey, int]:
    """Size in seconds of every non-empty pool that these users' licenses give.

    Domestic pool of country C: each user in C holding a calling plan gives the
    domestic minutes of their plan for C, once (the larger, when they hold both
    plans). International pool of C: each user in C holding the international
    plan gives its international minutes for C. A domestic-only plan's
    international minutes, if a catalog lists any, give nothing: SPEC §3 rule 3
    draws the international pool for international-plan holders only.
    Conference dial-out pool: minutes per license × users holding
    audio_conferencing.
    """
    minutes: dict[PoolKey, int] = {}

    def add(key: PoolKey, pool_minutes: int) -> None:
        assert pool_minutes >= 0, (key, pool_minutes)
        if pool_minutes:
            minutes[key] = minutes.get(key, 0) + pool_minutes

    for user in users:
        country = user.usage_location
        domestic_minutes = max(
            (
                plans.minutes_for(sku, country)[0]
                for sku in (SKU_CALLING_PLAN_DOMESTIC, SKU_CALLING_PLAN_INTERNATIONAL)
                if sku in user.licenses
            ),
            default=0,
        )
        add(("domestic", country), domestic_minutes)
        if SKU_CALLING_PLAN_INTERNATIONAL in user.licenses:
            add(
                ("international", country),
                plans.minutes_for(SKU_CALLING_PLAN_INTERNATIONAL, country)[1],
            )
        if SKU_AUDIO_CONFERENCING in user.licenses:
            add(("conference_dialout", None), plans.conference_minutes_per_license)
    return {key: pool_minutes * SECONDS_PER_MINUTE for key, pool_minutes in minutes.items()}


def _parse_month(month: str) -> tuple[int, int]:
    match = _MONTH_PATTERN.fullmatch(month)
    if (
        match is None
        or not 1 <= int(match.group(2)) <= 12
        or not MIN_MONTH_YEAR <= int(match.group(1)) <= MAX_MONTH_YEAR
    ):
        raise InvalidMonth(
            f"month {month!r} is not YYYY-MM (years {MIN_MONTH_YEAR} to {MAX_MONTH_YEAR}), "
            "e.g. '2026-03'"
        )
    return int(match.group(1)), int(match.group(2))
