"""Who pays for a call: SPEC §3 rules 1-9, one table per rule, and the order of deny reasons."""

from __future__ import annotations

from decimal import Decimal

import pytest

from commcredits.core.charging import (
    CALL_TYPES,
    DENY_REASONS,
    CallType,
    Decision,
    Party,
    Route,
    TenantTerms,
    decide,
    denied,
    route_call,
)
from commcredits.core.numbers import NumberInfo, analyse_number
from commcredits.core.rating import Tariff, affordable_billed_seconds

DOMESTIC = "calling_plan_domestic"
INTERNATIONAL = "calling_plan_international"
PAYG = "calling_plan_payg"
CONFERENCING = "audio_conferencing"
CREDITS = "communications_credits"

ZONE = frozenset({"US", "GB", "DE"})

US_FIXED = analyse_number("+12125551234", "US")
US_TOLL_FREE = analyse_number("+18005551234", "US")
US_PREMIUM = analyse_number("+19005551234", "US")
JM_MOBILE = analyse_number("+18765551234", "US")
GB_FIXED = analyse_number("+442079460000", "GB")
GG_MOBILE = analyse_number("+447781123456", "GB")
DE_MOBILE = analyse_number("+4915112345678", "DE")
FR_FIXED = analyse_number("+33142685300", "FR")
US_911 = analyse_number("911", "US")
GB_999 = analyse_number("999", "GB")

# 0.60 a minute on 60/60 with a 0.10 connect fee: the first minute costs 0.70.
TARIFF = Tariff(Decimal("0.60"), Decimal("0.10"), 60, 60)
PER_SECOND = Tariff(Decimal("0.60"), Decimal("0"), 1, 1)
FREE_TIME = Tariff(Decimal("0"), Decimal("0"), 60, 60)

ELIGIBLE = TenantTerms("mca", can_purchase=True)
REGION_MISMATCH = TenantTerms("ea", can_purchase=False)
NCE = TenantTerms("nce", can_purchase=False)

PLENTY = Decimal("100.00")  # 100 / 0.60 per minute = 166 whole minutes after the fee


def person(usage_location: str, *licenses: str) -> Party:
    return Party("person", usage_location, frozenset(licenses))


def resource_account(*licenses: str) -> Party:
    return Party("resource_account", "US", frozenset(licenses))


def call(
    call_type: CallType,
    party: Party | None,
    to: NumberInfo,
    *,
    terms: TenantTerms = ELIGIBLE,
    pool_seconds: int = 0,
    tariff: Tariff | None = TARIFF,
    available: Decimal = PLENTY,
) -> Decision:
    route = route_call(call_type, party, to, included_zone=ZONE)
    return decide(
        route,
        party,
        terms,
        pool_remaining_seconds=pool_seconds if route.pool_kind else 0,
        tariff=tariff,
        available=available,
    )


def credits_decision(max_duration_seconds: int | None, pool_seconds: int = 0) -> Decision:
    return Decision(
        allow=True,
        reason=None,
        funding="included" if pool_seconds else "credits",
        max_duration_seconds=max_duration_seconds,
        pool_seconds_available=pool_seconds,
        credits_allowed=True,
        overage=False,
    )


def included_only(max_duration_seconds: int, pool_seconds: int) -> Decision:
    return Decision(
        allow=True,
        reason=None,
        funding="included",
        max_duration_seconds=max_duration_seconds,
        pool_seconds_available=pool_seconds,
        credits_allowed=False,
        overage=False,
    )


FREE = Decision(
    allow=True,
    reason=None,
    funding="free",
    max_duration_seconds=None,
    pool_seconds_available=0,
    credits_allowed=False,
    overage=False,
)

# affordable_billed_seconds(TARIFF, PLENTY): (100 - 0.10) / 0.60 = 166.5 min -> 9960 s.
PLENTY_SECONDS = 9960


def test_plenty_seconds_matches_rating() -> None:
    assert affordable_billed_seconds(TARIFF, PLENTY) == PLENTY_SECONDS


# --- rule 1: emergency calls, and user_in -------------------------------------------


