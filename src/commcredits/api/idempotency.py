"""The Idempotency-Key mechanism, built once for every POST that moves money
or starts/ends a call (API.md Conventions).

The key is stored per tenant in the same transaction as the effect it guards,
so the effect and the record of it commit together or not at all:
- SQLite: the transaction is BEGIN IMMEDIATE, so concurrent retries run one
  after the other; the second finds the stored response.
- PostgreSQL: the key row is inserted first; a concurrent retry's insert waits
  on the uncommitted row's unique index entry, then fails with a unique
  violation once the first commits, and answers from the stored response.
A request that fails (4xx) rolls back and leaves no key behind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from commcredits.errors import IdempotencyConflict, ValidationFailed
from commcredits.store import tables as t
from commcredits.store.db import read_transaction, write_transaction

MAX_KEY_LENGTH = 255
IN_PROGRESS_STATUS = 0

Action = Callable[[Connection], tuple[int, Any]]


def request_hash(scope: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{scope}\n{canonical}".encode()).hexdigest()


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters"
        )
    return key


def run_idempotent(
    engine: Engine,
    *,
    tenant_id: str,
    key: str | None,
    scope: str,
    body: Any,
    action: Action,
) -> tuple[int, Any]:
    """Run ``action`` in one write transaction, at most once per (tenant, key)."""
    if key is None:
        with write_transaction(engine) as connection:
            return action(connection)
    digest = request_hash(scope, body)
    try:
        with write_transaction(engine) as connection:
            stored = _stored(connection, tenant_id, key, digest)
            if stored is not None:
                return stored
            connection.execute(
                insert(t.idempotency_keys).values(
                    tenant_id=tenant_id,
                    key=key,
                    scope=scope,
                    request_hash=digest,
                    status_code=IN_PROGRESS_STATUS,
                    response_body="null",
                    created_at=datetime.now(UTC),
                )
            )
            status, response = action(connection)
            remember(connection, tenant_id, key, status, response)
            return status, response
    except IntegrityError:
        # A concurrent request with the same key won the race and committed.
        with read_transaction(engine) as connection:
            stored = _stored(connection, tenant_id, key, digest)
        if stored is None:
            raise
        return stored


def remember(connection: Connection, tenant_id: str, key: str, status: int, response: Any) -> None:
    connection.execute(
        update(t.idempotency_keys)
        .where(t.idempotency_keys.c.tenant_id == tenant_id, t.idempotency_keys.c.key == key)
        .values(status_code=status, response_body=json.dumps(response, default=str))
    )


def _stored(
    connection: Connection, tenant_id: str, key: str, digest: str
) -> tuple[int, Any] | None:
    row = connection.execute(
        select(t.idempotency_keys).where(
            t.idempotency_keys.c.tenant_id == tenant_id, t.idempotency_keys.c.key == key
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != digest:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new request"
        )
    return row.status_code, json.loads(row.response_body)
