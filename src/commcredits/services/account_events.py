"""What a change of a credits account sets off, decided in the transaction of
the change: balance mails (outbox) and the auto-recharge state machine.

- ``balance_depleted`` / ``balance_low`` follow the posted balance, not holds
  (SPEC §4): each fires once per crossing and re-arms above the line.
- Auto-recharge follows ``available`` (holds count, SPEC §2): when it falls
  below the threshold while armed and no recharge is in flight, a pending
  ``auto_recharge`` purchase is written and the machine disarms. The recharge
  runner resolves the purchase outside this transaction. The machine re-arms
  once ``available`` is back at or above the threshold with nothing in flight.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy import Connection, insert, select

from commcredits.core.eligibility import eligibility
from commcredits.core.money import format_amount
from commcredits.services import outbox
from commcredits.services.clock import now
from commcredits.services.ids import new_id
from commcredits.store import tables as t
from commcredits.store.db import after_commit

if TYPE_CHECKING:
    from commcredits.services.accounts import Account

recharge_wakeup = threading.Event()


def after_change(connection: Connection, before: Account, after: Account) -> Account:
    if after.balance != before.balance:
        after = _balance_lines(connection, after)
    return _recharge(connection, after)


def _balance_lines(connection: Connection, account: Account) -> Account:
    currency = account.currency
    depleted_fired = False
    if account.balance <= 0 and account.depleted_armed:
        outbox.emit(
            connection,
            account.tenant_id,
            "balance_depleted",
            {"balance": format_amount(account.balance, currency), "currency": currency},
        )
        account = replace(account, depleted_armed=False)
        depleted_fired = True
    elif account.balance > 0 and not account.depleted_armed:
        account = replace(account, depleted_armed=True)

    threshold = account.auto_recharge_threshold
    if threshold is not None and not account.auto_recharge_enabled:
        if account.balance < threshold and account.low_armed:
            if not depleted_fired:  # the stronger message says it already
                outbox.emit(
                    connection,
                    account.tenant_id,
                    "balance_low",
                    {
                        "balance": format_amount(account.balance, currency),
                        "threshold": format_amount(threshold, currency),
                        "currency": currency,
                    },
                )
            account = replace(account, low_armed=False)
        elif account.balance >= threshold and not account.low_armed:
            account = replace(account, low_armed=True)
    return account


def _recharge(connection: Connection, account: Account) -> Account:
    threshold = account.auto_recharge_threshold
    configured = (
        account.auto_recharge_enabled
        and threshold is not None
        and account.auto_recharge_amount is not None
        and account.auto_recharge_payment_method_id is not None
    )
    if not configured or threshold is None:
        return account
    if account.available >= threshold:
        if not account.recharge_armed and account.recharge_purchase_id is None:
            return replace(account, recharge_armed=True)
        return account
    if not account.recharge_armed or account.recharge_purchase_id is not None:
        return account
    tenant = connection.execute(
        select(
            t.tenants.c.agreement,
            t.tenants.c.country,
            t.tenants.c.billing_country,
            t.tenants.c.purchase_override,
        ).where(t.tenants.c.id == account.tenant_id)
    ).one()
    if not eligibility(
        tenant.agreement, tenant.country, tenant.billing_country, tenant.purchase_override
    ).can_purchase:
        return account
    assert account.auto_recharge_amount is not None
    assert account.auto_recharge_payment_method_id is not None
    purchase_id = new_id("pur")
    connection.execute(
        insert(t.purchases).values(
            tenant_id=account.tenant_id,
            id=purchase_id,
            kind="auto_recharge",
            amount=account.auto_recharge_amount,
            currency=account.currency,
            payment_method_id=account.auto_recharge_payment_method_id,
            status="pending",
            attempts=0,
            actor="auto_recharge",
            created_at=now(),
        )
    )
    after_commit(connection, recharge_wakeup.set)
    return replace(account, recharge_armed=False, recharge_purchase_id=purchase_id)
