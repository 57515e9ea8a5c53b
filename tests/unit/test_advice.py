"""Funding advice (core/advice.py): hand-computed cases and properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commcredits.core.advice import (
    LOOKBACK_DAYS,
    MIN_DAYS_WITH_USAGE,
    MIN_HISTORY_DAYS,
    recommend,
)

MINIMUM = Decimal(50)

# A day's spend: whole cents up to 100,000.00.
day_charges = st.integers(min_value=0, max_value=10_000_000).map(lambda cents: Decimal(cents) / 100)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Decimal], int]:
    history_days = draw(st.integers(min_value=0, max_value=LOOKBACK_DAYS))
    charges = draw(st.lists(day_charges, max_size=history_days))
    return charges, history_days


def amounts(charges: list[Decimal], history_days: int) -> tuple[Decimal, Decimal, Decimal]:
    advised = recommend(charges, history_days)
    return (
        advised.one_time_amount,
        advised.auto_recharge_threshold,
        advised.auto_recharge_amount,
    )


def test_steady_usage_by_hand() -> None:
    # 45 days: 44 days at 12.05 and one peak day at 48.10 -> total 578.30.
    charges = [Decimal("12.05")] * 44 + [Decimal("48.10")]
    advised = recommend(charges, 45)
    assert advised.enough_history
    assert advised.total_charge == Decimal("578.30")
    assert advised.average_daily.quantize(Decimal("0.0001")) == Decimal("12.8511")
    assert advised.peak_daily == Decimal("48.10")
    # threshold 3 × 48.10 = 144.30 -> 150; amount 14 × 12.8511 = 179.92 -> 180;
    # one-time 30 × 12.8511 = 385.53 -> 390.
    assert advised.auto_recharge_threshold == Decimal(150)
    assert advised.auto_recharge_amount == Decimal(180)
    assert advised.one_time_amount == Decimal(390)
    assert "45 days" in advised.note


def test_exact_multiples_are_not_pushed_up_a_step() -> None:
    # 140 over 21 days: 30 days of average is exactly 200. Dividing first would
    # give 6.666...67 × 30 = 200.000...01, rounded up to 210.
    advised = recommend([Decimal(20)] * 7, 21)
    assert advised.one_time_amount == Decimal(200)
    assert advised.auto_recharge_amount == Decimal(100)  # 140 × 14 / 21 = 93.33
    assert advised.auto_recharge_threshold == Decimal(60)  # 3 × 20


def test_small_usage_gets_the_minimum() -> None:
    advised = recommend([Decimal("0.10")] * 30, 30)
    assert advised.enough_history
    assert amounts([Decimal("0.10")] * 30, 30) == (MINIMUM, MINIMUM, MINIMUM)


@pytest.mark.parametrize(
    ("charges", "history_days", "reason"),
    [
        ([], 0, "0 days of history"),
        ([Decimal(500)] * 10, MIN_HISTORY_DAYS - 1, f"{MIN_HISTORY_DAYS - 1} days of history"),
        ([Decimal(500)] * (MIN_DAYS_WITH_USAGE - 1), 60, f"{MIN_DAYS_WITH_USAGE - 1} days with"),
        ([Decimal(0)] * 30, 30, "0 days with"),
    ],
)
def test_too_little_history_recommends_the_minimum(
    charges: list[Decimal], history_days: int, reason: str
) -> None:
    advised = recommend(charges, history_days)
    assert not advised.enough_history
    assert amounts(charges, history_days) == (MINIMUM, MINIMUM, MINIMUM)
    assert "Too little history" in advised.note and reason in advised.note
    # The basis is still reported as it is.
    assert advised.total_charge == sum(charges, Decimal(0))


@given(histories())
def test_every_amount_is_at_least_the_minimum(history: tuple[list[Decimal], int]) -> None:
    charges, history_days = history
    advised = recommend(charges, history_days)
    for amount in amounts(charges, history_days):
        assert amount >= MINIMUM
        assert amount % 10 == 0  # a tidy step
    assert advised.one_time_amount >= advised.auto_recharge_threshold
    if history_days:
        total = sum(charges, Decimal(0))
        assert abs(advised.average_daily * history_days - total) < Decimal("1e-25")


@given(histories(), st.data())
def test_more_spend_never_lowers_an_amount(
    history: tuple[list[Decimal], int], data: st.DataObject
) -> None:
    charges, history_days = history
    if not charges:
        return
    day = data.draw(st.integers(min_value=0, max_value=len(charges) - 1))
    extra = data.draw(day_charges)
    more = list(charges)
    more[day] += extra
    before = amounts(charges, history_days)
    after = amounts(more, history_days)
    assert all(a >= b for a, b in zip(after, before, strict=True)), (before, after)


@given(histories(), day_charges)
def test_another_day_of_spend_never_lowers_an_amount(
    history: tuple[list[Decimal], int], extra: Decimal
) -> None:
    charges, history_days = history
    if len(charges) >= history_days:
        return
    before = amounts(charges, history_days)
    after = amounts([*charges, extra], history_days)
    assert all(a >= b for a, b in zip(after, before, strict=True)), (before, after)


@given(histories())
def test_amounts_cover_the_rule_they_follow(history: tuple[list[Decimal], int]) -> None:
    charges, history_days = history
    advised = recommend(charges, history_days)
    if not advised.enough_history:
        assert amounts(charges, history_days) == (MINIMUM, MINIMUM, MINIMUM)
        return
    total = sum(charges, Decimal(0))
    # Rounded up, but by less than one step of 10 (unless the minimum lifted it).
    threshold = 3 * max(charges)
    assert threshold <= advised.auto_recharge_threshold < max(threshold + 10, MINIMUM + 10)
    recharge = total * 14 / history_days
    assert recharge <= advised.auto_recharge_amount < max(recharge + 10, MINIMUM + 10)
