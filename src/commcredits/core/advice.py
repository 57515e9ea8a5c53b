"""Funding advice: how much to buy once, and when and how much to auto-recharge
(SPEC §5 "Funding advice").

Input: the tenant's recent daily spend from credits (one total per day of its
timezone) and how many days of history those totals cover. Output: three
amounts, the figures they rest on, and a note an admin can read.

The rules, in days of usage (the seed: "after you gather a month or two of PSTN
usage ... adjust the amounts to meet the normal usage"):
- auto-recharge threshold: THRESHOLD_PEAK_DAYS days of the *peak* day, so that a
  failed recharge (say an expired card, which e-mails every admin) leaves time
  over a weekend to fix it before the balance runs dry on a busy day;
- auto-recharge amount: RECHARGE_AVERAGE_DAYS days of *average* usage, so a
  recharge happens about twice a month;
- one-time amount: ONE_TIME_AVERAGE_DAYS days of average usage (about a month,
  for a tenant that funds by hand), and never less than the threshold, so a
  balance funded with it does not trigger a recharge at once.
Each is rounded *up* to a multiple of ROUNDING_STEP whole currency units and is
never below MINIMUM_AMOUNT, the smallest purchase (SPEC §2). With too little
history every amount is the minimum, and the note says why.

Pure: no clock, no I/O. Every function is monotonic in usage: more spend on
any day never lowers an amount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Final

from commcredits.core.money import MONEY_CONTEXT

__all__ = [
    "LOOKBACK_DAYS",
    "MIN_DAYS_WITH_USAGE",
    "MIN_HISTORY_DAYS",
    "MINIMUM_AMOUNT",
    "Recommendation",
    "recommend",
]

# SPEC §2: the smallest purchase, in the tenant currency; no advice goes below it.
MINIMUM_AMOUNT: Final = Decimal(50)
# "A month or two" of usage (the seed): the advice looks at most this far back.
LOOKBACK_DAYS: Final = 60
# Fewer days than these and the figures say more about chance than about habits.
MIN_HISTORY_DAYS: Final = 14
MIN_DAYS_WITH_USAGE: Final = 7
THRESHOLD_PEAK_DAYS: Final = 3
RECHARGE_AVERAGE_DAYS: Final = 14
ONE_TIME_AVERAGE_DAYS: Final = 30
ROUNDING_STEP: Final = Decimal(10)


@dataclass(frozen=True)
class Recommendation:
    one_time_amount: Decimal
    auto_recharge_threshold: Decimal
    auto_recharge_amount: Decimal
    # The basis: days of history looked at, and the credit spend over them.
    days: int
    days_with_usage: int
    total_charge: Decimal
    average_daily: Decimal  # exactly total_charge / days (SPEC §5); 0 when days == 0
    peak_daily: Decimal
    enough_history: bool
    note: str


def recommend(daily_charges: Sequence[Decimal], history_days: int) -> Recommendation:
    """Advice from ``daily_charges`` (the credit spend of each day of the
    history that had any; days without spend may be left out or given as 0)
    over ``history_days`` days of history (at most LOOKBACK_DAYS)."""
    assert 0 <= history_days <= LOOKBACK_DAYS, history_days
    assert len(daily_charges) <= history_days, (len(daily_charges), history_days)
    assert all(charge >= 0 for charge in daily_charges), "a day's spend is never negative"

    total_charge = sum(daily_charges, Decimal(0))
    peak_daily = max(daily_charges, default=Decimal(0))
    days_with_usage = sum(1 for charge in daily_charges if charge > 0)
    average_daily = (
        MONEY_CONTEXT.divide(total_charge, Decimal(history_days)) if history_days else Decimal(0)
    )

    shortfalls = []
    if history_days < MIN_HISTORY_DAYS:
        shortfalls.append(f"{history_days} days of history (at least {MIN_HISTORY_DAYS} needed)")
    if days_with_usage < MIN_DAYS_WITH_USAGE:
        shortfalls.append(
            f"{days_with_usage} days with calls paid from credits "
            f"(at least {MIN_DAYS_WITH_USAGE} needed)"
        )
    if shortfalls:
        note = (
            "Too little history to size the amounts: "
            + " and ".join(shortfalls)
            + f". The minimum of {MINIMUM_AMOUNT} is recommended for each amount; "
            "check again after a month or two of usage."
        )
        return Recommendation(
            one_time_amount=MINIMUM_AMOUNT,
            auto_recharge_threshold=MINIMUM_AMOUNT,
            auto_recharge_amount=MINIMUM_AMOUNT,
            days=history_days,
            days_with_usage=days_with_usage,
            total_charge=total_charge,
            average_daily=average_daily,
            peak_daily=peak_daily,
            enough_history=False,
            note=note,
        )

    threshold = _tidy(MONEY_CONTEXT.multiply(peak_daily, THRESHOLD_PEAK_DAYS))
    recharge_amount = _tidy(_days_of_average(total_charge, history_days, RECHARGE_AVERAGE_DAYS))
    one_time_amount = max(
        _tidy(_days_of_average(total_charge, history_days, ONE_TIME_AVERAGE_DAYS)), threshold
    )
    note = (
        f"Based on {history_days} days of usage ({days_with_usage} with calls paid from "
        f"credits): one-time amount about {ONE_TIME_AVERAGE_DAYS} days of average usage, "
        f"auto-recharge threshold about {THRESHOLD_PEAK_DAYS} days of the busiest day, "
        f"auto-recharge amount about {RECHARGE_AVERAGE_DAYS} days of average usage; each "
        f"rounded up to a multiple of {ROUNDING_STEP} and at least {MINIMUM_AMOUNT}."
    )
    recommendation = Recommendation(
        one_time_amount=one_time_amount,
        auto_recharge_threshold=threshold,
        auto_recharge_amount=recharge_amount,
        days=history_days,
        days_with_usage=days_with_usage,
        total_charge=total_charge,
        average_daily=average_daily,
        peak_daily=peak_daily,
        enough_history=True,
        note=note,
    )
    assert recommendation.one_time_amount >= recommendation.auto_recharge_threshold
    return recommendation


def _days_of_average(total_charge: Decimal, history_days: int, days: int) -> Decimal:
    # Multiply first, so the division is the one inexact step. Its error (below
    # 1e-30) cannot lift an amount past a multiple of the step: a total in
    # minor units divided by history_days that is below a multiple lies at
    # least (one minor unit / history_days) under it. Dividing first could.
    return MONEY_CONTEXT.divide(MONEY_CONTEXT.multiply(total_charge, days), Decimal(history_days))


def _tidy(amount: Decimal) -> Decimal:
    """Round up to a multiple of ROUNDING_STEP, and never below the minimum."""
    steps = MONEY_CONTEXT.divide(amount, ROUNDING_STEP).to_integral_value(rounding=ROUND_CEILING)
    tidy = max(MONEY_CONTEXT.multiply(steps, ROUNDING_STEP), MINIMUM_AMOUNT)
    assert tidy >= amount and tidy >= MINIMUM_AMOUNT, (amount, tidy)
    return tidy
