"""Rating: billed time and the exact charge of a call (SPEC §3 "Rating").

charge = connect_fee + rate_per_minute × billed_seconds / 60, where billed
time is the duration rounded up to `initial_increment_s`, then in steps of
`subsequent_increment_s`. A zero-second call costs nothing.

Charges here are exact and never rounded: rounding happens once, half-up, in
`money.round_to_minor` when a charge is posted to the ledger.

"Exact" and the division by 60: rate / 60 need not terminate in decimal
(0.01 / 60 = 0.000166…), so the quotient is carried to MONEY_CONTEXT's 38
significant digits. That never changes a rounded charge nor a comparison with
a balance: with wire values (at most 6 fraction digits in rates and fees, at
most 4 in any minor unit, 12 integer digits) the true charge is a multiple of
1/(6·10^7), so it is either exactly on a rounding tie or a balance — and then
the division terminates and is exact — or at least 1.6·10^-8 away from it,
while the 38-digit error is below 10^-24.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from commcredits.core.money import MONEY_CONTEXT

__all__ = [
    "MAX_INCREMENT_SECONDS",
    "UNLIMITED_SECONDS",
    "Tariff",
    "affordable_billed_seconds",
    "billed_seconds",
    "charge_for_billed",
    "charge_for_paid_seconds",
    "next_billed_seconds",
    "rate_duration",
    "split_pool_and_paid",
]

# What affordable_billed_seconds answers when time costs nothing (rate 0 and
# the connect fee covered): one day. No call needs a longer grant in one
# answer, and callers get a finite number they can add and compare.
UNLIMITED_SECONDS = 24 * 3600

# Rate decks use 1 to 60 s; an hour is a generous ceiling that still keeps a
# first increment well below UNLIMITED_SECONDS.
MAX_INCREMENT_SECONDS = 3600

_SECONDS_PER_MINUTE = Decimal(60)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Tariff:
    """The price of one rate-deck row, in the deck's currency."""

    rate_per_minute: Decimal
    connect_fee: Decimal
    initial_increment_s: int
    subsequent_increment_s: int

    def __post_init__(self) -> None:
        for money in (self.rate_per_minute, self.connect_fee):
            assert isinstance(money, Decimal), money
            assert money.is_finite() and money >= 0, money
        for increment_s in (self.initial_increment_s, self.subsequent_increment_s):
            assert isinstance(increment_s, int) and not isinstance(increment_s, bool), increment_s
            assert 1 <= increment_s <= MAX_INCREMENT_SECONDS, increment_s


