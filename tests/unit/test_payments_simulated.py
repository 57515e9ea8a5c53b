"""The simulated payment provider: the test-card convention of SPEC §2."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from commcredits.adapters.payments import (
    CardRejected,
    ChargeResult,
    IdempotencyKeyReused,
    StoredCard,
    amount_in_minor_units,
    get_provider,
)
from commcredits.adapters.payments.simulated import (
    MAX_REMEMBERED_CHARGES,
    TEST_CARD_DECLINED,
    TEST_CARD_EXPIRED,
    TEST_CARD_PROCESSING_ERROR,
    TEST_CARD_SUCCEEDS,
    SimulatedProvider,
    card_brand,
    passes_luhn,
)
from commcredits.core.money import InvalidMoney

TODAY = date(2026, 3, 15)


@pytest.fixture
def provider() -> SimulatedProvider:
    return SimulatedProvider(clock=lambda: TODAY)


def store(
    provider: SimulatedProvider, number: str, month: int = 12, year: int = 2030
) -> StoredCard:
    return provider.store_card(number, month, year, customer_reference="tenant-1")


def charge(
    provider: SimulatedProvider,
    card: StoredCard,
    *,
    key: str = "purchase-1",
    amount: str = "50.00",
    currency: str = "USD",
    today: date | None = None,
) -> ChargeResult:
    return provider.charge(
        card.provider_token,
        Decimal(amount),
        currency,
        idempotency_key=key,
        description="Communications Credits",
        today=today,
    )


def test_get_provider_builds_the_simulated_provider() -> None:
    provider = get_provider("simulated")
    assert provider.name == "simulated"
    with pytest.raises(ValueError, match="unknown payment provider"):
        get_provider("paypal")


def test_succeeding_test_card_is_stored_without_its_number_and_charges(
    provider: SimulatedProvider,
) -> None:
    card = store(provider, TEST_CARD_SUCCEEDS, month=4, year=2029)
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("visa", "4242", 4, 2029)
    assert TEST_CARD_SUCCEEDS not in card.provider_token
    assert "424242424242" not in card.provider_token

    result = charge(provider, card)

    assert result.succeeded
    assert result.failure_code is None
    assert result.provider_reference


@pytest.mark.parametrize(
    ("number", "failure_code"),
    [
        (TEST_CARD_DECLINED, "card_declined"),
        (TEST_CARD_EXPIRED, "expired_card"),
        (TEST_CARD_PROCESSING_ERROR, "processing_error"),
    ],
)
def test_failing_test_cards_are_stored_and_fail_when_charged(
    provider: SimulatedProvider, number: str, failure_code: str
) -> None:
    card = store(provider, number)
    assert card.last4 == number[-4:]

    result = charge(provider, card)

    assert not result.succeeded
    assert result.failure_code == failure_code


def test_tokens_of_the_same_card_differ(provider: SimulatedProvider) -> None:
    first, second = store(provider, TEST_CARD_SUCCEEDS), store(provider, TEST_CARD_SUCCEEDS)
    assert first.provider_token != second.provider_token


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4111111111111111", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("378282246310005", "amex"),
        ("6011111111111117", "unknown"),
        ("4111 1111-1111 1111", "visa"),
    ],
)
def test_any_other_luhn_valid_number_succeeds_with_its_brand(
    provider: SimulatedProvider, number: str, brand: str
) -> None:
    card = store(provider, number)
    assert card.brand == brand
    assert charge(provider, card).succeeded


@pytest.mark.parametrize(
    "number",
    [
        "4242424242424241",  # check digit wrong
        "42424242421",  # 11 digits
        "42424242424242424242",  # 20 digits, Luhn-valid or not
        "4242x24242424242",
        "",
        "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢",  # Arabic-Indic digits are not card digits
    ],
)
def test_numbers_failing_luhn_or_length_are_invalid(
    provider: SimulatedProvider, number: str
) -> None:
    with pytest.raises(CardRejected) as rejected:
        store(provider, number)
    assert rejected.value.code == "invalid_card"


def test_luhn_and_brand_helpers() -> None:
    assert passes_luhn("79927398713")
    assert not passes_luhn("79927398710")
    assert card_brand("2720990000000007") == "mastercard"
    assert card_brand("2721000000000004") == "unknown"


@pytest.mark.parametrize("month", [0, 13, -1])
def test_expiry_month_outside_1_to_12_is_invalid(provider: SimulatedProvider, month: int) -> None:
    with pytest.raises(CardRejected) as rejected:
        store(provider, TEST_CARD_SUCCEEDS, month=month)
    assert rejected.value.code == "invalid_card"


def test_two_digit_expiry_year_is_invalid(provider: SimulatedProvider) -> None:
    with pytest.raises(CardRejected) as rejected:
        store(provider, TEST_CARD_SUCCEEDS, month=12, year=30)
    assert rejected.value.code == "invalid_card"


def test_card_expired_before_today_is_refused_when_stored(provider: SimulatedProvider) -> None:
    with pytest.raises(CardRejected) as rejected:
        store(provider, TEST_CARD_SUCCEEDS, month=2, year=2026)
    assert rejected.value.code == "expired_card"


def test_card_is_good_through_the_end_of_its_expiry_month(provider: SimulatedProvider) -> None:
    card = store(provider, TEST_CARD_SUCCEEDS, month=3, year=2026)  # TODAY is 2026-03-15
    assert charge(provider, card, key="k1", today=date(2026, 3, 31)).succeeded


def test_card_fails_as_expired_when_charged_after_it_expires(provider: SimulatedProvider) -> None:
    card = store(provider, TEST_CARD_SUCCEEDS, month=3, year=2026)

    result = charge(provider, card, key="k2", today=date(2026, 4, 1))

    assert not result.succeeded
    assert result.failure_code == "expired_card"


def test_expiry_wins_over_the_decline_card(provider: SimulatedProvider) -> None:
    card = store(provider, TEST_CARD_DECLINED, month=3, year=2026)
    assert charge(provider, card, today=date(2027, 1, 1)).failure_code == "expired_card"


def test_same_idempotency_key_returns_the_first_result(provider: SimulatedProvider) -> None:
    card = store(provider, TEST_CARD_SUCCEEDS, month=3, year=2026)
    first = charge(provider, card, key="purchase-42", today=date(2026, 3, 20))

    # Even after the card has expired, the retry replays the first outcome.
    again = charge(provider, card, key="purchase-42", today=date(2026, 5, 1))
    other = charge(provider, card, key="purchase-43", today=date(2026, 3, 20))

    assert again == first
    assert first.succeeded
    assert other.provider_reference != first.provider_reference


def test_same_key_for_a_different_charge_is_refused(provider: SimulatedProvider) -> None:
    card = store(provider, TEST_CARD_SUCCEEDS)
    charge(provider, card, key="purchase-7", amount="50.00")
    with pytest.raises(IdempotencyKeyReused):
        charge(provider, card, key="purchase-7", amount="60.00")


def test_idempotency_memory_is_bounded(provider: SimulatedProvider) -> None:
    card = store(provider, TEST_CARD_SUCCEEDS)
    first = charge(provider, card, key="oldest")
    for index in range(MAX_REMEMBERED_CHARGES):
        charge(provider, card, key=f"k{index}")
    # Forgotten: the service's purchase records are the durable memory.
    assert charge(provider, card, key="oldest") != first


def test_unknown_token_is_a_definite_processing_error(provider: SimulatedProvider) -> None:
    result = provider.charge(
        "cus_123/pm_456", Decimal("50"), "USD", idempotency_key="k", description="x"
    )
    assert result == ChargeResult(False, "processing_error", None)


def test_amount_must_fit_the_currency_minor_unit(provider: SimulatedProvider) -> None:
    card = store(provider, TEST_CARD_SUCCEEDS)
    with pytest.raises(InvalidMoney):
        charge(provider, card, amount="12.345", currency="USD")
    with pytest.raises(InvalidMoney):
        charge(provider, card, amount="500.5", currency="JPY")
    assert charge(provider, card, key="jpy", amount="500", currency="JPY").succeeded


@pytest.mark.parametrize(
    ("amount", "currency", "minor_units"),
    [
        ("12.34", "USD", 1234),
        ("12.340", "USD", 1234),
        ("50", "EUR", 5000),
        ("500", "JPY", 500),
        ("1.234", "KWD", 1234),
        ("1000000", "usd", 100000000),
    ],
)
def test_amount_in_minor_units_is_exact(amount: str, currency: str, minor_units: int) -> None:
    assert amount_in_minor_units(Decimal(amount), currency) == minor_units


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("0", "USD"), ("-1", "USD"), ("0.001", "USD"), ("1.5", "JPY"), ("NaN", "USD"), ("1", "ZZZ")],
)
def test_amount_in_minor_units_refuses_what_it_cannot_charge(amount: str, currency: str) -> None:
    with pytest.raises(InvalidMoney):
        amount_in_minor_units(Decimal(amount), currency)
