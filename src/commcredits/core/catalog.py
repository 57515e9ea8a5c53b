"""The rate catalog: rate decks parsed from CSV, the longest-prefix index, and plans.

A rate deck (SPEC §2 "Catalog") is a list of rows: a service, an E.164 prefix,
a number type and a price. A dialled number is rated by the row with the
longest matching prefix; at each prefix a row for the number's own type wins
over an `any` row. A number no row matches is not rated, and the call is
denied (`destination_not_rated`), never free.

Plans give the included minutes per license and country, and the
conferencing dial-out allowance with its included zone (API.md `PUT
/v1/catalog/plans`).

Everything here is pure: text and JSON-shaped objects in, frozen values out.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import phonenumbers

from commcredits.core.money import InvalidMoney, is_known_currency, parse_rate
from commcredits.core.rating import MAX_INCREMENT_SECONDS

__all__ = [
    "CALLING_PLAN_SKUS",
    "DIALLED_NUMBER_TYPES",
    "MAX_DECK_ROWS",
    "MAX_PLAN_MINUTES",
    "NUMBER_TYPES",
    "RATE_DECK_COLUMNS",
    "SERVICES",
    "PlanRow",
    "Plans",
    "PlansError",
    "RateDeckError",
    "RateIndex",
    "RateRow",
    "parse_plans",
    "parse_rate_deck_csv",
    "plans_to_doc",
    "rate_deck_to_csv",
    "replace_decks",
]

SERVICES = ("outbound", "conference_dialout", "tollfree_inbound")
# Types a deck row can name. `any` matches every dialled number type.
NUMBER_TYPES = ("fixed", "mobile", "premium", "any")
# Types of a dialled number, from its phonenumbers classification (done by the
# caller). toll_free and other have no rows of their own: only `any` rows match.
DIALLED_NUMBER_TYPES = ("fixed", "mobile", "premium", "toll_free", "other")

# Columns of SPEC §2, in the order rate_deck_to_csv writes them.
RATE_DECK_COLUMNS = (
    "service",
    "prefix",
    "destination",
    "number_type",
    "rate_per_minute",
    "connect_fee",
    "initial_increment_s",
    "subsequent_increment_s",
    "currency",
)
_OPTIONAL_COLUMNS = frozenset({"number_type"})
_REQUIRED_COLUMNS = tuple(c for c in RATE_DECK_COLUMNS if c not in _OPTIONAL_COLUMNS)

# A world deck with every operator prefix, for three services and a handful of
# currencies, is a few hundred thousand rows; a million is a mistake or an attack.
MAX_DECK_ROWS = 1_000_000
# E.164: at most 15 digits in a number, so in a prefix too.
MAX_PREFIX_DIGITS = 15
MAX_DESTINATION_CHARS = 200
MIN_INCREMENT_SECONDS = 1
# RateIndex buckets numbers by their first digits; 3 keeps a table's buckets
# to at most 1,000 while most country codes fit inside one.
STEM_DIGITS = 3

CALLING_PLAN_SKUS = ("calling_plan_domestic", "calling_plan_international")
# 1,000,000 minutes is almost two years of talk per license per month: far
# past any real plan, low enough that pool sizes in seconds stay small ints.
MAX_PLAN_MINUTES = 1_000_000
# Bounds on a plans document: ~250 countries times two SKUs fits many times over.
MAX_PLAN_ROWS = 10_000

_PREFIX = re.compile(r"\+?([0-9]{1,15})", re.ASCII)
_INCREMENT = re.compile(r"[0-9]{1,4}", re.ASCII)
_COUNTRY_CODE = re.compile(r"[A-Z]{2}", re.ASCII)
# ISO 3166 alpha-2 codes with a numbering plan; "001" (non-geographic) is not a country.
_KNOWN_COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS)


@dataclass(frozen=True, slots=True)
class RateRow:
    """One row of a rate deck. Money in `currency`; increments in seconds."""

    service: str
    prefix: str  # E.164 digits, no '+'
    destination: str
    number_type: str  # one of NUMBER_TYPES
    rate_per_minute: Decimal
    connect_fee: Decimal
    initial_increment_s: int
    subsequent_increment_s: int
    currency: str


class RateDeckError(ValueError):
    """A rate deck that cannot be loaded. `line` counts the header as line 1."""

    def __init__(self, line: int, detail: str) -> None:
        super().__init__(f"line {line}: {detail}")
        self.line = line
        self.detail = detail


class PlansError(ValueError):
    """A plans document that cannot be loaded; `detail` names the bad item."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --------------------------------------------------------------------------- rate decks


