"""Offline rating: the records the benchmark sends, and the rating core alone.

    python bench/cdr.py [--records 20000]

`cdr_records` builds the finished-call records that the load generator posts
to ``POST /v1/cdrs`` (bench/load.py). `rate_core_alone` rates the same kind of
records with the pure core only (number analysis, route, rate lookup,
decision, billed time and charge), with the tenant and the user already in
memory: the API's figure is set beside it, so the gap is what HTTP, JSON,
validation and the database add.

Every record is a call from the tenant's pay-as-you-go user (usage location
DE) to a number abroad, so it is paid from credits and posts a ledger line:
the most expensive kind of record.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

import phonenumbers

TENANT_ID_FORMAT = "bench-{index:03d}"
CALLER_UPN_FORMAT = "caller@{tenant_id}.example"
CALLER_USAGE_LOCATION = "DE"
CALLING_NUMBER = "+4930901820"
CALLER_LICENSES = frozenset({"calling_plan_payg", "communications_credits"})
# Countries the sample catalog rates; numbers are varied so that number
# analysis (cached per number) is not always a cache hit.
CALLED_REGIONS = ("US", "GB", "FR", "IT", "ES", "NL", "JP", "AU", "BR", "IN", "CA", "SE")
NUMBERS_PER_REGION_AND_TYPE = 50
DURATIONS_SECONDS = (0, 7, 42, 65, 180, 601, 1234)
# Records start a little in the past (the API refuses calls ending in the
# future) and well inside the 400 days it accepts.
RECORD_AGE = timedelta(hours=2)
TIMED_CORE_ROUNDS = 3


def tenant_id_of(index: int) -> str:
    return TENANT_ID_FORMAT.format(index=index)


def caller_upn_of(tenant_id: str) -> str:
    return CALLER_UPN_FORMAT.format(tenant_id=tenant_id)


@cache
def called_numbers() -> tuple[str, ...]:
    """Valid E.164 numbers in a dozen countries, fixed and mobile, a few hundred in all."""
    numbers = []
    for region in CALLED_REGIONS:
        for number_type in (
            phonenumbers.PhoneNumberType.FIXED_LINE,
            phonenumbers.PhoneNumberType.MOBILE,
        ):
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            for last_digits in range(NUMBERS_PER_REGION_AND_TYPE):
                candidate = f"{e164[:-2]}{last_digits:02d}"
                if phonenumbers.is_valid_number(phonenumbers.parse(candidate, None)):
                    numbers.append(candidate)
    assert numbers, "phonenumbers gave no example numbers"
    return tuple(numbers)


def cdr_records(count: int, tenants: int, prefix: str) -> list[dict[str, Any]]:
    """``count`` finished calls spread round-robin over ``tenants`` bench tenants."""
    numbers = called_numbers()
    started_at = (datetime.now(UTC) - RECORD_AGE).isoformat().replace("+00:00", "Z")
    records = []
    for sequence in range(count):
        tenant_id = tenant_id_of(sequence % tenants)
        records.append(
            {
                "call_id": f"{prefix}-{sequence}",
                "tenant_id": tenant_id,
                "call_type": "user_out",
                "user_id": caller_upn_of(tenant_id),
                "from": CALLING_NUMBER,
                "to": numbers[(sequence * 7919) % len(numbers)],
                "started_at": started_at,
                "duration_seconds": DURATIONS_SECONDS[sequence % len(DURATIONS_SECONDS)],
            }
        )
    return records


def rate_core_alone(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Records per second through the pure rating path, best of a few rounds,
    on the shipped sample catalog; and how many were rated (allowed)."""
    from commcredits.core.catalog import RateIndex, parse_plans
    from commcredits.services import catalog

    index = RateIndex(catalog_rows())
    plans = parse_plans(catalog.sample_plans())
    rate_one = _core_rater(index, plans)
    # A warm-up pass fills the number-analysis cache, as a running server's is.
    rated = sum(1 for record in records if rate_one(record) is not None)
    best_seconds = float("inf")
    for _round in range(TIMED_CORE_ROUNDS):
        started = time.perf_counter()
        for record in records:
            rate_one(record)
        best_seconds = min(best_seconds, time.perf_counter() - started)
    return {
        "records": len(records),
        "rated": rated,
        "seconds": best_seconds,
        "records_per_second": len(records) / best_seconds,
    }


def catalog_rows() -> list[Any]:
    from commcredits.core.catalog import parse_rate_deck_csv
    from commcredits.services import catalog

    return parse_rate_deck_csv(catalog.sample_rates_csv())


def _core_rater(index: Any, plans: Any) -> Any:
    """One record -> its charge (Decimal) or None when refused; pure core calls only."""
    from commcredits.core.charging import Party, TenantTerms, decide, route_call
    from commcredits.core.money import round_to_minor
    from commcredits.core.numbers import InvalidNumber, analyse_number
    from commcredits.core.pools import month_of
    from commcredits.core.rating import Tariff, billed_seconds, charge_for_paid_seconds

    party = Party(kind="person", usage_location=CALLER_USAGE_LOCATION, licenses=CALLER_LICENSES)
    terms = TenantTerms(agreement="direct", can_purchase=True)
    unbounded = Decimal(10) ** 15
    currency = "USD"

    def rate_one(record: dict[str, Any]) -> Decimal | None:
        started_at = datetime.fromisoformat(record["started_at"])
        month_of(started_at, "UTC")
        try:
            to = analyse_number(record["to"], party.usage_location)
        except InvalidNumber:
            return None
        route = route_call(
            record["call_type"], party, to, included_zone=plans.conference_included_zone
        )
        if route.rate_service is None:
            return None
        rate = index.lookup(route.rate_service, currency, to.digits, to.number_type)
        if rate is None:
            return None
        tariff = Tariff(
            rate_per_minute=rate.rate_per_minute,
            connect_fee=rate.connect_fee,
            initial_increment_s=rate.initial_increment_s,
            subsequent_increment_s=rate.subsequent_increment_s,
        )
        decision = decide(
            route,
            party,
            terms,
            pool_remaining_seconds=0,
            tariff=tariff,
            available=unbounded,
        )
        if not decision.allow:
            return None
        duration_seconds = record["duration_seconds"]
        if duration_seconds == 0:
            return Decimal(0)
        billed = billed_seconds(
            duration_seconds, tariff.initial_increment_s, tariff.subsequent_increment_s
        )
        exact = charge_for_paid_seconds(tariff, billed, include_connect_fee=True)
        return round_to_minor(exact, currency)

    return rate_one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    arguments = parser.parse_args()
    result = rate_core_alone(cdr_records(arguments.records, 10, "core"))
    print(
        f"rating core alone: {result['records_per_second']:,.0f} records/s "
        f"({result['rated']:,} of {result['records']:,} rated, "
        f"best of {TIMED_CORE_ROUNDS} rounds)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
