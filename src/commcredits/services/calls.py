"""Online charging: start, update and end a call (API.md "Charging").

Per call: *may it go ahead, who pays, and for how long*. The decision itself is
the pure core (core/charging.py); this module gathers its inputs, takes the
holds and posts the charge.

Serialisation (docs/architecture.md): every start, update and end of a call of
tenant T is one write transaction that first locks T's credits account row
(``SELECT ... FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite). Under
that lock it reads ``available`` and the pool's remaining seconds, decides,
and writes the holds, so two calls can never both spend the last credits or
the last pool minutes. Everything that does not need the lock (number
analysis, the user and its licenses, the rate lookup) happens before it, so
the lock is held for a handful of statements.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from commcredits.core.catalog import Plans, RateIndex, RateRow
from commcredits.core.charging import (
    Decision,
    Party,
    Route,
    TenantTerms,
    decide,
    denied,
    route_call,
)
from commcredits.core.eligibility import eligibility
from commcredits.core.money import format_amount, format_money, minor_unit_quantum, round_to_minor
from commcredits.core.numbers import InvalidNumber, NumberInfo, analyse_number, same_country
from commcredits.core.rating import Tariff, billed_seconds, charge_for_paid_seconds
from commcredits.errors import CallConflict, DomainError, NotFound, ValidationFailed
from commcredits.services import accounts, directory, pool_store
from commcredits.services.clock import as_utc, now
from commcredits.store import tables as t
from commcredits.store.db import after_commit, is_postgres, read_transaction, write_transaction

# How long past its grant a silent call is left before the service closes it.
SWEEP_GRACE_SECONDS = 10
SWEEP_BATCH = 100
SWEEP_LEASE_SECONDS = 60
# A live call is starting now: a start dated further off is a platform clock or
# data error, and would draw another month's pool or never be swept.
MAX_START_AGE = timedelta(hours=24)
MAX_START_AHEAD = timedelta(minutes=5)
ZERO = Decimal(0)


@dataclass(frozen=True)
class CallRequest:
    call_id: str
    tenant_id: str
    call_type: str
    user_ref: str | None
    from_number: str | None
    to_number: str
    started_at: datetime | None

    def fingerprint(self) -> str:
        body = {
            "call_id": self.call_id,
            "tenant_id": self.tenant_id,
            "call_type": self.call_type,
            "user_id": self.user_ref,
            "from": self.from_number,
            "to": self.to_number,
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Prepared:
    """What a start needs that does not need the account lock."""

    request: CallRequest
    tenant: Any
    user: Any | None
    party: Party | None
    to: NumberInfo | None
    route: Route
    rate: RateRow | None
    month: str
    started_at: datetime
    destination_context: str | None
    early_denial: Decision | None


def tariff_of(rate: RateRow | None) -> Tariff | None:
    if rate is None:
        return None
    return Tariff(
        rate_per_minute=rate.rate_per_minute,
        connect_fee=rate.connect_fee,
        initial_increment_s=rate.initial_increment_s,
        subsequent_increment_s=rate.subsequent_increment_s,
    )


def _analyse(number: str | None, region: str | None) -> NumberInfo | None:
    if number is None:
        return None
    try:
        return analyse_number(number, region)
    except InvalidNumber:
        return None


class Lookups:
    """The tenant, users and licenses a start needs, read once per request or
    per batch of records (a batch of 10,000 records names a few users)."""

    def __init__(self, connection: Connection, tenant_id: str) -> None:
        self.connection = connection
        self.tenant_id = tenant_id
        self.tenant = directory.require_tenant(connection, tenant_id)
        self._users: dict[str, Any] = {}
        self._licenses: dict[str, frozenset[str]] = {}
        self._by_number: dict[str, Any] = {}

    def user(self, user_ref: str) -> Any:
        if user_ref not in self._users:
            self._users[user_ref] = directory.find_user(self.connection, self.tenant_id, user_ref)
        return self._users[user_ref]

    def holder_of(self, number: str) -> Any:
        """The user or resource account whose phone number this is."""
        if number not in self._by_number:
            self._by_number[number] = self.connection.execute(
                select(t.users).where(
                    t.users.c.tenant_id == self.tenant_id, t.users.c.phone_number == number
                )
            ).first()
        return self._by_number[number]

    def licenses(self, user_id: str) -> frozenset[str]:
        if user_id not in self._licenses:
            self._licenses[user_id] = frozenset(
                directory.licenses_of(self.connection, self.tenant_id, user_id)
            )
        return self._licenses[user_id]


def prepare(
    connection: Connection,
    request: CallRequest,
    index: RateIndex,
    plans: Plans,
    lookups: Lookups | None = None,
) -> Prepared:
    lookups = lookups or Lookups(connection, request.tenant_id)
    tenant = lookups.tenant
    user = None
    if request.user_ref is not None:
        user = lookups.user(request.user_ref)
        if user is None:
            raise NotFound(
                f"user '{request.user_ref}' was not found in tenant '{request.tenant_id}'"
            )
    elif request.call_type == "user_out":
        raise ValidationFailed("user_id: a user_out call needs the calling user (id or upn)")
    elif request.call_type == "tollfree_in":
        # The toll-free number is held by a resource account (auto attendant,
        # call queue); the tenant pays through it.
        user = lookups.holder_of(request.to_number)
    party = None
    if user is not None:
        party = Party(
            kind=user.kind,
            usage_location=user.usage_location,
            licenses=lookups.licenses(user.id),
        )
    caller_region = user.usage_location if user is not None else tenant.country
    started_at = as_utc(request.started_at) if request.started_at else now()
    month = pool_store.month_at(started_at, tenant.timezone)

    def early(decision: Decision, to: NumberInfo | None = None) -> Prepared:
        return Prepared(
            request,
            tenant,
            user,
            party,
            to,
            Route(free=True),
            None,
            month,
            started_at,
            None,
            decision,
        )

    try:
        to = analyse_number(request.to_number, caller_region)
    except InvalidNumber:
        return early(denied("invalid_number"))
    # Emergency calls are always allowed (SPEC §3 rule 1), whatever the caller id says.
    if (
        request.call_type in ("user_out", "conf_out")
        and request.from_number is not None
        and not to.is_emergency
    ):
        if _analyse(request.from_number, caller_region) is None:
            return early(denied("invalid_number"), to)
    route = route_call(
        request.call_type,  # type: ignore[arg-type]
        party,
        to,
        included_zone=plans.conference_included_zone,
    )
    rate = None
    if route.rate_service is not None:
        currency = tenant.currency
        if request.call_type == "tollfree_in":
            # Rated on the caller's number, else on the toll-free number (SPEC §3).
            caller = _analyse(request.from_number, caller_region)
            if caller is not None and not caller.is_emergency:
                rate = index.lookup(route.rate_service, currency, caller.digits, caller.number_type)
            if rate is None:
                rate = index.lookup(route.rate_service, currency, to.digits, to.number_type)
        else:
            rate = index.lookup(route.rate_service, currency, to.digits, to.number_type)
    context = None
    if not to.is_emergency:
        home = user.usage_location if user is not None else tenant.country
        context = "Domestic" if same_country(to.region, to.country_code, home) else "International"
    return Prepared(request, tenant, user, party, to, route, rate, month, started_at, context, None)


def terms_of(tenant: Any) -> TenantTerms:
    verdict = eligibility(
        tenant.agreement, tenant.country, tenant.billing_country, tenant.purchase_override
    )
    return TenantTerms(agreement=tenant.agreement, can_purchase=verdict.can_purchase)


# --- holds -------------------------------------------------------------------------------------


def align_down(seconds: int, tariff: Tariff | None) -> int:
    if tariff is None:
        return seconds
    if seconds < tariff.initial_increment_s:
        return 0
    steps = (seconds - tariff.initial_increment_s) // tariff.subsequent_increment_s
    return tariff.initial_increment_s + steps * tariff.subsequent_increment_s


def ceil_to_minor(amount: Decimal, currency: str) -> Decimal:
    """Holds round up, so that the charge (rounded half-up, once) always fits."""
    return amount.quantize(minor_unit_quantum(currency), rounding=ROUND_CEILING)


@dataclass(frozen=True)
class Split:
    billed: int
    pool_seconds: int
    paid_seconds: int
    charge_exact: Decimal


def split(duration_seconds: int, pool_available: int, tariff: Tariff | None) -> Split:
    """Billed time for a duration, the part its pool covers, and the exact
    price of the rest. A call that starts in a pool pays no connect fee."""
    if duration_seconds <= 0:
        return Split(0, 0, 0, ZERO)
    if tariff is None:
        billed = duration_seconds
        pool_part = min(billed, pool_available)
        return Split(billed, pool_part, billed - pool_part, ZERO)
    billed = billed_seconds(
        duration_seconds, tariff.initial_increment_s, tariff.subsequent_increment_s
    )
    pool_part = min(billed, pool_available)
    paid = billed - pool_part
    charge = charge_for_paid_seconds(tariff, paid, include_connect_fee=(pool_part == 0))
    return Split(billed, pool_part, paid, charge)


def grant_for(decision: Decision, tariff: Tariff | None, wanted_seconds: int) -> int:
    """The length of call, from its start, the holds will cover."""
    limit = decision.max_duration_seconds
    target = wanted_seconds if limit is None else min(wanted_seconds, limit)
    granted = align_down(target, tariff)
    if granted == 0 and tariff is not None:
        granted = min(tariff.initial_increment_s, limit or tariff.initial_increment_s)
    return max(granted, 0)


# --- start -------------------------------------------------------------------------------------


def prepare_start(
    engine: Engine, request: CallRequest, index: RateIndex, plans: Plans
) -> Prepared | dict[str, Any]:
    """Everything a start needs that does not need the lock (a read transaction),
    or the first answer when this call id was already started."""
    with read_transaction(engine) as connection:
        try:
            check_started_at(request.started_at, now())
            return prepare(connection, request, index, plans)
        except DomainError:
            # A repeat of a start whose user has since gone still gets its
            # first answer.
            existing = _find_call(connection, request.tenant_id, request.call_id)
            if existing is not None:
                return _replay_start(existing, request)
            raise


def check_started_at(started_at: datetime | None, at: datetime) -> None:
    if started_at is None:
        return
    started = as_utc(started_at)
    if started > at + MAX_START_AHEAD:
        raise ValidationFailed(
            "started_at: a call cannot start more than 5 minutes in the future; "
            "check the platform's clock"
        )
    if started < at - MAX_START_AGE:
        raise ValidationFailed(
            "started_at: a live call starts now; one older than 24 hours is "
            "refused (send finished calls to POST /v1/cdrs)"
        )


def start_in(
    connection: Connection, prepared: Prepared, plans: Plans, grant_slice_seconds: int
) -> dict[str, Any]:
    """Decide and hold, inside the caller's write transaction (account lock first)."""
    return _start_locked(connection, prepared, plans, grant_slice_seconds)


