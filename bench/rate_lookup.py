"""Benchmark: loading a rate deck and rating numbers by longest prefix.

    python bench/rate_lookup.py [--rows 50000] [--lookups 200000] [--seed 1]

Generates a deck in memory as CSV text (country codes from phonenumbers,
extended with 0 to 5 random digits to city- and operator-sized prefixes),
times parse_rate_deck_csv and RateIndex, then times lookups, and prints the
figures with the machine they were measured on. Targets: index build well
under a second and >= 500,000 lookups/s for 50,000 rows.

Two kinds of numbers are looked up, and reported apart:
- "in ranges": a prefix of the deck followed by random digits, like traffic
  to numbers that exist;
- "random": a country code followed by random digits. In a deck this dense
  such a number usually matches only a short prefix after every longer
  prefix under its first digits has been tried: the slow case.
The shipped sample catalog is timed too, with phonenumbers' example numbers
of every region: the shape of a real deck, where most countries have no
prefix past their calling code.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from importlib.resources import files

import phonenumbers

from commcredits.core.catalog import (
    DIALLED_NUMBER_TYPES,
    RATE_DECK_COLUMNS,
    RateIndex,
    parse_rate_deck_csv,
)

# Pairs of the generated deck; lookups are spread over them.
SERVICES_AND_CURRENCIES = (("outbound", "USD"), ("outbound", "EUR"), ("conference_dialout", "USD"))
ROW_NUMBER_TYPES = ("fixed", "mobile", "premium", "any")
MAX_EXTRA_PREFIX_DIGITS = 5
NUMBER_DIGITS = 12
TIMED_LOOKUP_ROUNDS = 3

Query = tuple[str, str, str, str]  # service, currency, digits, dialled number type


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows in the deck")
    parser.add_argument("--lookups", type=int, default=200_000, help="lookups per timed round")
    parser.add_argument("--seed", type=int, default=1, help="random seed, for repeatable decks")
    arguments = parser.parse_args()
    if arguments.rows < 1 or arguments.lookups < 1:
        parser.error("--rows and --lookups must be positive")
    randomness = random.Random(arguments.seed)

    deck_text = generate_deck_csv(arguments.rows, randomness)
    started = time.perf_counter()
    rows = parse_rate_deck_csv(deck_text, max_rows=max(arguments.rows, 1))
    parsed = time.perf_counter()
    index = RateIndex(rows)
    built = time.perf_counter()

    prefixes = sorted({(row.service, row.currency, row.prefix) for row in rows})
    query_sets = {
        "in ranges": in_range_queries(arguments.lookups, prefixes, randomness),
        "random": random_queries(arguments.lookups, randomness),
    }

    parse_seconds = parsed - started
    build_seconds = built - parsed
    load_seconds = built - started
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.system()}"
    )
    print(f"deck: {len(index)} rows, {len(deck_text) / 1e6:.1f} MB of CSV")
    print(f"parse:  {parse_seconds:.3f} s ({len(rows) / parse_seconds:,.0f} rows/s)")
    print(f"index:  {build_seconds:.3f} s ({len(rows) / build_seconds:,.0f} rows/s)")
    print(f"load:   {load_seconds:.3f} s in all ({len(rows) / load_seconds:,.0f} rows loaded/s)")
    lookup_runs = [(name, index, queries) for name, queries in query_sets.items()]
    sample_rows = parse_rate_deck_csv(
        (files("commcredits") / "data" / "catalog" / "rates.csv").read_text(encoding="utf-8")
    )
    lookup_runs.append(
        (
            f"sample catalog ({len(sample_rows):,} rows), example numbers",
            RateIndex(sample_rows),
            example_number_queries(arguments.lookups, randomness),
        )
    )
    for name, timed_index, queries in lookup_runs:
        seconds, matched = time_lookups(timed_index, queries)
        print(
            f"lookup, {name}: {len(queries) / seconds:,.0f} lookups/s, "
            f"{seconds / len(queries) * 1e9:,.0f} ns per lookup "
            f"(best of {TIMED_LOOKUP_ROUNDS} rounds of {len(queries):,}; "
            f"{matched / len(queries):.0%} matched a row)"
        )
    print(f"load average while measuring: {load_average()}")
    return 0


def time_lookups(index: RateIndex, queries: list[Query]) -> tuple[float, int]:
    """Best wall-clock seconds for one pass over `queries`, and how many matched."""
    lookup = index.lookup
    # A warm-up pass, then the best of a few: the figure is what the code can
    # do, not what a noisy neighbour let it do.
    matched = sum(1 for query in queries if lookup(*query) is not None)
    best_seconds = float("inf")
    for _round in range(TIMED_LOOKUP_ROUNDS):
        round_started = time.perf_counter()
        for service, currency, digits, number_type in queries:
            lookup(service, currency, digits, number_type)
        best_seconds = min(best_seconds, time.perf_counter() - round_started)
    return best_seconds, matched


def load_average() -> str:
    try:
        return ", ".join(f"{load:.2f}" for load in os.getloadavg())
    except OSError:
        return "unknown"


def generate_deck_csv(row_count: int, randomness: random.Random) -> str:
    country_codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    lines = [",".join(RATE_DECK_COLUMNS)]
    seen: set[tuple[str, str, str, str]] = set()
    while len(seen) < row_count:
        service, currency = randomness.choice(SERVICES_AND_CURRENCIES)
        extra_digits = randomness.randint(0, MAX_EXTRA_PREFIX_DIGITS)
        prefix = str(randomness.choice(country_codes)) + random_digits(extra_digits, randomness)
        number_type = randomness.choice(ROW_NUMBER_TYPES)
        key = (service, currency, prefix, number_type)
        if key in seen:
            continue
        seen.add(key)
        rate = f"0.{randomness.randint(1, 999_999):06d}"
        increments = randomness.choice(("60,60", "30,6", "1,1"))
        destination = f"Destination {prefix}"
        lines.append(
            f"{service},{prefix},{destination},{number_type},{rate},0,{increments},{currency}"
        )
    return "\n".join(lines) + "\n"


def in_range_queries(
    count: int, prefixes: list[tuple[str, str, str]], randomness: random.Random
) -> list[Query]:
    queries = []
    for _ in range(count):
        service, currency, prefix = randomness.choice(prefixes)
        digits = prefix + random_digits(NUMBER_DIGITS - len(prefix), randomness)
        queries.append((service, currency, digits, randomness.choice(DIALLED_NUMBER_TYPES)))
    return queries


def random_queries(count: int, randomness: random.Random) -> list[Query]:
    country_codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    queries = []
    for _ in range(count):
        service, currency = randomness.choice(SERVICES_AND_CURRENCIES)
        code = str(randomness.choice(country_codes))
        digits = code + random_digits(NUMBER_DIGITS - len(code), randomness)
        queries.append((service, currency, digits, randomness.choice(DIALLED_NUMBER_TYPES)))
    return queries


def example_number_queries(count: int, randomness: random.Random) -> list[Query]:
    numbers: list[Query] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for number_type, dialled_type in (
            (phonenumbers.PhoneNumberType.FIXED_LINE, "fixed"),
            (phonenumbers.PhoneNumberType.MOBILE, "mobile"),
        ):
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is not None:
                e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
                numbers.append(("outbound", "USD", e164[1:], dialled_type))
    return [randomness.choice(numbers) for _ in range(count)]


def random_digits(count: int, randomness: random.Random) -> str:
    return "".join(randomness.choice("0123456789") for _ in range(count))


if __name__ == "__main__":
    sys.exit(main())