@pytest.mark.parametrize("call_type", ["user_out", "conf_out", "user_in"])
@pytest.mark.parametrize("party", [None, person("US"), person("US", PAYG, CREDITS)])
@pytest.mark.parametrize("terms", [ELIGIBLE, REGION_MISMATCH, NCE])
@pytest.mark.parametrize("available", [Decimal("-50"), Decimal("0"), PLENTY])
def test_emergency_calls_are_free_whatever_licenses_or_balance(
    call_type: CallType, party: Party | None, terms: TenantTerms, available: Decimal
) -> None:
    assert call(call_type, party, US_911, terms=terms, available=available, tariff=None) == FREE


def test_emergency_route_draws_no_pool_and_no_deck() -> None:
    route = route_call("user_out", person("GB", DOMESTIC), GB_999, included_zone=ZONE)
    assert route == Route(free=True)


@pytest.mark.parametrize("party", [None, person("US"), person("US", DOMESTIC)])
def test_user_in_is_never_charged(party: Party | None) -> None:
    assert call("user_in", party, US_FIXED, terms=NCE, available=Decimal("-1")) == FREE
    assert call("user_in", party, JM_MOBILE, terms=REGION_MISMATCH, tariff=None) == FREE


# --- rule 2: user_out to the user's own country -------------------------------------


@pytest.mark.parametrize("plan", [DOMESTIC, INTERNATIONAL])
@pytest.mark.parametrize(
    ("usage_location", "to"), [("US", US_FIXED), ("GB", GB_FIXED), ("GB", GG_MOBILE)]
)
def test_domestic_call_draws_the_domestic_pool(
    plan: str, usage_location: str, to: NumberInfo
) -> None:
    route = route_call("user_out", person(usage_location, plan), to, included_zone=ZONE)
    assert route == Route(
        pool_kind="domestic", pool_country=usage_location, rate_service="outbound"
    )


def test_domestic_pool_call_without_credits_lasts_the_pool() -> None:
    decision = call("user_out", person("US", DOMESTIC), US_FIXED, pool_seconds=600)
    assert decision == included_only(max_duration_seconds=600, pool_seconds=600)


def test_domestic_pool_call_with_credits_may_continue_on_credits() -> None:
    # A pool-started call pays no connect fee: 100.00 / 0.60 per minute buys 10000 s
    # past the pool; 600 + 10000 = 10600 s, down to a whole minute: 10560 s.
    decision = call("user_out", person("US", DOMESTIC, CREDITS), US_FIXED, pool_seconds=600)
    assert decision == credits_decision(max_duration_seconds=10560, pool_seconds=600)


def test_domestic_pool_exhausted_goes_to_credits() -> None:
    decision = call("user_out", person("US", DOMESTIC, CREDITS), US_FIXED, pool_seconds=0)
    assert decision == credits_decision(PLENTY_SECONDS)


def test_domestic_pool_exhausted_without_credits_license() -> None:
    decision = call("user_out", person("US", DOMESTIC), US_FIXED, pool_seconds=0)
    assert decision == denied("no_credits_license")


# --- rule 3: user_out to another country --------------------------------------------


@pytest.mark.parametrize(
    ("usage_location", "to"), [("US", JM_MOBILE), ("US", GB_FIXED), ("GB", US_FIXED)]
)
def test_international_plan_draws_the_international_pool(
    usage_location: str, to: NumberInfo
) -> None:
    route = route_call("user_out", person(usage_location, INTERNATIONAL), to, included_zone=ZONE)
    assert route == Route(
        pool_kind="international", pool_country=usage_location, rate_service="outbound"
    )
    party = person(usage_location, INTERNATIONAL, CREDITS)
    # 300 + 10000 s bought past the pool, down to a whole minute.
    assert call("user_out", party, to, pool_seconds=300) == credits_decision(
        10260, pool_seconds=300
    )
    assert call("user_out", party, to, pool_seconds=0) == credits_decision(PLENTY_SECONDS)


def test_domestic_plan_pays_international_calls_from_credits() -> None:
    route = route_call("user_out", person("US", DOMESTIC), JM_MOBILE, included_zone=ZONE)
    assert route == Route(rate_service="outbound")
    assert call("user_out", person("US", DOMESTIC, CREDITS), JM_MOBILE) == credits_decision(
        PLENTY_SECONDS
    )
    assert call("user_out", person("US", DOMESTIC), JM_MOBILE) == denied("no_credits_license")


