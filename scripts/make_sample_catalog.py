"""Generate the sample catalog shipped with commcredits.

    python scripts/make_sample_catalog.py           # (re)write the two files
    python scripts/make_sample_catalog.py --check   # fail if they are out of date

Writes `src/commcredits/data/catalog/rates.csv` and `plans.json`. The output
depends only on this script and the pinned phonenumbers and babel versions:
no network, no clock, no randomness. Prices are made up but plausible,
derived from a hash of the region code.

How the rate deck is built:
- every region phonenumbers supports gets a `fixed` and a `mobile` row for
  `outbound` and `conference_dialout`, in USD, EUR and GBP;
- regions sharing a calling code (+1, +7, +44, +47, +61, +262, +358, +590,
  +599, ...) get their own prefixes where phonenumbers' metadata tells them
  apart (its `leading_digits`, else the number ranges only that region
  owns); the bare code belongs to the code's main region (+1 United States,
  +44 United Kingdom, +7 Russia), so anything not told apart rates as the
  main region;
- each of those prefixes also gets an `any` row, at the region's mobile
  rate, so numbers phonenumbers calls toll-free, shared-cost, UAN or VoIP
  (types `toll_free` and `other`, which have no rows of their own) are rated
  rather than denied;
- a few big countries get `premium` rows on their premium-rate ranges;
- `tollfree_inbound` has fixed, mobile and `any` rows for the business
  countries (the `any` row rates a call on the toll-free number itself when
  the caller's number is unknown).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re._constants as sre_constants
import re._parser as sre_parse
import sys
from collections.abc import Iterable
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import phonenumbers
from babel import Locale
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumberType

from commcredits.core.catalog import (
    RateIndex,
    RateRow,
    parse_plans,
    parse_rate_deck_csv,
    rate_deck_to_csv,
)

CATALOG_DIR = Path(__file__).resolve().parent.parent / "src" / "commcredits" / "data" / "catalog"
RATES_PATH = CATALOG_DIR / "rates.csv"
PLANS_PATH = CATALOG_DIR / "plans.json"

CURRENCIES = ("USD", "EUR", "GBP")
# Fixed conversion factors from USD: sample data, not a market rate.
USD_TO = {"USD": Decimal("1"), "EUR": Decimal("0.92"), "GBP": Decimal("0.79")}
RATE_QUANTUM = Decimal("0.0001")
# Conference dial-out costs a bridge port on top of the carrier minute.
CONFERENCE_MARKUP = Decimal("1.25")
TOLLFREE_MARKUP = Decimal("1.5")
TOLLFREE_SURCHARGE_USD = Decimal("0.0100")
PREMIUM_CONNECT_FEE_USD = Decimal("0.2500")
REMOTE_CONNECT_FEE_USD = Decimal("0.1000")
# Longest national prefix worth deriving: enough to tell GB's 7700 9 (drama
# numbers) from Jersey's 7700 3/7/8.
MAX_NATIONAL_PREFIX_DIGITS = 6
PREMIUM_PREFIX_DIGITS = 3

# Price tiers, USD per minute in ten-thousandths: (fixed low, fixed high, mobile low, mobile high).
RICH_TIER = (80, 250, 150, 600)
MID_TIER = (300, 1200, 800, 2500)
HIGH_TIER = (1000, 4500, 1800, 6500)
REMOTE_TIER = (8000, 20000, 10000, 25000)
PREMIUM_RANGE = (9000, 25000)

RICH_REGIONS = frozenset(
    "US CA PR GB GG JE IM IE FR DE NL BE LU ES PT IT VA SM MC AD AT CH LI DK SE NO FI AX IS "
    "AU NZ JP SG HK KR TW IL MT CY GR".split()
)
MID_REGIONS = frozenset(
    "PL CZ SK HU SI HR RO BG EE LV LT RS BA ME MK AL MD UA BY RU KZ TR GE AM AZ GI FO GL "
    "MX BR AR CL CO PE UY PY EC VE BO CR PA GT SV HN NI DO JM TT BB BS BM KY VI GU MP AS "
    "ZA IN CN MY TH PH ID VN MO AE SA QA KW BH OM JO EG MA TN".split()
)
# Satellite-served or very small networks: dear, and with a connect fee.
REMOTE_REGIONS = frozenset("AC SH TA TK NU NR KI TV FK WF PM ER SO CU TL SB VU FM MH PW IO".split())
# Operators billing per second in the sample; everyone else per minute or 30/6.
PER_SECOND_REGIONS = frozenset("NL BE DK SE NO FI".split())
PREMIUM_REGIONS = ("GB", "US", "DE", "FR", "IT", "ES", "AU")
# Where businesses most often run toll-free numbers.
TOLLFREE_REGIONS = tuple(
    "US CA PR GB IE FR DE NL BE LU ES PT IT AT CH DK SE NO FI PL CZ HU RO GR IL TR AE SA "
    "ZA IN SG HK JP KR CN TW AU NZ BR MX AR CL CO MY PH TH".split()
)

PLAN_COUNTRIES = tuple(
    "US CA PR GB IE FR DE NL BE ES IT AT CH DK SE NO FI PL PT AU NZ JP SG".split()
)
NORTH_AMERICA = frozenset({"US", "CA", "PR"})
# Conferencing dial-out included zone: the "Zone A" countries of the public offer.
CONFERENCE_INCLUDED_ZONE = tuple(
    "AU AT BE CA DK FI FR DE IE IT JP NL NZ NO PR SG ES SE CH GB US".split()
)
CONFERENCE_MINUTES_PER_LICENSE = 60

# Babel's English names, shortened where they would read badly as "<name> - Mobile".
NAME_OVERRIDES = {
    "CD": "Congo (Kinshasa)",
    "CG": "Congo (Brazzaville)",
    "HK": "Hong Kong",
    "MO": "Macao",
}

_NUMBER_TYPES_FOR_RANGES = (
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.MOBILE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
)
_ALL_DIGITS = frozenset("0123456789")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    arguments = parser.parse_args()

    rows = build_rate_rows()
    rates_text = rate_deck_to_csv(rows)
    plans_text = json.dumps(build_plans_doc(), indent=2, ensure_ascii=False) + "\n"
    self_check(rows, rates_text, plans_text)

    if arguments.check:
        stale = [
            path.name
            for path, text in ((RATES_PATH, rates_text), (PLANS_PATH, plans_text))
            if not path.exists() or path.read_text(encoding="utf-8") != text
        ]
        if stale:
            print(f"out of date: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
            return 1
        print("sample catalog up to date")
        return 0

    CATALOG_DIR.mkdir(parents=True, exist_ok=True)
    RATES_PATH.write_text(rates_text, encoding="utf-8", newline="")
    PLANS_PATH.write_text(plans_text, encoding="utf-8", newline="")
    print(f"wrote {len(rows)} rate rows and {len(PLAN_COUNTRIES) * 2} plans")
    return 0


# --------------------------------------------------------------------------- prefixes


def region_prefixes() -> dict[str, list[str]]:
    """E.164 prefixes (digits) that identify each supported region."""
    prefixes: dict[str, list[str]] = {}
    for country_code, regions in sorted(COUNTRY_CODE_TO_REGION_CODE.items()):
        supported = [region for region in regions if region in phonenumbers.SUPPORTED_REGIONS]
        if not supported:
            continue  # non-geographic codes (+800, +882, ...) have no region
        main_region = phonenumbers.region_code_for_country_code(country_code)
        assert main_region == supported[0], (country_code, supported)
        prefixes[main_region] = [str(country_code)]
        if len(supported) == 1:
            continue
        ranges = {region: national_ranges(region) for region in supported}
        for region in supported[1:]:
            leading_digits = PhoneMetadata.metadata_for_region(region).leading_digits
            if leading_digits:
                # phonenumbers tells the region apart by these digits alone.
                national = minimal(expand_prefixes(leading_digits, MAX_NATIONAL_PREFIX_DIGITS))
            else:
                others = set().union(*(ranges[other] for other in supported if other != region))
                national = owned_prefixes(ranges[region], others)
            prefixes[region] = [str(country_code) + digits for digits in sorted(national)]
    return prefixes


def national_ranges(region: str) -> set[str]:
    metadata = PhoneMetadata.metadata_for_region(region)
    ranges: set[str] = set()
    for number_type in _NUMBER_TYPES_FOR_RANGES:
        description = _description(metadata, number_type)
        if description is not None and description.national_number_pattern:
            ranges |= expand_prefixes(
                description.national_number_pattern, MAX_NATIONAL_PREFIX_DIGITS
            )
    return minimal(ranges)


def _description(metadata: PhoneMetadata, number_type: int) -> Any:
    return {
        PhoneNumberType.FIXED_LINE: metadata.fixed_line,
        PhoneNumberType.MOBILE: metadata.mobile,
        PhoneNumberType.TOLL_FREE: metadata.toll_free,
        PhoneNumberType.PREMIUM_RATE: metadata.premium_rate,
        PhoneNumberType.SHARED_COST: metadata.shared_cost,
        PhoneNumberType.VOIP: metadata.voip,
        PhoneNumberType.PERSONAL_NUMBER: metadata.personal_number,
        PhoneNumberType.PAGER: metadata.pager,
        PhoneNumberType.UAN: metadata.uan,
        PhoneNumberType.VOICEMAIL: metadata.voicemail,
    }[number_type]


def owned_prefixes(ranges: set[str], others: set[str]) -> set[str]:
    """The shortest prefixes of `ranges` that no range in `others` overlaps."""
    # Two prefixes overlap when one starts with the other.
    starts_of_others = {other[:length] for other in others for length in range(len(other) + 1)}
    owned: set[str] = set()
    for digits in ranges:
        for length in range(1, len(digits) + 1):
            candidate = digits[:length]
            if candidate not in starts_of_others and not any(
                candidate[:shorter] in others for shorter in range(length + 1)
            ):
                owned.add(candidate)
                break
    return minimal(owned)


def expand_prefixes(pattern: str, max_digits: int) -> set[str]:
    """Digit prefixes covering every string the national-number pattern matches.

    Walks the parsed regular expression, branching on literals and small
    character classes, and stops a prefix at the first "any digit" or at
    `max_digits`. phonenumbers' patterns use only literals, classes, groups,
    alternation and counted repeats, which is all this understands.
    """
    states = _expand(list(sre_parse.parse(pattern)), {("", False)}, max_digits)
    return {text for text, _closed in states}


def _expand(
    items: Iterable[tuple[object, object]], states: set[tuple[str, bool]], max_digits: int
) -> set[tuple[str, bool]]:
    for opcode, argument in items:
        if all(closed for _text, closed in states):
            return states
        if opcode is sre_constants.LITERAL:
            states = _append(states, {chr(argument)}, max_digits)  # type: ignore[arg-type]
        elif opcode is sre_constants.IN:
            characters = _class_characters(argument)  # type: ignore[arg-type]
            if characters is None or characters >= _ALL_DIGITS:
                states = _close(states)
            else:
                states = _append(states, characters, max_digits)
        elif opcode is sre_constants.SUBPATTERN:
            states = _expand(argument[3], states, max_digits)  # type: ignore[index]
        elif opcode is sre_constants.BRANCH:
            alternatives = argument[1]  # type: ignore[index]
            states = set().union(*(_expand(alt, states, max_digits) for alt in alternatives))
        elif opcode in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            low, high, repeated = argument  # type: ignore[misc]
            states = _repeat(low, high, list(repeated), states, max_digits)
        elif opcode is sre_constants.AT:
            continue
        else:
            states = _close(states)  # anything else: treat as "any digits follow"
    return states


def _repeat(
    low: int,
    high: int,
    repeated: list[tuple[object, object]],
    states: set[tuple[str, bool]],
    max_digits: int,
) -> set[tuple[str, bool]]:
    # An open-ended repeat (`+`, `*`, `{n,}`): after the minimum, anything may follow.
    unbounded = high == sre_constants.MAXREPEAT
    last = low if unbounded else high
    result: set[tuple[str, bool]] = set()
    current = states
    for count in range(last + 1):
        finished = all(closed for _text, closed in current)
        if count >= low or finished:
            result |= current
        if count == last or finished:
            break
        current = _expand(repeated, current, max_digits)
    return _close(result) if unbounded else result


def _class_characters(members: list[tuple[object, object]]) -> frozenset[str] | None:
    characters: set[str] = set()
    for opcode, argument in members:
        if opcode is sre_constants.LITERAL:
            characters.add(chr(argument))  # type: ignore[arg-type]
        elif opcode is sre_constants.RANGE:
            first, last = argument  # type: ignore[misc]
            characters |= {chr(code) for code in range(first, last + 1)}
        elif opcode is sre_constants.CATEGORY and argument is sre_constants.CATEGORY_DIGIT:
            characters |= _ALL_DIGITS
        else:
            return None  # negation or anything unusual: any digit
    return frozenset(characters & _ALL_DIGITS)


def _append(
    states: set[tuple[str, bool]], characters: Iterable[str], max_digits: int
) -> set[tuple[str, bool]]:
    grown: set[tuple[str, bool]] = set()
    for text, closed in states:
        if closed:
            grown.add((text, closed))
            continue
        for character in characters:
            longer = text + character
            grown.add((longer, len(longer) >= max_digits))
    return grown


def _close(states: set[tuple[str, bool]]) -> set[tuple[str, bool]]:
    return {(text, True) for text, _closed in states}


def minimal(prefixes: Iterable[str]) -> set[str]:
    """Drop every prefix that a shorter one in the set already covers."""
    kept: set[str] = set()
    for digits in sorted(prefixes, key=len):
        if not any(digits[:length] in kept for length in range(len(digits) + 1)):
            kept.add(digits)
    return kept


# --------------------------------------------------------------------------- prices


def region_name(region: str) -> str:
    return NAME_OVERRIDES.get(region) or Locale("en").territories[region]


def fraction_from_hash(*parts: str) -> int:
    """A stable number in [0, 2**32) from the parts: the sample's only source of variety."""
    digest = hashlib.sha256(":".join(parts).encode("ascii")).digest()
    return int.from_bytes(digest[:4], "big")


