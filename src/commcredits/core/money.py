"""Money: parsing from the wire, the single rounding rule, and formatting.

Money is `decimal.Decimal` end to end. Every computation here runs in
`MONEY_CONTEXT`, never the process-wide decimal context, so a library that
changes the global context cannot change a bill.

Wire form (SPEC §2 "Money on the wire"): a JSON *string* holding a plain
decimal — optional '-', integer digits in JSON-number form (no superfluous
leading zeros), optionally '.' and at least one fraction digit. No exponent,
no '+', no spaces, no NaN or Infinity.
"""

from __future__ import annotations

import re
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from functools import lru_cache

from babel.numbers import get_currency_precision, is_currency

__all__ = [
    "MAX_INTEGER_DIGITS",
    "MAX_RATE_FRACTION_DIGITS",
    "MONEY_CONTEXT",
    "InvalidMoney",
    "format_amount",
    "format_money",
    "is_known_currency",
    "minor_unit_digits",
    "parse_amount",
    "parse_rate",
    "round_to_minor",
]

# SPEC §2: at most 12 integer digits for any money value on the wire.
MAX_INTEGER_DIGITS = 12
# SPEC §2: rates per minute and connect fees carry at most 6 fraction digits.
MAX_RATE_FRACTION_DIGITS = 6
# Longest text worth looking at: '-' + 12 digits + '.' + a generous fraction.
# Anything longer is refused before the regular expression sees it.
MAX_TEXT_LENGTH = 64

# 38 significant digits: 12 integer digits times a 6-fraction-digit rate times
# hours of seconds fits with room to spare, and a charge divided by 60 keeps
# ~25 fraction digits, far below any minor unit (see rating.py on why that
# precision never changes a rounded charge). Errors that would silently give
# NaN or infinities are traps instead.
MONEY_CONTEXT = Context(
    prec=38,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)

# ISO 4217 codes whose minor unit is "N.A.": precious metals, bond-market
# units, the SDR, the testing code and "no currency". Babel lists them as
# currencies (with its 2-digit default), but nobody keeps a prepaid balance
# in troy ounces of gold.
_NON_MONETARY_CODES = frozenset(
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
)

_CURRENCY_CODE = re.compile(r"[A-Z]{3}", re.ASCII)
# JSON number grammar without exponent or '+'. [0-9], not \d: \d also
# matches Arabic-Indic and other Unicode digits, which Decimal() would accept.
_PLAIN_DECIMAL = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?", re.ASCII)


class InvalidMoney(ValueError):
    """A money value or currency code that breaks the wire rules.

    `detail` says what is wrong and what is expected; the API layer shows it
    verbatim in a `validation_error` problem.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def is_known_currency(code: str) -> bool:
    """True for a 3-letter upper-case ISO 4217 money code that babel knows."""
    if not isinstance(code, str) or _CURRENCY_CODE.fullmatch(code) is None:
        return False
    return _is_babel_money_code(code)


def minor_unit_digits(currency: str) -> int:
    """Fraction digits of the currency's minor unit (USD 2, JPY 0, KWD 3), from CLDR."""
    return _minor_unit(_hashable_code(currency))[0]


def minor_unit_quantum(currency: str) -> Decimal:
    """One minor unit of the currency as a Decimal exponent: USD Decimal('0.01')."""
    return _minor_unit(_hashable_code(currency))[1]


def _hashable_code(currency: object) -> str:
    if not isinstance(currency, str):
        raise InvalidMoney(f"currency {currency!r} is not a known ISO 4217 currency code")
    return currency


# On every posting and every formatted amount: babel's lookup is cached per
# code (an unknown code raises, and exceptions are not cached).
@lru_cache(maxsize=512)
def _minor_unit(currency: str) -> tuple[int, Decimal]:
    if not is_known_currency(currency):
        raise InvalidMoney(f"currency {currency!r} is not a known ISO 4217 currency code")
    digits = get_currency_precision(currency)
    return digits, Decimal(1).scaleb(-digits)


