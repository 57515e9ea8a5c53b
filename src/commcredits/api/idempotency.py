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

A request whose effect needs a slow outside call first (storing a card with
the payment provider) cannot hold the write transaction over that call, so
``run_claimed`` claims the key in a short transaction of its own, makes the
call, then stores the effect and the response together; a failed call gives
the claim back.

Only a digest of the request is stored, and the caller chooses what goes into
it: a request carrying a secret (a card number) passes a body with the secret
replaced by what may be kept of it, so no stored value depends on the secret.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from fastapi import Request
from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from commcredits.errors import IdempotencyConflict, NotFound, ValidationFailed
from commcredits.store import tables as t
from commcredits.store.db import read_transaction, write_transaction

MAX_KEY_LENGTH = 255
IN_PROGRESS_STATUS = 0
# A claim older than this belongs to a request that died mid-way (the outside
# call has its own, shorter timeout); a retry may take it over.
CLAIM_LEASE = timedelta(minutes=5)

Action = Callable[[Connection], tuple[int, Any]]
T = TypeVar("T")


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
    require_storable_tenant(tenant_id)
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


def require_storable_tenant(tenant_id: str) -> None:
    """A tenant id longer than the id column names no tenant: say so (404), rather
    than fail to store the key beside it."""
    if len(tenant_id) > t.ID:
        raise NotFound(f"tenant '{tenant_id[: t.ID]}...' was not found")


def run_claimed(
    engine: Engine,
    *,
    tenant_id: str,
    key: str | None,
    scope: str,
    body: Any,
    outside: Callable[[], T],
    action: Callable[[Connection, T], tuple[int, Any]],
) -> tuple[int, Any]:
    """Like ``run_idempotent`` for an effect that needs ``outside()`` (a provider
    call, no transaction open) first: the key is checked and claimed before
    ``outside`` runs, so a replay or a conflicting body never reaches it."""
    if key is None:
        value = outside()
        with write_transaction(engine) as connection:
            return action(connection, value)
    require_storable_tenant(tenant_id)
    digest = request_hash(scope, body)
    claimed_at, stored = _claim(engine, tenant_id, key, scope, digest)
    if stored is not None:
        return stored
    try:
        value = outside()
        with write_transaction(engine) as connection:
            status, response = action(connection, value)
            remember(connection, tenant_id, key, status, response)
            return status, response
    except BaseException:
        _release(engine, tenant_id, key, claimed_at)
        raise


def _claim(
    engine: Engine, tenant_id: str, key: str, scope: str, digest: str
) -> tuple[datetime, tuple[int, Any] | None]:
    """Commit an in-progress row for the key; or the stored response of a finished one."""
    at = datetime.now(UTC)
    keys = t.idempotency_keys
    try:
        with write_transaction(engine) as connection:
            row = connection.execute(
                select(keys).where(keys.c.tenant_id == tenant_id, keys.c.key == key)
            ).first()
            if row is None:
                connection.execute(
                    insert(keys).values(
                        tenant_id=tenant_id,
                        key=key,
                        scope=scope,
                        request_hash=digest,
                        status_code=IN_PROGRESS_STATUS,
                        response_body="null",
                        created_at=at,
                    )
                )
                return at, None
            stored = _answer(row, digest)
            if stored is not None:
                return at, stored
            if _aware(row.created_at) + CLAIM_LEASE > at:
                raise _in_progress()
            # The request that claimed it died: this one takes the claim over.
            connection.execute(
                update(keys)
                .where(
                    keys.c.tenant_id == tenant_id,
                    keys.c.key == key,
                    keys.c.status_code == IN_PROGRESS_STATUS,
                )
                .values(created_at=at)
            )
            return at, None
    except IntegrityError:
        # A concurrent request inserted the key first.
        with read_transaction(engine) as connection:
            row = connection.execute(
                select(keys).where(keys.c.tenant_id == tenant_id, keys.c.key == key)
            ).first()
        stored = None if row is None else _answer(row, digest)
        if stored is None:
            raise _in_progress() from None
        return at, stored


def _release(engine: Engine, tenant_id: str, key: str, claimed_at: datetime) -> None:
    keys = t.idempotency_keys
    with write_transaction(engine) as connection:
        connection.execute(
            delete(keys).where(
                keys.c.tenant_id == tenant_id,
                keys.c.key == key,
                keys.c.status_code == IN_PROGRESS_STATUS,
                keys.c.created_at == claimed_at,
            )
        )


def _in_progress() -> IdempotencyConflict:
    return IdempotencyConflict(
        "a request with this Idempotency-Key is still being processed; "
        "retry in a moment with the same key"
    )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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
    stored = _answer(row, digest)
    if stored is None:
        raise _in_progress()
    return stored


def _answer(row: Any, digest: str) -> tuple[int, Any] | None:
    """The stored response of a finished request; None while it is in progress."""
    if row.request_hash != digest:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new request"
        )
    if row.status_code == IN_PROGRESS_STATUS:
        return None
    return row.status_code, json.loads(row.response_body)