def in_range(low: int, high: int, *parts: str) -> Decimal:
    """A price from `low` to `high` ten-thousandths of a USD, chosen by the hash of `parts`."""
    ten_thousandths = low + (high - low) * fraction_from_hash(*parts) // 2**32
    return Decimal(ten_thousandths).scaleb(-4)


def tier(region: str) -> tuple[int, int, int, int]:
    if region in REMOTE_REGIONS:
        return REMOTE_TIER
    if region in RICH_REGIONS:
        return RICH_TIER
    if region in MID_REGIONS:
        return MID_TIER
    return HIGH_TIER


def usd_rates(region: str) -> dict[str, Decimal]:
    fixed_low, fixed_high, mobile_low, mobile_high = tier(region)
    fixed = in_range(fixed_low, fixed_high, region, "fixed")
    mobile = in_range(mobile_low, mobile_high, region, "mobile")
    if phonenumbers.country_code_for_region(region) == 1:
        # NANP numbers do not tell mobiles apart by price: one rate for both.
        mobile = fixed
    return {"fixed": fixed, "mobile": max(mobile, fixed)}


def increments(region: str) -> tuple[int, int]:
    if region in PER_SECOND_REGIONS:
        return (1, 1)
    if phonenumbers.country_code_for_region(region) == 1 or region in RICH_REGIONS:
        return (60, 60)
    if fraction_from_hash(region, "increments") % 4 == 0:
        return (30, 6)
    return (60, 60)


