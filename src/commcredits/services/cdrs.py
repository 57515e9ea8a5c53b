"""Offline charging: finished-call records rated in batches (API.md POST /v1/cdrs).

The same core as online charging decides who pays, but a record describes a
call that already happened: it is rated in full even when the balance does not
cover it (the only way a balance may go below zero), and a record the rules
refuse (no plan, no license, no rate, bad number) is ``rejected`` with that
reason while the rest of the batch is rated.

Serialisation: records are grouped by tenant; each group is one write
transaction holding the tenant's account lock, in which duplicates are found
(by call id), pools are read once and written once, and all ledger lines,
entries and call rows are inserted in bulk. A batch is therefore a handful of
statements per tenant, not a handful per record.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from commcredits.core.catalog import Plans, RateIndex
from commcredits.core.charging import decide
from commcredits.core.ledger import COUNTER_ACCOUNT, CREDITS_ACCOUNT
from commcredits.core.money import format_amount, round_to_minor
from commcredits.core.rating import Tariff
from commcredits.errors import DomainError, ValidationFailed
from commcredits.services import accounts, calls, directory, pool_store
from commcredits.services.clock import now
from commcredits.services.ids import new_id
from commcredits.store import tables as t
from commcredits.store.bulk import insert_rows
from commcredits.store.db import after_commit, read_transaction, write_transaction

MAX_BATCH_RECORDS = 10_000
MAX_RECORD_AGE = timedelta(days=400)
MAX_FUTURE_END = timedelta(minutes=5)
# Whatever the balance, a record is rated: the decision is asked with a
# balance that covers any call, and the real balance is then charged.
UNBOUNDED_AVAILABLE = Decimal(10) ** 15
ZERO = Decimal(0)


@dataclass
class Outcome:
    call_id: str
    status: str  # rated | duplicate | rejected
    charge: str | None = None
    funding: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"call_id": self.call_id, "status": self.status}
        if self.charge is not None:
            body["charge"] = self.charge
        if self.funding is not None:
            body["funding"] = self.funding
        if self.error is not None:
            body["error"] = self.error
        return body


@dataclass
class Record:
    position: int
    call_id: str
    tenant_id: str
    call_type: str
    user_ref: str | None
    from_number: str | None
    to_number: str
    started_at: datetime
    duration_seconds: int


@dataclass
class _Group:
    tenant_id: str
    records: list[Record] = field(default_factory=list)


def parse_records(raw_records: list[Any], outcomes: list[Outcome | None]) -> list[Record]:
    """Validate each record on its own; a bad one is rejected, the rest go on."""
    from commcredits.api.routes_calls import CdrRecord

    records = []
    at = now()
    for position, raw in enumerate(raw_records):
        call_id = raw.get("call_id") if isinstance(raw, dict) else None
        label = call_id if isinstance(call_id, str) else f"#{position}"
        try:
            record = CdrRecord.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "record"
            outcomes[position] = Outcome(label, "rejected", error=f"{where}: {first['msg']}")
            continue
        started = record.started_at
        if started.tzinfo is None:
            outcomes[position] = Outcome(
                label, "rejected", error="started_at: give an RFC 3339 time with an offset"
            )
            continue
        if started < at - MAX_RECORD_AGE:
            outcomes[position] = Outcome(
                label, "rejected", error="started_at: records may be at most 400 days old"
            )
            continue
        # Compared on the side of now, which cannot overflow (a start in year
        # 9999 plus its duration would).
        if started > at + MAX_FUTURE_END - timedelta(seconds=record.duration_seconds):
            outcomes[position] = Outcome(
                label, "rejected", error="the call ends more than 5 minutes in the future"
            )
            continue
        records.append(
            Record(
                position=position,
                call_id=record.call_id,
                tenant_id=record.tenant_id,
                call_type=record.call_type,
                user_ref=record.user_id,
                from_number=record.from_,
                to_number=record.to,
                started_at=started,
                duration_seconds=record.duration_seconds,
            )
        )
    return records


def rate_batch(
    engine: Engine,
    raw_records: list[Any],
    index: RateIndex,
    plans: Plans,
    allowed_tenant: str | None,
) -> list[dict[str, Any]]:
    """Rate a batch: one short write transaction per tenant of the batch."""
    outcomes, groups = _grouped(raw_records, allowed_tenant)
    for group in groups:
        for _ in range(3):
            try:
                _rate_group(engine, group, index, plans, outcomes)
                break
            except IntegrityError:
                # A concurrent batch or call took one of these call ids between
                # our duplicate check and insert: rate the group again.
                continue
    return _results(outcomes)


def rate_batch_in(
    connection: Connection,
    raw_records: list[Any],
    index: RateIndex,
    plans: Plans,
    allowed_tenant: str | None,
) -> list[dict[str, Any]]:
    """Rate a batch inside the caller's write transaction (the one that stores
    its Idempotency-Key), so the key and every record's effect commit together.
    Tenants are locked in id order, so two such batches cannot deadlock."""
    outcomes, groups = _grouped(raw_records, allowed_tenant)
    for group in sorted(groups, key=lambda g: g.tenant_id):
        prepared = _prepare_group(connection, group, index, plans, outcomes)
        if prepared is not None:
            _rate_locked(connection, group, prepared[0], prepared[1], plans, outcomes)
    return _results(outcomes)


def _grouped(
    raw_records: list[Any], allowed_tenant: str | None
) -> tuple[list[Outcome | None], list[_Group]]:
    if len(raw_records) > MAX_BATCH_RECORDS:
        raise ValidationFailed(f"records: at most {MAX_BATCH_RECORDS} records per batch")
    outcomes: list[Outcome | None] = [None] * len(raw_records)
    records = parse_records(raw_records, outcomes)
    groups: dict[str, _Group] = {}
    for record in records:
        if allowed_tenant is not None and record.tenant_id != allowed_tenant:
            outcomes[record.position] = Outcome(
                record.call_id, "rejected", error="this charging token is for another tenant"
            )
            continue
        groups.setdefault(record.tenant_id, _Group(record.tenant_id)).records.append(record)
    return outcomes, list(groups.values())


def _results(outcomes: list[Outcome | None]) -> list[dict[str, Any]]:
    assert all(o is not None for o in outcomes)
    return [o.as_dict() for o in outcomes if o is not None]


Prepared = list[tuple[Record, calls.Prepared]]


def _rate_group(
    engine: Engine,
    group: _Group,
    index: RateIndex,
    plans: Plans,
    outcomes: list[Outcome | None],
) -> None:
    # Outside the lock: the tenant, the users, number analysis and rates.
    with read_transaction(engine) as connection:
        prepared = _prepare_group(connection, group, index, plans, outcomes)
    if prepared is None:
        return
    with write_transaction(engine) as connection:
        _rate_locked(connection, group, prepared[0], prepared[1], plans, outcomes)


def _prepare_group(
    connection: Connection,
    group: _Group,
    index: RateIndex,
    plans: Plans,
    outcomes: list[Outcome | None],
) -> tuple[Any, Prepared] | None:
    """The tenant and each record's route and rate; None if the tenant is unknown."""
    if directory.get_tenant_row(connection, group.tenant_id) is None:
        for record in group.records:
            outcomes[record.position] = Outcome(
                record.call_id, "rejected", error=f"tenant '{group.tenant_id}' was not found"
            )
        return None
    lookups = calls.Lookups(connection, group.tenant_id)
    prepared: Prepared = []
    for record in group.records:
        request = calls.CallRequest(
            call_id=record.call_id,
            tenant_id=record.tenant_id,
            call_type=record.call_type,
            user_ref=record.user_ref,
            from_number=record.from_number,
            to_number=record.to_number,
            started_at=record.started_at,
        )
        try:
            prepared.append((record, calls.prepare(connection, request, index, plans, lookups)))
        except DomainError as exc:  # a bad record is rejected, not the batch
            outcomes[record.position] = Outcome(record.call_id, "rejected", error=exc.detail)
    return lookups.tenant, prepared


