"""Rate decks (CSV parsing, longest-prefix lookup, replacement), plans, and the sample catalog."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from importlib.resources import files
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commcredits.core.catalog import (
    DIALLED_NUMBER_TYPES,
    NUMBER_TYPES,
    SERVICES,
    PlanRow,
    Plans,
    PlansError,
    RateDeckError,
    RateIndex,
    RateRow,
    parse_plans,
    parse_rate_deck_csv,
    plans_to_doc,
    rate_deck_to_csv,
    replace_decks,
)
from commcredits.core.numbers import analyse_number

HEADER = (
    "service,prefix,destination,number_type,rate_per_minute,connect_fee,"
    "initial_increment_s,subsequent_increment_s,currency"
)
GOOD_ROW = "outbound,44,United Kingdom - Fixed,fixed,0.0200,0,60,60,USD"


def deck(*rows: str, header: str = HEADER) -> str:
    return "\n".join((header, *rows)) + "\n"


def row(
    prefix: str,
    number_type: str = "any",
    *,
    service: str = "outbound",
    currency: str = "USD",
    rate: str = "0.01",
) -> RateRow:
    return RateRow(
        service=service,
        prefix=prefix,
        destination=f"{prefix} {number_type}",
        number_type=number_type,
        rate_per_minute=Decimal(rate),
        connect_fee=Decimal(0),
        initial_increment_s=60,
        subsequent_increment_s=60,
        currency=currency,
    )


def deck_error(text: str) -> RateDeckError:
    with pytest.raises(RateDeckError) as caught:
        parse_rate_deck_csv(text)
    return caught.value


# --------------------------------------------------------------------------- parsing


def test_parses_a_row_into_exact_values() -> None:
    (parsed,) = parse_rate_deck_csv(
        deck("conference_dialout,+1876,Jamaica,mobile,0.123456,0.05,30,6,EUR")
    )
    assert parsed == RateRow(
        service="conference_dialout",
        prefix="1876",
        destination="Jamaica",
        number_type="mobile",
        rate_per_minute=Decimal("0.123456"),
        connect_fee=Decimal("0.05"),
        initial_increment_s=30,
        subsequent_increment_s=6,
        currency="EUR",
    )


def test_columns_in_any_order_and_number_type_optional() -> None:
    text = (
        "currency,rate_per_minute,prefix,service,connect_fee,destination,"
        "subsequent_increment_s,initial_increment_s\n"
        "GBP,0.5,449,outbound,0.25,UK premium,1,60\n"
    )
    (parsed,) = parse_rate_deck_csv(text)
    assert parsed.number_type == "any"
    assert (parsed.prefix, parsed.currency, parsed.initial_increment_s) == ("449", "GBP", 60)
    assert parsed.subsequent_increment_s == 1
    assert parsed.rate_per_minute == Decimal("0.5")


def test_empty_number_type_cell_means_any_and_spreadsheet_quirks_are_tolerated() -> None:
    text = "\ufeff" + deck(
        " outbound , 44 , UK ,, 0.02 , 0 , 60 , 60 , USD ",
        "",
        'outbound,33,"France, mainland",fixed,0.01,0,60,60,USD',
    ).replace("\n", "\r\n")
    parsed = parse_rate_deck_csv(text)
    assert [(r.prefix, r.number_type, r.destination) for r in parsed] == [
        ("44", "any", "UK"),
        ("33", "fixed", "France, mainland"),
    ]


@pytest.mark.parametrize(
    ("bad_row", "words"),
    [
        ("inbound,44,UK,fixed,0.02,0,60,60,USD", "service 'inbound'"),
        ("outbound,44a,UK,fixed,0.02,0,60,60,USD", "prefix '44a'"),
        ("outbound,,UK,fixed,0.02,0,60,60,USD", "prefix ''"),
        ("outbound,1234567890123456,UK,fixed,0.02,0,60,60,USD", "prefix"),
        ("outbound,44,,fixed,0.02,0,60,60,USD", "destination is empty"),
        ("outbound,44," + "x" * 201 + ",fixed,0.02,0,60,60,USD", "201 characters"),
        ("outbound,44,UK,landline,0.02,0,60,60,USD", "number_type 'landline'"),
        ("outbound,44,UK,fixed,0.02x,0,60,60,USD", "rate_per_minute"),
        ("outbound,44,UK,fixed,2E-2,0,60,60,USD", "not a plain decimal"),
        ("outbound,44,UK,fixed,0.0200001,0,60,60,USD", "7 fraction digits"),
        ("outbound,44,UK,fixed,0.02,-0.10,60,60,USD", "connect_fee"),
        ("outbound,44,UK,fixed,,0,60,60,USD", "rate_per_minute"),
        ("outbound,44,UK,fixed,0.02,0,0,60,USD", "initial_increment_s '0'"),
        ("outbound,44,UK,fixed,0.02,0,60,3601,USD", "subsequent_increment_s '3601'"),
        ("outbound,44,UK,fixed,0.02,0,6.0,60,USD", "initial_increment_s '6.0'"),
        ("outbound,44,UK,fixed,0.02,0,60,-6,USD", "subsequent_increment_s '-6'"),
        ("outbound,44,UK,fixed,0.02,0,60,60,ZZZ", "currency 'ZZZ'"),
        ("outbound,44,UK,fixed,0.02,0,60,60,usd", "currency 'usd'"),
        ("outbound,44,UK,fixed,0.02,0,60,60", "expected 9 cells"),
        ("outbound,0044,UK,fixed,0.02,0,60,60,USD", "prefix '0044' starts with 0"),
        ("outbound,+044,UK,fixed,0.02,0,60,60,USD", "prefix '+044' starts with 0"),
        ("outbound,0,UK,fixed,0.02,0,60,60,USD", "prefix '0' starts with 0"),
        ("outbound,++44,UK,fixed,0.02,0,60,60,USD", "prefix '++44'"),
    ],
)
def test_first_bad_row_is_reported_with_its_line_number(bad_row: str, words: str) -> None:
    error = deck_error(deck(GOOD_ROW.replace("44", "33"), bad_row, GOOD_ROW))
    assert error.line == 3
    assert words in error.detail
    assert str(error).startswith("line 3: ")


def test_a_prefix_may_start_with_a_plus() -> None:
    (row,) = parse_rate_deck_csv(deck("outbound,+4420,UK - London,fixed,0.0190,0,60,60,USD"))
    assert row.prefix == "4420"
    found = RateIndex([row]).lookup("outbound", "USD", "+442079460000", "fixed")
    assert found == row


def test_the_first_of_several_bad_rows_wins() -> None:
    error = deck_error(deck(GOOD_ROW, "x,1,A,,1,0,60,60,USD", "outbound,1,A,,1e1,0,60,60,USD"))
    assert (error.line, "service 'x'" in error.detail) == (3, True)


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (HEADER.replace("connect_fee", "setup_fee"), "unknown column 'setup_fee'"),
        (HEADER.replace(",currency", ""), "missing column(s) currency"),
        (HEADER + ",prefix", "column 'prefix' appears twice"),
    ],
)
def test_header_errors_are_on_line_one(header: str, words: str) -> None:
    error = deck_error(deck(GOOD_ROW, header=header))
    assert error.line == 1
    assert words in error.detail
    assert "service, prefix, destination" in error.detail  # says what is expected


def test_duplicate_is_reported_on_the_later_line_naming_the_first() -> None:
    text = deck(
        GOOD_ROW,
        "outbound,44,UK mobile,mobile,0.05,0,60,60,USD",  # another type: fine
        "outbound,44,UK any,,0.05,0,60,60,USD",  # any: fine
        "outbound,44,UK any,,0.05,0,60,60,EUR",  # another currency: fine
        "conference_dialout,44,UK,fixed,0.05,0,60,60,USD",  # another service: fine
        "outbound,+44,UK again,fixed,0.03,0,60,60,USD",
    )
    error = deck_error(text)
    assert error.line == 7
    assert "duplicate of line 2" in error.detail


def test_empty_any_cell_and_explicit_any_are_the_same_key() -> None:
    error = deck_error(
        deck("outbound,44,UK,,0.02,0,60,60,USD", "outbound,44,UK,any,0.02,0,60,60,USD")
    )
    assert (error.line, "duplicate of line 2" in error.detail) == (3, True)


@pytest.mark.parametrize("text", ["", "\n\n", HEADER + "\n", HEADER + "\n\n,,,,,,,,\n"])
def test_a_deck_without_rows_is_refused(text: str) -> None:
    error = deck_error(text)
    assert error.line == 1


def test_row_limit() -> None:
    rows = [f"outbound,{prefix},X,fixed,0.01,0,60,60,USD" for prefix in range(10, 14)]
    assert len(parse_rate_deck_csv(deck(*rows), max_rows=4)) == 4
    with pytest.raises(RateDeckError) as caught:
        parse_rate_deck_csv(deck(*rows, "outbound,99,X,fixed,0.01,0,60,60,USD"), max_rows=4)
    assert (caught.value.line, "more than 4 rows" in caught.value.detail) == (6, True)


def test_broken_quoting_is_an_error_not_a_crash() -> None:
    error = deck_error(deck(GOOD_ROW, 'outbound,33,"France"x,fixed,0.01,0,60,60,USD'))
    assert error.line == 3
    assert "not valid CSV" in error.detail


def test_csv_round_trip() -> None:
    rows = [row("44", "fixed", rate="0.0200"), row("1876", "any", currency="EUR", rate="0.123456")]
    assert parse_rate_deck_csv(rate_deck_to_csv(rows)) == rows


# --------------------------------------------------------------------------- lookup


def test_longest_prefix_wins_and_type_falls_back_to_any_at_the_same_prefix() -> None:
    index = RateIndex(
        [
            row("44", "fixed"),
            row("44", "mobile"),
            row("447", "any"),
            row("4477", "mobile"),
            row("449", "premium"),
        ]
    )
    assert index.lookup("outbound", "USD", "447700900123", "mobile") == row("4477", "mobile")
    # Same prefix has no fixed row: the `any` row at 447 beats the fixed row at 44.
    assert index.lookup("outbound", "USD", "447700900123", "fixed") == row("447", "any")
    assert index.lookup("outbound", "USD", "447100900123", "mobile") == row("447", "any")
    assert index.lookup("outbound", "USD", "442079460000", "fixed") == row("44", "fixed")
    assert index.lookup("outbound", "USD", "+442079460000", "mobile") == row("44", "mobile")
    # Nothing for premium or toll_free at 44 and no `any` row: walk on, then not rated.
    assert index.lookup("outbound", "USD", "442079460000", "premium") is None
    assert index.lookup("outbound", "USD", "449099000000", "premium") == row("449", "premium")
    assert index.lookup("outbound", "USD", "449099000000", "fixed") == row("44", "fixed")
    assert index.lookup("outbound", "USD", "448000000000", "toll_free") is None
    assert index.lookup("outbound", "USD", "447800000000", "toll_free") == row("447", "any")
    assert index.lookup("outbound", "USD", "447800000000", "other") == row("447", "any")


def test_a_type_missing_at_a_long_prefix_falls_back_to_a_shorter_prefix() -> None:
    index = RateIndex([row("1", "fixed"), row("1876", "mobile")])
    assert index.lookup("outbound", "USD", "18765550123", "fixed") == row("1", "fixed")
    assert index.lookup("outbound", "USD", "18765550123", "mobile") == row("1876", "mobile")
    assert index.lookup("outbound", "USD", "12025550123", "mobile") is None


def test_lookup_is_scoped_by_service_and_currency() -> None:
    index = RateIndex([row("44", "fixed", currency="GBP"), row("44", service="tollfree_inbound")])
    assert index.lookup("outbound", "GBP", "442079460000", "fixed") == row(
        "44", "fixed", currency="GBP"
    )
    assert index.lookup("outbound", "USD", "442079460000", "fixed") is None
    assert index.lookup("conference_dialout", "GBP", "442079460000", "fixed") is None
    tollfree = index.lookup("tollfree_inbound", "USD", "442079460000", "fixed")
    assert tollfree == row("44", service="tollfree_inbound")


def test_lookup_edge_inputs() -> None:
    index = RateIndex([row("4", "any"), row("123456789012345", "fixed")])
    assert index.lookup("outbound", "USD", "", "fixed") is None
    assert index.lookup("outbound", "USD", "+", "fixed") is None
    assert index.lookup("outbound", "USD", "4", "fixed") == row("4", "any")
    assert index.lookup("outbound", "USD", "123456789012345", "fixed") == row(
        "123456789012345", "fixed"
    )
    assert index.lookup("outbound", "USD", "12345678901234", "fixed") is None
    with pytest.raises(ValueError, match="number_type 'any'"):
        index.lookup("outbound", "USD", "4", "any")
    with pytest.raises(ValueError, match="number_type 'landline'"):
        index.lookup("outbound", "EUR", "4", "landline")


def test_index_accessors() -> None:
    rows = [
        row("44", "fixed"),
        row("44", "fixed", currency="EUR"),
        row("1", service="tollfree_inbound"),
    ]
    index = RateIndex(rows)
    assert len(index) == 3
    assert index.rows() == rows
    assert index.services_and_currencies() == {
        ("outbound", "USD"),
        ("outbound", "EUR"),
        ("tollfree_inbound", "USD"),
    }
    empty = RateIndex([])
    assert len(empty) == 0
    assert empty.lookup("outbound", "USD", "44", "fixed") is None


def _reference_lookup(rows: list[RateRow], digits: str, number_type: str) -> RateRow | None:
    for length in range(len(digits), 0, -1):
        at_prefix = {r.number_type: r for r in rows if r.prefix == digits[:length]}
        found = at_prefix.get(number_type) or at_prefix.get("any")
        if found is not None:
            return found
    return None


_small_prefix = st.text(alphabet="123", min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(
    keys=st.sets(st.tuples(_small_prefix, st.sampled_from(NUMBER_TYPES)), max_size=25),
    digits=st.text(alphabet="123", min_size=0, max_size=7),
    number_type=st.sampled_from(DIALLED_NUMBER_TYPES),
)
def test_index_agrees_with_the_definition(
    keys: set[tuple[str, str]], digits: str, number_type: str
) -> None:
    rows = [row(prefix, kind) for prefix, kind in sorted(keys)]
    expected = _reference_lookup(rows, digits, number_type)
    assert RateIndex(rows).lookup("outbound", "USD", digits, number_type) == expected


# --------------------------------------------------------------------------- replacement


def test_upload_replaces_only_the_service_and_currency_pairs_it_contains() -> None:
    current = [
        row("44", "fixed", rate="0.01"),
        row("33", "fixed", rate="0.01"),
        row("44", "fixed", currency="EUR"),
        row("44", "fixed", service="conference_dialout"),
    ]
    upload = [row("44", "fixed", rate="0.02"), row("49", "mobile", rate="0.03")]
    after = replace_decks(current, upload)
    assert sorted(after, key=repr) == sorted(
        [
            row("44", "fixed", currency="EUR"),
            row("44", "fixed", service="conference_dialout"),
            *upload,
        ],
        key=repr,
    )
    # France is gone from outbound USD: the upload is the whole deck for that pair.
    assert RateIndex(after).lookup("outbound", "USD", "33123456789", "fixed") is None
    assert replace_decks(current, []) == current
    assert replace_decks([], upload) == upload


# --------------------------------------------------------------------------- plans


def plans_doc() -> dict[str, object]:
    return {
        "plans": [
            {"sku": "calling_plan_domestic", "country": "US", "domestic_minutes": 3000,
             "international_minutes": 0},
            {"sku": "calling_plan_international", "country": "GB", "domestic_minutes": 1200,
             "international_minutes": 600},
        ],
        "conference_dialout": {"minutes_per_license": 60, "included_zone": ["US", "GB", "FR"]},
    }  # fmt: skip


def test_parse_plans_and_minutes_for() -> None:
    plans = parse_plans(plans_doc())
    assert plans.plans == (
        PlanRow("calling_plan_domestic", "US", 3000, 0),
        PlanRow("calling_plan_international", "GB", 1200, 600),
    )
    assert plans.conference_minutes_per_license == 60
    assert plans.conference_included_zone == frozenset({"US", "GB", "FR"})
    assert plans.minutes_for("calling_plan_international", "GB") == (1200, 600)
    assert plans.minutes_for("calling_plan_domestic", "GB") == (0, 0)
    assert plans.minutes_for("calling_plan_payg", "US") == (0, 0)


def test_plans_doc_round_trip() -> None:
    plans = parse_plans(plans_doc())
    doc = plans_to_doc(plans)
    assert doc["conference_dialout"] == {
        "minutes_per_license": 60,
        "included_zone": ["FR", "GB", "US"],
    }
    assert parse_plans(json.loads(json.dumps(doc))) == plans


def test_empty_plans_are_allowed() -> None:
    plans = parse_plans(
        {"plans": [], "conference_dialout": {"minutes_per_license": 0, "included_zone": []}}
    )
    assert plans == Plans(
        plans=(), conference_minutes_per_license=0, conference_included_zone=frozenset()
    )


def _with(path: tuple[object, ...], value: object) -> dict[str, object]:
    doc = plans_doc()
    target: object = doc
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    return doc


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ([], "plans document: expected an object"),
        ({"plans": []}, "missing member(s) conference_dialout"),
        (_with(("extra",), 1), "unknown member(s) extra"),
        (_with(("plans",), {}), "plans: expected a list"),
        (_with(("plans", 1, "sku"), "calling_plan_payg"), "plans[1].sku: 'calling_plan_payg'"),
        (_with(("plans", 1, "country"), "XX"), "plans[1].country: 'XX' is not an ISO 3166 country"),
        (_with(("plans", 1, "country"), "gb"), "plans[1].country: 'gb'"),
        (_with(("plans", 0, "domestic_minutes"), -1), "plans[0].domestic_minutes: -1"),
        (_with(("plans", 0, "domestic_minutes"), 1_000_001), "plans[0].domestic_minutes"),
        (_with(("plans", 0, "international_minutes"), 1.5), "plans[0].international_minutes"),
        (_with(("plans", 0, "international_minutes"), True), "a boolean"),
        (_with(("plans", 0, "international_minutes"), "600"), "the string '600'"),
        (_with(("plans", 0, "domestic_minute"), 1), "plans[0]: unknown member(s) domestic_minute"),
        (_with(("plans", 1), "x"), "plans[1]: expected an object"),
        (_with(("conference_dialout", "minutes_per_license"), None), "minutes_per_license"),
        (_with(("conference_dialout", "included_zone"), "US"), "included_zone: expected a list"),
        (_with(("conference_dialout", "included_zone", 2), "ZZ"), "included_zone[2]: 'ZZ'"),
        (
            _with(("conference_dialout", "included_zone", 2), "US"),
            "included_zone[2]: US is listed twice",
        ),
    ],
)
def test_plans_errors_name_the_bad_item(doc: object, words: str) -> None:
    with pytest.raises(PlansError) as caught:
        parse_plans(doc)
    assert words in caught.value.detail


def test_duplicate_plan_is_refused() -> None:
    doc = plans_doc()
    plans = doc["plans"]
    assert isinstance(plans, list)
    plans.append(dict(plans[0], domestic_minutes=10))
    with pytest.raises(PlansError, match=r"plans\[2\]: duplicate of plans\[0\]"):
        parse_plans(doc)


# --------------------------------------------------------------------------- sample catalog

CATALOG = files("commcredits") / "data" / "catalog"


@pytest.fixture(scope="module")
def sample_index() -> RateIndex:
    return RateIndex(parse_rate_deck_csv(CATALOG.joinpath("rates.csv").read_text(encoding="utf-8")))


@pytest.mark.parametrize("currency", ["USD", "EUR", "GBP"])
@pytest.mark.parametrize("service", ["outbound", "conference_dialout"])
@pytest.mark.parametrize(
    ("number", "number_type", "destination"),
    [
        ("+447700900123", "mobile", "United Kingdom - Mobile"),
        ("+442079460000", "fixed", "United Kingdom - Fixed"),
        ("+12025550123", "fixed", "United States - Fixed"),
        ("+12025550123", "mobile", "United States - Mobile"),
        ("+18765550123", "fixed", "Jamaica - Fixed"),
        ("+14165550123", "mobile", "Canada - Mobile"),
        ("+447781123456", "mobile", "Guernsey - Mobile"),
        ("+33612345678", "mobile", "France - Mobile"),
        ("+77012345678", "mobile", "Kazakhstan - Mobile"),
        ("+74951234567", "fixed", "Russia - Fixed"),
        ("+449098790123", "premium", "United Kingdom - Premium"),
        ("+19005550123", "premium", "United States - Premium"),
    ],
)
def test_sample_deck_rates_known_numbers(
    sample_index: RateIndex,
    number: str,
    number_type: str,
    destination: str,
    service: str,
    currency: str,
) -> None:
    found = sample_index.lookup(service, currency, number, number_type)
    assert found is not None
    assert (found.destination, found.currency, found.service) == (destination, currency, service)
    assert found.rate_per_minute > 0


@pytest.mark.parametrize("currency", ["USD", "EUR", "GBP"])
@pytest.mark.parametrize("service", ["outbound", "conference_dialout"])
@pytest.mark.parametrize(
    ("number", "destination"),
    [
        ("+18002752273", "United States - Other"),  # toll-free
        ("+448001234567", "United Kingdom - Other"),  # toll-free
        ("+443001234567", "United Kingdom - Other"),  # shared cost: "other"
    ],
)
def test_sample_deck_rates_numbers_of_types_without_rows_of_their_own(
    sample_index: RateIndex, number: str, destination: str, service: str, currency: str
) -> None:
    info = analyse_number(number, None)
    assert info.number_type in ("toll_free", "other")
    found = sample_index.lookup(service, currency, info.digits, info.number_type)
    assert found is not None, number
    assert (found.number_type, found.destination) == ("any", destination)
    mobile = sample_index.lookup(service, currency, info.digits, "mobile")
    assert mobile is not None and found.rate_per_minute == mobile.rate_per_minute


def test_sample_deck_prices_are_plausible(sample_index: RateIndex) -> None:
    uk_fixed = sample_index.lookup("outbound", "USD", "442079460000", "fixed")
    uk_mobile = sample_index.lookup("outbound", "USD", "447700900123", "mobile")
    assert uk_fixed is not None and uk_mobile is not None
    assert uk_fixed.rate_per_minute <= uk_mobile.rate_per_minute < Decimal("1")
    assert (uk_fixed.initial_increment_s, uk_fixed.subsequent_increment_s) == (60, 60)
    assert uk_fixed.connect_fee == 0
    in_gbp = sample_index.lookup("outbound", "GBP", "442079460000", "fixed")
    assert in_gbp is not None and in_gbp.rate_per_minute < uk_fixed.rate_per_minute
    increments = {(r.initial_increment_s, r.subsequent_increment_s) for r in sample_index.rows()}
    assert increments == {(60, 60), (30, 6), (1, 1)}


def test_sample_deck_covers_every_region_and_service(sample_index: RateIndex) -> None:
    assert sample_index.services_and_currencies() == {
        (service, currency) for service in SERVICES for currency in ("USD", "EUR", "GBP")
    }
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        if example is None:
            continue
        number = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        for service in ("outbound", "conference_dialout"):
            assert sample_index.lookup(service, "EUR", number, "mobile") is not None, (
                region,
                service,
            )


def test_sample_tollfree_deck_rates_the_caller_or_the_tollfree_number(
    sample_index: RateIndex,
) -> None:
    caller = sample_index.lookup("tollfree_inbound", "USD", "+447700900123", "mobile")
    assert caller is not None and caller.destination == "United Kingdom - Mobile"
    # Caller unknown: the toll-free number itself, a toll_free type, matches the `any` row.
    itself = sample_index.lookup("tollfree_inbound", "GBP", "+18005550123", "toll_free")
    assert itself is not None and itself.number_type == "any"
    assert itself.destination == "United States - Other"
    tollfree_countries = {
        r.destination.split(" - ")[0]
        for r in sample_index.rows()
        if r.service == "tollfree_inbound"
    }
    assert len(tollfree_countries) >= 40


def test_sample_plans() -> None:
    plans = parse_plans(json.loads(CATALOG.joinpath("plans.json").read_text(encoding="utf-8")))
    assert plans.minutes_for("calling_plan_domestic", "US") == (3000, 0)
    assert plans.minutes_for("calling_plan_domestic", "GB") == (1200, 0)
    assert plans.minutes_for("calling_plan_international", "PR") == (3000, 600)
    assert plans.minutes_for("calling_plan_international", "BR") == (0, 0)
    assert plans.conference_minutes_per_license == 60
    assert {"US", "CA", "GB", "FR", "DE"} <= plans.conference_included_zone
    assert 18 <= len(plans.conference_included_zone) <= 25


def test_sample_files_are_what_the_generator_writes() -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "make_sample_catalog.py"
    if not script.exists():
        pytest.skip("the generator is not shipped with installed packages")
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