def billed_seconds(
    duration_seconds: int, initial_increment_s: int, subsequent_increment_s: int
) -> int:
    """The duration rounded up: 0 for 0 s, else at least the initial increment, then steps.

    60/60: 61 s -> 120. 30/6: 1 s -> 30, 31 s -> 36. 1/1: 61 s -> 61.
    """
    _assert_increments(initial_increment_s, subsequent_increment_s)
    assert isinstance(duration_seconds, int) and duration_seconds >= 0, duration_seconds
    if duration_seconds == 0:
        return 0
    if duration_seconds <= initial_increment_s:
        return initial_increment_s
    past_initial_s = duration_seconds - initial_increment_s
    steps = -(-past_initial_s // subsequent_increment_s)  # ceiling division on ints
    billed = initial_increment_s + steps * subsequent_increment_s
    assert duration_seconds <= billed < duration_seconds + subsequent_increment_s
    return billed


def next_billed_seconds(billed: int, initial_increment_s: int, subsequent_increment_s: int) -> int:
    """The billed duration one increment after `billed` (0 -> initial, else + subsequent)."""
    _assert_increments(initial_increment_s, subsequent_increment_s)
    assert billed >= 0, billed
    if billed == 0:
        return initial_increment_s
    return billed + subsequent_increment_s


def charge_for_billed(tariff: Tariff, billed_seconds: int) -> Decimal:
    """Exact charge of a call billed for `billed_seconds`, connect fee included (0 for 0 s)."""
    return charge_for_paid_seconds(tariff, billed_seconds, include_connect_fee=True)


def rate_duration(tariff: Tariff, duration_seconds: int) -> Decimal:
    """Exact charge of a call of `duration_seconds` entirely paid from credits."""
    billed = billed_seconds(
        duration_seconds, tariff.initial_increment_s, tariff.subsequent_increment_s
    )
    return charge_for_billed(tariff, billed)


def charge_for_paid_seconds(
    tariff: Tariff, paid_billed_seconds: int, include_connect_fee: bool
) -> Decimal:
    """Exact charge for the billed seconds that credits pay, connect fee when asked.

    In a `mixed` call (a pool covers the start, credits the rest) the caller
    passes include_connect_fee=False: the connect fee is the price of setting
    the call up, and the plan that carried the call's first second paid for
    that. A call paying nothing from credits pays no connect fee either.
    """
    assert isinstance(paid_billed_seconds, int) and paid_billed_seconds >= 0, paid_billed_seconds
    if paid_billed_seconds == 0:
        return _ZERO
    # Multiply first (exact), then divide once: one rounding at 38 digits at most.
    time_charge = MONEY_CONTEXT.divide(
        MONEY_CONTEXT.multiply(tariff.rate_per_minute, Decimal(paid_billed_seconds)),
        _SECONDS_PER_MINUTE,
    )
    if not include_connect_fee:
        return time_charge
    return MONEY_CONTEXT.add(tariff.connect_fee, time_charge)


def affordable_billed_seconds(
    tariff: Tariff, available: Decimal, *, include_connect_fee: bool = True
) -> int:
    """The longest billed duration, on an increment boundary, whose exact charge <= available.

    0 when even the connect fee and the first increment are not covered.
    When time is free (rate 0) and the connect fee is covered the answer is
    UNLIMITED_SECONDS, aligned down to an increment boundary. O(1).
    """
    assert isinstance(available, Decimal) and available.is_finite(), available
    connect_fee = tariff.connect_fee if include_connect_fee else _ZERO
    budget_for_time = MONEY_CONTEXT.subtract(available, connect_fee)
    if budget_for_time < 0:
        return 0
    if tariff.rate_per_minute == 0:
        limit_seconds = UNLIMITED_SECONDS
    else:
        # Integer division of Decimals is exact: floor(budget × 60 / rate).
        limit_seconds = int(
            MONEY_CONTEXT.divide_int(
                MONEY_CONTEXT.multiply(budget_for_time, _SECONDS_PER_MINUTE),
                tariff.rate_per_minute,
            )
        )
    affordable = _align_down(
        limit_seconds, tariff.initial_increment_s, tariff.subsequent_increment_s
    )
    assert affordable == 0 or (
        charge_for_paid_seconds(tariff, affordable, include_connect_fee) <= available
    ), (tariff, available, affordable)
    return affordable


def split_pool_and_paid(
    duration_seconds: int, pool_remaining_seconds: int, tariff: Tariff
) -> tuple[int, int]:
    """(pool_billed_seconds, paid_billed_seconds) for a call a pool covers first.

    The billed duration is computed once, with the tariff's increments, and
    the pool gives up to what it has left of it: pools are consumed in billed
    seconds, so a 61 s call on a 60/60 deck takes 120 s of pool.
    """
    assert isinstance(pool_remaining_seconds, int) and pool_remaining_seconds >= 0, (
        pool_remaining_seconds
    )
    billed = billed_seconds(
        duration_seconds, tariff.initial_increment_s, tariff.subsequent_increment_s
    )
    pool_billed_seconds = min(billed, pool_remaining_seconds)
    paid_billed_seconds = billed - pool_billed_seconds
    assert pool_billed_seconds + paid_billed_seconds == billed
    assert 0 <= pool_billed_seconds <= pool_remaining_seconds
    assert paid_billed_seconds >= 0
    return pool_billed_seconds, paid_billed_seconds


def _align_down(limit_seconds: int, initial_increment_s: int, subsequent_increment_s: int) -> int:
    """The largest billed duration (0, initial, initial + k × subsequent) <= limit_seconds."""
    if limit_seconds < initial_increment_s:
        return 0
    steps = (limit_seconds - initial_increment_s) // subsequent_increment_s
    return initial_increment_s + steps * subsequent_increment_s


def _assert_increments(initial_increment_s: int, subsequent_increment_s: int) -> None:
    assert 1 <= initial_increment_s <= MAX_INCREMENT_SECONDS, initial_increment_s
    assert 1 <= subsequent_increment_s <= MAX_INCREMENT_SECONDS, subsequent_increment_s