def start_call(
    engine: Engine,
    request: CallRequest,
    index: RateIndex,
    plans: Plans,
    grant_slice_seconds: int,
) -> dict[str, Any]:
    prepared = prepare_start(engine, request, index, plans)
    if isinstance(prepared, dict):
        return prepared
    with write_transaction(engine) as connection:
        return start_in(connection, prepared, plans, grant_slice_seconds)


def _replay_start(existing: Any, request: CallRequest) -> dict[str, Any]:
    if existing.request_hash != request.fingerprint():
        raise CallConflict(
            f"call '{request.call_id}' was already started with other details; "
            "a call id names one call"
        )
    return dict(existing.start_response)


def _start_locked(
    connection: Connection, prepared: Prepared, plans: Plans, grant_slice_seconds: int
) -> dict[str, Any]:
    from commcredits.api.metrics import CALLS_DENIED, CALLS_STARTED

    request = prepared.request
    tenant = prepared.tenant
    before = accounts.lock(connection, request.tenant_id)
    # Under the lock, so two starts of one call id see each other: the second
    # replays the first's answer.
    existing = _find_call(connection, request.tenant_id, request.call_id)
    if existing is not None:
        return _replay_start(existing, request)
    tariff = tariff_of(prepared.rate)
    route = prepared.route
    pool_country = route.pool_country or pool_store.NO_COUNTRY
    pool_remaining = 0
    if route.pool_kind is not None:
        pool_remaining = pool_store.remaining(
            connection,
            request.tenant_id,
            prepared.month,
            route.pool_kind,
            pool_country,
            plans,
            tenant.timezone,
        )
    if prepared.early_denial is not None:
        decision = prepared.early_denial
    else:
        decision = decide(
            route,
            prepared.party,
            terms_of(tenant),
            pool_remaining_seconds=pool_remaining,
            tariff=tariff,
            available=before.available,
        )
    currency = before.currency
    granted = 0
    pool_hold = 0
    hold_amount = ZERO
    if decision.allow:
        granted = grant_for(decision, tariff, grant_slice_seconds)
        if decision.funding == "free":
            granted = grant_slice_seconds
        else:
            pieces = split(granted, decision.pool_seconds_available, tariff)
            pool_hold = pieces.pool_seconds
            if decision.credits_allowed:
                hold_amount = ceil_to_minor(pieces.charge_exact, currency)
                assert hold_amount <= max(before.available, ZERO) or pieces.paid_seconds == 0, (
                    "a hold never exceeds available"
                )
    after = replace(before, reserved=before.reserved + hold_amount)
    if route.pool_kind is not None and pool_hold:
        pool_store.change(
            connection,
            request.tenant_id,
            prepared.month,
            route.pool_kind,
            pool_country,
            held_delta=pool_hold,
        )
    if hold_amount:
        accounts.save(connection, before, after)
    rate_body = None
    if prepared.rate is not None and decision.allow and decision.funding != "free":
        rate_body = {
            "per_minute": format_money(prepared.rate.rate_per_minute),
            "connect_fee": format_money(prepared.rate.connect_fee),
            "currency": prepared.rate.currency,
            "destination": prepared.rate.destination,
            "initial_increment_s": prepared.rate.initial_increment_s,
            "subsequent_increment_s": prepared.rate.subsequent_increment_s,
        }
    response = {
        "call_id": request.call_id,
        "tenant_id": request.tenant_id,
        "decision": "allow" if decision.allow else "deny",
        "reason": decision.reason,
        "funding": decision.funding,
        "max_duration_seconds": decision.max_duration_seconds,
        "granted_seconds": granted,
        "rate": rate_body,
    }
    _insert_call(connection, prepared, decision, granted, pool_hold, hold_amount, response)
    # Counted once the start is committed: a rolled-back start started nothing.
    if decision.allow:
        started = CALLS_STARTED.labels(decision.funding or "none")
        after_commit(connection, lambda: started.inc())
        _count_granted(connection, granted)
    else:
        denied_counter = CALLS_DENIED.labels(decision.reason or "unknown")
        after_commit(connection, lambda: denied_counter.inc())
    del currency
    return response


