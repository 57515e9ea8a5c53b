"""Rating: billed time, exact charges, affordability and pool splits (SPEC §3)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commcredits.core.money import round_to_minor
from commcredits.core.rating import (
    MAX_INCREMENT_SECONDS,
    UNLIMITED_SECONDS,
    Tariff,
    affordable_billed_seconds,
    billed_seconds,
    charge_for_billed,
    charge_for_paid_seconds,
    next_billed_seconds,
    rate_duration,
    split_pool_and_paid,
)

# --- billed seconds: the three common decks ---------------------------------------

BILLED_60_60 = {
    0: 0, 1: 60, 29: 60, 30: 60, 31: 60, 59: 60, 60: 60, 61: 120,
    119: 120, 120: 120, 121: 180, 3599: 3600, 3600: 3600, 3601: 3660,
}  # fmt: skip
BILLED_30_6 = {
    0: 0, 1: 30, 29: 30, 30: 30, 31: 36, 35: 36, 36: 36, 37: 42, 59: 60,
    60: 60, 61: 66, 3600: 3600, 3601: 3606,
}  # fmt: skip
BILLED_1_1 = {0: 0, 1: 1, 29: 29, 30: 30, 31: 31, 59: 59, 60: 60, 61: 61, 3600: 3600}


@pytest.mark.parametrize(
    ("initial_s", "subsequent_s", "table"),
    [(60, 60, BILLED_60_60), (30, 6, BILLED_30_6), (1, 1, BILLED_1_1)],
    ids=["60/60", "30/6", "1/1"],
)
def test_billed_seconds_tables(initial_s: int, subsequent_s: int, table: dict[int, int]) -> None:
    for duration_seconds, expected in table.items():
        assert billed_seconds(duration_seconds, initial_s, subsequent_s) == expected, (
            duration_seconds
        )


def test_billed_seconds_with_initial_shorter_than_subsequent() -> None:
    # 1/60: the first second is one increment, then whole minutes.
    assert [billed_seconds(d, 1, 60) for d in (0, 1, 2, 61, 62)] == [0, 1, 61, 61, 121]


def test_billed_seconds_refuses_nonsense() -> None:
    with pytest.raises(AssertionError):
        billed_seconds(-1, 60, 60)
    with pytest.raises(AssertionError):
        billed_seconds(10, 0, 60)
    with pytest.raises(AssertionError):
        billed_seconds(10, 60, 0)


def test_next_billed_seconds() -> None:
    assert next_billed_seconds(0, 30, 6) == 30
    assert next_billed_seconds(30, 30, 6) == 36
    assert next_billed_seconds(60, 60, 60) == 120


# --- charges ------------------------------------------------------------------


def tariff(rate: str, fee: str = "0", initial_s: int = 60, subsequent_s: int = 60) -> Tariff:
    return Tariff(Decimal(rate), Decimal(fee), initial_s, subsequent_s)


@pytest.mark.parametrize(
    ("deck", "duration_seconds", "expected"),
    [
        (tariff("0.0190"), 0, "0"),
        (tariff("0.0190"), 1, "0.0190"),
        (tariff("0.0190"), 61, "0.0380"),
        (tariff("0.0190", "0.05"), 0, "0"),  # zero seconds: no connect fee either
        (tariff("0.0190", "0.05"), 60, "0.0690"),
        (tariff("0.12", "0.10", 30, 6), 1, "0.16"),  # 0.10 + 0.12 × 30/60
        (tariff("0.12", "0.10", 30, 6), 31, "0.172"),  # 0.10 + 0.12 × 36/60
        (tariff("0.60", "0", 1, 1), 61, "0.61"),
        (tariff("1.234567", "0.000001", 1, 1), 3600, "74.074021"),
    ],
)
def test_rate_duration(deck: Tariff, duration_seconds: int, expected: str) -> None:
    assert rate_duration(deck, duration_seconds) == Decimal(expected)


def test_charges_are_exact_and_not_rounded() -> None:
    # 0.01 per minute for one second: 1/6000, kept to 38 significant digits.
    charge = charge_for_billed(tariff("0.01", "0", 1, 1), 1)
    assert charge * 6000 == pytest.approx(Decimal(1), abs=Decimal("1e-30"))
    assert charge > Decimal("0.000166") and charge != round_to_minor(charge, "USD")
    # A tie survives until the one rounding point: 0.0075 + 0.0175 = 0.025 -> 0.03.
    deck = tariff("0.0175", "0.0075", 60, 60)
    assert charge_for_billed(deck, 60) == Decimal("0.025")
    assert round_to_minor(charge_for_billed(deck, 60), "USD") == Decimal("0.03")


def test_charge_for_paid_seconds_connect_fee_is_optional() -> None:
    deck = tariff("0.12", "0.10", 30, 6)
    assert charge_for_paid_seconds(deck, 36, include_connect_fee=False) == Decimal("0.072")
    assert charge_for_paid_seconds(deck, 36, include_connect_fee=True) == Decimal("0.172")
    assert charge_for_paid_seconds(deck, 0, include_connect_fee=True) == 0
    assert charge_for_paid_seconds(deck, 36, True) == charge_for_billed(deck, 36)


def test_tariff_asserts_its_invariants() -> None:
    for bad in (
        lambda: tariff("-0.01"),
        lambda: tariff("0.01", "-0.01"),
        lambda: tariff("0.01", "0", 0, 60),
        lambda: tariff("0.01", "0", 60, 0),
        lambda: tariff("0.01", "0", MAX_INCREMENT_SECONDS + 1, 60),
        lambda: Tariff(Decimal("NaN"), Decimal(0), 60, 60),
        lambda: Tariff(0.01, Decimal(0), 60, 60),  # type: ignore[arg-type]
    ):
        with pytest.raises(AssertionError):
            bad()


# --- affordability --------------------------------------------------------------


@pytest.mark.parametrize(
    ("deck", "available", "expected"),
    [
        (tariff("0.10"), "0", 0),
        (tariff("0.10"), "0.09", 0),
        (tariff("0.10"), "0.10", 60),
        (tariff("0.10"), "0.19", 60),
        (tariff("0.10"), "0.20", 120),
        (tariff("0.10", "0.05"), "0.14", 0),  # fee + first increment not covered
        (tariff("0.10", "0.05"), "0.15", 60),
        (tariff("0.12", "0.10", 30, 6), "0.159", 0),
        (tariff("0.12", "0.10", 30, 6), "0.16", 30),
        (tariff("0.12", "0.10", 30, 6), "0.171", 30),
        (tariff("0.12", "0.10", 30, 6), "0.172", 36),
        (tariff("0.60", "0", 1, 1), "1", 100),
        (tariff("0.10"), "-5", 0),
        (tariff("0", "0.05"), "0.04", 0),
        (tariff("0", "0.05"), "0.05", UNLIMITED_SECONDS),
        (tariff("0", "0"), "0", UNLIMITED_SECONDS),
    ],
)
def test_affordable_billed_seconds(deck: Tariff, available: str, expected: int) -> None:
    assert affordable_billed_seconds(deck, Decimal(available)) == expected


def test_affordable_without_connect_fee() -> None:
    deck = tariff("0.12", "0.10", 30, 6)
    assert affordable_billed_seconds(deck, Decimal("0.06"), include_connect_fee=False) == 30
    assert affordable_billed_seconds(deck, Decimal("0.06")) == 0


def test_unlimited_is_aligned_to_the_increments() -> None:
    deck = tariff("0", "0", 7, 11)
    seconds = affordable_billed_seconds(deck, Decimal("1"))
    assert seconds <= UNLIMITED_SECONDS < seconds + 11
    assert (seconds - 7) % 11 == 0


def test_affordable_is_arithmetic_not_a_loop() -> None:
    # A trillion of balance at a millionth per minute: ~6·10^19 seconds, answered at once.
    deck = tariff("0.000001", "0", 1, 1)
    assert affordable_billed_seconds(deck, Decimal("999999999999.99")) == 59999999999999400000


# --- pool splits ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deck", "duration_seconds", "pool_remaining_seconds", "expected"),
    [
        (tariff("0.1"), 61, 600, (120, 0)),  # pools are consumed in billed seconds
        (tariff("0.1"), 61, 90, (90, 30)),
        (tariff("0.1"), 61, 0, (0, 120)),
        (tariff("0.1"), 0, 600, (0, 0)),
        (tariff("0.1", "0", 30, 6), 31, 30, (30, 6)),
        (tariff("0.1", "0", 1, 1), 45, 44, (44, 1)),
    ],
)
def test_split_pool_and_paid(
    deck: Tariff, duration_seconds: int, pool_remaining_seconds: int, expected: tuple[int, int]
) -> None:
    assert split_pool_and_paid(duration_seconds, pool_remaining_seconds, deck) == expected


def test_split_refuses_a_negative_pool() -> None:
    with pytest.raises(AssertionError):
        split_pool_and_paid(60, -1, tariff("0.1"))


# --- properties ---------------------------------------------------------------------

increments = st.sampled_from([(60, 60), (30, 6), (1, 1), (1, 60), (6, 6), (7, 11)])
durations = st.integers(min_value=0, max_value=4 * 3600)
rates = st.decimals(min_value=0, max_value=Decimal("5"), places=6)
tariffs = st.builds(
    lambda rate, fee, incs: Tariff(rate, fee, incs[0], incs[1]),
    rates,
    st.decimals(min_value=0, max_value=Decimal("2"), places=6),
    increments,
)
balances = st.decimals(min_value=0, max_value=Decimal("100000"), places=4)


def is_aligned(billed: int, initial_s: int, subsequent_s: int) -> bool:
    return billed == 0 or (billed >= initial_s and (billed - initial_s) % subsequent_s == 0)


@given(durations, increments)
def test_billed_covers_the_duration_and_is_aligned(
    duration_seconds: int, incs: tuple[int, int]
) -> None:
    initial_s, subsequent_s = incs
    billed = billed_seconds(duration_seconds, initial_s, subsequent_s)
    assert billed >= duration_seconds
    assert is_aligned(billed, initial_s, subsequent_s)
    assert (billed == 0) == (duration_seconds == 0)
    # Never more than one increment of overcharge.
    assert billed - duration_seconds < max(initial_s, subsequent_s)


@given(tariffs, durations, durations)
def test_charge_is_monotonic_in_duration(deck: Tariff, first_s: int, second_s: int) -> None:
    shorter_s, longer_s = sorted((first_s, second_s))
    assert rate_duration(deck, shorter_s) <= rate_duration(deck, longer_s)


@given(tariffs, st.integers(min_value=1, max_value=4 * 3600))
def test_charge_never_below_connect_fee(deck: Tariff, duration_seconds: int) -> None:
    assert rate_duration(deck, duration_seconds) >= deck.connect_fee


@given(tariffs, balances, st.booleans())
def test_affordable_is_maximal(deck: Tariff, available: Decimal, with_fee: bool) -> None:
    affordable = affordable_billed_seconds(deck, available, include_connect_fee=with_fee)
    initial_s, subsequent_s = deck.initial_increment_s, deck.subsequent_increment_s
    assert is_aligned(affordable, initial_s, subsequent_s)
    assert charge_for_paid_seconds(deck, affordable, with_fee) <= available
    if deck.rate_per_minute == 0 and affordable > 0:
        assert affordable > UNLIMITED_SECONDS - subsequent_s
        return
    following = next_billed_seconds(affordable, initial_s, subsequent_s)
    assert charge_for_paid_seconds(deck, following, with_fee) > available


@given(tariffs, balances)
def test_affordable_grows_with_the_balance(deck: Tariff, available: Decimal) -> None:
    assert affordable_billed_seconds(deck, available) <= affordable_billed_seconds(
        deck, available + Decimal("0.01")
    )


@given(tariffs, durations, st.integers(min_value=0, max_value=4 * 3600))
def test_split_sums_hold(deck: Tariff, duration_seconds: int, pool_remaining_s: int) -> None:
    pool_s, paid_s = split_pool_and_paid(duration_seconds, pool_remaining_s, deck)
    billed = billed_seconds(duration_seconds, deck.initial_increment_s, deck.subsequent_increment_s)
    assert pool_s + paid_s == billed
    assert 0 <= pool_s <= pool_remaining_s
    assert paid_s >= 0
    # Credits pay only once the pool is used up.
    assert paid_s == 0 or pool_s == pool_remaining_s
    # A mixed call (no connect fee) never costs more than the same call on credits alone.
    mixed_charge = charge_for_paid_seconds(deck, paid_s, include_connect_fee=pool_s == 0)
    assert mixed_charge <= rate_duration(deck, duration_seconds)
