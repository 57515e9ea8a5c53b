"""The built-in `simulated` payment provider (the embedded default).

It follows the public test-card convention (SPEC §2):

    4242424242424242  succeeds
    4000000000000002  declined          -> card_declined when charged
    4000000000000069  expired           -> expired_card when charged
    4000000000000119  processing error  -> processing_error when charged

Each of these can be stored; its failure shows when it is charged. Any other
number that passes the Luhn check succeeds. A card whose expiry has passed is
refused when stored and fails as `expired_card` when charged after it expires.

The full number is never kept: the behaviour, last4 and expiry travel inside
the opaque token ("sim_<behaviour>_<last4>_<YYYYMM>_<random>"), so a charge
can tell what the card does without any lookup.

Idempotency here lasts only as long as the process and the last
`MAX_REMEMBERED_CHARGES` keys. Durable idempotency is the service's job: it
keeps a purchase record per key and only calls the provider for a record
whose outcome is still unknown.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from enum import Enum

from commcredits.adapters.payments.base import (
    CardRejected,
    ChargeFailureCode,
    ChargeResult,
    IdempotencyKeyReused,
    StoredCard,
    amount_in_minor_units,
    card_has_expired,
    check_expiry_for_storing,
    utc_today,
)

__all__ = [
    "MAX_REMEMBERED_CHARGES",
    "TEST_CARD_DECLINED",
    "TEST_CARD_EXPIRED",
    "TEST_CARD_PROCESSING_ERROR",
    "TEST_CARD_SUCCEEDS",
    "SimulatedProvider",
    "card_brand",
    "passes_luhn",
]

TEST_CARD_SUCCEEDS = "4242424242424242"
TEST_CARD_DECLINED = "4000000000000002"
TEST_CARD_EXPIRED = "4000000000000069"
TEST_CARD_PROCESSING_ERROR = "4000000000000119"

# ISO/IEC 7812 primary account numbers are 12 to 19 digits long.
MIN_CARD_DIGITS = 12
MAX_CARD_DIGITS = 19
# Bound on the in-process idempotency memory; the oldest key is forgotten first.
MAX_REMEMBERED_CHARGES = 10_000
# A testing aid (docs/decisions.md): every charge answers this many
# milliseconds late, so a test can act while a recharge is in flight.
DELAY_ENV = "COMMCREDITS_SIMULATED_PROVIDER_DELAY_MS"


class _Behaviour(Enum):
    SUCCEEDS = "ok"
    DECLINED = "declined"
    EXPIRED = "expired"
    PROCESSING_ERROR = "processing"


_TEST_CARD_BEHAVIOURS = {
    TEST_CARD_SUCCEEDS: _Behaviour.SUCCEEDS,
    TEST_CARD_DECLINED: _Behaviour.DECLINED,
    TEST_CARD_EXPIRED: _Behaviour.EXPIRED,
    TEST_CARD_PROCESSING_ERROR: _Behaviour.PROCESSING_ERROR,
}

_FAILURE_BY_BEHAVIOUR: dict[_Behaviour, ChargeFailureCode] = {
    _Behaviour.DECLINED: "card_declined",
    _Behaviour.EXPIRED: "expired_card",
    _Behaviour.PROCESSING_ERROR: "processing_error",
}

_TOKEN = re.compile(
    r"sim_(ok|declined|expired|processing)_([0-9]{4})_([0-9]{4})([0-9]{2})_[0-9a-f]+"
)
# People type card numbers in groups; spaces and hyphens carry no meaning.
_CARD_NUMBER_SEPARATORS = re.compile(r"[ -]")
_DIGITS = re.compile(r"[0-9]+", re.ASCII)

# (provider_token, amount in minor units, currency): what must match for a
# retry under the same key to be the same charge.
_ChargeFingerprint = tuple[str, int, str]


class SimulatedProvider:
    name = "simulated"

    def __init__(self, *, clock: Callable[[], date] = utc_today) -> None:
        self._clock = clock
        self._charges_by_key: OrderedDict[str, tuple[_ChargeFingerprint, ChargeResult]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def store_card(
        self,
        card_number: str,
        exp_month: int,
        exp_year: int,
        *,
        customer_reference: str,
        idempotency_key: str | None = None,
    ) -> StoredCard:
        digits = _normalised_card_number(card_number)
        check_expiry_for_storing(exp_month, exp_year, self._clock())
        behaviour = _TEST_CARD_BEHAVIOURS.get(digits, _Behaviour.SUCCEEDS)
        last4 = digits[-4:]
        token = (
            f"sim_{behaviour.value}_{last4}_{exp_year:04d}{exp_month:02d}_{secrets.token_hex(8)}"
        )
        return StoredCard(
            provider_token=token,
            brand=card_brand(digits),
            last4=last4,
            exp_month=exp_month,
            exp_year=exp_year,
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
        assert idempotency_key, "a charge needs an idempotency key"
        delay_ms = int(os.environ.get(DELAY_ENV) or 0)
        if delay_ms > 0:
            time.sleep(delay_ms / 1000)
        fingerprint = (provider_token, amount_in_minor_units(amount, currency), currency.upper())
        with self._lock:
            remembered = self._charges_by_key.get(idempotency_key)
            if remembered is not None:
                first_fingerprint, first_result = remembered
                if first_fingerprint != fingerprint:
                    raise IdempotencyKeyReused(
                        f"idempotency key {idempotency_key!r} was first used for another charge"
                    )
                return first_result
            result = self._decide(provider_token, today or self._clock())
            self._charges_by_key[idempotency_key] = (fingerprint, result)
            if len(self._charges_by_key) > MAX_REMEMBERED_CHARGES:
                self._charges_by_key.popitem(last=False)
            return result

    def _decide(self, provider_token: str, today: date) -> ChargeResult:
        reference = f"simch_{secrets.token_hex(12)}"
        match = _TOKEN.fullmatch(provider_token)
        if match is None:
            # Not one of ours (e.g. a token kept while another provider was
            # configured): nothing was charged, so it is a definite failure.
            return ChargeResult(False, "processing_error", None)
        behaviour = _Behaviour(match.group(1))
        exp_year, exp_month = int(match.group(3)), int(match.group(4))
        # Expiry first: a network refuses an expired card whatever else it is.
        if card_has_expired(exp_month, exp_year, today):
            return ChargeResult(False, "expired_card", reference)
        failure_code = _FAILURE_BY_BEHAVIOUR.get(behaviour)
        if failure_code is not None:
            return ChargeResult(False, failure_code, reference)
        return ChargeResult(True, None, reference)


def passes_luhn(digits: str) -> bool:
    """The mod-10 check digit every card number carries."""
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = int(character)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_brand(digits: str) -> str:
    """Brand from the leading digits (IIN ranges): visa, mastercard, amex, else unknown."""
    if digits.startswith("4"):
        return "visa"
    if 51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720:
        return "mastercard"
    if digits[:2] in ("34", "37"):
        return "amex"
    return "unknown"


def _normalised_card_number(card_number: str) -> str:
    if not isinstance(card_number, str):
        raise CardRejected("invalid_card", "the card number must be a string of digits")
    digits = _CARD_NUMBER_SEPARATORS.sub("", card_number)
    if _DIGITS.fullmatch(digits) is None:
        raise CardRejected("invalid_card", "the card number must contain only digits")
    if not MIN_CARD_DIGITS <= len(digits) <= MAX_CARD_DIGITS:
        raise CardRejected(
            "invalid_card",
            f"the card number has {len(digits)} digits; "
            f"expected {MIN_CARD_DIGITS} to {MAX_CARD_DIGITS}",
        )
    if not passes_luhn(digits):
        raise CardRejected("invalid_card", "the card number fails the check-digit (Luhn) test")
    return digits