def convert(usd: Decimal, currency: str) -> Decimal:
    if usd == 0:
        return Decimal("0")  # written "0", not "0.0000"
    return (usd * USD_TO[currency]).quantize(RATE_QUANTUM, rounding=ROUND_HALF_UP)


def build_rate_rows() -> list[RateRow]:
    prefixes_of = region_prefixes()
    rows: list[RateRow] = []
    for region in sorted(prefixes_of):
        name = region_name(region)
        rates = usd_rates(region)
        initial_s, subsequent_s = increments(region)
        connect_fee = REMOTE_CONNECT_FEE_USD if region in REMOTE_REGIONS else Decimal("0")
        # `any` catches the types without rows of their own (toll_free, other),
        # at the dearer mobile rate so no fallback is cheaper than a plain call.
        outbound_rates = {**rates, "any": rates["mobile"]}
        labels = {"fixed": "Fixed", "mobile": "Mobile", "any": "Other"}
        for prefix in prefixes_of[region]:
            for number_type, rate in outbound_rates.items():
                base = RateRow(
                    service="outbound",
                    prefix=prefix,
                    destination=f"{name} - {labels[number_type]}",
                    number_type=number_type,
                    rate_per_minute=rate,
                    connect_fee=connect_fee,
                    initial_increment_s=initial_s,
                    subsequent_increment_s=subsequent_s,
                    currency="USD",
                )
                rows.append(base)
                rows.append(
                    replace(
                        base,
                        service="conference_dialout",
                        rate_per_minute=base.rate_per_minute * CONFERENCE_MARKUP,
                    )
                )
        if region in TOLLFREE_REGIONS:
            tollfree_rates = {
                number_type: rates[number_type] * TOLLFREE_MARKUP + TOLLFREE_SURCHARGE_USD
                for number_type in ("fixed", "mobile")
            }
            # Caller unknown: rated on the toll-free number, at the dearer mobile rate.
            tollfree_rates["any"] = tollfree_rates["mobile"]
            for prefix in prefixes_of[region]:
                for number_type, rate in tollfree_rates.items():
                    rows.append(
                        RateRow(
                            service="tollfree_inbound",
                            prefix=prefix,
                            destination=f"{name} - {labels[number_type]}",
                            number_type=number_type,
                            rate_per_minute=rate,
                            connect_fee=Decimal("0"),
                            initial_increment_s=initial_s,
                            subsequent_increment_s=subsequent_s,
                            currency="USD",
                        )
                    )
    for region in PREMIUM_REGIONS:
        country_code = str(phonenumbers.country_code_for_region(region))
        premium = PhoneMetadata.metadata_for_region(region).premium_rate
        assert premium is not None and premium.national_number_pattern, region
        national = minimal(expand_prefixes(premium.national_number_pattern, PREMIUM_PREFIX_DIGITS))
        rate = in_range(*PREMIUM_RANGE, region, "premium")
        for digits in sorted(national):
            base = RateRow(
                service="outbound",
                prefix=country_code + digits,
                destination=f"{region_name(region)} - Premium",
                number_type="premium",
                rate_per_minute=rate,
                connect_fee=PREMIUM_CONNECT_FEE_USD,
                initial_increment_s=60,
                subsequent_increment_s=60,
                currency="USD",
            )
            rows.append(base)
            rows.append(
                replace(
                    base, service="conference_dialout", rate_per_minute=rate * CONFERENCE_MARKUP
                )
            )
    in_currencies = [
        replace(
            row,
            currency=currency,
            rate_per_minute=convert(row.rate_per_minute, currency),
            connect_fee=convert(row.connect_fee, currency),
        )
        for currency in CURRENCIES
        for row in rows
    ]
    service_order = {"outbound": 0, "conference_dialout": 1, "tollfree_inbound": 2}
    return sorted(
        in_currencies,
        key=lambda row: (service_order[row.service], row.currency, row.prefix, row.number_type),
    )


