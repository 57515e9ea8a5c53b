"""Who pays for a call, and how much (SPEC §3 rules 1-9, the deny reasons,
rating and online charging), through the HTTP API on a deck of our own.

Every expected charge below is worked out by hand from tests/support/charging.py's
DECK_CSV, in the comment beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from commcredits.services import calls
from commcredits.store.db import read_transaction, write_transaction
from tests.support.api import OPERATOR
from tests.support.charging import (
    BR_FIXED,
    CH_FIXED,
    DE_FIXED,
    DE_TOLL_FREE,
    FR_FIXED,
    GB_FIXED,
    GB_MOBILE,
    GB_PREMIUM,
    GB_TOLL_FREE,
    US_NUMBER,
    backdate_tenant,
    call_body,
    call_state,
    credits,
    end,
    ensure_plans,
    fund,
    ledger,
    load_deck,
    make_tenant,
    make_user,
    month_text,
    new_call_id,
    plan_minutes,
    pools,
    recent_month_cut,
    run_to_max,
    seconds_ago,
    start,
    update,
)

PAYG = ("calling_plan_payg", "communications_credits")


@pytest.fixture(scope="module")
def plans(app: Any) -> Iterator[dict[str, Any]]:
    """Our deck (CHF only) and the plans in force (the shipped sample if none)."""
    with TestClient(app) as client:
        load_deck(client)
        yield ensure_plans(client)


@pytest.fixture()
def grant_slice(app: Any) -> int:
    return int(app.state.ctx.settings.grant_seconds)


def this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def money(text: str) -> Decimal:
    return Decimal(text)


def call_charges(client: Any, tenant_id: str) -> list[dict[str, Any]]:
    return [line for line in ledger(client, tenant_id) if line["kind"] == "call_charge"]


def assert_denied(answer: dict[str, Any], reason: str) -> None:
    assert answer["decision"] == "deny", answer
    assert answer["reason"] == reason, answer
    assert answer["funding"] is None and answer["granted_seconds"] == 0, answer


def assert_allowed(answer: dict[str, Any], funding: str) -> None:
    assert answer["decision"] == "allow", answer
    assert answer["reason"] is None, answer
    assert answer["funding"] == funding, answer
    assert answer["granted_seconds"] > 0, answer


# --- rule 1: emergency, and user_in -----------------------------------------------------------


@pytest.mark.parametrize(
    ("usage_location", "dialled"), [("US", "911"), ("DE", "112"), ("GB", "999"), ("GB", "112")]
)
def test_emergency_calls_are_allowed_and_free_with_no_balance_and_no_licenses(
    client, plans, usage_location, dialled
):
    tenant = make_tenant(client)
    user = make_user(client, tenant.id, usage_location=usage_location)

    started = start(client, tenant, "user_out", dialled, user=user)

    assert_allowed(started, "free")
    assert started["max_duration_seconds"] is None
    assert started["rate"] is None
    ended = end(client, tenant, started["call_id"], 1800)
    assert ended["funding"] == "free"
    assert money(ended["charge"]) == 0 and ended["currency"] == "CHF"
    assert (ended["pool_seconds"], ended["charged_seconds"]) == (0, 0)
    assert ledger(client, tenant.id) == []
    assert money(credits(client, tenant.id)["reserved"]) == 0


def test_emergency_call_goes_ahead_with_a_negative_balance(client, plans):
    tenant = make_tenant(client)
    fund(client, tenant.id, "-5.00")
    user = make_user(client, tenant.id, usage_location="GB", licenses=PAYG)

    started = start(client, tenant, "user_out", "999", user=user)

    assert_allowed(started, "free")
    assert money(end(client, tenant, started["call_id"], 60)["charge"]) == 0
    assert money(credits(client, tenant.id)["balance"]) == Decimal("-5.00")


def test_an_emergency_call_goes_ahead_even_with_a_caller_number_that_is_not_valid(client, plans):
    """Rule 1: "always allowed". A platform that sends a broken caller ID must
    not have an emergency call refused as invalid_number."""
    tenant = make_tenant(client)
    user = make_user(client, tenant.id, usage_location="US")

    started = start(client, tenant, "user_out", "911", user=user, from_number="+1555")

    assert_allowed(started, "free")
    assert money(end(client, tenant, started["call_id"], 60)["charge"]) == 0


def test_an_inbound_call_to_a_user_is_free(client, plans):
    tenant = make_tenant(client)
    user = make_user(client, tenant.id, usage_location="CH", phone_number=CH_FIXED)

    started = start(client, tenant, "user_in", CH_FIXED, user=user, from_number=GB_MOBILE)

    assert_allowed(started, "free")
    assert started["max_duration_seconds"] is None
    ended = end(client, tenant, started["call_id"], 3600)
    assert ended["funding"] == "free" and money(ended["charge"]) == 0
    assert ledger(client, tenant.id) == []


# --- rule 2: the domestic pool, then credits --------------------------------------------------


def test_domestic_calls_draw_the_pool_first_then_credits(client, plans, grant_slice):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(
        client,
        tenant.id,
        usage_location="US",
        licenses=("calling_plan_domestic", "communications_credits"),
    )
    size = plan_minutes(plans, "calling_plan_domestic", "US")[0] * 60
    assert size > grant_slice
    assert pools(client, tenant.id)[("domestic", "US")]["size_seconds"] == size

    first = start(client, tenant, "user_out", US_NUMBER, user=user)
    assert_allowed(first, "included")
    assert money(first["rate"]["per_minute"]) == Decimal("0.085")
    # The platform reports the call is nearly through the pool: the grant reaches it.
    extended = update(client, tenant, first["call_id"], size - grant_slice)
    assert extended["decision"] == "continue" and extended["granted_seconds"] == size
    ended = end(client, tenant, first["call_id"], size)
    assert ended["funding"] == "included"
    assert (ended["pool_seconds"], ended["charged_seconds"]) == (size, 0)
    assert money(ended["charge"]) == 0
    domestic = pools(client, tenant.id)[("domestic", "US")]
    assert (domestic["used_seconds"], domestic["remaining_seconds"]) == (size, 0)

    second = start(client, tenant, "user_out", US_NUMBER, user=user)
    assert_allowed(second, "credits")
    ended = end(client, tenant, second["call_id"], 61)
    # 61 s on 60/60 -> 120 s billed; 2 x 0.085 = 0.17.
    assert ended["funding"] == "credits"
    assert (ended["pool_seconds"], ended["charged_seconds"]) == (0, 120)
    assert ended["charge"] == "0.17" and ended["balance"] == "9.83"
    assert [line["amount"] for line in call_charges(client, tenant.id)] == ["-0.17"]


def test_a_pool_covered_call_needs_no_credits_license_and_is_limited_by_the_pool(client, plans):
    tenant = make_tenant(client)  # no balance at all
    user = make_user(client, tenant.id, usage_location="US", licenses=("calling_plan_domestic",))
    size = plan_minutes(plans, "calling_plan_domestic", "US")[0] * 60

    started = start(client, tenant, "user_out", US_NUMBER, user=user)

    assert_allowed(started, "included")
    assert started["max_duration_seconds"] == size
    ended = end(client, tenant, started["call_id"], 90)
    assert ended["funding"] == "included" and ended["pool_seconds"] == 120
    assert money(ended["charge"]) == 0


# --- rule 3: international ---------------------------------------------------------------------


def test_international_plan_draws_the_international_pool(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(
        client,
        tenant.id,
        usage_location="US",
        licenses=("calling_plan_international", "communications_credits"),
    )
    international = plan_minutes(plans, "calling_plan_international", "US")[1] * 60
    assert international > 0

    started = start(client, tenant, "user_out", GB_FIXED, user=user)

    assert_allowed(started, "included")
    ended = end(client, tenant, started["call_id"], 45)
    # 45 s on the GB 30/6 deck -> 30 + 3 x 6 = 48 s billed, all from the pool.
    assert ended["funding"] == "included"
    assert (ended["pool_seconds"], ended["charged_seconds"]) == (48, 0)
    assert money(ended["charge"]) == 0
    by_pool = pools(client, tenant.id)
    assert by_pool[("international", "US")]["used_seconds"] == 48
    assert by_pool[("international", "US")]["size_seconds"] == international
    assert by_pool[("domestic", "US")]["used_seconds"] == 0
    assert ledger(client, tenant.id)[-1]["kind"] == "adjustment"  # no call charge

    # The international plan includes domestic minutes too (rule 2).
    domestic = start(client, tenant, "user_out", US_NUMBER, user=user)
    assert_allowed(domestic, "included")
    end(client, tenant, domestic["call_id"], 10)
    assert pools(client, tenant.id)[("domestic", "US")]["used_seconds"] == 60


def test_domestic_only_plan_calling_abroad_pays_from_credits(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(
        client,
        tenant.id,
        usage_location="US",
        licenses=("calling_plan_domestic", "communications_credits"),
    )

    started = start(client, tenant, "user_out", GB_FIXED, user=user)

    assert_allowed(started, "credits")
    assert started["rate"]["destination"] == "Test United Kingdom"
    ended = end(client, tenant, started["call_id"], 31)
    # 31 s on 30/6 -> 36 s billed: 0.05 + 0.12 x 36 / 60 = 0.122 -> 0.12.
    assert ended["funding"] == "credits"
    assert (ended["pool_seconds"], ended["charged_seconds"]) == (0, 36)
    assert ended["charge"] == "0.12" and ended["balance"] == "9.88"
    assert ("international", "US") not in pools(client, tenant.id)


def test_domestic_only_plan_without_credits_license_cannot_call_abroad(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="US", licenses=("calling_plan_domestic",))

    assert_denied(start(client, tenant, "user_out", GB_FIXED, user=user), "no_credits_license")


# --- rule 4: pay-as-you-go ---------------------------------------------------------------------


def test_payg_pays_every_outbound_minute_from_credits(client, plans):
    tenant = make_tenant(client, country="US", balance="10.00")
    user = make_user(client, tenant.id, usage_location="US", licenses=PAYG)

    domestic = start(client, tenant, "user_out", US_NUMBER, user=user)
    abroad = start(client, tenant, "user_out", DE_FIXED, user=user)

    assert_allowed(domestic, "credits")
    assert_allowed(abroad, "credits")
    assert end(client, tenant, domestic["call_id"], 61)["charge"] == "0.17"  # 2 x 0.085
    # 1/1 deck: 0.015 + 0.06 x 61 / 60 = 0.076 -> 0.08.
    ended = end(client, tenant, abroad["call_id"], 61)
    assert ended["charge"] == "0.08" and ended["charged_seconds"] == 61
    assert ended["balance"] == "9.75"
    assert pools(client, tenant.id) == {}


# --- rule 5: conference dial-out ---------------------------------------------------------------


def test_conference_dial_out_in_the_zone_is_included_and_outside_it_paid(client, plans):
    zone = set(plans["conference_dialout"]["included_zone"])
    assert "US" in zone and "BR" not in zone, "the plans in force changed the conferencing zone"
    conference_size = int(plans["conference_dialout"]["minutes_per_license"]) * 60
    tenant = make_tenant(client, balance="10.00")
    organizer = make_user(
        client,
        tenant.id,
        usage_location="CH",
        licenses=("audio_conferencing", "communications_credits"),
    )

    in_zone = start(client, tenant, "conf_out", US_NUMBER, user=organizer)
    assert_allowed(in_zone, "included")
    assert in_zone["rate"]["destination"] == "Test Conf United States"
    ended = end(client, tenant, in_zone["call_id"], 100)
    # 100 s on 30/6 -> 30 + 12 x 6 = 102 s billed, from the conferencing pool.
    assert ended["funding"] == "included" and ended["pool_seconds"] == 102
    assert money(ended["charge"]) == 0
    pool = pools(client, tenant.id)[("conference_dialout", None)]
    assert (pool["size_seconds"], pool["used_seconds"]) == (conference_size, 102)

    out_of_zone = start(client, tenant, "conf_out", BR_FIXED, user=organizer)
    assert_allowed(out_of_zone, "credits")
    assert out_of_zone["rate"]["destination"] == "Test Conf Brazil"
    ended = end(client, tenant, out_of_zone["call_id"], 61)
    # 61 s on 60/60 -> 120 s: 2 x 0.30 = 0.60.
    assert ended["funding"] == "credits" and ended["charge"] == "0.60"
    assert ended["balance"] == "9.40"


def test_conference_dial_out_without_audio_conferencing_pays_the_conference_deck(client, plans):
    tenant = make_tenant(client, balance="10.00")
    organizer = make_user(
        client, tenant.id, usage_location="GB", licenses=("communications_credits",)
    )

    started = start(client, tenant, "conf_out", GB_MOBILE, user=organizer)

    assert_allowed(started, "credits")
    ended = end(client, tenant, started["call_id"], 31)
    # Conference deck, not the outbound one: 36 s x 0.12 / 60 = 0.072 -> 0.07, no connect fee.
    assert ended["charge"] == "0.07" and ended["charged_seconds"] == 36


# --- rule 6: toll-free inbound -----------------------------------------------------------------


def toll_free_tenant(client: Any, balance: str | None, number: str = GB_TOLL_FREE) -> Any:
    tenant = make_tenant(client, country="GB", balance=balance)
    resource_account = make_user(
        client,
        tenant.id,
        usage_location="GB",
        kind="resource_account",
        phone_number=number,
        licenses=("communications_credits",),
    )
    return tenant, resource_account


@pytest.mark.parametrize(
    ("caller", "destination", "per_minute"),
    [
        (GB_MOBILE, "Test TF caller UK - Mobile", "0.15"),
        (GB_FIXED, "Test TF caller UK - Fixed", "0.04"),
        (US_NUMBER, "Test TF caller United States", "0.03"),
        # Fallbacks to the toll-free number itself: missing, invalid, not in the deck.
        (None, "Test TF UK toll-free number", "0.05"),
        ("+4412", "Test TF UK toll-free number", "0.05"),
        (FR_FIXED, "Test TF UK toll-free number", "0.05"),
    ],
)
def test_toll_free_calls_are_billed_to_the_tenant_rated_on_the_caller(
    client, plans, caller, destination, per_minute
):
    tenant, _ = toll_free_tenant(client, "10.00")

    started = start(client, tenant, "tollfree_in", GB_TOLL_FREE, from_number=caller)

    assert_allowed(started, "credits")
    assert started["rate"]["destination"] == destination
    assert money(started["rate"]["per_minute"]) == Decimal(per_minute)
    ended = end(client, tenant, started["call_id"], 61)
    expected = (Decimal(per_minute) * 2).quantize(Decimal("0.01"))  # 61 s -> 2 minutes
    assert money(ended["charge"]) == expected and ended["funding"] == "credits"
    assert money(ended["balance"]) == Decimal("10.00") - expected
    assert [money(line["amount"]) for line in call_charges(client, tenant.id)] == [-expected]


def test_toll_free_call_is_not_rated_when_neither_number_is_in_the_deck(client, plans):
    tenant, _ = toll_free_tenant(client, "10.00", number=DE_TOLL_FREE)

    answer = start(client, tenant, "tollfree_in", DE_TOLL_FREE, from_number=FR_FIXED)

    assert_denied(answer, "destination_not_rated")


@pytest.mark.parametrize("balance", [None, "-1.00"])
def test_toll_free_calls_need_a_positive_balance(client, plans, balance):
    tenant, _ = toll_free_tenant(client, balance)

    answer = start(client, tenant, "tollfree_in", GB_TOLL_FREE, from_number=GB_MOBILE)

    assert_denied(answer, "insufficient_balance")


def test_toll_free_resource_account_needs_the_credits_license(client, plans):
    tenant = make_tenant(client, country="GB", balance="10.00")
    make_user(
        client, tenant.id, usage_location="GB", kind="resource_account", phone_number=GB_TOLL_FREE
    )

    answer = start(client, tenant, "tollfree_in", GB_TOLL_FREE, from_number=GB_MOBILE)

    assert_denied(answer, "no_credits_license")


# --- rule 7: premium ---------------------------------------------------------------------------


def test_premium_numbers_are_never_drawn_from_a_pool(client, plans):
    tenant = make_tenant(client, country="GB", balance="10.00")
    user = make_user(
        client,
        tenant.id,
        usage_location="GB",
        licenses=("calling_plan_domestic", "audio_conferencing", "communications_credits"),
    )

    premium = start(client, tenant, "user_out", GB_PREMIUM, user=user)
    assert_allowed(premium, "credits")
    assert premium["rate"]["destination"] == "Test United Kingdom - Premium"
    ended = end(client, tenant, premium["call_id"], 30)
    assert (ended["pool_seconds"], ended["charged_seconds"]) == (0, 60)
    assert ended["charge"] == "1.20" and ended["funding"] == "credits"

    conference = start(client, tenant, "conf_out", GB_PREMIUM, user=user)
    assert_allowed(conference, "credits")
    assert end(client, tenant, conference["call_id"], 30)["pool_seconds"] == 0

    # The same user's ordinary domestic call is included: the pool had minutes.
    ordinary = start(client, tenant, "user_out", GB_FIXED, user=user)
    assert_allowed(ordinary, "included")
    end(client, tenant, ordinary["call_id"], 30)
    by_pool = pools(client, tenant.id)
    assert by_pool[("domestic", "GB")]["used_seconds"] == 30
    assert by_pool[("conference_dialout", None)]["used_seconds"] == 0


def test_premium_number_without_credits_is_refused_even_with_pool_minutes(client, plans):
    tenant = make_tenant(client, country="GB", balance="10.00")
    user = make_user(client, tenant.id, usage_location="GB", licenses=("calling_plan_domestic",))

    assert_denied(start(client, tenant, "user_out", GB_PREMIUM, user=user), "no_credits_license")


# --- rule 8: who may spend credits, and the deny reasons ---------------------------------------


def test_nce_tenant_calls_go_ahead_as_overage_without_license_or_balance(client, plans):
    tenant = make_tenant(client, agreement="nce")
    user = make_user(client, tenant.id, usage_location="US", licenses=("calling_plan_payg",))

    first = start(client, tenant, "user_out", US_NUMBER, user=user)
    second = start(client, tenant, "user_out", DE_FIXED, user=user)

    assert_allowed(first, "overage")
    assert first["max_duration_seconds"] is None
    assert_allowed(second, "overage")
    ended = end(client, tenant, first["call_id"], 61)
    assert ended["funding"] == "overage" and ended["charge"] == "0.17"  # 2 x 0.085
    assert ended["charged_seconds"] == 120 and money(ended["balance"]) == 0
    # 25 s on 1/1: 0.015 + 0.025 = 0.04.
    assert end(client, tenant, second["call_id"], 25)["charge"] == "0.04"
    assert ledger(client, tenant.id) == []  # invoiced later, never from a balance

    response = client.get(
        f"/v1/tenants/{tenant.id}/overage", params={"month": this_month()}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    overage = response.json()
    assert (overage["calls"], overage["seconds"]) == (2, 86)
    assert overage["total_charge"] == "0.21" and overage["currency"] == "CHF"
    view = credits(client, tenant.id)
    assert view["status"] == "not_available" and view["eligibility"]["reason"] == "nce"


def test_nce_tenant_still_needs_a_rate(client, plans):
    tenant = make_tenant(client, agreement="nce")
    user = make_user(client, tenant.id, usage_location="US", licenses=("calling_plan_payg",))

    assert_denied(start(client, tenant, "user_out", FR_FIXED, user=user), "destination_not_rated")


def test_ea_region_mismatch_is_credits_not_available_until_the_override(client, plans):
    tenant = make_tenant(
        client, agreement="ea", country="CH", billing_country="US", balance="10.00"
    )
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    assert credits(client, tenant.id)["eligibility"]["reason"] == "region_mismatch"

    assert_denied(start(client, tenant, "user_out", US_NUMBER, user=user), "credits_not_available")

    response = client.patch(
        f"/v1/tenants/{tenant.id}", json={"purchase_override": True}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    allowed = start(client, tenant, "user_out", US_NUMBER, user=user)
    assert_allowed(allowed, "credits")
    assert end(client, tenant, allowed["call_id"], 61)["charge"] == "0.17"


def test_calls_needing_credits_need_the_credits_license(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="US", licenses=("calling_plan_payg",))

    assert_denied(start(client, tenant, "user_out", US_NUMBER, user=user), "no_credits_license")


def test_available_must_cover_the_connect_fee_and_the_first_increment(client, plans):
    tenant = make_tenant(client)
    user = make_user(client, tenant.id, usage_location="US", licenses=PAYG)
    assert_denied(start(client, tenant, "user_out", GB_FIXED, user=user), "insufficient_balance")

    # GB: connect 0.05 + first 30 s at 0.12/min = 0.11.
    fund(client, tenant.id, "0.10")
    assert_denied(start(client, tenant, "user_out", GB_FIXED, user=user), "insufficient_balance")

    fund(client, tenant.id, "0.01")
    started = start(client, tenant, "user_out", GB_FIXED, user=user)
    assert_allowed(started, "credits")
    assert started["max_duration_seconds"] == 30 and started["granted_seconds"] == 30
    assert money(credits(client, tenant.id)["available"]) == 0
    ended = end(client, tenant, started["call_id"], 45)  # seconds past the grant are free
    assert ended["charge"] == "0.11" and money(ended["balance"]) == 0


def test_a_destination_missing_from_the_deck_is_denied_never_free(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="US", licenses=PAYG)

    assert_denied(start(client, tenant, "user_out", FR_FIXED, user=user), "destination_not_rated")


INVALID_NUMBERS = (
    "+1234",  # too short for its country
    "12345",  # not E.164, not an emergency number
    "+44 1212345678",  # a space
    "0041212345678",  # international prefix instead of '+'
    "+4412123456789012",  # 16 digits
    "911",  # an emergency number, but not of the caller's country (DE)
    "+44abc",
)


def test_numbers_that_are_not_valid_e164_are_invalid_number(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="DE", licenses=PAYG)

    for dialled in INVALID_NUMBERS:
        answer = start(client, tenant, "user_out", dialled, user=user)
        assert (answer["decision"], answer["reason"]) == ("deny", "invalid_number"), dialled
    assert money(credits(client, tenant.id)["reserved"]) == 0


def test_an_invalid_caller_number_is_invalid_number(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="US", licenses=PAYG)

    answer = start(client, tenant, "user_out", US_NUMBER, user=user, from_number="+1555")

    assert_denied(answer, "invalid_number")


def test_deny_reasons_come_in_their_documented_order(client, plans):
    """invalid_number, no_calling_plan, credits_not_available, no_credits_license,
    destination_not_rated, insufficient_balance (core/charging.py)."""
    mismatch = make_tenant(client, agreement="ea", country="CH", billing_country="US")
    no_plan = make_user(client, mismatch.id, usage_location="CH")
    payg_only = make_user(client, mismatch.id, usage_location="CH", licenses=("calling_plan_payg",))
    assert_denied(start(client, mismatch, "user_out", "+1", user=no_plan), "invalid_number")
    assert_denied(start(client, mismatch, "user_out", FR_FIXED, user=no_plan), "no_calling_plan")
    assert_denied(
        start(client, mismatch, "user_out", FR_FIXED, user=payg_only), "credits_not_available"
    )

    empty = make_tenant(client)
    unlicensed = make_user(client, empty.id, usage_location="US", licenses=("calling_plan_payg",))
    licensed = make_user(client, empty.id, usage_location="US", licenses=PAYG)
    assert_denied(start(client, empty, "user_out", FR_FIXED, user=unlicensed), "no_credits_license")
    assert_denied(
        start(client, empty, "user_out", FR_FIXED, user=licensed), "destination_not_rated"
    )
    assert_denied(
        start(client, empty, "user_out", US_NUMBER, user=licensed), "insufficient_balance"
    )


# --- rule 9 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("licenses", [(), ("communications_credits",), ("audio_conferencing",)])
def test_a_user_without_a_calling_plan_cannot_call_out(client, plans, licenses):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="US", licenses=licenses)

    assert_denied(start(client, tenant, "user_out", US_NUMBER, user=user), "no_calling_plan")


# --- the month, in the tenant's timezone -------------------------------------------------------


def test_pool_months_are_cut_in_the_tenant_timezone(client, plans, app, engine):
    """The month of a call is its start's month in the tenant's timezone. A
    live start over the API is dated within a day of now, so the starts here
    go through the service itself, on each side of the latest month cut."""
    tenant = make_tenant(client, country="US", timezone="America/New_York")
    user = make_user(client, tenant.id, usage_location="US", licenses=("calling_plan_domestic",))
    backdate_tenant(engine, tenant.id, days=70)  # the plan was held last month too
    index, catalog_plans = app.state.ctx.catalog.current()

    def start_at(instant: datetime) -> dict[str, Any]:
        request = calls.CallRequest(
            call_id=new_call_id(),
            tenant_id=tenant.id,
            call_type="user_out",
            user_ref=user["id"],
            from_number=None,
            to_number=US_NUMBER,
            started_at=instant,
        )
        with read_transaction(engine) as connection:
            prepared = calls.prepare(connection, request, index, catalog_plans)
        with write_transaction(engine) as connection:
            return calls.start_in(connection, prepared, catalog_plans, 300)

    # 03:00Z on the 1st is 22:00 (or 23:00) on the last day of the month before
    # in New York; 05:30Z is 00:30 (or 01:30) on the 1st.
    cut = recent_month_cut()
    previous = start_at(cut)
    assert_allowed(previous, "included")
    assert end(client, tenant, previous["call_id"], 61)["pool_seconds"] == 120
    current = start_at(cut + timedelta(hours=2, minutes=30))
    assert end(client, tenant, current["call_id"], 30)["pool_seconds"] == 60

    last_month = month_text(cut - timedelta(days=1))
    assert pools(client, tenant.id, last_month)[("domestic", "US")]["used_seconds"] == 120
    assert pools(client, tenant.id, month_text(cut))[("domestic", "US")]["used_seconds"] == 60


# --- a pool exhausted mid-call -----------------------------------------------------------------


def test_a_pool_exhausted_mid_call_ends_mixed_with_the_rest_paid(client, plans, grant_slice):
    size = int(plans["conference_dialout"]["minutes_per_license"]) * 60
    assert size >= 120
    tenant = make_tenant(client, balance="10.00")
    organizer = make_user(
        client,
        tenant.id,
        usage_location="US",
        licenses=("audio_conferencing", "communications_credits"),
    )
    # Spend all of the conferencing pool but 90 s (size - 90 is on the 30/6 grid).
    spender = start(client, tenant, "conf_out", US_NUMBER, user=organizer)
    update(client, tenant, spender["call_id"], size - 90)
    assert end(client, tenant, spender["call_id"], size - 90)["pool_seconds"] == size - 90

    started = start(client, tenant, "conf_out", US_NUMBER, user=organizer)
    assert_allowed(started, "included")
    granted = started["granted_seconds"]
    while granted < 204:
        granted = update(client, tenant, started["call_id"], granted)["granted_seconds"]
    ended = end(client, tenant, started["call_id"], 200)

    # 200 s on 30/6 -> 30 + 29 x 6 = 204 s billed: 90 from the pool, 114 paid,
    # 0.12 x 114 / 60 = 0.228 -> 0.23.
    assert ended["funding"] == "mixed"
    assert (ended["pool_seconds"], ended["charged_seconds"]) == (90, 114)
    assert ended["charge"] == "0.23" and ended["balance"] == "9.77"
    assert [line["amount"] for line in call_charges(client, tenant.id)] == ["-0.23"]
    pool = pools(client, tenant.id)[("conference_dialout", None)]
    assert (pool["used_seconds"], pool["remaining_seconds"]) == (size, 0)
    assert money(credits(client, tenant.id)["reserved"]) == 0


# --- exact charges and rounding ----------------------------------------------------------------


# (duration_seconds, billed seconds, charge) per deck, each worked out by hand.
ROUNDING_CASES = {
    # US, 60/60, 0.085/min, no connect fee.
    "60/60": (
        US_NUMBER,
        [
            (0, 0, "0.00"),
            (1, 60, "0.09"),  # 0.085 rounds half-up (half-even would say 0.08)
            (60, 60, "0.09"),
            (61, 120, "0.17"),
            (300, 300, "0.43"),  # 0.425, half-up
        ],
    ),
    # GB, 30/6, 0.12/min + 0.05 connect fee.
    "30/6": (
        GB_FIXED,
        [
            (1, 30, "0.11"),  # 0.05 + 0.06
            (30, 30, "0.11"),
            (31, 36, "0.12"),  # 0.05 + 0.072 = 0.122
            (37, 42, "0.13"),  # 0.05 + 0.084 = 0.134
            (95, 96, "0.24"),  # 0.05 + 0.192 = 0.242
        ],
    ),
    # DE, 1/1, 0.06/min + 0.015 connect fee.
    "1/1": (
        DE_FIXED,
        [
            (1, 1, "0.02"),  # 0.016
            (10, 10, "0.03"),  # 0.025, half-up
            (61, 61, "0.08"),  # 0.076
            (75, 75, "0.09"),  # 0.090
        ],
    ),
}


@pytest.mark.parametrize("deck", sorted(ROUNDING_CASES))
def test_exact_charges_and_rounding_on_60_60_30_6_and_1_1_decks(client, plans, deck):
    to, cases = ROUNDING_CASES[deck]
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    balance = Decimal("10.00")
    posted: list[str] = []

    for duration_seconds, charged_seconds, charge in cases:
        started = start(client, tenant, "user_out", to, user=user)
        assert started["granted_seconds"] >= duration_seconds
        ended = end(client, tenant, started["call_id"], duration_seconds)

        case = (deck, duration_seconds)
        assert (ended["charge"], ended["charged_seconds"]) == (charge, charged_seconds), case
        balance -= Decimal(charge)
        assert money(ended["balance"]) == balance, case
        if charge != "0.00":
            posted.append(f"-{charge}")

    assert [line["amount"] for line in call_charges(client, tenant.id)] == posted
    view = credits(client, tenant.id)
    assert money(view["reserved"]) == 0 and money(view["balance"]) == balance


def test_seconds_past_the_grant_are_recorded_but_not_charged(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    started = start(client, tenant, "user_out", US_NUMBER, user=user)
    granted = started["granted_seconds"]

    ended = end(client, tenant, started["call_id"], granted + 500)

    assert ended["charged_seconds"] == granted
    expected = (Decimal("0.085") * granted / 60).quantize(Decimal("0.01"), "ROUND_HALF_UP")
    assert money(ended["charge"]) == expected
    assert call_state(client, tenant, started["call_id"])["duration_seconds"] == granted + 500


def test_ending_twice_returns_the_first_result(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    started = start(client, tenant, "user_out", US_NUMBER, user=user)

    first = end(client, tenant, started["call_id"], 61)
    again = end(client, tenant, started["call_id"], 61)
    other = end(client, tenant, started["call_id"], 250)

    assert first["charge"] == "0.17"
    assert again == first and other == first
    assert len(call_charges(client, tenant.id)) == 1
    assert credits(client, tenant.id)["balance"] == "9.83"


def test_a_call_id_names_one_call(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    body = call_body(tenant, "user_out", US_NUMBER, user=user)

    first = client.post("/v1/calls", json=body, headers=tenant.charging)
    repeat = client.post("/v1/calls", json=body, headers=tenant.charging)
    other = client.post("/v1/calls", json={**body, "to": DE_FIXED}, headers=tenant.charging)

    assert first.status_code == 201 and repeat.status_code == 201
    assert repeat.json() == first.json()
    assert other.status_code == 409, other.text
    assert other.headers["content-type"].startswith("application/problem+json")
    reserved = money(credits(client, tenant.id)["reserved"])
    # One hold, for the first call only: 300 s at most, 60/60, 0.085/min.
    assert 0 < reserved <= Decimal("0.43")
    end(client, tenant, body["call_id"], 10)
    assert money(credits(client, tenant.id)["reserved"]) == 0


def test_update_extends_the_grant_until_the_balance_cannot_cover_more(client, plans):
    tenant = make_tenant(client, balance="1.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)

    started = start(client, tenant, "user_out", US_NUMBER, user=user)
    # 1.00 / 0.085 = 11.76 minutes: 11 whole minutes on 60/60.
    assert started["max_duration_seconds"] == 660
    first_grant = started["granted_seconds"]
    assert 0 < first_grant <= 660
    if first_grant < 660:
        extended = update(client, tenant, started["call_id"], first_grant)
        assert extended["decision"] == "continue"
        assert extended["granted_seconds"] > first_grant
    reached = run_to_max(client, tenant, started)
    assert reached == 660
    stop = update(client, tenant, started["call_id"], 660)
    assert stop["decision"] == "terminate" and stop["granted_seconds"] == 660

    ended = end(client, tenant, started["call_id"], 700)
    # 660 s (not 700): 11 x 0.085 = 0.935 -> 0.94.
    assert ended["charged_seconds"] == 660 and ended["charge"] == "0.94"
    assert ended["balance"] == "0.06"


def test_update_terminates_when_other_calls_hold_the_money(client, plans, grant_slice):
    tenant = make_tenant(client, balance="0.43")  # 5 minutes of US at 0.085 = 0.425
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)

    first = start(client, tenant, "user_out", US_NUMBER, user=user)
    assert first["max_duration_seconds"] == 300
    held = first["granted_seconds"]
    second = start(client, tenant, "user_out", US_NUMBER, user=user)
    if held == 300:
        assert_denied(second, "insufficient_balance")
        assert update(client, tenant, first["call_id"], held)["decision"] == "terminate"
    else:  # a short grant slice left money for a second call
        assert_allowed(second, "credits")
    for call in (first, second):
        if call["decision"] == "allow":
            end(client, tenant, call["call_id"], call["granted_seconds"])
    view = credits(client, tenant.id)
    assert money(view["balance"]) >= 0 and money(view["reserved"]) == 0


def test_the_sweeper_closes_a_silent_call_at_its_grant(client, plans, engine):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    silent = start(client, tenant, "user_out", US_NUMBER, user=user, started_at=seconds_ago(3600))
    live = start(client, tenant, "user_out", US_NUMBER, user=user)
    granted = silent["granted_seconds"]

    assert calls.sweep_expired(engine) >= 1

    state = call_state(client, tenant, silent["call_id"])
    assert state["state"] == "ended" and state["end_reason"] == "swept"
    assert state["duration_seconds"] == granted
    expected = (Decimal("0.085") * -(-granted // 60)).quantize(Decimal("0.01"), "ROUND_HALF_UP")
    assert money(state["charge"]) == expected
    assert call_state(client, tenant, live["call_id"])["state"] == "active"
    # The platform's late end answers what the sweeper posted; nothing more is charged.
    late = end(client, tenant, silent["call_id"], granted + 120)
    assert money(late["charge"]) == expected
    assert [money(line["amount"]) for line in call_charges(client, tenant.id)] == [-expected]
    end(client, tenant, live["call_id"], 0)
    view = credits(client, tenant.id)
    assert money(view["balance"]) == Decimal("10.00") - expected
    assert money(view["reserved"]) == 0


def test_an_unknown_call_cannot_be_updated_or_ended(client, plans):
    tenant = make_tenant(client, balance="1.00")
    call_id = new_call_id()
    for path, body in (("update", {"used_seconds": 5}), ("end", {"duration_seconds": 5})):
        response = client.post(f"/v1/calls/{call_id}/{path}", json=body, headers=tenant.charging)
        assert response.status_code == 404, response.text