def _count_granted(connection: Connection, seconds: int) -> None:
    from commcredits.api.metrics import SECONDS_GRANTED

    if seconds > 0:
        after_commit(connection, lambda: SECONDS_GRANTED.inc(seconds))


def _insert_call(
    connection: Connection,
    prepared: Prepared,
    decision: Decision,
    granted: int,
    pool_hold: int,
    hold_amount: Decimal,
    response: dict[str, Any],
) -> None:
    request = prepared.request
    rate = prepared.rate
    to = prepared.to
    user = prepared.user
    connection.execute(
        _INSERT_CALL,
        dict(
            tenant_id=request.tenant_id,
            call_id=request.call_id,
            source="online",
            state="active" if decision.allow else "denied",
            call_type=request.call_type,
            user_id=None if user is None else user.id,
            user_upn=None if user is None else user.upn,
            user_display_name=None if user is None else user.display_name,
            from_number=request.from_number,
            to_number=request.to_number,
            destination_region=None if to is None else to.region,
            destination_name=None if rate is None else rate.destination,
            destination_context=prepared.destination_context,
            number_type=None if to is None else to.number_type,
            usage_country=None if user is None else user.usage_location,
            decision="allow" if decision.allow else "deny",
            reason=decision.reason,
            funding=decision.funding,
            started_at=prepared.started_at,
            granted_seconds=granted,
            grant_expires_at=(
                prepared.started_at + timedelta(seconds=granted + SWEEP_GRACE_SECONDS)
                if decision.allow
                else None
            ),
            hold_amount=hold_amount,
            pool_kind=prepared.route.pool_kind if decision.allow else None,
            pool_country=prepared.route.pool_country,
            pool_month=prepared.month,
            pool_hold_seconds=pool_hold,
            rate_per_minute=None if rate is None else rate.rate_per_minute,
            connect_fee=None if rate is None else rate.connect_fee,
            initial_increment_s=None if rate is None else rate.initial_increment_s,
            subsequent_increment_s=None if rate is None else rate.subsequent_increment_s,
            currency=prepared.tenant.currency,
            credits_allowed=decision.credits_allowed,
            overage=decision.overage,
            rate_service=prepared.route.rate_service,
            request_hash=request.fingerprint(),
            start_response=response,
            # Filled in when the call ends.
            ended_at=None,
            duration_seconds=None,
            charge=None,
            pool_seconds=None,
            charged_seconds=None,
            end_reason=None,
            ledger_seq=None,
            end_response=None,
        ),
    )


