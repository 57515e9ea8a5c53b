"""Named domain errors. The API maps each ``code`` to an HTTP status in one table
(api/errors.py); services and the core raise these and know nothing of HTTP."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ValidationFailed(DomainError):
    code = "validation_error"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class UpnTaken(DomainError):
    code = "upn_conflict"


class NoSeatsAvailable(DomainError):
    code = "no_seats_available"


class IdempotencyConflict(DomainError):
    code = "idempotency_conflict"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class InsufficientPermission(DomainError):
    code = "insufficient_permission"


class PurchaseNotAllowed(DomainError):
    code = "purchase_not_allowed"


class AmountBelowMinimum(DomainError):
    code = "amount_below_minimum"


class AmountAboveMaximum(DomainError):
    code = "amount_above_maximum"


class ExpiredCard(DomainError):
    code = "expired_card"


class InvalidCard(DomainError):
    code = "invalid_card"


class PaymentMethodNotFound(DomainError):
    code = "payment_method_not_found"


class CallConflict(DomainError):
    code = "call_conflict"


class InvalidRateDeck(DomainError):
    code = "invalid_rate_deck"
