"""Who pays for a call, and for how long it may last (SPEC §3 rules 1-9).

Two pure steps, so the service looks up only the pool and the rate it needs:

1. `route_call` reads the call type, the party's licenses and the analysed
   destination, and answers which pool the call would draw (if any), which
   rate deck prices it, whether it is free, or that it is refused outright
   (`no_calling_plan`).
2. `decide` adds the money: the tenant's terms, the seconds left in that
   pool, the tariff and the credits `available` (other calls' holds counted),
   and answers allow or deny, the funding, and `max_duration_seconds`.

Invalid numbers never get here: the service analyses `to` first
(`numbers.analyse_number`) and answers `denied("invalid_number")` on
InvalidNumber, so `invalid_number` comes before every reason below.

The order of the checks fixes which reason a call that fails several gets.
It runs from the broadest blocker to the narrowest, the order in which an
admin would fix them:
  1. `no_calling_plan`        the user cannot make PSTN calls at all (rule 9);
  2. `credits_not_available`  the tenant cannot hold credits (eligibility);
  3. `no_credits_license`     this user or resource account may not spend them;
  4. `destination_not_rated`  the operator's rate deck has no price for it;
  5. `insufficient_balance`   the balance, right now, does not cover the start.
Checks 2-5 matter only when the call needs credits: a call its pool covers
goes ahead as `included` whatever they say, up to what the pool holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from commcredits.core.numbers import NumberInfo, same_country
from commcredits.core.pools import (
    POOL_KINDS,
    SKU_AUDIO_CONFERENCING,
    SKU_CALLING_PLAN_DOMESTIC,
    SKU_CALLING_PLAN_INTERNATIONAL,
    SKU_CALLING_PLAN_PAYG,
    SKU_COMMUNICATIONS_CREDITS,
    PoolKind,
)
from commcredits.core.rating import Tariff, affordable_billed_seconds

__all__ = [
    "CALL_TYPES",
    "DENY_REASONS",
    "FUNDINGS",
    "PARTY_KINDS",
    "RATE_SERVICES",
    "CallType",
    "Decision",
    "DenyReason",
    "Funding",
    "Party",
    "PartyKind",
    "RateService",
    "Route",
    "TenantTerms",
    "decide",
    "denied",
    "route_call",
]

CallType = Literal["user_out", "conf_out", "tollfree_in", "user_in"]
CALL_TYPES: Final[tuple[CallType, ...]] = ("user_out", "conf_out", "tollfree_in", "user_in")

PartyKind = Literal["person", "resource_account"]
PARTY_KINDS: Final[tuple[PartyKind, ...]] = ("person", "resource_account")

RateService = Literal["outbound", "conference_dialout", "tollfree_inbound"]
RATE_SERVICES: Final[tuple[RateService, ...]] = (
    "outbound",
    "conference_dialout",
    "tollfree_inbound",
)

Funding = Literal["included", "credits", "mixed", "overage", "free"]
FUNDINGS: Final[tuple[Funding, ...]] = ("included", "credits", "mixed", "overage", "free")

DenyReason = Literal[
    "invalid_number",
    "no_calling_plan",
    "credits_not_available",
    "no_credits_license",
    "destination_not_rated",
    "insufficient_balance",
]
# In the order they are checked (see the module docstring).
DENY_REASONS: Final[tuple[DenyReason, ...]] = (
    "invalid_number",
    "no_calling_plan",
    "credits_not_available",
    "no_credits_license",
    "destination_not_rated",
    "insufficient_balance",
)

_CALLING_PLANS: Final = frozenset({SKU_CALLING_PLAN_DOMESTIC, SKU_CALLING_PLAN_INTERNATIONAL})
_PER_SECOND_INCREMENT_S: Final = 1


@dataclass(frozen=True, slots=True)
class Party:
    """Who the call is for: the calling user, the conference organizer, or the
    resource account holding the toll-free number."""

    kind: PartyKind
    usage_location: str  # ISO 3166 alpha-2
    licenses: frozenset[str]


@dataclass(frozen=True, slots=True)
class TenantTerms:
    agreement: str  # one of eligibility.AGREEMENTS
    can_purchase: bool  # eligibility(...).can_purchase

    def __post_init__(self) -> None:
        # SPEC §2: an nce tenant can never buy credits, override or not.
        assert not (self.agreement == "nce" and self.can_purchase), self


@dataclass(frozen=True, slots=True)
class Route:
    """Where a call's money would come from, before any money is looked at."""

    deny_reason: DenyReason | None = None
    pool_kind: PoolKind | None = None
    pool_country: str | None = None  # usage_location; None for the conference pool
    rate_service: RateService | None = None  # the deck that prices it; None if free or denied
    free: bool = False
    # False only for a toll-free call whose number no account holds (e.g. a
    # conferencing bridge): there is no one to license, the tenant pays.
    credits_license_required: bool = True

    def __post_init__(self) -> None:
        if self.deny_reason is not None or self.free:
            assert self.deny_reason is None or not self.free, self
            assert self.pool_kind is None and self.rate_service is None, self
            return
        assert self.rate_service is not None, self
        assert self.pool_kind is None or self.pool_kind in POOL_KINDS, self
        assert (self.pool_kind in ("domestic", "international")) == (
            self.pool_country is not None
        ), self


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: DenyReason | None  # the deny reason; None when allowed
    # At the start of the call: "included" when a pool pays the first seconds,
    # "credits" or "overage" when they do not, "free" for emergency and user_in.
    # "mixed" is only known at the end, once a pool-started call spilt over.
    funding: Funding | None
    # From the start of the call, on what the pool and `available` allow now.
    # None only when nothing limits the call: free calls, overage, and credit
    # calls whose rate per minute is 0.
    max_duration_seconds: int | None
    pool_seconds_available: int  # billed seconds this call may draw from its pool
    credits_allowed: bool  # may the call spend credits past its pool
    overage: bool  # past its pool, the call is nce overage (invoiced later)

    def __post_init__(self) -> None:
        assert self.allow == (self.reason is None), self
        assert self.allow == (self.funding is not None), self
        assert self.pool_seconds_available >= 0, self
        assert self.max_duration_seconds is None or self.max_duration_seconds > 0, self
        assert not (self.credits_allowed and self.overage), self
        if not self.allow:
            assert self.max_duration_seconds is None and self.pool_seconds_available == 0, self