# --------------------------------------------------------------------------- plans


def build_plans_doc() -> dict[str, object]:
    # Minutes follow the public offer: 3,000 domestic minutes in North America,
    # 1,200 elsewhere; the international plan adds 600 international minutes.
    plans = []
    for country in PLAN_COUNTRIES:
        domestic_minutes = 3000 if country in NORTH_AMERICA else 1200
        plans.append(
            {
                "sku": "calling_plan_domestic",
                "country": country,
                "domestic_minutes": domestic_minutes,
                "international_minutes": 0,
            }
        )
        plans.append(
            {
                "sku": "calling_plan_international",
                "country": country,
                "domestic_minutes": domestic_minutes,
                "international_minutes": 600,
            }
        )
    return {
        "plans": plans,
        "conference_dialout": {
            "minutes_per_license": CONFERENCE_MINUTES_PER_LICENSE,
            "included_zone": sorted(CONFERENCE_INCLUDED_ZONE),
        },
    }


# --------------------------------------------------------------------------- checks


def self_check(rows: list[RateRow], rates_text: str, plans_text: str) -> None:
    """The files load with the real parsers, and example numbers rate where they belong."""
    assert parse_rate_deck_csv(rates_text) == rows
    parse_plans(json.loads(plans_text))
    index = RateIndex(rows)
    unmatched: list[str] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for number_type, kind in (
            (PhoneNumberType.FIXED_LINE, "fixed"),
            (PhoneNumberType.MOBILE, "mobile"),
        ):
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is None:
                continue
            digits = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
            row = index.lookup("outbound", "USD", digits, kind)
            assert row is not None, (region, digits)
            if not row.destination.startswith(region_name(region) + " - "):
                unmatched.append(f"{region} +{digits} -> {row.destination}")
    for digits in ("18002752273", "448001234567", "443001234567"):  # toll-free, UK 0800, 0300
        for service in ("outbound", "conference_dialout"):
            for kind in ("toll_free", "other"):
                fallback = index.lookup(service, "USD", digits, kind)
                assert fallback is not None and fallback.number_type == "any", (digits, service)
    if unmatched:
        # Ranges shared with the main region of the code (e.g. Cocos Islands
        # mobiles are Australian mobiles) rate as the main region.
        print(f"{len(unmatched)} example numbers rate as another region:", file=sys.stderr)
        for line in unmatched:
            print(f"  {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