def parse_rate_deck_csv(text: str, *, max_rows: int = MAX_DECK_ROWS) -> list[RateRow]:
    """Parse and validate a whole rate deck; the first bad row raises RateDeckError.

    The header names the columns (any order, case and surrounding spaces
    ignored); `number_type` is optional, as column and as cell (empty: `any`).
    A deck with no rows is refused: loading it would deny every call.
    """
    assert max_rows >= 1, max_rows
    # Spreadsheets save CSV with a byte-order mark; it is not part of the first column name.
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise RateDeckError(1, _header_help("the deck is empty: expected a header row"))
        column_of = _columns_from_header(header)
        rows: list[RateRow] = []
        line_of_key: dict[tuple[str, str, str, str], int] = {}
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank lines, e.g. a trailing one, carry no row
            if len(rows) == max_rows:
                raise RateDeckError(line, f"the deck has more than {max_rows} rows")
            if len(record) != len(header):
                raise RateDeckError(
                    line, f"expected {len(header)} cells as in the header, found {len(record)}"
                )
            row = _row_from_record(record, column_of, line)
            key = (row.service, row.currency, row.prefix, row.number_type)
            first_line = line_of_key.get(key)
            if first_line is not None:
                raise RateDeckError(
                    line,
                    f"duplicate of line {first_line}: service {row.service}, currency "
                    f"{row.currency}, prefix {row.prefix} and number_type {row.number_type} "
                    "already have a rate",
                )
            line_of_key[key] = line
            rows.append(row)
    except csv.Error as error:
        raise RateDeckError(reader.line_num or 1, f"not valid CSV: {error}") from None
    if not rows:
        raise RateDeckError(1, "the deck has no rows: expected at least one rate after the header")
    return rows


