"""The payment provider interface, and the card rules every provider applies first.

A provider does two things: keeps a card (`store_card`, returning only a token,
brand, last4 and expiry: SPEC §2 "Payment methods") and charges it
(`charge`). The simulated provider and the Stripe adapter both sit behind
`PaymentProvider`, chosen by configuration (`COMMCREDITS_PAYMENT_PROVIDER`).

Three outcomes of a charge, and who handles each:
- `ChargeResult(succeeded=True)`: money moved; the service posts the purchase.
- `ChargeResult(succeeded=False, failure_code=...)`: the provider definitely
  did not take the money; the service records a failed purchase (no ledger line).
- `ProviderUnavailable`: timeout, network error or provider 5xx. The outcome
  is UNKNOWN (the charge may have gone through). The caller must not record
  a failure; it retries later with the SAME idempotency key, which makes the
  provider replay the first outcome instead of charging twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from commcredits.core.money import InvalidMoney, minor_unit_digits

__all__ = [
    "CARD_REJECTION_CODES",
    "CHARGE_FAILURE_CODES",
    "CardRejectionCode",
    "ChargeFailureCode",
    "MAX_EXPIRY_YEARS_AHEAD",
    "CardRejected",
    "ChargeResult",
    "IdempotencyKeyReused",
    "PaymentProvider",
    "ProviderUnavailable",
    "StoredCard",
    "amount_in_minor_units",
    "card_has_expired",
    "check_expiry_for_storing",
    "get_provider",
    "utc_today",
]

CardRejectionCode = Literal["expired_card", "invalid_card", "card_declined"]
ChargeFailureCode = Literal["card_declined", "expired_card", "processing_error"]

CARD_REJECTION_CODES: frozenset[str] = frozenset({"expired_card", "invalid_card", "card_declined"})
# API.md: the `failure_code` of a failed purchase is one of these three.
CHARGE_FAILURE_CODES: frozenset[str] = frozenset(
    {"card_declined", "expired_card", "processing_error"}
)

# A card that claims to expire more than this many years from now is a typo
# (Stripe refuses far-future years as `invalid_expiry_year` too).
MAX_EXPIRY_YEARS_AHEAD = 50


@dataclass(frozen=True)
class StoredCard:
    """What we keep of a card: never the full number (SPEC §2)."""

    provider_token: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int

    def __post_init__(self) -> None:
        assert len(self.last4) == 4 and self.last4.isdigit(), self.last4
        assert 1 <= self.exp_month <= 12, self.exp_month


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    failure_code: ChargeFailureCode | None
    provider_reference: str | None

    def __post_init__(self) -> None:
        # A success carries no failure code; a failure always names one.
        assert (self.failure_code is None) == self.succeeded, self
        assert self.failure_code is None or self.failure_code in CHARGE_FAILURE_CODES, self


class CardRejected(Exception):
    """The card cannot be stored. `code` is what the API shows (422 problem code)."""

    def __init__(self, code: CardRejectionCode, detail: str) -> None:
        assert code in CARD_REJECTION_CODES, code
        super().__init__(f"{code}: {detail}")
        self.code: CardRejectionCode = code
        self.detail = detail


class ProviderUnavailable(Exception):
    """Timeout, network error or provider 5xx: the outcome is unknown.

    For `charge`, retry later with the same idempotency key; never record the
    purchase as failed on this exception alone.
    """


class IdempotencyKeyReused(Exception):
    """The same idempotency key was sent with a different charge.

    A bug in the caller: keys must be derived from one purchase record.
    """


class PaymentProvider(Protocol):
    name: str

    def store_card(
        self,
        card_number: str,
        exp_month: int,
        exp_year: int,
        *,
        customer_reference: str,
        idempotency_key: str | None = None,
    ) -> StoredCard:
        """Keep the card with the provider. Raises CardRejected or ProviderUnavailable.

        `idempotency_key` (from the client's Idempotency-Key) makes a retry after
        a lost answer reuse what the first attempt made at the provider."""
        ...

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
        """Charge a stored card once per idempotency key. Raises ProviderUnavailable."""
        ...


def get_provider(name: str, **settings: Any) -> PaymentProvider:
    """The provider named by configuration: "simulated" (default) or "stripe".

    "stripe" takes `api_key`, and optionally `api_base` and `timeout_seconds`.
    """
    # Imported here: the adapters import this module, and the Stripe library
    # is only loaded by deployments that use it.
    if name == "simulated":
        from commcredits.adapters.payments.simulated import SimulatedProvider

        return SimulatedProvider(**settings)
    if name == "stripe":
        from commcredits.adapters.payments.stripe_provider import StripeProvider

        return StripeProvider(**settings)
    raise ValueError(f"unknown payment provider {name!r}; expected 'simulated' or 'stripe'")


def utc_today() -> date:
    return datetime.now(UTC).date()


def card_has_expired(exp_month: int, exp_year: int, today: date) -> bool:
    """A card is good through the last day of its expiry month."""
    return (today.year, today.month) > (exp_year, exp_month)


def check_expiry_for_storing(exp_month: int, exp_year: int, today: date) -> None:
    """Refuse an impossible or passed expiry before any card is kept (SPEC §2: 422 expired_card)."""
    if isinstance(exp_month, bool) or not isinstance(exp_month, int) or not 1 <= exp_month <= 12:
        raise CardRejected("invalid_card", f"exp_month {exp_month!r} is not a month 1..12")
    # Four digits: a two-digit "27" would read as the year 27 and pass as expired.
    if isinstance(exp_year, bool) or not isinstance(exp_year, int) or not 1000 <= exp_year <= 9999:
        raise CardRejected("invalid_card", f"exp_year {exp_year!r} is not a four-digit year")
    if card_has_expired(exp_month, exp_year, today):
        raise CardRejected(
            "expired_card", f"the card expired at the end of {exp_year:04d}-{exp_month:02d}"
        )
    if exp_year > today.year + MAX_EXPIRY_YEARS_AHEAD:
        raise CardRejected(
            "invalid_card",
            f"exp_year {exp_year} is more than {MAX_EXPIRY_YEARS_AHEAD} years ahead",
        )


def amount_in_minor_units(amount: Decimal, currency: str) -> int:
    """The exact integer count of minor units (12.34 USD -> 1234, 500 JPY -> 500).

    Refuses (InvalidMoney) an amount that is not a whole number of minor units
    (12.345 USD, 0.5 JPY) or not positive: a provider must never round a charge.
    Trailing zeros are fine (Decimal('12.340') USD -> 1234); the value counts.
    """
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise InvalidMoney(f"amount {amount!r} is not a finite Decimal")
    if amount <= 0:
        raise InvalidMoney(f"amount {amount} is not positive; a charge takes money")
    digits = minor_unit_digits(currency.upper())
    # scaleb only moves the exponent: exact at any precision.
    minor_units = amount.scaleb(digits)
    if minor_units != minor_units.to_integral_value():
        raise InvalidMoney(
            f"amount {amount} has more fraction digits than {currency.upper()} allows ({digits})"
        )
    return int(minor_units)