_FREE_ROUTE: Final = Route(free=True)


def denied(reason: DenyReason) -> Decision:
    """A refusal; the service also uses it for `invalid_number`."""
    return Decision(
        allow=False,
        reason=reason,
        funding=None,
        max_duration_seconds=None,
        pool_seconds_available=0,
        credits_allowed=False,
        overage=False,
    )


def route_call(
    call_type: CallType,
    party: Party | None,
    to: NumberInfo,
    *,
    included_zone: frozenset[str],
) -> Route:
    """The pool and the rate deck a call would use (SPEC §3 rules 1-7 and 9).

    `party` is None when no user is known; then it holds no licenses, except
    that a toll-free call then needs no credits license (see Route).
    """
    if call_type not in CALL_TYPES:
        raise ValueError(f"call_type {call_type!r} is not one of {', '.join(CALL_TYPES)}")
    # Rule 1: emergency calls are never refused nor charged. An inbound call to
    # a user is never charged (SPEC §3, user_in).
    if to.is_emergency or call_type == "user_in":
        return _FREE_ROUTE
    licenses = party.licenses if party is not None else frozenset()
    # Rule 7: premium-rate numbers are never in a pool.
    poolable = to.number_type != "premium"

    if call_type == "user_out":
        holds_plan = not _CALLING_PLANS.isdisjoint(licenses)
        if not holds_plan and SKU_CALLING_PLAN_PAYG not in licenses:
            return Route(deny_reason="no_calling_plan")  # rule 9
        # Rule 4 with a calling plan too: the plan's pool still comes first (see
        # docs/decisions.md); PAYG alone never draws a pool.
        if party is not None and holds_plan and poolable:
            if same_country(to.region, to.country_code, party.usage_location):
                # Rule 2: either calling plan includes domestic minutes.
                return Route(
                    pool_kind="domestic",
                    pool_country=party.usage_location,
                    rate_service="outbound",
                )
            if SKU_CALLING_PLAN_INTERNATIONAL in licenses:
                # Rule 3: only the international plan includes international minutes.
                return Route(
                    pool_kind="international",
                    pool_country=party.usage_location,
                    rate_service="outbound",
                )
        return Route(rate_service="outbound")

    if call_type == "conf_out":
        # Rule 5. The zone is a country list; a +44 7781 mobile (region GG)
        # counts as GB there too, as it does for domestic calls.
        in_zone = any(
            same_country(to.region, to.country_code, zone_country) for zone_country in included_zone
        )
        if poolable and in_zone and SKU_AUDIO_CONFERENCING in licenses:
            return Route(pool_kind="conference_dialout", rate_service="conference_dialout")
        return Route(rate_service="conference_dialout")

    # Rule 6: toll-free inbound is always paid from credits, by the tenant.
    return Route(rate_service="tollfree_inbound", credits_license_required=party is not None)


