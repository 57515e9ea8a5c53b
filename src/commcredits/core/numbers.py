"""Number analysis: is a dialled number acceptable, where does it go, what kind is it.

SPEC §3 "Numbers": `to` and `from` are E.164 strings (`+` then up to 15 digits and
nothing else) that libphonenumber considers valid; the only exception is an
emergency short number of the caller's country, dialled as is (`911`, `112`, `999`).

Pure: phonenumbers' metadata ships with the library, no I/O.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final, Literal

import phonenumbers
from phonenumbers import PhoneNumberType, shortnumberinfo

__all__ = [
    "NUMBER_TYPES",
    "SHARED_CALLING_CODE_DEPENDENCIES",
    "InvalidNumber",
    "NumberInfo",
    "NumberType",
    "analyse_number",
    "same_country",
]

NumberType = Literal["fixed", "mobile", "premium", "toll_free", "other", "emergency"]
NUMBER_TYPES: Final[tuple[NumberType, ...]] = (
    "fixed",
    "mobile",
    "premium",
    "toll_free",
    "other",
    "emergency",
)

# `re.fullmatch`, not `$`: `$` would also accept a trailing newline.
_E164_PATTERN: Final = re.compile(r"\+[1-9][0-9]{1,14}")
# Emergency short numbers are a handful of digits; anything longer is not one.
_SHORT_NUMBER_PATTERN: Final = re.compile(r"[0-9]{2,6}")
# Longer than any E.164 number: refused before any parsing, whatever it holds.
MAX_NUMBER_LENGTH_CHARS: Final = 16
# Distinct (number, caller region) pairs kept; a platform dials a limited set of
# numbers again and again, and each entry is a few hundred bytes.
ANALYSIS_CACHE_ENTRIES: Final = 65_536

# phonenumbers reports non-geographic numbers (+800, +882, ...) as region "001".
_NON_GEOGRAPHIC_REGIONS: Final = frozenset({"001", "ZZ"})

# Some territories share their main country's calling code but have their own ISO
# code in phonenumbers: a +44 7781 mobile is "GG", +44 7797 is "JE", +44 7624 is
# "IM", though subscribers and carriers treat them as part of the UK numbering
# plan and a UK user dials them as national numbers. A call within such a
# group (main country and dependencies) counts as domestic. Separate countries that merely
# share a calling code stay separate: NANP (+1: US, CA, JM, ...) and +7 (RU, KZ).
SHARED_CALLING_CODE_DEPENDENCIES: Final[dict[str, frozenset[str]]] = {
    "GB": frozenset({"GG", "JE", "IM"}),
    "FI": frozenset({"AX"}),  # Åland, +358 18
    "NO": frozenset({"SJ"}),  # Svalbard and Jan Mayen, +47 79
    "AU": frozenset({"CX", "CC"}),  # Christmas and Cocos Islands, +61 8 9162/9164
}


@dataclass(frozen=True, slots=True)
class _NumberingArea:
    members: frozenset[str]  # the main country and its dependencies
    calling_code: int


_NUMBERING_AREA_OF: Final[dict[str, _NumberingArea]] = {
    member: _NumberingArea(
        members=frozenset({main, *dependencies}),
        calling_code=phonenumbers.country_code_for_region(main),
    )
    for main, dependencies in SHARED_CALLING_CODE_DEPENDENCIES.items()
    for member in (main, *dependencies)
}

_TYPE_NAMES: Final[dict[int, NumberType]] = {
    PhoneNumberType.FIXED_LINE: "fixed",
    PhoneNumberType.MOBILE: "mobile",
    # NANP numbers cannot be told apart (fixed and mobile share ranges and are
    # priced alike); rate them as fixed so a deck's `fixed` row matches them.
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed",
    PhoneNumberType.PREMIUM_RATE: "premium",
    PhoneNumberType.TOLL_FREE: "toll_free",
}


class InvalidNumber(ValueError):
    """A number that is neither valid E.164 nor an emergency short number."""


@dataclass(frozen=True, slots=True)
class NumberInfo:
    e164: str  # "+4420..."; for an emergency call, the short number as dialled ("911")
    digits: str  # e164 without the "+"
    region: str | None  # ISO 3166 alpha-2 per phonenumbers; None for non-geographic
    country_code: int | None  # calling code (44); None when unknown
    number_type: NumberType
    is_emergency: bool


def analyse_number(text: object, caller_region: str | None) -> NumberInfo:
    """Check and classify a dialled number; raise InvalidNumber with a fixable detail."""
    if not isinstance(text, str):
        raise InvalidNumber(f"a phone number must be a string, got {type(text).__name__}")
    if len(text) > MAX_NUMBER_LENGTH_CHARS:
        raise InvalidNumber(
            "a phone number must be E.164: '+' then at most 15 digits and nothing else"
        )
    region = caller_region.upper() if caller_region else None
    outcome = _analyse_cached(text, region)
    if isinstance(outcome, str):
        raise InvalidNumber(outcome)
    return outcome


def same_country(
    destination_region: str | None, country_code: int | None, usage_location: str
) -> bool:
    """The "domestic" test of SPEC §3 rule 2: does this number lie in the user's country?

    A country and the dependencies sharing its calling code count as one
    (SHARED_CALLING_CODE_DEPENDENCIES), both ways: a GB user calling a Jersey
    mobile, and a Jersey user calling London, are both national calls.
    """
    if destination_region is None:
        return False
    home = usage_location.upper()
    destination = destination_region.upper()
    if destination == home:
        return True
    area = _NUMBERING_AREA_OF.get(home)
    if area is None or destination not in area.members:
        return False
    # Only when dialled on the area's own calling code (always true for today's
    # metadata; a guard against a territory moving to a code of its own).
    return country_code == area.calling_code


@functools.lru_cache(maxsize=ANALYSIS_CACHE_ENTRIES)
def _analyse_cached(text: str, caller_region: str | None) -> NumberInfo | str:
    """The analysis itself: a NumberInfo, or the InvalidNumber detail (errors are cached too)."""
    if caller_region is not None and _SHORT_NUMBER_PATTERN.fullmatch(text):
        if shortnumberinfo.is_emergency_number(text, caller_region):
            calling_code = phonenumbers.country_code_for_region(caller_region)
            return NumberInfo(
                e164=text,
                digits=text,
                region=caller_region,
                country_code=calling_code or None,
                number_type="emergency",
                is_emergency=True,
            )
    if not _E164_PATTERN.fullmatch(text):
        if text.isdigit() and len(text) <= 6:
            where = caller_region or "an unknown country"
            return f"{text!r} is not an emergency number of {where} and not E.164"
        return (
            f"{text!r} is not E.164: write '+', the country code and the national "
            "number, digits only, at most 15 digits (e.g. '+442079460000')"
        )
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as error:
        return f"{text!r} is not a phone number: {error}"
    if not phonenumbers.is_valid_number(parsed):
        return f"{text!r} is not a valid number in its country's numbering plan"
    region = phonenumbers.region_code_for_number(parsed)
    return NumberInfo(
        e164=text,
        digits=text[1:],
        region=None if region is None or region in _NON_GEOGRAPHIC_REGIONS else region,
        country_code=parsed.country_code,
        number_type=_TYPE_NAMES.get(phonenumbers.number_type(parsed), "other"),
        is_emergency=False,
    )