_FIND_CALL = select(t.calls).where(
    t.calls.c.tenant_id == bindparam("key_tenant_id"),
    t.calls.c.call_id == bindparam("key_call_id"),
)
_FIND_CALL_FOR_UPDATE = _FIND_CALL.with_for_update()
_INSERT_CALL = insert(t.calls)
_UPDATE_CALL = update(t.calls).where(
    t.calls.c.tenant_id == bindparam("key_tenant_id"),
    t.calls.c.call_id == bindparam("key_call_id"),
)


def _find_call(connection: Connection, tenant_id: str, call_id: str, lock: bool = False) -> Any:
    query = _FIND_CALL_FOR_UPDATE if lock and is_postgres(connection) else _FIND_CALL
    return connection.execute(query, {"key_tenant_id": tenant_id, "key_call_id": call_id}).first()


def _update_call(connection: Connection, call: Any, **values: Any) -> None:
    connection.execute(
        _UPDATE_CALL, {**values, "key_tenant_id": call.tenant_id, "key_call_id": call.call_id}
    )


def locate(engine: Engine, call_id: str, tenant_hint: str | None) -> str:
    """The tenant of a call: from the token or body when known, else by call id."""
    with read_transaction(engine) as connection:
        query = select(t.calls.c.tenant_id).where(t.calls.c.call_id == call_id)
        if tenant_hint is not None:
            query = query.where(t.calls.c.tenant_id == tenant_hint)
        tenants = list(connection.execute(query.limit(2)).scalars())
    if not tenants:
        raise NotFound(f"call '{call_id}' was not found")
    if len(tenants) > 1:
        raise CallConflict(
            f"call id '{call_id}' is used by several tenants; send tenant_id in the body"
        )
    return str(tenants[0])


