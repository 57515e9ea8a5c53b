"""`commcredits verify-ledger`: recompute every balance from the ledger entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Engine, func, select

from commcredits.core.ledger import CREDITS_ACCOUNT
from commcredits.store import tables as t
from commcredits.store.db import read_transaction

ZERO = Decimal(0)


@dataclass
class LedgerReport:
    tenants_checked: int = 0
    transactions_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_ledger(engine: Engine) -> LedgerReport:
    """One read transaction (a consistent snapshot on PostgreSQL; WAL snapshot on SQLite)."""
    report = LedgerReport()
    with read_transaction(engine) as connection:
        entry_totals = dict(
            connection.execute(
                select(t.ledger_entries.c.tenant_id, func.sum(t.ledger_entries.c.amount))
                .where(t.ledger_entries.c.account == CREDITS_ACCOUNT)
                .group_by(t.ledger_entries.c.tenant_id)
            ).all()
        )
        unbalanced = connection.execute(
            select(t.ledger_entries.c.tenant_id, t.ledger_entries.c.seq)
            .group_by(t.ledger_entries.c.tenant_id, t.ledger_entries.c.seq)
            .having(func.sum(t.ledger_entries.c.amount) != 0)
        ).all()
        for tenant_id, seq in unbalanced:
            report.problems.append(f"{tenant_id}: posting {seq} does not balance")
        holds = dict(
            connection.execute(
                select(t.calls.c.tenant_id, func.sum(t.calls.c.hold_amount))
                .where(t.calls.c.state == "active")
                .group_by(t.calls.c.tenant_id)
            ).all()
        )
        for account in connection.execute(select(t.credits_accounts)).all():
            report.tenants_checked += 1
            tenant_id = account.tenant_id
            from_entries = entry_totals.get(tenant_id) or ZERO
            if from_entries != account.balance:
                report.problems.append(
                    f"{tenant_id}: balance {account.balance} but its entries sum to {from_entries}"
                )
            running = ZERO
            expected_seq = 0
            lines = connection.execute(
                select(t.ledger_transactions)
                .where(t.ledger_transactions.c.tenant_id == tenant_id)
                .order_by(t.ledger_transactions.c.seq)
            ).all()
            credits_entries = dict(
                connection.execute(
                    select(t.ledger_entries.c.seq, t.ledger_entries.c.amount).where(
                        t.ledger_entries.c.tenant_id == tenant_id,
                        t.ledger_entries.c.account == CREDITS_ACCOUNT,
                    )
                ).all()
            )
            for line in lines:
                report.transactions_checked += 1
                expected_seq += 1
                if line.seq != expected_seq:
                    report.problems.append(f"{tenant_id}: ledger line {expected_seq} is missing")
                    expected_seq = line.seq
                running += line.amount
                if running != line.balance_after:
                    report.problems.append(
                        f"{tenant_id}: line {line.seq} says balance {line.balance_after}, "
                        f"the lines before it add up to {running}"
                    )
                if credits_entries.get(line.seq) != line.amount:
                    report.problems.append(
                        f"{tenant_id}: line {line.seq} amount differs from its credits entry"
                    )
            if expected_seq != account.ledger_seq:
                report.problems.append(
                    f"{tenant_id}: account says {account.ledger_seq} lines, found {expected_seq}"
                )
            held = holds.get(tenant_id) or ZERO
            if held != account.reserved:
                report.problems.append(
                    f"{tenant_id}: reserved {account.reserved} but live calls hold {held}"
                )
    return report
