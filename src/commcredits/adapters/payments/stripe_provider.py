"""The Stripe adapter, on the official `stripe` library (StripeClient, API v1).

Storing a card creates a PaymentMethod of type card, a Customer carrying the
tenant reference in its metadata, and attaches one to the other; the token we
keep is "<customer_id>/<payment_method_id>". Charging creates an off-session,
confirmed PaymentIntent in the currency's minor units, with our idempotency
key as Stripe's Idempotency-Key, so a retry after a timeout replays the first
outcome instead of charging twice.

Sending raw card numbers to /v1/payment_methods needs Stripe's "raw card data
APIs" to be enabled on the account (a PCI matter); the HTTP contract takes
card numbers, so this adapter does too.

Error mapping, and why:
- CardError at store time -> CardRejected (expired_card, invalid_card, card_declined).
- CardError at charge time -> a failed ChargeResult: Stripe did not take the money.
- timeout, connection error, 5xx, 409, 429, or any unexpected Stripe error
  -> ProviderUnavailable: the outcome is unknown, retry with the same key.
"""

from __future__ import annotations

import logging
from datetime import date
from decimal import Decimal
from typing import Any

import stripe

from commcredits.adapters.payments.base import (
    CardRejected,
    CardRejectionCode,
    ChargeFailureCode,
    ChargeResult,
    IdempotencyKeyReused,
    ProviderUnavailable,
    StoredCard,
    amount_in_minor_units,
    check_expiry_for_storing,
    utc_today,
)

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "StripeProvider"]

# Stripe's own default is 80 s; a purchase request should not hang that long.
# A timed-out charge is not lost: it is retried with the same idempotency key.
DEFAULT_TIMEOUT_SECONDS = 20.0

_TOKEN_SEPARATOR = "/"

# Card error codes Stripe returns for a number or expiry it cannot accept.
_INVALID_CARD_CODES = frozenset(
    {
        "incorrect_number",
        "invalid_number",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "incorrect_cvc",
        "invalid_cvc",
    }
)

logger = logging.getLogger(__name__)