def _rate_locked(
    connection: Connection,
    group: _Group,
    tenant: Any,
    prepared: Prepared,
    plans: Plans,
    outcomes: list[Outcome | None],
) -> None:
    terms = calls.terms_of(tenant)
    before = accounts.lock(connection, group.tenant_id)
    call_ids = [record.call_id for record, _ in prepared]
    existing: set[str] = set()
    for start in range(0, len(call_ids), 500):
        existing.update(
            connection.execute(
                select(t.calls.c.call_id).where(
                    t.calls.c.tenant_id == group.tenant_id,
                    t.calls.c.call_id.in_(call_ids[start : start + 500]),
                )
            ).scalars()
        )
    pools: dict[tuple[str, str, str], list[int]] = {}  # key -> [remaining, used_delta]
    balance = before.balance
    ledger_seq = before.ledger_seq
    ledger_rows: list[dict[str, Any]] = []
    entry_rows: list[dict[str, Any]] = []
    call_rows: list[dict[str, Any]] = []
    currency = before.currency
    at = now()
    # Only a rated record stores its call id; one rejected stores nothing,
    # so a later record of the batch with that id is rated on its own.
    rated: set[str] = set()
    # A deck names few tariffs; a batch builds each once (keyed by row identity).
    tariffs: dict[int, Tariff | None] = {}
    for record, prep in prepared:
        if record.call_id in existing or record.call_id in rated:
            outcomes[record.position] = Outcome(record.call_id, "duplicate")
            continue
        route = prep.route
        pool_key = None
        pool_remaining = 0
        if route.pool_kind is not None and prep.early_denial is None:
            pool_key = (prep.month, route.pool_kind, route.pool_country or "")
            if pool_key not in pools:
                remaining = pool_store.remaining(
                    connection,
                    group.tenant_id,
                    pool_key[0],
                    pool_key[1],
                    pool_key[2],
                    plans,
                    tenant.timezone,
                )
                pools[pool_key] = [remaining, 0]
            pool_remaining = pools[pool_key][0]
        rate_key = id(prep.rate)
        if rate_key in tariffs:
            tariff = tariffs[rate_key]
        else:
            tariff = tariffs[rate_key] = calls.tariff_of(prep.rate)
        if prep.early_denial is not None:
            decision = prep.early_denial
        else:
            decision = decide(
                route,
                prep.party,
                terms,
                pool_remaining_seconds=pool_remaining,
                tariff=tariff,
                available=UNBOUNDED_AVAILABLE,
            )
        if not decision.allow:
            outcomes[record.position] = Outcome(record.call_id, "rejected", error=decision.reason)
            continue
        if decision.funding == "free":
            pieces = calls.Split(0, 0, 0, ZERO)
        else:
            pieces = calls.split(record.duration_seconds, pool_remaining, tariff)
            if not (decision.credits_allowed or decision.overage):
                # The pool alone pays: seconds past it are recorded, not charged.
                pieces = calls.pool_only(pieces)
        charge = round_to_minor(pieces.charge_exact, currency)
        paid_by_credits = decision.credits_allowed and charge > 0
        call_ledger_seq = None
        if paid_by_credits and abs(balance - charge) > accounts.MAX_BALANCE:
            outcomes[record.position] = Outcome(
                record.call_id, "rejected", error="the balance would pass its limit"
            )
            continue
        if pool_key is not None and pieces.pool_seconds:
            pools[pool_key][0] -= pieces.pool_seconds
            pools[pool_key][1] += pieces.pool_seconds
        if paid_by_credits:
            ledger_seq += 1
            balance -= charge
            ledger_rows.append(
                {
                    "tenant_id": group.tenant_id,
                    "seq": ledger_seq,
                    "id": new_id("txn"),
                    "at": at,
                    "kind": "call_charge",
                    "amount": -charge,
                    "balance_after": balance,
                    "reference": f"call {record.call_id}",
                }
            )
            entry_rows.append(
                {
                    "tenant_id": group.tenant_id,
                    "seq": ledger_seq,
                    "account": CREDITS_ACCOUNT,
                    "amount": -charge,
                }
            )
            entry_rows.append(
                {
                    "tenant_id": group.tenant_id,
                    "seq": ledger_seq,
                    "account": COUNTER_ACCOUNT["call_charge"],
                    "amount": charge,
                }
            )
            call_ledger_seq = ledger_seq
        funding = calls.final_funding(decision.funding, decision.overage, pieces)
        call_rows.append(
            _call_row(record, prep, decision, pieces, charge, funding, call_ledger_seq, currency)
        )
        outcomes[record.position] = Outcome(
            record.call_id, "rated", charge=format_amount(charge, currency), funding=funding
        )
        rated.add(record.call_id)
    account = replace(before, balance=balance, ledger_seq=ledger_seq)
    insert_rows(connection, t.ledger_transactions, ledger_rows)
    insert_rows(connection, t.ledger_entries, entry_rows)
    insert_rows(connection, t.calls, call_rows)
    for (month, pool_kind, country), (_, used) in pools.items():
        pool_store.change(connection, group.tenant_id, month, pool_kind, country, used_delta=used)
    accounts.save(connection, before, account)
    if ledger_rows:
        from commcredits.api.metrics import CHARGES_POSTED

        posted, count = CHARGES_POSTED.labels("offline"), len(ledger_rows)
        after_commit(connection, lambda: posted.inc(count))


