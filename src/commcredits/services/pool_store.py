"""Minute pools in the database: sizes from the licenses held, usage and holds
per (tenant, month, pool, country).

Serialisation: a pool's ``pool_usage`` row is changed only by a transaction
that already holds the tenant's account lock (services/accounts.py), so pool
holds and credit holds of one tenant move together, one writer at a time.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from commcredits.core.catalog import Plans
from commcredits.core.licenses import (
    AUDIO_CONFERENCING,
    CALLING_PLAN_DOMESTIC,
    CALLING_PLAN_INTERNATIONAL,
)
from commcredits.core.pools import LicensedUser, current_month, month_bounds, pool_sizes
from commcredits.services.clock import as_utc, now
from commcredits.store import tables as t

POOL_SKUS = (CALLING_PLAN_DOMESTIC, CALLING_PLAN_INTERNATIONAL, AUDIO_CONFERENCING)
NO_COUNTRY = ""  # the conferencing pool's key in the table (primary keys are not null)


# Pool sizes change only when licenses, usage locations or plans do, but the
# charging path needs one per call: each process keeps them for a moment.
# A change made through this process is seen at once; one made through another
# process within SIZE_CACHE_SECONDS.
SIZE_CACHE_SECONDS = 2.0
SIZE_CACHE_MAX_TENANTS = 10_000
_size_cache: dict[str, tuple[float, int, dict[tuple[str, str], int]]] = {}


def forget_sizes(tenant_id: str) -> None:
    _size_cache.pop(tenant_id, None)


def live_sizes(connection: Connection, tenant_id: str, plans: Plans) -> dict[tuple[str, str], int]:
    """Sizes from the licenses held now: {(pool_kind, country or ""): seconds}."""
    cached = _size_cache.get(tenant_id)
    if cached is not None and cached[1] == id(plans) and cached[0] > time.monotonic():
        return cached[2]
    sizes = _live_sizes(connection, tenant_id, plans)
    if len(_size_cache) >= SIZE_CACHE_MAX_TENANTS:
        _size_cache.clear()
    _size_cache[tenant_id] = (time.monotonic() + SIZE_CACHE_SECONDS, id(plans), sizes)
    return sizes


def _live_sizes(
    connection: Connection, tenant_id: str, plans: Plans, assigned_before: datetime | None = None
) -> dict[tuple[str, str], int]:
    query = (
        select(t.users.c.id, t.users.c.usage_location, t.user_licenses.c.sku)
        .join(
            t.user_licenses,
            (t.user_licenses.c.tenant_id == t.users.c.tenant_id)
            & (t.user_licenses.c.user_id == t.users.c.id),
        )
        .where(t.users.c.tenant_id == tenant_id, t.user_licenses.c.sku.in_(POOL_SKUS))
    )
    if assigned_before is not None:
        query = query.where(t.user_licenses.c.assigned_at < assigned_before)
    rows = connection.execute(query).all()
    by_user: dict[str, tuple[str, set[str]]] = {}
    for user_id, usage_location, sku in rows:
        by_user.setdefault(user_id, (usage_location, set()))[1].add(sku)
    users = [LicensedUser(loc, frozenset(skus)) for loc, skus in by_user.values()]
    return {
        (kind, country or NO_COUNTRY): seconds
        for (kind, country), seconds in pool_sizes(users, plans).items()
    }


def size_of(
    connection: Connection,
    tenant_id: str,
    month: str,
    pool_kind: str,
    country: str,
    plans: Plans,
    timezone: str,
    usage_row: Any | None,
) -> int:
    """A month's size follows the licenses while the month is current and is
    frozen once it has ended (SPEC §2)."""
    if usage_row is not None and usage_row.frozen_size_seconds is not None:
        return int(usage_row.frozen_size_seconds)
    if month < current_month(now(), timezone):
        sizes = past_sizes(connection, tenant_id, month, plans, timezone)
        size = sizes.get((pool_kind, country), 0)
        _freeze(connection, tenant_id, month, pool_kind, country, size, usage_row)
        return size
    return live_sizes(connection, tenant_id, plans).get((pool_kind, country), 0)


def past_sizes(
    connection: Connection, tenant_id: str, month: str, plans: Plans, timezone: str
) -> dict[tuple[str, str], int]:
    """Sizes of a month that has ended, from the licenses assigned before its
    end and still held: none at all before the tenant existed. (A license
    removed since is no longer known; the first read freezes what is.)"""
    _, end = month_bounds(month, timezone)
    created_at = connection.execute(
        select(t.tenants.c.created_at).where(t.tenants.c.id == tenant_id)
    ).scalar_one_or_none()
    if created_at is None or as_utc(created_at) >= end:
        return {}
    return _live_sizes(connection, tenant_id, plans, assigned_before=end)


def _freeze(
    connection: Connection,
    tenant_id: str,
    month: str,
    pool_kind: str,
    country: str,
    size: int,
    usage_row: Any | None,
) -> None:
    if usage_row is None:
        connection.execute(
            insert(t.pool_usage).values(
                tenant_id=tenant_id,
                month=month,
                pool_kind=pool_kind,
                country=country,
                used_seconds=0,
                held_seconds=0,
                frozen_size_seconds=size,
            )
        )
    else:
        connection.execute(
            update(t.pool_usage)
            .where(*_key(tenant_id, month, pool_kind, country))
            .values(frozen_size_seconds=size)
        )


def _key(tenant_id: str, month: str, pool_kind: str, country: str) -> tuple[Any, ...]:
    return (
        t.pool_usage.c.tenant_id == tenant_id,
        t.pool_usage.c.month == month,
        t.pool_usage.c.pool_kind == pool_kind,
        t.pool_usage.c.country == country,
    )


_KEY_PARAMS = (
    t.pool_usage.c.tenant_id == bindparam("key_tenant_id"),
    t.pool_usage.c.month == bindparam("key_month"),
    t.pool_usage.c.pool_kind == bindparam("key_pool_kind"),
    t.pool_usage.c.country == bindparam("key_country"),
)
_USAGE = select(t.pool_usage).where(*_KEY_PARAMS)
_CHANGE = (
    update(t.pool_usage)
    .where(*_KEY_PARAMS)
    .values(
        used_seconds=t.pool_usage.c.used_seconds + bindparam("used_delta"),
        held_seconds=t.pool_usage.c.held_seconds + bindparam("held_delta"),
    )
)


def _params(tenant_id: str, month: str, pool_kind: str, country: str) -> dict[str, Any]:
    return {
        "key_tenant_id": tenant_id,
        "key_month": month,
        "key_pool_kind": pool_kind,
        "key_country": country,
    }


def usage_row(
    connection: Connection, tenant_id: str, month: str, pool_kind: str, country: str
) -> Any | None:
    return connection.execute(_USAGE, _params(tenant_id, month, pool_kind, country)).first()


def remaining(
    connection: Connection,
    tenant_id: str,
    month: str,
    pool_kind: str,
    country: str,
    plans: Plans,
    timezone: str,
) -> int:
    row = usage_row(connection, tenant_id, month, pool_kind, country)
    size = size_of(connection, tenant_id, month, pool_kind, country, plans, timezone, row)
    used = 0 if row is None else int(row.used_seconds) + int(row.held_seconds)
    return max(size - used, 0)


def change(
    connection: Connection,
    tenant_id: str,
    month: str,
    pool_kind: str,
    country: str,
    *,
    used_delta: int = 0,
    held_delta: int = 0,
) -> None:
    """Move seconds between held and used. The caller holds the account lock."""
    if used_delta == 0 and held_delta == 0:
        return
    result = connection.execute(
        _CHANGE,
        {
            **_params(tenant_id, month, pool_kind, country),
            "used_delta": used_delta,
            "held_delta": held_delta,
        },
    )
    if result.rowcount == 0:
        assert used_delta >= 0 and held_delta >= 0, "a pool row exists before it is released"
        connection.execute(
            insert(t.pool_usage).values(
                tenant_id=tenant_id,
                month=month,
                pool_kind=pool_kind,
                country=country,
                used_seconds=used_delta,
                held_seconds=held_delta,
            )
        )


def pools_view(
    connection: Connection, tenant_id: str, month: str, plans: Plans, timezone: str
) -> list[dict[str, Any]]:
    rows = {
        (r.pool_kind, r.country): r
        for r in connection.execute(
            select(t.pool_usage).where(
                t.pool_usage.c.tenant_id == tenant_id, t.pool_usage.c.month == month
            )
        ).all()
    }
    past = month < current_month(now(), timezone)
    if past:
        live = past_sizes(connection, tenant_id, month, plans, timezone)
    else:
        live = live_sizes(connection, tenant_id, plans)
    keys = set(rows) | set(live)
    items = []
    for pool_kind, country in sorted(keys):
        row = rows.get((pool_kind, country))
        if row is not None and row.frozen_size_seconds is not None:
            size = int(row.frozen_size_seconds)
        else:
            size = live.get((pool_kind, country), 0)
            if past:
                _freeze(connection, tenant_id, month, pool_kind, country, size, row)
        used = 0 if row is None else int(row.used_seconds)
        held = 0 if row is None else int(row.held_seconds)
        items.append(
            {
                "pool": pool_kind,
                "country": country or None,
                "month": month,
                "size_seconds": size,
                "used_seconds": used,
                "held_seconds": held,
                "remaining_seconds": max(size - used - held, 0),
            }
        )
    return items


def month_at(instant: datetime, timezone: str) -> str:
    from commcredits.core.pools import month_of

    return month_of(instant, timezone)
