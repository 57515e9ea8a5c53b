"""The durable outbox: events are written in the transaction of the change that
caused them, with one delivery row per recipient resolved at that moment."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from sqlalchemy import Connection, insert, select

from commcredits.core.roles import NOTIFIED_ROLES
from commcredits.services.clock import now
from commcredits.services.ids import new_id
from commcredits.store import tables as t
from commcredits.store.db import after_commit

EVENTS = ("recharge_succeeded", "recharge_failed", "balance_depleted", "balance_low")

# Set after an event is written so the mail worker looks sooner than its next poll.
mail_wakeup = threading.Event()


def recipients(connection: Connection, tenant_id: str) -> list[str]:
    """Every user holding a notified role (SPEC §6): their email, else their upn."""
    rows = connection.execute(
        select(t.users.c.email, t.users.c.upn, t.users.c.roles).where(
            t.users.c.tenant_id == tenant_id
        )
    ).all()
    addresses: dict[str, str] = {}
    for row in rows:
        if set(row.roles) & NOTIFIED_ROLES:
            address = row.email or row.upn
            addresses.setdefault(address.lower(), address)
    return sorted(addresses.values())


def message_id(event_id: str, recipient: str) -> str:
    digest = hashlib.sha256(recipient.lower().encode()).hexdigest()[:16]
    return f"<{event_id}.{digest}@commcredits>"


def emit(connection: Connection, tenant_id: str, event: str, payload: dict[str, Any]) -> str:
    assert event in EVENTS, event
    event_id = new_id("evt")
    at = now()
    connection.execute(
        insert(t.outbox_events).values(
            tenant_id=tenant_id,
            id=event_id,
            event=event,
            payload=json.loads(json.dumps(payload, default=str)),
            created_at=at,
        )
    )
    rows = [
        {
            "tenant_id": tenant_id,
            "event_id": event_id,
            "recipient": address,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": at,
            "message_id": message_id(event_id, address),
        }
        for address in recipients(connection, tenant_id)
    ]
    if rows:
        connection.execute(insert(t.deliveries), rows)
    after_commit(connection, mail_wakeup.set)
    return event_id