def test_international_pool_exhausted_without_credits_license() -> None:
    assert call("user_out", person("US", INTERNATIONAL), DE_MOBILE) == denied("no_credits_license")


# --- rule 4: pay as you go -----------------------------------------------------------


@pytest.mark.parametrize("to", [US_FIXED, JM_MOBILE, GB_FIXED])
def test_payg_pays_every_minute_from_credits(to: NumberInfo) -> None:
    route = route_call("user_out", person("US", PAYG), to, included_zone=ZONE)
    assert route == Route(rate_service="outbound")
    assert call("user_out", person("US", PAYG, CREDITS), to) == credits_decision(PLENTY_SECONDS)
    assert call("user_out", person("US", PAYG), to) == denied("no_credits_license")


def test_payg_with_a_calling_plan_draws_the_plans_pool_first() -> None:
    route = route_call("user_out", person("US", PAYG, DOMESTIC), US_FIXED, included_zone=ZONE)
    assert route.pool_kind == "domestic"
    # The calling plan covers domestic only: international stays on credits.
    route = route_call("user_out", person("US", PAYG, DOMESTIC), JM_MOBILE, included_zone=ZONE)
    assert route.pool_kind is None


# --- rule 5: conference dial-out ----------------------------------------------------


@pytest.mark.parametrize("to", [US_FIXED, GB_FIXED, GG_MOBILE, DE_MOBILE, JM_MOBILE, FR_FIXED])
def test_conference_dial_out_routes(to: NumberInfo) -> None:
    in_zone = to in (US_FIXED, GB_FIXED, GG_MOBILE, DE_MOBILE)  # Jamaica, France are not
    route = route_call("conf_out", person("US", CONFERENCING), to, included_zone=ZONE)
    if in_zone:
        assert route == Route(pool_kind="conference_dialout", rate_service="conference_dialout")
    else:
        assert route == Route(rate_service="conference_dialout")


def test_conference_dial_out_without_audio_conferencing_pays_credits() -> None:
    route = route_call("conf_out", person("US", CREDITS), US_FIXED, included_zone=ZONE)
    assert route == Route(rate_service="conference_dialout")
    assert call("conf_out", person("US", CREDITS), US_FIXED) == credits_decision(PLENTY_SECONDS)


def test_conference_dial_out_in_zone_uses_the_pool_then_credits() -> None:
    organizer = person("US", CONFERENCING)
    assert call("conf_out", organizer, GB_FIXED, pool_seconds=3600) == included_only(3600, 3600)
    assert call("conf_out", organizer, GB_FIXED, pool_seconds=0) == denied("no_credits_license")
    organizer = person("US", CONFERENCING, CREDITS)
    assert call("conf_out", organizer, GB_FIXED, pool_seconds=0) == credits_decision(PLENTY_SECONDS)


def test_conference_dial_out_needs_no_calling_plan() -> None:
    assert call("conf_out", person("US", CREDITS), FR_FIXED).allow


def test_conference_dial_out_with_an_empty_zone_draws_no_pool() -> None:
    route = route_call("conf_out", person("US", CONFERENCING), US_FIXED, included_zone=frozenset())
    assert route.pool_kind is None


# --- rule 6: toll-free inbound ------------------------------------------------------


def tollfree(party: Party | None, **kwargs: object) -> Decision:
    return call("tollfree_in", party, US_TOLL_FREE, **kwargs)  # type: ignore[arg-type]


def test_tollfree_route() -> None:
    route = route_call("tollfree_in", resource_account(CREDITS), US_TOLL_FREE, included_zone=ZONE)
    assert route == Route(rate_service="tollfree_inbound")
    # A toll-free number no account holds (a conferencing bridge): the tenant pays, no license.
    route = route_call("tollfree_in", None, US_TOLL_FREE, included_zone=ZONE)
    assert route == Route(rate_service="tollfree_inbound", credits_license_required=False)


def test_tollfree_is_always_credits() -> None:
    # Licenses that give pools elsewhere give nothing here.
    account = resource_account(CREDITS, DOMESTIC, INTERNATIONAL, CONFERENCING)
    assert tollfree(account) == credits_decision(PLENTY_SECONDS)
    assert tollfree(None) == credits_decision(PLENTY_SECONDS)


