"""The Stripe adapter, through the real `stripe` library, against a local fake Stripe."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest

from commcredits.adapters.payments import (
    CardRejected,
    ChargeResult,
    IdempotencyKeyReused,
    ProviderUnavailable,
    StoredCard,
    get_provider,
)
from commcredits.adapters.payments.stripe_provider import StripeProvider
from commcredits.core.money import InvalidMoney
from tests.integration.fake_stripe import FakeStripe

# Short enough to keep the timeout tests fast, long enough for a loaded CI box.
TIMEOUT_SECONDS = 0.5
SLOW_SECONDS = 1.5
# The fake judges expiry by the real clock: a year always ahead of it.
FAR_EXPIRY_YEAR = date.today().year + 5


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


@pytest.fixture
def provider(fake: FakeStripe) -> StripeProvider:
    return StripeProvider(api_key=fake.api_key, api_base=fake.url, timeout_seconds=TIMEOUT_SECONDS)


def store(provider: StripeProvider, number: str) -> StoredCard:
    return provider.store_card(number, 12, FAR_EXPIRY_YEAR, customer_reference="tenant-1")


def charge(
    provider: StripeProvider,
    card: StoredCard,
    *,
    key: str = "purchase-1",
    amount: str = "12.34",
    currency: str = "USD",
) -> ChargeResult:
    return provider.charge(
        card.provider_token,
        Decimal(amount),
        currency,
        idempotency_key=key,
        description="Communications Credits",
    )


def test_get_provider_builds_the_stripe_adapter(fake: FakeStripe) -> None:
    provider = get_provider("stripe", api_key=fake.api_key, api_base=fake.url)
    assert provider.name == "stripe"
    card = provider.store_card("4242424242424242", 1, FAR_EXPIRY_YEAR, customer_reference="t")
    assert card.last4 == "4242"


def test_store_card_creates_customer_and_attached_payment_method(
    fake: FakeStripe, provider: StripeProvider
) -> None:
    card = provider.store_card(
        "5555555555554444", 7, FAR_EXPIRY_YEAR, customer_reference="tenant-contoso"
    )

    customer_id, payment_method_id = card.provider_token.split("/")
    assert customer_id.startswith("cus_") and payment_method_id.startswith("pm_")
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == (
        "mastercard",
        "4444",
        7,
        FAR_EXPIRY_YEAR,
    )
    assert fake.customers[customer_id]["metadata"] == {"tenant_reference": "tenant-contoso"}
    assert fake.payment_methods[payment_method_id]["customer"] == customer_id
    sent = fake.requests_to("POST", "/v1/payment_methods")[0]
    assert sent.form["type"] == "card"
    assert sent.form["card"] == {
        "number": "5555555555554444",
        "exp_month": "7",
        "exp_year": str(FAR_EXPIRY_YEAR),
    }
    assert "5555555555554444" not in card.provider_token


def test_invalid_number_is_rejected_before_any_customer_exists(
    fake: FakeStripe, provider: StripeProvider
) -> None:
    with pytest.raises(CardRejected) as rejected:
        store(provider, "4242424242424241")
    assert rejected.value.code == "invalid_card"
    assert fake.customers == {}


def test_expired_card_is_refused_without_calling_stripe(
    fake: FakeStripe, provider: StripeProvider
) -> None:
    with pytest.raises(CardRejected) as rejected:
        provider.store_card("4242424242424242", 1, 2020, customer_reference="tenant-1")
    assert rejected.value.code == "expired_card"
    assert fake.requests == []


def test_card_declined_at_attach_is_rejected_and_its_customer_removed(
    fake: FakeStripe, provider: StripeProvider
) -> None:
    with pytest.raises(CardRejected) as rejected:
        store(provider, "4100000000000019")
    assert rejected.value.code == "card_declined"
    assert len(fake.requests_to("POST", "/v1/customers")) == 1
    assert fake.customers == {}


@pytest.mark.parametrize(
    ("amount", "currency", "amount_minor", "currency_sent"),
    [("12.34", "USD", "1234", "usd"), ("500", "JPY", "500", "jpy"), ("50.5", "EUR", "5050", "eur")],
)
def test_successful_charge_sends_minor_units_and_the_idempotency_key(
    fake: FakeStripe,
    provider: StripeProvider,
    amount: str,
    currency: str,
    amount_minor: str,
    currency_sent: str,
) -> None:
    card = store(provider, "4242424242424242")
    customer_id, payment_method_id = card.provider_token.split("/")

    result = charge(provider, card, key="purchase-99", amount=amount, currency=currency)

    assert result.succeeded and result.failure_code is None
    assert result.provider_reference in fake.payment_intents
    [sent] = fake.requests_to("POST", "/v1/payment_intents")
    assert sent.idempotency_key == "purchase-99"
    assert sent.form["amount"] == amount_minor
    assert sent.form["currency"] == currency_sent
    assert sent.form["customer"] == customer_id
    assert sent.form["payment_method"] == payment_method_id
    assert sent.form["off_session"] == "true"
    assert sent.form["confirm"] == "true"


@pytest.mark.parametrize(
    ("number", "failure_code"),
    [
        ("4000000000000002", "card_declined"),
        ("4000000000000069", "expired_card"),
        ("4000000000000119", "processing_error"),
        ("4000002760003184", "card_declined"),  # authentication_required off-session
    ],
)
def test_card_errors_become_failed_charges(
    fake: FakeStripe, provider: StripeProvider, number: str, failure_code: str
) -> None:
    card = store(provider, number)

    result = charge(provider, card)

    assert not result.succeeded
    assert result.failure_code == failure_code
    # The failed PaymentIntent is the reference an operator looks up.
    assert result.provider_reference in fake.payment_intents


def test_intent_left_requiring_action_is_a_decline(
    fake: FakeStripe, provider: StripeProvider
) -> None:
    card = store(provider, "4242424242424242")
    fake.force_intent_status = "requires_action"

    result = charge(provider, card)

    assert result == ChargeResult(False, "card_declined", result.provider_reference)
    assert result.provider_reference in fake.payment_intents


def test_amount_finer_than_the_minor_unit_is_refused_before_stripe(
    fake: FakeStripe, provider: StripeProvider
) -> None:
    card = store(provider, "4242424242424242")
    with pytest.raises(InvalidMoney):
        charge(provider, card, amount="500.5", currency="JPY")
    assert fake.requests_to("POST", "/v1/payment_intents") == []


def test_timeout_is_unknown_and_retry_with_same_key_replays_the_first_outcome(
    fake: FakeStripe, provider: StripeProvider
) -> None:
    card = store(provider, "4242424242424242")
    fake.slow_seconds = SLOW_SECONDS

    started = time.monotonic()
    with pytest.raises(ProviderUnavailable):
        charge(provider, card, key="purchase-timeout")
    assert time.monotonic() - started < SLOW_SECONDS

    fake.slow_seconds = 0
    retried = charge(provider, card, key="purchase-timeout")

    assert retried.succeeded
    assert len(fake.payment_intents) == 1
    assert retried.provider_reference == next(iter(fake.payment_intents))
    sent = fake.requests_to("POST", "/v1/payment_intents")
    assert [request.idempotency_key for request in sent] == ["purchase-timeout"] * 2


def test_declined_outcome_is_replayed_after_a_timeout_too(
    fake: FakeStripe, provider: StripeProvider
) -> None:
    card = store(provider, "4000000000000002")
    fake.slow_seconds = SLOW_SECONDS
    with pytest.raises(ProviderUnavailable):
        charge(provider, card, key="purchase-declined")
    fake.slow_seconds = 0

    retried = charge(provider, card, key="purchase-declined")

    assert retried.failure_code == "card_declined"
    assert len(fake.payment_intents) == 1


def test_server_error_is_unknown_and_nothing_was_charged(
    fake: FakeStripe, provider: StripeProvider
) -> None:
    card = store(provider, "4242424242424242")
    fake.fail_next_with_status = 503

    with pytest.raises(ProviderUnavailable):
        charge(provider, card, key="purchase-503")
    assert fake.payment_intents == {}

    assert charge(provider, card, key="purchase-503").succeeded
    assert len(fake.payment_intents) == 1


def test_same_key_for_a_different_charge_is_refused(provider: StripeProvider) -> None:
    card = store(provider, "4242424242424242")
    charge(provider, card, key="purchase-7", amount="50.00")
    with pytest.raises(IdempotencyKeyReused):
        charge(provider, card, key="purchase-7", amount="60.00")


def test_unreachable_stripe_is_provider_unavailable() -> None:
    with FakeStripe() as stopped:
        api_base = stopped.url
    provider = StripeProvider(api_key="sk_test_x", api_base=api_base, timeout_seconds=1.0)
    with pytest.raises(ProviderUnavailable):
        store(provider, "4242424242424242")
    with pytest.raises(ProviderUnavailable):
        provider.charge("cus_1/pm_1", Decimal("50"), "USD", idempotency_key="k", description="x")


def test_wrong_api_key_is_provider_unavailable(fake: FakeStripe) -> None:
    provider = StripeProvider(api_key="sk_test_wrong", api_base=fake.url, timeout_seconds=1.0)
    with pytest.raises(ProviderUnavailable):
        store(provider, "4242424242424242")


def test_token_from_another_provider_is_a_definite_processing_error(
    fake: FakeStripe, provider: StripeProvider
) -> None:
    result = provider.charge(
        "sim_ok_4242_203012_abcd", Decimal("50"), "USD", idempotency_key="k", description="x"
    )
    assert result == ChargeResult(False, "processing_error", None)
    assert fake.requests == []