def rate_deck_to_csv(rows: Iterable[RateRow]) -> str:
    """Write rows as a CSV deck that parse_rate_deck_csv reads back to the same rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RATE_DECK_COLUMNS)
    for row in rows:
        writer.writerow(
            (
                row.service,
                row.prefix,
                row.destination,
                row.number_type,
                format(row.rate_per_minute, "f"),
                format(row.connect_fee, "f"),
                row.initial_increment_s,
                row.subsequent_increment_s,
                row.currency,
            )
        )
    return buffer.getvalue()


def replace_decks(current: Sequence[RateRow], upload: Sequence[RateRow]) -> list[RateRow]:
    """The rows in force after an upload.

    For each (service, currency) pair the upload contains, its rows replace
    all rows of that pair; pairs the upload does not mention stay as they
    are. So an operator can reload the USD outbound deck without sending the
    EUR or toll-free decks again.
    """
    replaced_pairs = {(row.service, row.currency) for row in upload}
    kept = [row for row in current if (row.service, row.currency) not in replaced_pairs]
    return kept + list(upload)


class RateIndex:
    """Longest-prefix rate lookup over a deck.

    One table per (service, currency, dialled number type), keyed by prefix.
    The number-type fallback (own type first, then `any`, at each prefix) is
    resolved when the index is built, so each prefix needs one dict probe.
    Numbers are also bucketed by their first STEM_DIGITS digits: the bucket
    holds the answer among prefixes no longer than the stem, and the
    lengths of the longer prefixes that start with it, longest first. Most
    destinations have no prefix past their country code, so most lookups
    are one or two probes; none is more than 1 + (15 - STEM_DIGITS).
    """

    __slots__ = ("_pairs", "_rows", "_tables")

    def __init__(self, rows: Iterable[RateRow]) -> None:
        self._rows: tuple[RateRow, ...] = tuple(rows)
        exact: dict[tuple[str, str, str], dict[str, RateRow]] = {}
        pairs: set[tuple[str, str]] = set()
        for row in self._rows:
            pairs.add((row.service, row.currency))
            by_prefix = exact.setdefault((row.service, row.currency, row.number_type), {})
            # Two rows for one key would make the answer depend on row order.
            assert row.prefix not in by_prefix, ("duplicate rate row", row)
            assert row.number_type in NUMBER_TYPES and row.prefix.isdigit(), row
            by_prefix[row.prefix] = row
        self._pairs = frozenset(pairs)
        self._tables: dict[tuple[str, str, str], _PrefixTable] = {}
        for service, currency in self._pairs:
            any_rows = exact.get((service, currency, "any"), {})
            # toll_free and other are not deck types: only `any` rows match them.
            any_only = _prefix_table(any_rows)
            for dialled_type in DIALLED_NUMBER_TYPES:
                own_rows = exact.get((service, currency, dialled_type))
                if own_rows is None:
                    table = any_only
                else:
                    table = _prefix_table({**any_rows, **own_rows})
                self._tables[(service, currency, dialled_type)] = table

    def lookup(self, service: str, currency: str, digits: str, number_type: str) -> RateRow | None:
        """The row rating `digits` (E.164 digits; a leading '+' is ignored), or None.

        `number_type` is the dialled number's type, one of DIALLED_NUMBER_TYPES.
        """
        table = self._tables.get((service, currency, number_type))
        if table is None:
            if number_type not in DIALLED_NUMBER_TYPES:
                raise ValueError(
                    f"number_type {number_type!r} is not one of {', '.join(DIALLED_NUMBER_TYPES)}"
                )
            return None  # no deck for this service and currency
        if digits[:1] == "+":
            digits = digits[1:]
        stems, row_by_prefix = table
        get = row_by_prefix.get
        if len(digits) < STEM_DIGITS:
            for length in range(len(digits), 0, -1):
                row = get(digits[:length])
                if row is not None:
                    return row
            return None
        stem = stems.get(digits[:STEM_DIGITS])
        if stem is None:
            return None
        row_within_stem, longer_lengths = stem
        # A length past the end of `digits` probes `digits` itself: still a
        # prefix of the number, and the longest one, so a hit is right.
        for length in longer_lengths:
            row = get(digits[:length])
            if row is not None:
                return row
        return row_within_stem

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[RateRow]:
        """All rows, in the order the index was built from."""
        return list(self._rows)

    def services_and_currencies(self) -> set[tuple[str, str]]:
        """The (service, currency) pairs that have a deck."""
        return set(self._pairs)


# Per stem: the row among prefixes of at most STEM_DIGITS digits, and the
# lengths, longest first, of the longer prefixes that start with the stem.
_StemEntry = tuple[RateRow | None, tuple[int, ...]]
# (entries by stem, rows by prefix) for one service, currency and dialled type.
_PrefixTable = tuple[dict[str, _StemEntry], dict[str, RateRow]]


def _prefix_table(row_by_prefix: dict[str, RateRow]) -> _PrefixTable:
    short_rows = {
        prefix: row for prefix, row in row_by_prefix.items() if len(prefix) <= STEM_DIGITS
    }
    longer_lengths: dict[str, set[int]] = {}
    for prefix in row_by_prefix:
        if len(prefix) > STEM_DIGITS:
            longer_lengths.setdefault(prefix[:STEM_DIGITS], set()).add(len(prefix))
    stems = set(longer_lengths)
    for prefix in short_rows:
        # A short prefix answers for every stem it begins: at most 10**(STEM_DIGITS - 1).
        for tail in itertools.product("0123456789", repeat=STEM_DIGITS - len(prefix)):
            stems.add(prefix + "".join(tail))
    entries: dict[str, _StemEntry] = {}
    for stem in stems:
        row_within_stem = None
        for length in range(STEM_DIGITS, 0, -1):
            row_within_stem = short_rows.get(stem[:length])
            if row_within_stem is not None:
                break
        entries[stem] = (
            row_within_stem,
            tuple(sorted(longer_lengths.get(stem, ()), reverse=True)),
        )
    return entries, row_by_prefix


def _columns_from_header(header: Sequence[str]) -> dict[str, int]:
    column_of: dict[str, int] = {}
    for position, raw_name in enumerate(header):
        name = raw_name.strip().lower()
        if name not in RATE_DECK_COLUMNS:
            raise RateDeckError(1, _header_help(f"unknown column {raw_name.strip()!r}"))
        if name in column_of:
            raise RateDeckError(1, _header_help(f"column {name!r} appears twice"))
        column_of[name] = position
    missing = [name for name in _REQUIRED_COLUMNS if name not in column_of]
    if missing:
        raise RateDeckError(1, _header_help(f"missing column(s) {', '.join(missing)}"))
    return column_of


def _header_help(problem: str) -> str:
    return (
        f"{problem}; the header must name the columns {', '.join(_REQUIRED_COLUMNS)} "
        "and optionally number_type, in any order"
    )


def _row_from_record(record: Sequence[str], column_of: Mapping[str, int], line: int) -> RateRow:
    def cell(name: str) -> str:
        position = column_of.get(name)
        return "" if position is None else record[position].strip()

    service = cell("service")
    if service not in SERVICES:
        raise RateDeckError(line, f"service {service!r} is not one of {', '.join(SERVICES)}")

    prefix_match = _PREFIX.fullmatch(cell("prefix"))
    if prefix_match is None:
        raise RateDeckError(
            line,
            f"prefix {cell('prefix')!r} is not 1 to {MAX_PREFIX_DIGITS} digits "
            "(an optional leading '+', then the E.164 country code and more digits)",
        )
    prefix = prefix_match.group(1)
    if prefix.startswith("0"):
        # E.164 country codes never start with 0, so such a row could never
        # match: a national or international dialling prefix left in by mistake.
        raise RateDeckError(
            line,
            f"prefix {cell('prefix')!r} starts with 0, which no E.164 number does; "
            "drop the trunk or international dialling prefix (write 44..., not 0044...)",
        )

    destination = cell("destination")
    if not destination:
        raise RateDeckError(
            line, "destination is empty; name the destination, e.g. 'France - Mobile'"
        )
    if len(destination) > MAX_DESTINATION_CHARS:
        raise RateDeckError(
            line,
            f"destination is {len(destination)} characters long; at most {MAX_DESTINATION_CHARS}",
        )

    number_type = cell("number_type") or "any"
    if number_type not in NUMBER_TYPES:
        raise RateDeckError(
            line,
            f"number_type {number_type!r} is not one of {', '.join(NUMBER_TYPES)} "
            "(or empty for any)",
        )

    rate_per_minute = _money_cell(cell("rate_per_minute"), "rate_per_minute", line)
    connect_fee = _money_cell(cell("connect_fee"), "connect_fee", line)
    initial_increment_s = _increment_cell(cell("initial_increment_s"), "initial_increment_s", line)
    subsequent_increment_s = _increment_cell(
        cell("subsequent_increment_s"), "subsequent_increment_s", line
    )

    currency = cell("currency")
    if not is_known_currency(currency):
        raise RateDeckError(
            line, f"currency {currency!r} is not a known ISO 4217 code such as USD, EUR or GBP"
        )

    return RateRow(
        service=service,
        prefix=prefix,
        destination=destination,
        number_type=number_type,
        rate_per_minute=rate_per_minute,
        connect_fee=connect_fee,
        initial_increment_s=initial_increment_s,
        subsequent_increment_s=subsequent_increment_s,
        currency=currency,
    )


def _money_cell(text: str, column: str, line: int) -> Decimal:
    try:
        return parse_rate(text)
    except InvalidMoney as error:
        raise RateDeckError(line, f"{column}: {error.detail}") from None


def _increment_cell(text: str, column: str, line: int) -> int:
    if _INCREMENT.fullmatch(text) is None or not (
        MIN_INCREMENT_SECONDS <= int(text) <= MAX_INCREMENT_SECONDS
    ):
        raise RateDeckError(
            line,
            f"{column} {text!r} is not a whole number of seconds from "
            f"{MIN_INCREMENT_SECONDS} to {MAX_INCREMENT_SECONDS} (e.g. 60, 30, 6 or 1)",
        )
    return int(text)


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True, slots=True)
class PlanRow:
    """Monthly minutes one license of `sku` gives a user whose usage_location is `country`."""

    sku: str
    country: str
    domestic_minutes: int
    international_minutes: int


@dataclass(frozen=True)
class Plans:
    """Included minutes per calling-plan license and country, and conferencing dial-out."""

    plans: tuple[PlanRow, ...]
    conference_minutes_per_license: int
    conference_included_zone: frozenset[str]
    _minutes_by_plan: Mapping[tuple[str, str], tuple[int, int]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        minutes_by_plan = {
            (row.sku, row.country): (row.domestic_minutes, row.international_minutes)
            for row in self.plans
        }
        assert len(minutes_by_plan) == len(self.plans), "duplicate (sku, country) in plans"
        # A frozen dataclass sets derived fields through object.__setattr__.
        object.__setattr__(self, "_minutes_by_plan", minutes_by_plan)

    def minutes_for(self, sku: str, country: str) -> tuple[int, int]:
        """(domestic, international) minutes per license per month; (0, 0) when none."""
        return self._minutes_by_plan.get((sku, country), (0, 0))


def parse_plans(doc: object) -> Plans:
    """Validate a plans document of API.md's shape; PlansError names the first bad item."""
    document = _expect_object(doc, "plans document", ("plans", "conference_dialout"))
    plan_items = document["plans"]
    if not isinstance(plan_items, list):
        raise PlansError(f"plans: expected a list, not {_json_type(plan_items)}")
    if len(plan_items) > MAX_PLAN_ROWS:
        raise PlansError(f"plans: {len(plan_items)} items; at most {MAX_PLAN_ROWS}")
    plans: list[PlanRow] = []
    index_of_plan: dict[tuple[str, str], int] = {}
    for position, item in enumerate(plan_items):
        where = f"plans[{position}]"
        plan = _expect_object(
            item, where, ("sku", "country", "domestic_minutes", "international_minutes")
        )
        sku = plan["sku"]
        if not isinstance(sku, str) or sku not in CALLING_PLAN_SKUS:
            raise PlansError(f"{where}.sku: {sku!r} is not one of {', '.join(CALLING_PLAN_SKUS)}")
        country = _country(plan["country"], f"{where}.country")
        earlier = index_of_plan.get((sku, country))
        if earlier is not None:
            raise PlansError(
                f"{where}: duplicate of plans[{earlier}] (sku {sku}, country {country})"
            )
        index_of_plan[(sku, country)] = position
        plans.append(
            PlanRow(
                sku=sku,
                country=country,
                domestic_minutes=_minutes(plan["domestic_minutes"], f"{where}.domestic_minutes"),
                international_minutes=_minutes(
                    plan["international_minutes"], f"{where}.international_minutes"
                ),
            )
        )

    conference = _expect_object(
        document["conference_dialout"],
        "conference_dialout",
        ("minutes_per_license", "included_zone"),
    )
    minutes_per_license = _minutes(
        conference["minutes_per_license"], "conference_dialout.minutes_per_license"
    )
    zone_items = conference["included_zone"]
    if not isinstance(zone_items, list):
        raise PlansError(
            f"conference_dialout.included_zone: expected a list of country codes, "
            f"not {_json_type(zone_items)}"
        )
    zone: set[str] = set()
    for position, item in enumerate(zone_items):
        where = f"conference_dialout.included_zone[{position}]"
        country = _country(item, where)
        if country in zone:
            raise PlansError(f"{where}: {country} is listed twice")
        zone.add(country)

    return Plans(
        plans=tuple(plans),
        conference_minutes_per_license=minutes_per_license,
        conference_included_zone=frozenset(zone),
    )