# --- update ------------------------------------------------------------------------------------


def _tariff_of_call(call: Any) -> Tariff | None:
    if call.rate_per_minute is None:
        return None
    return Tariff(
        rate_per_minute=call.rate_per_minute,
        connect_fee=call.connect_fee,
        initial_increment_s=call.initial_increment_s,
        subsequent_increment_s=call.subsequent_increment_s,
    )


def _max_for_call(call: Any, pool_available: int, money_available: Decimal) -> Decision:
    """Re-run the core's decision for a live call with its own holds given back."""
    tariff = _tariff_of_call(call)
    if call.pool_kind is not None:
        route = Route(
            pool_kind=call.pool_kind,
            pool_country=call.pool_country,
            rate_service=call.rate_service,
        )
    else:
        route = Route(rate_service=call.rate_service)
    licenses = frozenset({"communications_credits"}) if call.credits_allowed else frozenset()
    party = Party(kind="person", usage_location=call.usage_country or "US", licenses=licenses)
    if call.overage:
        terms = TenantTerms(agreement="nce", can_purchase=False)
    else:
        terms = TenantTerms(agreement="direct", can_purchase=True)
    return decide(
        route,
        party,
        terms,
        pool_remaining_seconds=pool_available if call.pool_kind is not None else 0,
        tariff=tariff,
        available=money_available,
    )


def update_call(
    engine: Engine,
    tenant_id: str,
    call_id: str,
    used_seconds: int,
    plans: Plans,
    grant_slice_seconds: int,
) -> dict[str, Any]:
    with write_transaction(engine) as connection:
        return update_in(connection, tenant_id, call_id, used_seconds, plans, grant_slice_seconds)