def _call_row(
    record: Record,
    prep: calls.Prepared,
    decision: Any,
    pieces: calls.Split,
    charge: Decimal,
    funding: str,
    ledger_seq: int | None,
    currency: str,
) -> dict[str, Any]:
    rate = prep.rate
    user = prep.user
    to = prep.to
    return {
        "tenant_id": record.tenant_id,
        "call_id": record.call_id,
        "source": "offline",
        "state": "ended",
        "call_type": record.call_type,
        "user_id": None if user is None else user.id,
        "user_upn": None if user is None else user.upn,
        "user_display_name": None if user is None else user.display_name,
        "from_number": record.from_number,
        "to_number": record.to_number,
        "destination_region": None if to is None else to.region,
        "destination_name": None if rate is None else rate.destination,
        "destination_context": prep.destination_context,
        "number_type": None if to is None else to.number_type,
        "usage_country": None if user is None else user.usage_location,
        "decision": "allow",
        "reason": None,
        "funding": funding,
        "started_at": record.started_at,
        "ended_at": record.started_at + timedelta(seconds=record.duration_seconds),
        "duration_seconds": record.duration_seconds,
        "granted_seconds": record.duration_seconds,
        "grant_expires_at": None,
        "hold_amount": ZERO,
        "pool_kind": prep.route.pool_kind,
        "pool_country": prep.route.pool_country,
        "pool_month": prep.month,
        "pool_hold_seconds": 0,
        "rate_per_minute": None if rate is None else rate.rate_per_minute,
        "connect_fee": None if rate is None else rate.connect_fee,
        "initial_increment_s": None if rate is None else rate.initial_increment_s,
        "subsequent_increment_s": None if rate is None else rate.subsequent_increment_s,
        "currency": currency,
        "charge": charge,
        "pool_seconds": pieces.pool_seconds,
        "charged_seconds": pieces.paid_seconds,
        "credits_allowed": decision.credits_allowed,
        "overage": decision.overage,
        "rate_service": prep.route.rate_service,
        "end_reason": "offline",
        "ledger_seq": ledger_seq,
        "request_hash": "",
        "start_response": None,
        "end_response": None,
    }