@pytest.mark.parametrize(
    ("available", "tariff", "reason"),
    [
        (Decimal("0"), TARIFF, "insufficient_balance"),
        (Decimal("-5"), TARIFF, "insufficient_balance"),
        (Decimal("0.69"), TARIFF, "insufficient_balance"),  # first minute + fee is 0.70
        # A positive balance is needed even where time costs nothing.
        (Decimal("0"), FREE_TIME, "insufficient_balance"),
        (Decimal("-0.01"), FREE_TIME, "insufficient_balance"),
        (Decimal("0.01"), Tariff(Decimal("0"), Decimal("0.02"), 60, 60), "insufficient_balance"),
        (PLENTY, None, "destination_not_rated"),
    ],
)
def test_tollfree_needs_a_positive_balance_and_a_rate(
    available: Decimal, tariff: Tariff | None, reason: str
) -> None:
    assert tollfree(resource_account(CREDITS), available=available, tariff=tariff) == denied(
        reason  # type: ignore[arg-type]
    )


def test_tollfree_just_enough_for_the_first_increment() -> None:
    assert tollfree(resource_account(CREDITS), available=Decimal("0.70")) == credits_decision(60)


def test_tollfree_zero_rate_is_unlimited() -> None:
    assert tollfree(
        resource_account(CREDITS), available=Decimal("0.01"), tariff=FREE_TIME
    ) == credits_decision(None)


def test_tollfree_without_credits_license() -> None:
    assert tollfree(resource_account()) == denied("no_credits_license")


# --- rule 7: premium-rate numbers ---------------------------------------------------


def test_premium_numbers_are_never_in_a_pool() -> None:
    everything = person("US", DOMESTIC, INTERNATIONAL, CONFERENCING, CREDITS)
    call_types: tuple[CallType, ...] = ("user_out", "conf_out")
    for call_type in call_types:
        route = route_call(call_type, everything, US_PREMIUM, included_zone=ZONE)
        assert route.pool_kind is None
        assert call(call_type, everything, US_PREMIUM) == credits_decision(PLENTY_SECONDS)
    assert call("user_out", person("US", DOMESTIC), US_PREMIUM) == denied("no_credits_license")


def test_premium_route_refuses_pool_seconds() -> None:
    route = route_call("user_out", person("US", DOMESTIC), US_PREMIUM, included_zone=ZONE)
    with pytest.raises(AssertionError):
        decide(
            route,
            person("US", DOMESTIC),
            ELIGIBLE,
            pool_remaining_seconds=600,
            tariff=TARIFF,
            available=PLENTY,
        )


# --- rule 8: credits need eligibility, a license and a balance; nce pays overage --------


OVERAGE = Decision(
    allow=True,
    reason=None,
    funding="overage",
    max_duration_seconds=None,
    pool_seconds_available=0,
    credits_allowed=False,
    overage=True,
)


@pytest.mark.parametrize("party", [person("US", PAYG), person("US", PAYG, CREDITS)])
@pytest.mark.parametrize("available", [Decimal("-20"), Decimal("0"), PLENTY])
def test_nce_pays_overage_without_license_or_balance(party: Party, available: Decimal) -> None:
    assert call("user_out", party, JM_MOBILE, terms=NCE, available=available) == OVERAGE
    assert call("conf_out", party, FR_FIXED, terms=NCE, available=available) == OVERAGE
    assert tollfree(party, terms=NCE, available=available) == OVERAGE
    assert tollfree(None, terms=NCE, available=available) == OVERAGE


def test_nce_pool_first_then_overage() -> None:
    decision = call("user_out", person("US", DOMESTIC), US_FIXED, terms=NCE, pool_seconds=600)
    assert decision == Decision(
        allow=True,
        reason=None,
        funding="included",
        max_duration_seconds=None,
        pool_seconds_available=600,
        credits_allowed=False,
        overage=True,
    )


