"""Number analysis: E.164 only, emergency short numbers, types, the domestic test (SPEC §3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commcredits.core.numbers import InvalidNumber, NumberInfo, analyse_number, same_country

# --- emergency short numbers -----------------------------------------------------


@pytest.mark.parametrize(
    ("dialled", "caller_region", "country_code"),
    [("911", "US", 1), ("112", "DE", 49), ("999", "GB", 44), ("112", "GB", 44), ("112", "us", 1)],
)
def test_emergency_short_number_of_the_callers_country(
    dialled: str, caller_region: str, country_code: int
) -> None:
    info = analyse_number(dialled, caller_region)
    assert info.is_emergency
    assert info.number_type == "emergency"
    assert info.e164 == dialled
    assert info.digits == dialled
    assert info.region == caller_region.upper()
    assert info.country_code == country_code


@pytest.mark.parametrize(
    ("dialled", "caller_region"),
    [
        ("911", "DE"),  # not an emergency number in Germany
        ("999", "US"),
        ("112", None),  # no caller country: nothing to compare with
        ("+112", "DE"),  # emergency numbers are dialled as is, not in E.164
        (" 112", "DE"),
        ("112\n", "DE"),
        ("1-1-2", "DE"),
    ],
)
def test_short_numbers_outside_the_callers_emergency_list_are_invalid(
    dialled: str, caller_region: str | None
) -> None:
    with pytest.raises(InvalidNumber):
        analyse_number(dialled, caller_region)


# --- valid E.164 numbers and their types ----------------------------------------


@pytest.mark.parametrize(
    ("number", "region", "country_code", "number_type"),
    [
        ("+442079460000", "GB", 44, "fixed"),
        ("+4915112345678", "DE", 49, "mobile"),
        # NANP cannot tell fixed from mobile: FIXED_LINE_OR_MOBILE is rated as fixed.
        ("+12125551234", "US", 1, "fixed"),
        ("+18005551234", "US", 1, "toll_free"),
        ("+19005551234", "US", 1, "premium"),
        ("+18765551234", "JM", 1, "mobile"),
        ("+447781123456", "GG", 44, "mobile"),
        ("+447797123456", "JE", 44, "mobile"),
        ("+77012345678", "KZ", 7, "mobile"),
        ("+74951234567", "RU", 7, "fixed"),
    ],
)
def test_valid_numbers_are_classified(
    number: str, region: str, country_code: int, number_type: str
) -> None:
    info = analyse_number(number, "US")
    assert info == NumberInfo(
        e164=number,
        digits=number[1:],
        region=region,
        country_code=country_code,
        number_type=number_type,  # type: ignore[arg-type]
        is_emergency=False,
    )


def test_caller_region_does_not_change_a_full_number() -> None:
    assert analyse_number("+442079460000", None) == analyse_number("+442079460000", "DE")


@pytest.mark.parametrize(
    "text",
    [
        "+44 20 7946 0000",  # spaces
        "+44-20-7946-0000",  # dashes
        "00442079460000",  # international prefix instead of '+'
        "02079460000",  # national format
        "+4420794600000000",  # 16 digits
        "+4420794600000000000000000000",
        "abc",
        "+44abc",
        "",
        "+",
        "+0442079460000",  # country codes never start with 0
        "+442079460000\n",  # '$' would let a trailing newline through
        "+442079460000 ",
        "+\uff14\uff14\uff12\uff10\uff17\uff19\uff14\uff16\uff10\uff10\uff10\uff10",  # wide digits
        "+447700900123",  # E.164 shaped, but not a number in the UK plan
        "+8008001234",  # +800 shaped, too short to be valid
        "+1911",
    ],
)
def test_invalid_formats_are_refused(text: str) -> None:
    with pytest.raises(InvalidNumber) as raised:
        analyse_number(text, "GB")
    assert str(raised.value)  # an actionable detail, never an empty message


def test_invalid_format_detail_explains_e164() -> None:
    with pytest.raises(InvalidNumber, match=r"E\.164.*'\+'.*15 digits"):
        analyse_number("+44 20 7946 0000", "GB")


@pytest.mark.parametrize("value", [None, 442079460000, 4.4, b"+442079460000", ["+442079460000"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidNumber, match="must be a string"):
        analyse_number(value, "GB")


def test_invalid_number_is_a_value_error() -> None:
    assert issubclass(InvalidNumber, ValueError)


def test_results_are_cached() -> None:
    first = analyse_number("+442079460001", "GB")
    assert analyse_number("+442079460001", "GB") is first


@given(st.text(max_size=20))
def test_any_text_is_either_analysed_or_invalid(text: str) -> None:
    try:
        info = analyse_number(text, "GB")
    except InvalidNumber:
        return
    if info.is_emergency:
        assert text in {"999", "112"} or text.isdigit()
    else:
        assert text.startswith("+") and text[1:].isdigit() and text[1:].isascii()
        assert 2 <= len(text[1:]) <= 15
        assert info.digits == text[1:]


# --- domestic or international ----------------------------------------------------


def _domestic(number: str, usage_location: str) -> bool:
    info = analyse_number(number, usage_location)
    return same_country(info.region, info.country_code, usage_location)


@pytest.mark.parametrize(
    ("number", "usage_location", "domestic"),
    [
        ("+442079460000", "GB", True),
        # phonenumbers files these +44 7 mobiles under GG, JE and IM: still UK numbers.
        ("+447781123456", "GB", True),  # Guernsey
        ("+447797123456", "GB", True),  # Jersey
        ("+447624123456", "GB", True),  # Isle of Man
        ("+442079460000", "JE", True),  # and back again
        ("+447781123456", "JE", True),
        ("+442079460000", "DE", False),
        ("+447797123456", "FR", False),
        # NANP shares +1 but its countries are separate.
        ("+12125551234", "US", True),
        ("+18765551234", "US", False),  # Jamaica
        ("+12125551234", "JM", False),
        ("+12684601234", "US", False),  # Antigua
        # +7: Russia and Kazakhstan are separate countries.
        ("+77012345678", "RU", False),
        ("+74951234567", "KZ", False),
        ("+74951234567", "RU", True),
        ("+358181234567", "FI", True),  # Åland
        ("+4915112345678", "de", True),  # usage locations compare case-insensitively
    ],
)
def test_same_country(number: str, usage_location: str, domestic: bool) -> None:
    assert _domestic(number, usage_location) is domestic


def test_non_geographic_numbers_are_never_domestic() -> None:
    assert same_country(None, 800, "US") is False


def test_dependency_on_a_foreign_calling_code_is_not_domestic() -> None:
    # Guard: a territory dialled on another calling code is not the main country's.
    assert same_country("GG", 44, "GB") is True
    assert same_country("GG", 33, "GB") is False