def update_in(
    connection: Connection,
    tenant_id: str,
    call_id: str,
    used_seconds: int,
    plans: Plans,
    grant_slice_seconds: int,
) -> dict[str, Any]:
    """Extend the grant while available allows, else answer ``terminate``."""
    before = accounts.lock(connection, tenant_id)
    call = _find_call(connection, tenant_id, call_id, lock=True)
    if call is None:
        raise NotFound(f"call '{call_id}' was not found")
    if call.state != "active":
        return {
            "call_id": call_id,
            "decision": "terminate",
            "granted_seconds": call.granted_seconds,
            "max_duration_seconds": call.granted_seconds,
            "state": call.state,
        }
    if call.funding == "free":
        granted = max(call.granted_seconds, used_seconds + grant_slice_seconds)
        if granted > call.granted_seconds:
            _set_grant(connection, call, granted, call.pool_hold_seconds, call.hold_amount)
            _count_granted(connection, granted - call.granted_seconds)
        return _update_response(call_id, "continue", granted, None)
    tariff = _tariff_of_call(call)
    pool_available = int(call.pool_hold_seconds)
    if call.pool_kind is not None:
        pool_available += pool_store.remaining(
            connection,
            tenant_id,
            call.pool_month,
            call.pool_kind,
            call.pool_country or pool_store.NO_COUNTRY,
            plans,
            _timezone(connection, tenant_id),
        )
    money_available = before.available + call.hold_amount
    decision = _max_for_call(call, pool_available, money_available)
    limit = decision.max_duration_seconds if decision.allow else call.granted_seconds
    # One slice ahead of what was used, never less than already granted: early
    # updates do not pile up holds other calls of the tenant could use.
    target = max(call.granted_seconds, used_seconds + grant_slice_seconds)
    limited = limit is not None and limit < target
    if limit is not None:
        target = min(target, limit)
    granted = max(align_down(target, tariff), call.granted_seconds)
    if granted <= used_seconds or (limited and granted == call.granted_seconds):
        # Past what the holds cover, or no more money: this grant is the last.
        return _update_response(call_id, "terminate", call.granted_seconds, limit)
    if granted == call.granted_seconds:
        return _update_response(call_id, "continue", granted, decision.max_duration_seconds)
    pieces = split(granted, pool_available, tariff)
    hold_amount = (
        ceil_to_minor(pieces.charge_exact, before.currency) if call.credits_allowed else ZERO
    )
    pool_delta = pieces.pool_seconds - int(call.pool_hold_seconds)
    money_delta = hold_amount - call.hold_amount
    assert money_delta <= max(before.available, ZERO) or money_delta <= 0
    if call.pool_kind is not None and pool_delta:
        pool_store.change(
            connection,
            tenant_id,
            call.pool_month,
            call.pool_kind,
            call.pool_country or pool_store.NO_COUNTRY,
            held_delta=pool_delta,
        )
    if money_delta:
        accounts.save(connection, before, replace(before, reserved=before.reserved + money_delta))
    _set_grant(connection, call, granted, pieces.pool_seconds, hold_amount)
    _count_granted(connection, granted - call.granted_seconds)
    return _update_response(call_id, "continue", granted, decision.max_duration_seconds)


def _timezone(connection: Connection, tenant_id: str) -> str:
    return str(directory.require_tenant(connection, tenant_id).timezone)


def _set_grant(
    connection: Connection, call: Any, granted: int, pool_hold: int, hold_amount: Decimal
) -> None:
    _update_call(
        connection,
        call,
        granted_seconds=granted,
        pool_hold_seconds=pool_hold,
        hold_amount=hold_amount,
        grant_expires_at=as_utc(call.started_at) + timedelta(seconds=granted + SWEEP_GRACE_SECONDS),
    )


def _update_response(
    call_id: str, decision: str, granted: int, max_duration: int | None
) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "decision": decision,
        "granted_seconds": granted,
        "max_duration_seconds": max_duration,
    }


# --- end ---------------------------------------------------------------------------------------


def end_call(
    engine: Engine,
    tenant_id: str,
    call_id: str,
    duration_seconds: int,
    end_reason: str = "platform",
) -> dict[str, Any]:
    with write_transaction(engine) as connection:
        return end_in(connection, tenant_id, call_id, duration_seconds, end_reason)


