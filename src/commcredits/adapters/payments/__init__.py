"""Payment providers: the built-in `simulated` one and Stripe, behind one interface."""

from commcredits.adapters.payments.base import (
    CardRejected,
    ChargeResult,
    IdempotencyKeyReused,
    PaymentProvider,
    ProviderUnavailable,
    StoredCard,
    amount_in_minor_units,
    get_provider,
)

__all__ = [
    "CardRejected",
    "ChargeResult",
    "IdempotencyKeyReused",
    "PaymentProvider",
    "ProviderUnavailable",
    "StoredCard",
    "amount_in_minor_units",
    "get_provider",
]
