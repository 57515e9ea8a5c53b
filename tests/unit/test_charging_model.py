"""`decide(route_call(...))` against a reference model written straight from SPEC §3.

The model below is one plain if-chain, in the order SPEC §3 states the rules,
with its own notion of "which country is this number in" (a hand-made table)
and its own arithmetic for how long money lasts. Hypothesis draws parties,
licenses, call types, destinations, tenant terms, pools, tariffs and balances,
and the two must agree on every field of the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from commcredits.core.charging import (
    CALL_TYPES,
    CallType,
    Decision,
    Party,
    TenantTerms,
    decide,
    route_call,
)
from commcredits.core.eligibility import AGREEMENTS
from commcredits.core.numbers import NumberInfo, analyse_number
from commcredits.core.rating import (
    Tariff,
    charge_for_billed,
    charge_for_paid_seconds,
    split_pool_and_paid,
)

DOMESTIC = "calling_plan_domestic"
INTERNATIONAL = "calling_plan_international"
PAYG = "calling_plan_payg"
CONFERENCING = "audio_conferencing"
CREDITS = "communications_credits"
ALL_LICENSES = (DOMESTIC, INTERNATIONAL, PAYG, CONFERENCING, CREDITS)

COUNTRIES = ("US", "GB", "JM", "DE", "FR")


@dataclass(frozen=True)
class Destination:
    info: NumberInfo
    # Where a subscriber of this number lives, as the model sees it: a Guernsey
    # mobile on +44 is a UK number, Jamaica on +1 is not the US.
    country: str | None


DESTINATIONS = (
    Destination(analyse_number("+12125551234", "US"), "US"),
    Destination(analyse_number("+19005551234", "US"), "US"),  # premium
    Destination(analyse_number("+18005551234", "US"), "US"),  # toll-free
    Destination(analyse_number("+18765551234", "US"), "JM"),
    Destination(analyse_number("+442079460000", "GB"), "GB"),
    Destination(analyse_number("+447781123456", "GB"), "GB"),  # GG in phonenumbers
    Destination(analyse_number("+447797123456", "GB"), "GB"),  # JE in phonenumbers
    Destination(analyse_number("+449098790000", "GB"), "GB"),  # premium
    Destination(analyse_number("+4915112345678", "DE"), "DE"),
    Destination(analyse_number("+33142685300", "FR"), "FR"),
    Destination(analyse_number("+33612345678", "FR"), "FR"),
    Destination(analyse_number("911", "US"), "US"),
    Destination(analyse_number("999", "GB"), "GB"),
    Destination(analyse_number("112", "DE"), "DE"),
)

INCREMENTS = ((60, 60), (30, 6), (1, 1), (60, 1), (6, 6))


@dataclass(frozen=True)
class Expected:
    allow: bool
    reason: str | None
    funding: str | None
    max_duration_seconds: int | None
    pool_kind: str | None
    credits_allowed: bool
    overage: bool


def aligned_down(limit_seconds: int, tariff: Tariff) -> int:
    """Largest billed time (0, initial, initial + k·subsequent) not above the limit."""
    best = 0
    if limit_seconds >= tariff.initial_increment_s:
        extra = (limit_seconds - tariff.initial_increment_s) // tariff.subsequent_increment_s
        best = tariff.initial_increment_s + extra * tariff.subsequent_increment_s
    return best


def seconds_money_buys(money: Decimal, rate_per_minute: Decimal) -> int:
    """Whole seconds of talk `money` pays at `rate_per_minute` (money >= 0, rate > 0)."""
    return int((money * 60) // rate_per_minute)


def reference(
    call_type: CallType,
    party: Party | None,
    destination: Destination,
    zone: frozenset[str],
    terms: TenantTerms,
    pool_remaining_seconds: int,
    tariff: Tariff | None,
    available: Decimal,
) -> Expected:
    licenses = party.licenses if party is not None else frozenset()
    to = destination.info

    # Rule 1, and user_in: free.
    if to.is_emergency or call_type == "user_in":
        return Expected(True, None, "free", None, None, False, False)

    holds_plan = DOMESTIC in licenses or INTERNATIONAL in licenses

    # Rule 9.
    if call_type == "user_out" and not holds_plan and PAYG not in licenses:
        return Expected(False, "no_calling_plan", None, None, None, False, False)

    # Rules 2, 3, 5 and 7: which pool, if any. Rule 4: PAYG alone has none; with
    # a plan, the plan's pool comes first. Rule 6: toll-free has none.
    pool_kind = None
    if to.number_type != "premium":
        if call_type == "user_out" and holds_plan and party is not None:
            if destination.country == party.usage_location:
                pool_kind = "domestic"
            elif INTERNATIONAL in licenses:
                pool_kind = "international"
        if call_type == "conf_out" and CONFERENCING in licenses and destination.country in zone:
            pool_kind = "conference_dialout"
    pool = pool_remaining_seconds if pool_kind else 0

    def deny(reason: str) -> Expected:
        return Expected(False, reason, None, None, pool_kind, False, False)

    def pool_alone(reason: str) -> Expected:
        # Nothing pays past the pool: the call lasts what the pool alone covers.
        covered = pool if tariff is None else aligned_down(pool, tariff)
        if covered == 0:
            return deny(reason)
        return Expected(True, None, "included", covered, pool_kind, False, False)

    # Rule 8: who pays past the pool.
    if not terms.can_purchase and terms.agreement == "nce":
        if tariff is None:
            return pool_alone("destination_not_rated")
        funding = "included" if pool else "overage"
        return Expected(True, None, funding, None, pool_kind, False, True)
    if not terms.can_purchase:
        return pool_alone("credits_not_available")
    license_needed = not (call_type == "tollfree_in" and party is None)
    if license_needed and CREDITS not in licenses:
        return pool_alone("no_credits_license")
    if tariff is None:
        return pool_alone("destination_not_rated")
    if available <= 0:
        return pool_alone("insufficient_balance")
    first_increment_cost = (
        tariff.connect_fee + tariff.rate_per_minute * tariff.initial_increment_s / 60
    )
    if pool == 0 and available < first_increment_cost:
        return deny("insufficient_balance")

    funding = "included" if pool else "credits"
    if tariff.rate_per_minute == 0:
        return Expected(True, None, funding, None, pool_kind, True, False)
    if pool == 0:
        talk = seconds_money_buys(available - tariff.connect_fee, tariff.rate_per_minute)
    else:
        talk = pool + seconds_money_buys(available, tariff.rate_per_minute)  # no connect fee
    longest = aligned_down(talk, tariff)
    if longest == 0:
        return deny("insufficient_balance")
    return Expected(True, None, funding, longest, pool_kind, True, False)


# --- strategies ----------------------------------------------------------------------

parties = st.one_of(
    st.none(),
    st.builds(
        Party,
        kind=st.sampled_from(("person", "resource_account")),
        usage_location=st.sampled_from(COUNTRIES),
        licenses=st.frozensets(st.sampled_from(ALL_LICENSES)),
    ),
)

terms_strategy = st.sampled_from(AGREEMENTS).flatmap(
    lambda agreement: st.builds(
        TenantTerms,
        agreement=st.just(agreement),
        can_purchase=st.just(False) if agreement == "nce" else st.booleans(),
    )
)

money = st.one_of(
    st.sampled_from([Decimal("0"), Decimal("0.01"), Decimal("0.05"), Decimal("0.60")]),
    st.decimals(min_value=0, max_value=5, places=4),
)

tariffs = st.one_of(
    st.none(),
    st.builds(
        lambda rate, fee, increments: Tariff(rate, fee, *increments),
        money,
        money,
        st.sampled_from(INCREMENTS),
    ),
)

balances = st.one_of(
    st.sampled_from([Decimal("0"), Decimal("-1.00"), Decimal("0.01"), Decimal("1000")]),
    st.decimals(min_value=-10, max_value=60, places=2),
)

pools = st.one_of(st.just(0), st.integers(min_value=1, max_value=130), st.integers(0, 20_000))


def run(
    call_type: CallType,
    party: Party | None,
    destination: Destination,
    zone: frozenset[str],
    terms: TenantTerms,
    pool_remaining_seconds: int,
    tariff: Tariff | None,
    available: Decimal,
) -> tuple[Decision, str | None]:
    route = route_call(call_type, party, destination.info, included_zone=zone)
    decision = decide(
        route,
        party,
        terms,
        # The service reads the pool only when the route names one.
        pool_remaining_seconds=pool_remaining_seconds if route.pool_kind else 0,
        tariff=tariff,
        available=available,
    )
    return decision, route.pool_kind


@settings(max_examples=500, deadline=None)
@given(
    call_type=st.sampled_from(CALL_TYPES),
    party=parties,
    destination=st.sampled_from(DESTINATIONS),
    zone=st.frozensets(st.sampled_from(COUNTRIES)),
    terms=terms_strategy,
    pool_remaining_seconds=pools,
    tariff=tariffs,
    available=balances,
)
def test_decide_matches_the_reference_model(
    call_type: CallType,
    party: Party | None,
    destination: Destination,
    zone: frozenset[str],
    terms: TenantTerms,
    pool_remaining_seconds: int,
    tariff: Tariff | None,
    available: Decimal,
) -> None:
    args = (call_type, party, destination, zone, terms, pool_remaining_seconds, tariff, available)
    decision, pool_kind = run(*args)
    expected = reference(*args)
    got = Expected(
        allow=decision.allow,
        reason=decision.reason,
        funding=decision.funding,
        max_duration_seconds=decision.max_duration_seconds,
        pool_kind=None if decision.funding == "free" else pool_kind,
        credits_allowed=decision.credits_allowed,
        overage=decision.overage,
    )
    assert got == expected
    if decision.allow:
        expected_pool = pool_remaining_seconds if pool_kind else 0
        assert decision.pool_seconds_available == expected_pool


@settings(max_examples=300, deadline=None)
@given(
    call_type=st.sampled_from(CALL_TYPES),
    party=parties,
    destination=st.sampled_from(DESTINATIONS),
    zone=st.frozensets(st.sampled_from(COUNTRIES)),
    terms=terms_strategy,
    pool_remaining_seconds=pools,
    tariff=tariffs,
    available=balances,
)
def test_a_granted_maximum_never_spends_more_than_available(
    call_type: CallType,
    party: Party | None,
    destination: Destination,
    zone: frozenset[str],
    terms: TenantTerms,
    pool_remaining_seconds: int,
    tariff: Tariff | None,
    available: Decimal,
) -> None:
    """Rated the way the end of a call rates it, the longest call allowed is paid for."""
    decision, pool_kind = run(
        call_type, party, destination, zone, terms, pool_remaining_seconds, tariff, available
    )
    if not decision.allow or decision.max_duration_seconds is None or tariff is None:
        return
    pool = decision.pool_seconds_available
    longest = decision.max_duration_seconds
    if pool == 0:
        assert decision.funding in ("credits", "overage")
        assert charge_for_billed(tariff, longest) <= available
        return
    pool_part, paid_part = split_pool_and_paid(longest, pool, tariff)
    assert pool_part <= pool
    if not decision.credits_allowed:
        assert paid_part == 0
    else:
        assert charge_for_paid_seconds(tariff, paid_part, include_connect_fee=False) <= available


@settings(max_examples=300, deadline=None)
@given(
    call_type=st.sampled_from(CALL_TYPES),
    party=parties,
    destination=st.sampled_from(DESTINATIONS),
    zone=st.frozensets(st.sampled_from(COUNTRIES)),
    terms=terms_strategy,
    pool_remaining_seconds=pools,
    tariff=tariffs,
    available=balances,
    more_money=st.decimals(min_value=0, max_value=100, places=2),
    more_pool=st.integers(min_value=0, max_value=5000),
)
def test_more_money_or_pool_never_shortens_a_call(
    call_type: CallType,
    party: Party | None,
    destination: Destination,
    zone: frozenset[str],
    terms: TenantTerms,
    pool_remaining_seconds: int,
    tariff: Tariff | None,
    available: Decimal,
    more_money: Decimal,
    more_pool: int,
) -> None:
    before, _ = run(
        call_type, party, destination, zone, terms, pool_remaining_seconds, tariff, available
    )
    after, _ = run(
        call_type,
        party,
        destination,
        zone,
        terms,
        pool_remaining_seconds + more_pool,
        tariff,
        available + more_money,
    )
    if before.allow:
        assert after.allow
        if after.max_duration_seconds is not None:
            assert before.max_duration_seconds is not None
            assert after.max_duration_seconds >= before.max_duration_seconds