def decide(
    route: Route,
    party: Party | None,
    terms: TenantTerms,
    *,
    pool_remaining_seconds: int,
    tariff: Tariff | None,
    available: Decimal,
) -> Decision:
    """Allow or deny a routed call, who pays first, and how long it may last (rule 8).

    `pool_remaining_seconds`: billed seconds left in the route's pool (0 when
    the route has none or it is exhausted). `tariff`: the rate of the route's
    deck for this call, None when the deck has no row. `available`: balance
    minus every hold, this call's excluded.
    """
    assert isinstance(available, Decimal) and available.is_finite(), available
    assert pool_remaining_seconds >= 0, pool_remaining_seconds
    if route.deny_reason is not None:
        return denied(route.deny_reason)
    if route.free:
        return Decision(
            allow=True,
            reason=None,
            funding="free",
            max_duration_seconds=None,
            pool_seconds_available=0,
            credits_allowed=False,
            overage=False,
        )
    # The service looks a pool up only when the route names one.
    assert route.pool_kind is not None or pool_remaining_seconds == 0, (
        route,
        pool_remaining_seconds,
    )
    pool_seconds = pool_remaining_seconds
    payer, credits_block = _past_pool_payer(route, party, terms, pool_seconds, tariff, available)
    funding_first: Funding

    if payer == "overage":
        # SPEC §3: nce overage needs no credits license and no balance; nothing
        # limits the call, which is invoiced after use.
        funding_first = "included" if pool_seconds > 0 else "overage"
        return Decision(
            allow=True,
            reason=None,
            funding=funding_first,
            max_duration_seconds=None,
            pool_seconds_available=pool_seconds,
            credits_allowed=False,
            overage=True,
        )

    if payer == "credits":
        assert tariff is not None
        max_duration_seconds = _credit_call_max_seconds(tariff, pool_seconds, available)
        if max_duration_seconds == 0:
            # A pool remainder shorter than the first increment and too little
            # money for the rest of it: the first increment is not covered.
            return denied("insufficient_balance")
        funding_first = "included" if pool_seconds > 0 else "credits"
        return Decision(
            allow=True,
            reason=None,
            funding=funding_first,
            max_duration_seconds=max_duration_seconds,
            pool_seconds_available=pool_seconds,
            credits_allowed=True,
            overage=False,
        )

    # No one pays past the pool: the pool alone, if it covers a first increment.
    assert credits_block is not None
    pool_only_seconds = _pool_covered_seconds(pool_seconds, tariff)
    if pool_only_seconds == 0:
        return denied(credits_block)
    return Decision(
        allow=True,
        reason=None,
        funding="included",
        max_duration_seconds=pool_only_seconds,
        pool_seconds_available=pool_seconds,
        credits_allowed=False,
        overage=False,
    )


def _past_pool_payer(
    route: Route,
    party: Party | None,
    terms: TenantTerms,
    pool_seconds: int,
    tariff: Tariff | None,
    available: Decimal,
) -> tuple[Literal["credits", "overage"] | None, DenyReason | None]:
    """Who would pay once the pool is spent: ("credits"|"overage", None) or (None, reason)."""
    if not terms.can_purchase:
        if terms.agreement != "nce":
            return None, "credits_not_available"
        # Overage is invoiced by rate like credits: without a rate it would be
        # a free call, which a missing rate never is (SPEC §2).
        if tariff is None:
            return None, "destination_not_rated"
        return "overage", None
    if route.credits_license_required and (
        party is None or SKU_COMMUNICATIONS_CREDITS not in party.licenses
    ):
        return None, "no_credits_license"
    if tariff is None:
        return None, "destination_not_rated"
    # A balance at or below zero (offline records may push it there) pays for
    # nothing, even a zero-priced destination: SPEC §3 rule 6, API "new calls
    # that need credits are then denied".
    if available <= 0:
        return None, "insufficient_balance"
    if pool_seconds == 0 and affordable_billed_seconds(tariff, available) == 0:
        # Rule 8: available must cover the connect fee and the first increment.
        return None, "insufficient_balance"
    return "credits", None


def _credit_call_max_seconds(tariff: Tariff, pool_seconds: int, available: Decimal) -> int | None:
    """How long a call paid by its pool, then credits, may last now; None if unlimited."""
    if tariff.rate_per_minute == 0:
        # Time is free and (checked before) the connect fee is covered.
        return None
    if pool_seconds == 0:
        return affordable_billed_seconds(tariff, available)
    # A pool-started call pays no connect fee from credits (rating.py, `mixed`),
    # and the pool and credits share one billed duration: the call may last up
    # to the longest increment-aligned billed time of which the part past the
    # pool is affordable. The per-second twin of the tariff gives that part
    # unaligned; aligning the sum keeps what credits pay within it.
    per_second = Tariff(
        rate_per_minute=tariff.rate_per_minute,
        connect_fee=tariff.connect_fee,
        initial_increment_s=_PER_SECOND_INCREMENT_S,
        subsequent_increment_s=_PER_SECOND_INCREMENT_S,
    )
    paid_seconds = affordable_billed_seconds(per_second, available, include_connect_fee=False)
    return _align_down(
        pool_seconds + paid_seconds, tariff.initial_increment_s, tariff.subsequent_increment_s
    )


def _pool_covered_seconds(pool_seconds: int, tariff: Tariff | None) -> int:
    """The longest call whose billed time the pool alone covers.

    Without a tariff there are no increments to round to, and the pool is
    drawn per second (see docs/decisions.md: a pool-covered call to a
    destination the deck lacks is allowed up to the pool).
    """
    if tariff is None:
        return pool_seconds
    return _align_down(pool_seconds, tariff.initial_increment_s, tariff.subsequent_increment_s)


def _align_down(limit_seconds: int, initial_increment_s: int, subsequent_increment_s: int) -> int:
    """The largest billed duration (0, initial, initial + k × subsequent) <= limit_seconds."""
    if limit_seconds < initial_increment_s:
        return 0
    steps = (limit_seconds - initial_increment_s) // subsequent_increment_s
    return initial_increment_s + steps * subsequent_increment_s