def plans_to_doc(plans: Plans) -> dict[str, object]:
    """The JSON document of API.md for GET /v1/catalog/plans; parse_plans reads it back."""
    return {
        "plans": [
            {
                "sku": row.sku,
                "country": row.country,
                "domestic_minutes": row.domestic_minutes,
                "international_minutes": row.international_minutes,
            }
            for row in plans.plans
        ],
        "conference_dialout": {
            "minutes_per_license": plans.conference_minutes_per_license,
            # A set has no order; sorted keeps GET stable from one call to the next.
            "included_zone": sorted(plans.conference_included_zone),
        },
    }


def _expect_object(value: object, where: str, keys: Sequence[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        raise PlansError(f"{where}: expected an object, not {_json_type(value)}")
    # Unknown members are refused: a misspelt "domestic_minute" would otherwise
    # load as a plan without minutes.
    unknown = sorted(str(key) for key in value if key not in keys)
    if unknown:
        raise PlansError(
            f"{where}: unknown member(s) {', '.join(unknown)}; expected {', '.join(keys)}"
        )
    missing = [key for key in keys if key not in value]
    if missing:
        raise PlansError(f"{where}: missing member(s) {', '.join(missing)}")
    return {str(key): item for key, item in value.items()}


def _country(value: object, where: str) -> str:
    if (
        not isinstance(value, str)
        or _COUNTRY_CODE.fullmatch(value) is None
        or value not in _KNOWN_COUNTRIES
    ):
        raise PlansError(
            f"{where}: {value!r} is not an ISO 3166 country (an upper-case "
            "alpha-2 code such as US or GB)"
        )
    return value


def _minutes(value: object, where: str) -> int:
    # bool is an int in Python, but `true` is not a number of minutes in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlansError(f"{where}: expected a whole number of minutes, not {_json_type(value)}")
    if not 0 <= value <= MAX_PLAN_MINUTES:
        raise PlansError(f"{where}: {value} is not between 0 and {MAX_PLAN_MINUTES} minutes")
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