def end_in(
    connection: Connection,
    tenant_id: str,
    call_id: str,
    duration_seconds: int,
    end_reason: str = "platform",
) -> dict[str, Any]:
    """Post the exact charge and release the holds; a repeat answers the same."""
    before = accounts.lock(connection, tenant_id)
    call = _find_call(connection, tenant_id, call_id, lock=True)
    if call is None:
        raise NotFound(f"call '{call_id}' was not found")
    if call.state == "ended":
        return dict(call.end_response)
    if call.state != "active":
        raise CallConflict(f"call '{call_id}' was denied at its start; there is nothing to end")
    return _end_locked(connection, before, call, duration_seconds, end_reason)


def _end_locked(
    connection: Connection,
    before: accounts.Account,
    call: Any,
    duration_seconds: int,
    end_reason: str,
) -> dict[str, Any]:
    from commcredits.api.metrics import CHARGES_POSTED

    tenant_id = call.tenant_id
    currency = before.currency
    tariff = _tariff_of_call(call)
    # Seconds past the grant are recorded, not charged: holds cover the grant only.
    chargeable = min(duration_seconds, int(call.granted_seconds))
    if call.funding == "free":
        pieces = Split(0, 0, 0, ZERO)
    else:
        pieces = split(chargeable, int(call.pool_hold_seconds), tariff)
        if not (call.credits_allowed or call.overage):
            pieces = pool_only(pieces)
    assert pieces.pool_seconds <= call.pool_hold_seconds, "a pool never gives more than it held"
    charge = round_to_minor(pieces.charge_exact, currency)
    after = replace(before, reserved=before.reserved - call.hold_amount)
    ledger_seq = None
    if call.credits_allowed and charge > 0:
        assert charge <= call.hold_amount, "a call is never charged more than its holds"
        after, line = accounts.post(
            connection, after, "call_charge", -charge, f"call {call.call_id}"
        )
        ledger_seq = line.seq
        posted = CHARGES_POSTED.labels("online")
        after_commit(connection, lambda: posted.inc())
    if call.pool_kind is not None:
        pool_store.change(
            connection,
            tenant_id,
            call.pool_month,
            call.pool_kind,
            call.pool_country or pool_store.NO_COUNTRY,
            used_delta=pieces.pool_seconds,
            held_delta=-int(call.pool_hold_seconds),
        )
    after = accounts.save(connection, before, after)
    funding = final_funding(call.funding, call.overage, pieces)
    response = {
        "call_id": call.call_id,
        "charge": format_amount(charge, currency),
        "currency": currency,
        "funding": funding,
        "pool_seconds": pieces.pool_seconds,
        "charged_seconds": pieces.paid_seconds,
        "balance": format_amount(after.balance, currency),
        "duration_seconds": duration_seconds,
    }
    _update_call(
        connection,
        call,
        **dict(
            state="ended",
            ended_at=as_utc(call.started_at) + timedelta(seconds=duration_seconds),
            duration_seconds=duration_seconds,
            hold_amount=ZERO,
            pool_hold_seconds=0,
            charge=charge,
            pool_seconds=pieces.pool_seconds,
            charged_seconds=pieces.paid_seconds,
            funding=funding,
            ledger_seq=ledger_seq,
            end_reason=end_reason,
            end_response=response,
        ),
    )
    return response


def pool_only(pieces: Split) -> Split:
    """A call whose pool alone may pay (no credits license, no nce overage):
    seconds past the pool are recorded, never charged nor counted as paid."""
    return Split(pieces.billed, pieces.pool_seconds, 0, ZERO)


def final_funding(first_funding: str | None, overage: bool, pieces: Split) -> str:
    """Who paid, once the billed seconds are known: the pool, credits (or nce
    overage), both (``mixed``), or nobody (``free``)."""
    if first_funding == "free":
        return "free"
    if pieces.pool_seconds and pieces.paid_seconds:
        return "mixed"
    if pieces.pool_seconds:
        return "included"
    if pieces.paid_seconds:
        return "overage" if overage else "credits"
    # A zero-second call: what it would have drawn first.
    return str(first_funding)


# --- the sweeper -------------------------------------------------------------------------------