def parse_amount(
    text: object,
    currency: str,
    *,
    allow_negative: bool = False,
    allow_zero: bool = False,
) -> Decimal:
    """Parse a money amount in `currency` from the wire; positive unless allowed otherwise.

    The scale is kept as sent ("12.50" -> Decimal('12.50')). A fraction with
    more digits than the minor unit is refused even when they are zeros
    ("12.500" in USD): the rule is about the text, and the text is what the
    client will see echoed back.
    """
    max_fraction_digits = minor_unit_digits(currency)
    amount = _parse_plain_decimal(
        text,
        what="amount",
        max_fraction_digits=max_fraction_digits,
        fraction_rule=f"{currency} allows at most {max_fraction_digits}",
        allow_negative=allow_negative,
    )
    if amount == 0 and not allow_zero:
        raise InvalidMoney(f"amount {text!r} is zero; expected a positive amount")
    return amount


def parse_rate(text: object) -> Decimal:
    """Parse a rate per minute or a connect fee: non-negative, at most 6 fraction digits."""
    return _parse_plain_decimal(
        text,
        what="rate",
        max_fraction_digits=MAX_RATE_FRACTION_DIGITS,
        fraction_rule=f"rates allow at most {MAX_RATE_FRACTION_DIGITS}",
        allow_negative=False,
    )


def round_to_minor(amount: Decimal, currency: str) -> Decimal:
    """Round half-up (ties away from zero) to the currency's minor unit.

    THE single rounding point of the system: exact charges are rounded here,
    once, when they are posted to the ledger (SPEC §3 "Rating"). Ties go away
    from zero on both sides (-0.125 -> -0.13), so a refund of a charge rounds
    to exactly minus the charge.
    """
    assert isinstance(amount, Decimal) and amount.is_finite(), amount
    rounded = amount.quantize(
        minor_unit_quantum(currency), rounding=ROUND_HALF_UP, context=MONEY_CONTEXT
    )
    return _without_negative_zero(rounded)


def format_money(amount: Decimal) -> str:
    """Plain decimal text, never exponent notation; the scale is kept.

    Decimal('12.50') -> '12.50', Decimal('1E+2') -> '100'. Any zero is '0':
    the exponent of a computed zero (Decimal('0E-6')) is an artefact of the
    arithmetic, not a precision anyone chose.
    """
    assert isinstance(amount, Decimal) and amount.is_finite(), amount
    if amount == 0:
        return "0"
    # The 'f' presentation writes a positive exponent out as digits: 1E+2 -> '100'.
    return format(amount, "f")


def format_amount(amount: Decimal, currency: str) -> str:
    """The amount rounded to the minor unit, with exactly its digits: '12.50', JPY '1235'."""
    return format(round_to_minor(amount, currency), "f")


def _parse_plain_decimal(
    text: object,
    *,
    what: str,
    max_fraction_digits: int,
    fraction_rule: str,
    allow_negative: bool,
) -> Decimal:
    # bool is not str, so True never sneaks in as 1; int, float and Decimal
    # are refused too: a JSON number has already been through binary floating
    # point in most clients (API.md: money is a JSON string).
    if not isinstance(text, str):
        raise InvalidMoney(
            f'{what} must be a JSON string holding a decimal such as "12.50", '
            f"not {type(text).__name__}"
        )
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidMoney(f"{what} is {len(text)} characters long; at most {MAX_TEXT_LENGTH}")
    match = _PLAIN_DECIMAL.fullmatch(text)
    if match is None:
        raise InvalidMoney(
            f"{what} {text!r} is not a plain decimal; expected digits with an optional "
            "'.' and fraction digits, no exponent, sign, spaces or leading zeros"
        )
    sign, integer_digits, fraction_digits = match.group(1), match.group(2), match.group(3) or ""
    if sign and not allow_negative:
        raise InvalidMoney(f"{what} {text!r} is negative; expected a non-negative {what}")
    if len(integer_digits) > MAX_INTEGER_DIGITS:
        raise InvalidMoney(
            f"{what} {text!r} has {len(integer_digits)} integer digits; "
            f"at most {MAX_INTEGER_DIGITS} are allowed"
        )
    if len(fraction_digits) > max_fraction_digits:
        raise InvalidMoney(
            f"{what} {text!r} has {len(fraction_digits)} fraction digits; {fraction_rule}"
        )
    # The constructor is exact whatever the context; the text is known good.
    return _without_negative_zero(Decimal(text))


# Bounded: only strings of three upper-case ASCII letters reach it.
@lru_cache(maxsize=26 * 26 * 26)
def _is_babel_money_code(code: str) -> bool:
    return code not in _NON_MONETARY_CODES and is_currency(code)


def _without_negative_zero(amount: Decimal) -> Decimal:
    # "-0.00" would be shown to admins as a negative zero balance.
    return amount.copy_abs() if amount == 0 else amount
