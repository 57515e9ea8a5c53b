"""Money on the wire, the half-up rounding point, and formatting (SPEC §2, §3)."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commcredits.core.money import (
    MAX_TEXT_LENGTH,
    InvalidMoney,
    format_amount,
    format_money,
    is_known_currency,
    minor_unit_digits,
    parse_amount,
    parse_rate,
    round_to_minor,
)

# --- currencies -------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "digits"),
    [("USD", 2), ("EUR", 2), ("GBP", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3)],
)
def test_minor_unit_digits_come_from_cldr(currency: str, digits: int) -> None:
    assert minor_unit_digits(currency) == digits


@pytest.mark.parametrize("code", ["USD", "EUR", "GBP", "JPY", "KWD", "CHF", "INR"])
def test_known_currencies(code: str) -> None:
    assert is_known_currency(code)


@pytest.mark.parametrize(
    "code",
    ["usd", "Usd", "US", "USDD", "ZZZ", "", " USD", "XXX", "XTS", "XAU", 840, None],
)
def test_unknown_or_non_monetary_codes(code: object) -> None:
    assert not is_known_currency(code)  # type: ignore[arg-type]


def test_minor_unit_digits_refuses_unknown_currency() -> None:
    with pytest.raises(InvalidMoney, match="ZZZ"):
        minor_unit_digits("ZZZ")


# --- parse_amount: valid ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "expected"),
    [
        ("12.50", "USD", Decimal("12.50")),
        ("12.5", "USD", Decimal("12.5")),
        ("12", "USD", Decimal("12")),
        ("0.01", "USD", Decimal("0.01")),
        ("999999999999.99", "USD", Decimal("999999999999.99")),
        ("1500", "JPY", Decimal("1500")),
        ("1.234", "KWD", Decimal("1.234")),
    ],
)
def test_parse_amount_accepts_plain_decimals(text: str, currency: str, expected: Decimal) -> None:
    parsed = parse_amount(text, currency)
    assert parsed == expected
    # The scale is kept as sent: "12.50" stays two places.
    assert parsed.as_tuple() == expected.as_tuple()


def test_parse_amount_negative_only_when_allowed() -> None:
    assert parse_amount("-5.25", "USD", allow_negative=True) == Decimal("-5.25")
    with pytest.raises(InvalidMoney, match="negative"):
        parse_amount("-5.25", "USD")


def test_parse_amount_zero_only_when_allowed() -> None:
    assert parse_amount("0", "USD", allow_zero=True) == 0
    assert parse_amount("0.00", "USD", allow_zero=True) == 0
    for zero in ("0", "0.00"):
        with pytest.raises(InvalidMoney, match="zero"):
            parse_amount(zero, "USD")


def test_parse_amount_negative_zero_is_plain_zero() -> None:
    parsed = parse_amount("-0.00", "USD", allow_negative=True, allow_zero=True)
    assert parsed == 0 and not parsed.is_signed()
    with pytest.raises(InvalidMoney, match="zero"):
        parse_amount("-0", "USD", allow_negative=True)


# --- parse_amount: invalid ----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1e3",
        "1E3",
        "1.5e2",
        "+5",
        " 5",
        "5 ",
        "5\n",
        "1 000",
        "1,000",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "sNaN",
        "",
        "-",
        ".",
        ".5",
        "5.",
        "--5",
        "05",
        "00.5",
        "1_000",
        "0x10",
        "１２",  # full-width digits
        "\u0663",  # Arabic-Indic three: Decimal() would accept it
        "12.5.0",
        "$12",
        "12USD",
    ],
)
def test_parse_amount_refuses_anything_but_a_plain_decimal(text: str) -> None:
    with pytest.raises(InvalidMoney):
        parse_amount(text, "USD", allow_negative=True, allow_zero=True)


@pytest.mark.parametrize(
    "value",
    [12, 12.5, 0, True, False, Decimal("12.50"), None, b"12.50", ["12.50"], {"amount": "1"}],
)
def test_parse_amount_refuses_non_strings(value: object) -> None:
    with pytest.raises(InvalidMoney, match="JSON string"):
        parse_amount(value, "USD", allow_zero=True)


def test_parse_amount_refuses_too_many_fraction_digits_with_a_clear_detail() -> None:
    with pytest.raises(InvalidMoney) as caught:
        parse_amount("12.345", "USD")
    assert caught.value.detail == "amount '12.345' has 3 fraction digits; USD allows at most 2"
    assert str(caught.value) == caught.value.detail
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("text", "currency"),
    [("12.500", "USD"), ("100.0", "JPY"), ("1", "ZZZ"), ("1.2345", "KWD")],
)
def test_parse_amount_follows_the_currency(text: str, currency: str) -> None:
    with pytest.raises(InvalidMoney):
        parse_amount(text, currency)


def test_parse_amount_integer_digit_limit() -> None:
    assert parse_amount("9" * 12, "USD") == Decimal("9" * 12)
    with pytest.raises(InvalidMoney, match="13 integer digits"):
        parse_amount("1" + "0" * 12, "USD")


def test_parse_amount_refuses_huge_text_early() -> None:
    with pytest.raises(InvalidMoney, match="characters long"):
        parse_amount("1" * (MAX_TEXT_LENGTH + 1), "USD")


# --- parse_rate -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0190", Decimal("0.0190")),
        ("0", Decimal("0")),
        ("0.000001", Decimal("0.000001")),
        ("1.5", Decimal("1.5")),
        ("999999999999.999999", Decimal("999999999999.999999")),
    ],
)
def test_parse_rate_accepts(text: str, expected: Decimal) -> None:
    parsed = parse_rate(text)
    assert parsed == expected and parsed.as_tuple() == expected.as_tuple()


@pytest.mark.parametrize(
    "text",
    ["-0.01", "0.0000001", "1e-3", "NaN", "+1", " 0.01", "", "1" * 13, ".01"],
)
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(InvalidMoney):
        parse_rate(text)


@pytest.mark.parametrize("value", [0.019, 1, Decimal("0.019"), None])
def test_parse_rate_refuses_non_strings(value: object) -> None:
    with pytest.raises(InvalidMoney, match="JSON string"):
        parse_rate(value)


# --- round_to_minor: the single rounding point ---------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.125", "USD", "0.13"),
        ("2.675", "USD", "2.68"),  # round(2.675, 2) == 2.67 in binary float
        ("1.005", "USD", "1.01"),  # float gives 1.0
        ("0.124999", "USD", "0.12"),
        ("0.135", "USD", "0.14"),  # half-up, not banker's (half-even gives 0.14 too)
        ("0.145", "USD", "0.15"),  # half-even would give 0.14
        ("-0.125", "USD", "-0.13"),  # ties away from zero on both sides
        ("-2.675", "USD", "-2.68"),
        ("-0.004", "USD", "0.00"),  # no negative zero
        ("0.0049999", "USD", "0.00"),
        ("12", "USD", "12.00"),
        ("1234.5", "JPY", "1235"),
        ("1234.4999", "JPY", "1234"),
        ("-0.5", "JPY", "-1"),
        ("0.0005", "KWD", "0.001"),
        ("1.2344", "KWD", "1.234"),
        ("0.00016666666666666666666666666666666666667", "USD", "0.00"),
        ("999999999999.995", "USD", "1000000000000.00"),
    ],
)
def test_round_to_minor_half_up(amount: str, currency: str, expected: str) -> None:
    rounded = round_to_minor(Decimal(amount), currency)
    assert rounded == Decimal(expected)
    assert format(rounded, "f") == expected


def test_round_to_minor_ignores_the_global_context() -> None:
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = decimal.ROUND_DOWN
        assert round_to_minor(Decimal("123456.125"), "USD") == Decimal("123456.13")


@given(
    st.decimals(
        min_value=Decimal("-999999999999"),
        max_value=Decimal("999999999999"),
        places=6,
        allow_nan=False,
        allow_infinity=False,
    ),
    st.sampled_from(["USD", "JPY", "KWD"]),
)
def test_round_to_minor_is_within_half_a_minor_unit(amount: Decimal, currency: str) -> None:
    rounded = round_to_minor(amount, currency)
    half_unit = Decimal(1).scaleb(-minor_unit_digits(currency)) / 2
    assert abs(rounded - amount) <= half_unit
    # Symmetric: a refund rounds to exactly minus the charge.
    assert round_to_minor(-amount, currency) == -rounded
    assert round_to_minor(rounded, currency) == rounded


# --- formatting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("0E-6"), "0"),
        (Decimal("0E-7"), "0"),
        (Decimal("-0.00"), "0"),
        (Decimal("1E+2"), "100"),
        (Decimal("12.50"), "12.50"),
        (Decimal("0.0190"), "0.0190"),
        (Decimal("1E-8"), "0.00000001"),
        (Decimal("-3.5"), "-3.5"),
        (Decimal("123456789012.123456"), "123456789012.123456"),
    ],
)
def test_format_money_is_plain(amount: Decimal, expected: str) -> None:
    assert format_money(amount) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("12.5", "USD", "12.50"),
        ("12", "USD", "12.00"),
        ("1E+2", "USD", "100.00"),
        ("0.005", "USD", "0.01"),
        ("-0.001", "USD", "0.00"),
        ("1234.5", "JPY", "1235"),
        ("1.5", "KWD", "1.500"),
    ],
)
def test_format_amount_uses_the_minor_unit(amount: str, currency: str, expected: str) -> None:
    assert format_amount(Decimal(amount), currency) == expected


@given(
    st.decimals(
        min_value=Decimal("-999999999999.99"),
        max_value=Decimal("999999999999.99"),
        places=2,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_format_then_parse_round_trips(amount: Decimal) -> None:
    text = format_amount(amount, "USD")
    assert "E" not in text and "e" not in text
    assert parse_amount(text, "USD", allow_negative=True, allow_zero=True) == amount
    assert parse_amount(format_money(amount), "USD", allow_negative=True, allow_zero=True) == amount