def sweep_expired(engine: Engine) -> int:
    """Close calls whose platform went silent past their grant, charged for the
    granted time. Candidates are claimed with a lease (SKIP LOCKED on
    PostgreSQL), so several server processes close each call once; the close
    re-checks, under the account lock, that the call is still active and its
    grant still expired (an update may have extended it since the claim)."""
    return close_claimed(engine, claim_expired(engine))


def claim_expired(engine: Engine) -> list[tuple[str, str]]:
    """Take a lease on up to SWEEP_BATCH active calls whose grant has expired."""
    at = now()
    with write_transaction(engine) as connection:
        query = (
            select(t.calls.c.tenant_id, t.calls.c.call_id)
            .where(t.calls.c.state == "active", t.calls.c.grant_expires_at < at)
            .order_by(t.calls.c.grant_expires_at)
            .limit(SWEEP_BATCH)
        )
        if is_postgres(connection):
            query = query.with_for_update(skip_locked=True)
        claimed = [(str(row[0]), str(row[1])) for row in connection.execute(query).all()]
        for tenant_id, call_id in claimed:
            connection.execute(
                update(t.calls)
                .where(t.calls.c.tenant_id == tenant_id, t.calls.c.call_id == call_id)
                .values(grant_expires_at=at + timedelta(seconds=SWEEP_LEASE_SECONDS))
            )
    return claimed


def close_claimed(engine: Engine, claimed: list[tuple[str, str]]) -> int:
    closed = 0
    for tenant_id, call_id in claimed:
        with write_transaction(engine) as connection:
            before = accounts.lock(connection, tenant_id)
            call = _find_call(connection, tenant_id, call_id, lock=True)
            if call is None or call.state != "active" or not grant_expired(call, now()):
                continue
            _end_locked(connection, before, call, int(call.granted_seconds), "swept")
            closed += 1
    return closed


def grant_expired(call: Any, at: datetime) -> bool:
    """Whether the call's grant, as it stands now, ran out more than the grace
    ago. Read from the grant itself, not ``grant_expires_at``, which holds the
    sweeper's lease while a call is claimed."""
    expiry = as_utc(call.started_at) + timedelta(
        seconds=int(call.granted_seconds) + SWEEP_GRACE_SECONDS
    )
    return expiry < at


# --- views ---------------------------------------------------------------------------------


def call_view(connection: Connection, tenant_id: str, call_id: str) -> dict[str, Any]:
    from commcredits.services.clock import rfc3339

    call = _find_call(connection, tenant_id, call_id)
    if call is None:
        raise NotFound(f"call '{call_id}' was not found")
    currency = call.currency
    return {
        "call_id": call.call_id,
        "tenant_id": call.tenant_id,
        "state": call.state,
        "call_type": call.call_type,
        "decision": call.decision,
        "reason": call.reason,
        "funding": call.funding,
        "started_at": rfc3339(call.started_at),
        "ended_at": rfc3339(call.ended_at),
        "granted_seconds": call.granted_seconds,
        "duration_seconds": call.duration_seconds,
        "hold": format_amount(call.hold_amount, currency),
        "pool_hold_seconds": call.pool_hold_seconds,
        "charge": None if call.charge is None else format_amount(call.charge, currency),
        "currency": currency,
        "pool_seconds": call.pool_seconds,
        "charged_seconds": call.charged_seconds,
        "end_reason": call.end_reason,
    }


def overage_view(connection: Connection, tenant: Any, month: str) -> dict[str, Any]:
    from sqlalchemy import func

    from commcredits.core.pools import month_bounds

    start, end = month_bounds(month, tenant.timezone)
    row = connection.execute(
        select(
            func.count(),
            func.coalesce(func.sum(t.calls.c.charge), ZERO),
            func.coalesce(func.sum(t.calls.c.duration_seconds), 0),
        ).where(
            t.calls.c.tenant_id == tenant.id,
            t.calls.c.state == "ended",
            t.calls.c.overage.is_(True),
            # Only calls that ran past their pool into overage; an nce call its
            # pool covered whole owes nothing.
            t.calls.c.charged_seconds > 0,
            t.calls.c.started_at >= start,
            t.calls.c.started_at < end,
        )
    ).one()
    count, total, seconds = row
    return {
        "month": month,
        "currency": tenant.currency,
        "calls": int(count),
        "seconds": int(seconds or 0),
        "total_charge": format_amount(Decimal(total or 0), tenant.currency),
    }
