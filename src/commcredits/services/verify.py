"""`commcredits verify-ledger`: recompute every balance from the ledger entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from commcredits.core.ledger import CREDITS_ACCOUNT
from commcredits.core.money import InvalidMoney, round_to_minor
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
            report.problems += _purchase_problems(connection, tenant_id, lines)
            held = holds.get(tenant_id) or ZERO
            if held != account.reserved:
                report.problems.append(
                    f"{tenant_id}: reserved {account.reserved} but live calls hold {held}"
                )
    return report


FUNDING_KINDS = ("purchase", "auto_recharge")


def _purchase_problems(connection: Connection, tenant_id: str, lines: list[Any]) -> list[str]:
    """Every succeeded purchase has exactly its one ledger line, of its kind and
    amount; a failed or pending one has none."""
    problems: list[str] = []
    by_reference: dict[str, list[Any]] = {}
    for line in lines:
        if line.kind in FUNDING_KINDS and line.reference:
            by_reference.setdefault(line.reference, []).append(line)
    by_seq = {line.seq: line for line in lines}
    purchases = connection.execute(
        select(t.purchases).where(t.purchases.c.tenant_id == tenant_id)
    ).all()
    for purchase in purchases:
        reference = f"{purchase.kind} {purchase.id}"
        posted = by_reference.pop(reference, [])
        name = f"{tenant_id}: {purchase.kind} {purchase.id} ({purchase.status})"
        if purchase.status != "succeeded":
            if posted or purchase.ledger_seq is not None:
                problems.append(f"{name} has a ledger line but moved no money")
            continue
        if len(posted) != 1:
            problems.append(f"{name} has {len(posted)} ledger lines, expected exactly 1")
            continue
        (line,) = posted
        if purchase.ledger_seq != line.seq or by_seq.get(line.seq) is not line:
            problems.append(f"{name} points at line {purchase.ledger_seq}, posted as {line.seq}")
        try:
            expected = round_to_minor(purchase.amount, purchase.currency)
        except InvalidMoney:
            problems.append(f"{name} has an unknown currency {purchase.currency!r}")
            continue
        if line.amount != expected:
            problems.append(f"{name} is for {expected} but its line {line.seq} is {line.amount}")
    for reference, posted in by_reference.items():
        seqs = ", ".join(str(line.seq) for line in posted)
        problems.append(f"{tenant_id}: line(s) {seqs} post {reference}, which is no purchase")
    return problems
