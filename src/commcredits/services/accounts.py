"""The credits account of a tenant: lock it, post to its ledger, move its holds.

Serialisation: every change to a tenant's money happens in a write transaction
that first locks the tenant's ``credits_accounts`` row (``SELECT ... FOR
UPDATE`` on PostgreSQL; on SQLite the transaction is ``BEGIN IMMEDIATE``, so
it already holds the database's single write lock). Ledger lines are numbered
by ``ledger_seq`` on that row, so a tenant's ledger is a gap-free sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from commcredits.core.ledger import posting
from commcredits.errors import NotFound, ValidationFailed
from commcredits.services import account_events
from commcredits.services.clock import now
from commcredits.services.ids import new_id
from commcredits.store import tables as t
from commcredits.store.db import is_postgres

# Money on the wire has at most 12 integer digits (SPEC §2); a balance stays
# within that too, which also keeps it inside SQLite's 64-bit integers.
MAX_BALANCE = Decimal("999999999999.99")


@dataclass(frozen=True)
class Account:
    tenant_id: str
    currency: str
    balance: Decimal
    reserved: Decimal
    ledger_seq: int
    auto_recharge_enabled: bool
    auto_recharge_threshold: Decimal | None
    auto_recharge_amount: Decimal | None
    auto_recharge_payment_method_id: str | None
    recharge_armed: bool
    recharge_purchase_id: str | None
    depleted_armed: bool
    low_armed: bool

    @property
    def available(self) -> Decimal:
        return self.balance - self.reserved


_FIELDS = tuple(Account.__dataclass_fields__)


def _account(row: Any) -> Account:
    return Account(**{name: getattr(row, name) for name in _FIELDS})


# Built once: the charging path runs these on every call, and building a
# statement costs more than running it on SQLite.
_SELECT = select(t.credits_accounts).where(
    t.credits_accounts.c.tenant_id == bindparam("key_tenant_id")
)
_SELECT_FOR_UPDATE = _SELECT.with_for_update()
_UPDATE = update(t.credits_accounts).where(
    t.credits_accounts.c.tenant_id == bindparam("key_tenant_id")
)
_INSERT_LINE = insert(t.ledger_transactions)
_INSERT_ENTRIES = insert(t.ledger_entries)


def lock(connection: Connection, tenant_id: str) -> Account:
    """Lock and read the tenant's account for the rest of the transaction."""
    query = _SELECT_FOR_UPDATE if is_postgres(connection) else _SELECT
    row = connection.execute(query, {"key_tenant_id": tenant_id}).first()
    if row is None:
        raise NotFound(f"tenant '{tenant_id}' was not found")
    return _account(row)


def read(connection: Connection, tenant_id: str) -> Account:
    row = connection.execute(_SELECT, {"key_tenant_id": tenant_id}).first()
    if row is None:
        raise NotFound(f"tenant '{tenant_id}' was not found")
    return _account(row)


@dataclass(frozen=True)
class LedgerLine:
    id: str
    seq: int
    at: datetime
    kind: str
    amount: Decimal
    balance_after: Decimal
    reference: str | None


def save(connection: Connection, before: Account, after: Account) -> Account:
    """Write the changed account fields and run the balance/recharge rules
    (events and recharges are written in this same transaction)."""
    after = account_events.after_change(connection, before, after)
    changes = {
        name: getattr(after, name)
        for name in _FIELDS
        if name != "tenant_id" and getattr(after, name) != getattr(before, name)
    }
    if changes:
        connection.execute(
            _UPDATE, {**changes, "updated_at": now(), "key_tenant_id": before.tenant_id}
        )
    return after


def post(
    connection: Connection,
    account: Account,
    kind: str,
    amount: Decimal,
    reference: str | None,
    *,
    at: datetime | None = None,
) -> tuple[Account, LedgerLine]:
    """Append one balanced posting to the tenant's ledger. ``amount`` is signed
    (tenant side) and already rounded to the currency's minor unit. The caller
    holds the account lock and saves the returned account."""
    entry_posting = posting(kind, amount)
    seq = account.ledger_seq + 1
    balance_after = account.balance + amount
    if abs(balance_after) > MAX_BALANCE:
        raise ValidationFailed(
            f"amount: the balance would pass {MAX_BALANCE}, the largest this service keeps"
        )
    at = at or now()
    line = LedgerLine(
        id=new_id("txn"),
        seq=seq,
        at=at,
        kind=kind,
        amount=amount,
        balance_after=balance_after,
        reference=reference,
    )
    connection.execute(
        _INSERT_LINE,
        {
            "tenant_id": account.tenant_id,
            "seq": seq,
            "id": line.id,
            "at": at,
            "kind": kind,
            "amount": amount,
            "balance_after": balance_after,
            "reference": reference,
        },
    )
    connection.execute(
        _INSERT_ENTRIES,
        [
            {"tenant_id": account.tenant_id, "seq": seq, "account": e.account, "amount": e.amount}
            for e in entry_posting.entries
        ],
    )
    return replace(account, balance=balance_after, ledger_seq=seq), line