def test_nce_overage_needs_a_rate() -> None:
    party = person("US", PAYG)
    assert call("user_out", party, JM_MOBILE, terms=NCE, tariff=None) == denied(
        "destination_not_rated"
    )
    # ... but a pool-covered call goes ahead up to the pool, without overage past it.
    planned = person("US", DOMESTIC)
    assert call(
        "user_out", planned, US_FIXED, terms=NCE, tariff=None, pool_seconds=90
    ) == included_only(90, 90)


def test_nce_still_needs_a_calling_plan() -> None:
    assert call("user_out", person("US", CREDITS), US_FIXED, terms=NCE) == denied("no_calling_plan")


def test_ineligible_tenant_is_denied_credits() -> None:
    party = person("US", PAYG, CREDITS)
    assert call("user_out", party, US_FIXED, terms=REGION_MISMATCH) == denied(
        "credits_not_available"
    )
    assert tollfree(resource_account(CREDITS), terms=REGION_MISMATCH) == denied(
        "credits_not_available"
    )


def test_ineligible_tenant_still_uses_its_pools() -> None:
    party = person("US", DOMESTIC, CREDITS)
    assert call(
        "user_out", party, US_FIXED, terms=REGION_MISMATCH, pool_seconds=1200
    ) == included_only(1200, 1200)


@pytest.mark.parametrize(
    ("available", "max_duration_seconds"),
    [
        (Decimal("0.70"), 60),  # fee + first minute
        (Decimal("1.29"), 60),
        (Decimal("1.30"), 120),
        (Decimal("6.10"), 600),
    ],
)
def test_credit_call_max_duration_is_what_available_affords(
    available: Decimal, max_duration_seconds: int
) -> None:
    party = person("US", PAYG, CREDITS)
    assert call("user_out", party, US_FIXED, available=available) == credits_decision(
        max_duration_seconds
    )


def test_credit_call_below_the_first_increment_is_denied() -> None:
    party = person("US", PAYG, CREDITS)
    assert call("user_out", party, US_FIXED, available=Decimal("0.69")) == denied(
        "insufficient_balance"
    )


def test_mixed_call_max_duration_aligns_pool_plus_credits() -> None:
    party = person("US", DOMESTIC, CREDITS)
    # Pool 30 s on a 60/60 deck, 0.90 buys 90 s past the pool (no connect fee when
    # a pool starts the call): 30 + 90 = 120 s of billed time, a whole number of minutes.
    assert call(
        "user_out", party, US_FIXED, pool_seconds=30, available=Decimal("0.90")
    ) == credits_decision(120, pool_seconds=30)
    # 0.20 buys only 20 s: 50 s is less than the first minute.
    assert call("user_out", party, US_FIXED, pool_seconds=30, available=Decimal("0.20")) == denied(
        "insufficient_balance"
    )
    # Per-second deck: 30 s of pool then 20 s of credits.
    assert call(
        "user_out", party, US_FIXED, pool_seconds=30, available=Decimal("0.20"), tariff=PER_SECOND
    ) == credits_decision(50, pool_seconds=30)


def test_pool_shorter_than_the_first_increment_covers_nothing_alone() -> None:
    party = person("US", DOMESTIC)
    assert call("user_out", party, US_FIXED, pool_seconds=30) == denied("no_credits_license")
    assert call("user_out", party, US_FIXED, pool_seconds=90) == included_only(60, 90)
    assert call("user_out", party, US_FIXED, pool_seconds=30, tariff=PER_SECOND) == included_only(
        30, 30
    )


def test_pool_with_an_empty_balance_is_included_only() -> None:
    party = person("US", DOMESTIC, CREDITS)
    for available in (Decimal("0"), Decimal("-3")):
        assert call(
            "user_out", party, US_FIXED, pool_seconds=600, available=available
        ) == included_only(600, 600)


def test_unrated_destination() -> None:
    party = person("US", DOMESTIC, CREDITS)
    # Needs credits and has no rate: denied, never free.
    assert call("user_out", party, US_FIXED, tariff=None) == denied("destination_not_rated")
    # Covered by a pool: allowed up to the pool, per second, never on credits.
    assert call("user_out", party, US_FIXED, tariff=None, pool_seconds=45) == included_only(45, 45)