class StripeProvider:
    name = "stripe"

    def __init__(
        self,
        *,
        api_key: str,
        api_base: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if not api_key:
            raise ValueError("the stripe provider needs an api_key")
        assert timeout_seconds > 0, timeout_seconds
        self._client = stripe.StripeClient(
            api_key,
            # Unset keeps Stripe's own address; an explicit None would erase it.
            base_addresses={"api": api_base.rstrip("/")} if api_base is not None else None,
            # No silent retries inside the library: a retry is the caller's
            # decision, made with the same idempotency key, at a later time.
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout_seconds),
        )

    def store_card(
        self,
        card_number: str,
        exp_month: int,
        exp_year: int,
        *,
        customer_reference: str,
        idempotency_key: str | None = None,
    ) -> StoredCard:
        # Checked here first so a passed expiry gives SPEC §2's expired_card
        # (Stripe calls it invalid_expiry_year) and no Stripe object is made.
        check_expiry_for_storing(exp_month, exp_year, utc_today())

        def options(step: str) -> Any:
            # One Stripe key per step: a retry after a lost answer gets the
            # objects the first attempt made, not a second customer and card.
            if idempotency_key is None:
                return {}
            return {"idempotency_key": f"{idempotency_key}:{step}"}

        try:
            # The card first: a refused card leaves no customer behind.
            payment_method = self._client.v1.payment_methods.create(
                {
                    "type": "card",
                    "card": {"number": card_number, "exp_month": exp_month, "exp_year": exp_year},
                },
                options("payment_method"),
            )
            customer = self._client.v1.customers.create(
                {"metadata": {"tenant_reference": customer_reference}}, options("customer")
            )
        except stripe.CardError as error:
            raise _card_rejected(error) from error
        except stripe.StripeError as error:
            raise ProviderUnavailable(f"stripe: storing a card failed: {error}") from error
        try:
            payment_method = self._client.v1.payment_methods.attach(
                payment_method.id, {"customer": customer.id}, options("attach")
            )
        except stripe.StripeError as error:
            self._delete_customer_quietly(customer.id)
            if isinstance(error, stripe.CardError):
                raise _card_rejected(error) from error
            raise ProviderUnavailable(f"stripe: attaching a card failed: {error}") from error
        card = payment_method.card
        assert card is not None, payment_method.id
        return StoredCard(
            provider_token=f"{customer.id}{_TOKEN_SEPARATOR}{payment_method.id}",
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
        )

    def charge(
        self,
        provider_token: str,
        amount: Decimal,
        currency: str,
        *,
        idempotency_key: str,
        description: str,
        today: date | None = None,
    ) -> ChargeResult:
        """Charge off-session; `today` is unused: Stripe and the card network judge expiry."""
        assert idempotency_key, "a charge needs an idempotency key"
        amount_minor = amount_in_minor_units(amount, currency)
        customer_id, separator, payment_method_id = provider_token.partition(_TOKEN_SEPARATOR)
        if not (separator and customer_id and payment_method_id):
            # Not a token this adapter made: nothing can have been charged.
            return ChargeResult(False, "processing_error", None)
        try:
            intent = self._client.v1.payment_intents.create(
                {
                    "amount": amount_minor,
                    "currency": currency.lower(),
                    "customer": customer_id,
                    "payment_method": payment_method_id,
                    "off_session": True,
                    "confirm": True,
                    "description": description,
                },
                {"idempotency_key": idempotency_key},
            )
        except stripe.CardError as error:
            return ChargeResult(False, _charge_failure_code(error), _payment_intent_id(error))
        except stripe.IdempotencyError as error:
            raise IdempotencyKeyReused(f"stripe: {error}") from error
        except stripe.InvalidRequestError as error:
            # Stripe refused the request before charging (a detached card, an
            # amount over its limit, an unsupported currency): a definite
            # failure, but one an operator should see.
            logger.warning("stripe refused a charge: code=%s %s", error.code, error)
            return ChargeResult(False, "processing_error", _payment_intent_id(error))
        except stripe.StripeError as error:
            raise ProviderUnavailable(f"stripe: charge outcome unknown: {error}") from error
        if intent.status == "succeeded":
            return ChargeResult(True, None, intent.id)
        # Off-session, Stripe reports a needed authentication as a card error;
        # any status left here (requires_action, requires_payment_method,
        # canceled) means the money was not taken, and the admin's remedy is
        # the same as for a decline: another card.
        logger.warning("stripe payment intent %s ended as %s", intent.id, intent.status)
        if intent.status == "processing":
            return ChargeResult(False, "processing_error", intent.id)
        return ChargeResult(False, "card_declined", intent.id)

    def _delete_customer_quietly(self, customer_id: str) -> None:
        try:
            self._client.v1.customers.delete(customer_id)
        except stripe.StripeError as error:
            # Best effort: an empty customer costs nothing but dashboard clutter.
            logger.warning("stripe: could not delete customer %s: %s", customer_id, error)


def _card_rejected(error: stripe.CardError) -> Exception:
    code = error.code or ""
    if code == "processing_error":
        # A passing failure at the card's issuer, not a verdict on the card.
        return ProviderUnavailable(f"stripe: processing error while storing the card: {error}")
    rejection: CardRejectionCode
    if code == "expired_card":
        rejection = "expired_card"
    elif code in _INVALID_CARD_CODES:
        rejection = "invalid_card"
    else:
        rejection = "card_declined"
    return CardRejected(rejection, error.user_message or code)


def _charge_failure_code(error: stripe.CardError) -> ChargeFailureCode:
    codes = {error.code, _error_field(error, "decline_code")}
    if "expired_card" in codes:
        return "expired_card"
    if "processing_error" in codes:
        return "processing_error"
    return "card_declined"


def _payment_intent_id(error: stripe.StripeError) -> str | None:
    # A failed confirmation still creates a PaymentIntent; Stripe names it in
    # the error body, and it is the reference an operator looks up.
    payment_intent = _error_field(error, "payment_intent")
    if isinstance(payment_intent, dict):
        intent_id = payment_intent.get("id")
        return intent_id if isinstance(intent_id, str) else None
    return None


def _error_field(error: stripe.StripeError, field: str) -> Any:
    body = error.json_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get(field)
    return None
