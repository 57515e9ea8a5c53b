"""Minute pools: months cut in the tenant's timezone, and pool sizes (SPEC §2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commcredits.core.catalog import PlanRow, Plans
from commcredits.core.pools import (
    POOL_KINDS,
    InvalidMonth,
    LicensedUser,
    current_month,
    month_bounds,
    month_of,
    pool_sizes,
)

DOMESTIC = "calling_plan_domestic"
INTERNATIONAL = "calling_plan_international"
PAYG = "calling_plan_payg"
CONFERENCING = "audio_conferencing"
CREDITS = "communications_credits"

# --- months --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "zone", "month"),
    [
        (datetime(2026, 3, 1, 3, 0, tzinfo=UTC), "America/New_York", "2026-02"),
        (datetime(2026, 3, 1, 5, 0, tzinfo=UTC), "America/New_York", "2026-03"),
        (datetime(2026, 3, 1, 3, 0, tzinfo=UTC), "UTC", "2026-03"),
        (datetime(2026, 2, 28, 23, 30, tzinfo=UTC), "Europe/Berlin", "2026-03"),
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), "Pacific/Honolulu", "2025-12"),
        (datetime(2025, 12, 31, 11, 0, tzinfo=UTC), "Pacific/Kiritimati", "2026-01"),  # UTC+14
        (datetime(2026, 3, 31, 18, 30, tzinfo=UTC), "Asia/Kolkata", "2026-04"),  # UTC+5:30
        # Another offset on the input changes nothing: it is the same instant.
        (datetime(2026, 2, 28, 22, 0, tzinfo=timezone(timedelta(hours=-5))), "UTC", "2026-03"),
    ],
)
def test_month_of(instant: datetime, zone: str, month: str) -> None:
    assert month_of(instant, zone) == month
    assert current_month(instant, zone) == month


def test_month_of_refuses_naive_datetimes() -> None:
    with pytest.raises(AssertionError):
        month_of(datetime(2026, 3, 1), "UTC")


def test_month_bounds_in_new_york() -> None:
    # EST (UTC-5) at the start of March; EDT (UTC-4) from 8 March, so April starts at 04:00Z.
    assert month_bounds("2026-03", "America/New_York") == (
        datetime(2026, 3, 1, 5, 0, tzinfo=UTC),
        datetime(2026, 4, 1, 4, 0, tzinfo=UTC),
    )


def test_month_bounds_across_the_year_end() -> None:
    assert month_bounds("2025-12", "UTC") == (
        datetime(2025, 12, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_month_bounds_when_dst_skips_midnight() -> None:
    # Cairo moved its clocks from 00:00 to 01:00 on 2014-08-01: August began at
    # 01:00 local, 22:00Z the day before; midnight of the 1st never happened.
    start, _ = month_bounds("2014-08", "Africa/Cairo")
    assert start == datetime(2014, 7, 31, 22, 0, tzinfo=UTC)
    assert month_of(start, "Africa/Cairo") == "2014-08"
    assert month_of(start - timedelta(microseconds=1), "Africa/Cairo") == "2014-07"
    assert month_bounds("2014-07", "Africa/Cairo")[1] == start


ZONES = [
    "UTC",
    "America/New_York",
    "America/Santiago",
    "America/Asuncion",  # DST began at midnight on the 1st in several years
    "Africa/Cairo",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Pacific/Kiritimati",
    "America/St_Johns",
]


@given(
    year=st.integers(min_value=1971, max_value=2100),
    month_number=st.integers(min_value=1, max_value=12),
    zone=st.sampled_from(ZONES),
)
def test_month_bounds_agree_with_month_of(year: int, month_number: int, zone: str) -> None:
    month = f"{year:04d}-{month_number:02d}"
    start, end = month_bounds(month, zone)
    assert start.tzinfo is UTC and end.tzinfo is UTC
    assert month_of(start, zone) == month
    assert month_of(end - timedelta(microseconds=1), zone) == month
    assert month_of(start - timedelta(microseconds=1), zone) != month
    assert month_of(end, zone) != month
    assert timedelta(days=27) < end - start < timedelta(days=32)
    # Months tile time: one ends where the next begins.
    next_month = (
        f"{year + 1:04d}-01" if month_number == 12 else f"{year:04d}-{month_number + 1:02d}"
    )
    assert month_bounds(next_month, zone)[0] == end


@pytest.mark.parametrize(
    "month", ["2026-3", "2026-13", "2026-00", "26-03", "2026/03", "2026-03-01", "", "abcd-ef"]
)
def test_bad_months_are_refused(month: str) -> None:
    with pytest.raises(InvalidMonth):
        month_bounds(month, "UTC")


def test_invalid_month_is_a_value_error() -> None:
    assert issubclass(InvalidMonth, ValueError)


# --- pool sizes ---------------------------------------------------------------------


PLANS = Plans(
    plans=(
        PlanRow(DOMESTIC, "US", 3000, 0),
        PlanRow(INTERNATIONAL, "US", 3000, 600),
        PlanRow(DOMESTIC, "GB", 1200, 0),
        PlanRow(INTERNATIONAL, "GB", 1200, 600),
        PlanRow(INTERNATIONAL, "DE", 1000, 0),
        # A domestic plan listing international minutes: they give nothing (rule 3).
        PlanRow(DOMESTIC, "FR", 500, 100),
    ),
    conference_minutes_per_license=60,
    conference_included_zone=frozenset({"US", "GB"}),
)


def user(country: str, *licenses: str) -> LicensedUser:
    return LicensedUser(usage_location=country, licenses=frozenset(licenses))


def test_pool_kinds() -> None:
    assert POOL_KINDS == ("domestic", "international", "conference_dialout")


def test_no_users_no_pools() -> None:
    assert pool_sizes([], PLANS) == {}


def test_domestic_pool_sums_users_of_a_country() -> None:
    sizes = pool_sizes([user("US", DOMESTIC), user("US", DOMESTIC), user("GB", DOMESTIC)], PLANS)
    assert sizes == {("domestic", "US"): 2 * 3000 * 60, ("domestic", "GB"): 1200 * 60}


def test_international_plan_gives_both_pools() -> None:
    assert pool_sizes([user("US", INTERNATIONAL)], PLANS) == {
        ("domestic", "US"): 3000 * 60,
        ("international", "US"): 600 * 60,
    }


def test_user_with_both_plans_counts_once_with_the_larger() -> None:
    plans = Plans(
        plans=(PlanRow(DOMESTIC, "US", 3000, 0), PlanRow(INTERNATIONAL, "US", 2000, 600)),
        conference_minutes_per_license=0,
        conference_included_zone=frozenset(),
    )
    assert pool_sizes([user("US", DOMESTIC, INTERNATIONAL)], plans) == {
        ("domestic", "US"): 3000 * 60,
        ("international", "US"): 600 * 60,
    }


def test_domestic_plan_international_minutes_give_nothing() -> None:
    assert pool_sizes([user("FR", DOMESTIC)], PLANS) == {("domestic", "FR"): 500 * 60}


def test_country_without_plan_minutes_has_no_pool() -> None:
    assert pool_sizes([user("JP", DOMESTIC, INTERNATIONAL)], PLANS) == {}
    # International minutes 0 for DE: only the domestic pool appears.
    assert pool_sizes([user("DE", INTERNATIONAL)], PLANS) == {("domestic", "DE"): 1000 * 60}


def test_other_licenses_give_no_calling_minutes() -> None:
    assert pool_sizes([user("US", PAYG, CREDITS)], PLANS) == {}


def test_conference_pool_is_per_tenant_with_no_country() -> None:
    sizes = pool_sizes(
        [user("US", CONFERENCING), user("DE", CONFERENCING), user("JP", CONFERENCING, DOMESTIC)],
        PLANS,
    )
    assert sizes == {("conference_dialout", None): 3 * 60 * 60}


def test_mixed_tenant() -> None:
    users = [
        user("US", DOMESTIC, CONFERENCING, CREDITS),
        user("US", INTERNATIONAL),
        user("GB", INTERNATIONAL, CONFERENCING),
        user("GB", PAYG),
        user("US"),
    ]
    assert pool_sizes(users, PLANS) == {
        ("domestic", "US"): (3000 + 3000) * 60,
        ("international", "US"): 600 * 60,
        ("domestic", "GB"): 1200 * 60,
        ("international", "GB"): 600 * 60,
        ("conference_dialout", None): 2 * 60 * 60,
    }


def test_pool_sizes_accepts_any_iterable() -> None:
    assert pool_sizes(iter([user("US", DOMESTIC)]), PLANS) == {("domestic", "US"): 3000 * 60}