def test_zero_rate_destination_is_unlimited_after_the_pool() -> None:
    party = person("US", DOMESTIC, CREDITS)
    assert call(
        "user_out", party, US_FIXED, tariff=FREE_TIME, pool_seconds=60, available=Decimal("1")
    ) == credits_decision(None, pool_seconds=60)


# --- rule 9: no calling plan -----------------------------------------------------------


@pytest.mark.parametrize(
    "party",
    [None, person("US"), person("US", CREDITS), person("US", CONFERENCING, CREDITS)],
)
@pytest.mark.parametrize("to", [US_FIXED, JM_MOBILE, US_PREMIUM])
def test_user_out_without_a_calling_plan(party: Party | None, to: NumberInfo) -> None:
    assert route_call("user_out", party, to, included_zone=ZONE) == Route(
        deny_reason="no_calling_plan"
    )
    assert call("user_out", party, to) == denied("no_calling_plan")


def test_resource_accounts_follow_the_same_rules() -> None:
    account = Party("resource_account", "US", frozenset({DOMESTIC}))
    assert call("user_out", account, US_FIXED, pool_seconds=60) == included_only(60, 60)
    assert call("user_out", resource_account(), US_FIXED) == denied("no_calling_plan")


# --- the order of deny reasons ----------------------------------------------------------


@pytest.mark.parametrize(
    ("party", "terms", "tariff", "available", "reason"),
    [
        # no calling plan beats everything else
        (person("US"), REGION_MISMATCH, None, Decimal("0"), "no_calling_plan"),
        # then the tenant's eligibility
        (person("US", PAYG), REGION_MISMATCH, None, Decimal("0"), "credits_not_available"),
        # then the credits license
        (person("US", PAYG), ELIGIBLE, None, Decimal("0"), "no_credits_license"),
        # then the rate
        (person("US", PAYG, CREDITS), ELIGIBLE, None, Decimal("0"), "destination_not_rated"),
        # then the balance
        (person("US", PAYG, CREDITS), ELIGIBLE, TARIFF, Decimal("0"), "insufficient_balance"),
    ],
)
def test_deny_reason_order(
    party: Party, terms: TenantTerms, tariff: Tariff | None, available: Decimal, reason: str
) -> None:
    assert call("user_out", party, JM_MOBILE, terms=terms, tariff=tariff, available=available) == (
        denied(reason)  # type: ignore[arg-type]
    )


def test_deny_reasons_are_listed_in_check_order() -> None:
    assert DENY_REASONS == (
        "invalid_number",
        "no_calling_plan",
        "credits_not_available",
        "no_credits_license",
        "destination_not_rated",
        "insufficient_balance",
    )


def test_invalid_number_decision() -> None:
    decision = denied("invalid_number")
    assert not decision.allow
    assert decision.reason == "invalid_number"
    assert decision.funding is None and decision.max_duration_seconds is None


# --- shapes and seams ---------------------------------------------------------------------


def test_unknown_call_type_is_refused() -> None:
    with pytest.raises(ValueError, match="call_type"):
        route_call("user_sideways", person("US"), US_FIXED, included_zone=ZONE)  # type: ignore[arg-type]


def test_call_types() -> None:
    assert CALL_TYPES == ("user_out", "conf_out", "tollfree_in", "user_in")


def test_nce_tenant_cannot_be_eligible() -> None:
    with pytest.raises(AssertionError):
        TenantTerms("nce", can_purchase=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"deny_reason": "no_calling_plan", "rate_service": "outbound"},
        {"free": True, "pool_kind": "domestic", "pool_country": "US"},
        {"pool_kind": "domestic", "rate_service": "outbound"},  # a domestic pool needs a country
        {"pool_kind": "conference_dialout", "pool_country": "US", "rate_service": "outbound"},
        {},  # neither denied, free, nor priced
    ],
)
def test_inconsistent_routes_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(AssertionError):
        Route(**kwargs)  # type: ignore[arg-type]


def test_negative_pool_is_refused() -> None:
    route = route_call("user_out", person("US", DOMESTIC), US_FIXED, included_zone=ZONE)
    with pytest.raises(AssertionError):
        decide(
            route,
            person("US", DOMESTIC),
            ELIGIBLE,
            pool_remaining_seconds=-1,
            tariff=TARIFF,
            available=PLENTY,
        )
