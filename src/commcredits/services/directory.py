"""Tenants, subscriptions, users and licenses.

Every function runs inside the caller's write transaction (one per request).
Seats are serialised by locking the subscription row (PostgreSQL) or by the
single writer (SQLite), so two assignments never take the same last seat.

Creations insert with ON CONFLICT DO NOTHING (both databases speak it): on
PostgreSQL two concurrent requests may both find no tenant with that id, or no
user with that UPN, and the check alone would let the second insert fail on
the unique index. The insert that finds the row already there answers as the
check would have (409), and a license already held stays a success.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from commcredits.core.licenses import UNLIMITED_SKUS
from commcredits.errors import Conflict, NoSeatsAvailable, NotFound, UpnTaken, ValidationFailed
from commcredits.services.clock import now
from commcredits.services.ids import new_id
from commcredits.services.pool_store import forget_sizes
from commcredits.store import tables as t
from commcredits.store.db import is_postgres

ZERO = Decimal("0")
# Seats are an INTEGER column; far below its 2**31 - 1 so a sum never overflows it.
MAX_SUBSCRIPTION_SEATS = 1_000_000_000


@dataclass(frozen=True)
class NewTenant:
    id: str | None
    name: str
    country: str
    billing_country: str
    agreement: str
    currency: str
    timezone: str


def create_tenant(connection: Connection, new: NewTenant) -> dict[str, Any]:
    tenant_id = new.id or new_id("t")
    at = now()
    created = connection.execute(
        _insert_new(connection, t.tenants).values(
            id=tenant_id,
            name=new.name,
            country=new.country,
            billing_country=new.billing_country,
            agreement=new.agreement,
            currency=new.currency,
            timezone=new.timezone,
            purchase_override=False,
            created_at=at,
            updated_at=at,
        )
    )
    if not created.rowcount:
        raise Conflict(f"a tenant with id '{tenant_id}' already exists")
    # The account exists from the start: it is the row every money movement locks.
    connection.execute(
        insert(t.credits_accounts).values(
            tenant_id=tenant_id,
            currency=new.currency,
            balance=ZERO,
            reserved=ZERO,
            ledger_seq=0,
            auto_recharge_enabled=False,
            recharge_armed=True,
            depleted_armed=True,
            low_armed=True,
            updated_at=at,
        )
    )
    return tenant_dict(require_tenant(connection, tenant_id))


_TENANT = select(t.tenants).where(t.tenants.c.id == bindparam("key_id"))
_USER_BY_ID = select(t.users).where(
    t.users.c.tenant_id == bindparam("key_tenant_id"), t.users.c.id == bindparam("key_ref")
)
_USER_BY_UPN = select(t.users).where(
    t.users.c.tenant_id == bindparam("key_tenant_id"), t.users.c.upn_key == bindparam("key_ref")
)
_LICENSES = (
    select(t.user_licenses.c.sku)
    .where(
        t.user_licenses.c.tenant_id == bindparam("key_tenant_id"),
        t.user_licenses.c.user_id == bindparam("key_user_id"),
    )
    .order_by(t.user_licenses.c.sku)
)


def get_tenant_row(connection: Connection, tenant_id: str) -> Any:
    return connection.execute(_TENANT, {"key_id": tenant_id}).first()


def require_tenant(connection: Connection, tenant_id: str) -> Any:
    row = get_tenant_row(connection, tenant_id)
    if row is None:
        raise NotFound(f"tenant '{tenant_id}' was not found")
    return row


def tenant_dict(row: Any) -> dict[str, Any]:
    from commcredits.services.clock import rfc3339

    return {
        "id": row.id,
        "name": row.name,
        "country": row.country,
        "billing_country": row.billing_country,
        "agreement": row.agreement,
        "currency": row.currency,
        "timezone": row.timezone,
        "purchase_override": row.purchase_override,
        "created_at": rfc3339(row.created_at),
    }


def patch_tenant(connection: Connection, tenant_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    require_tenant(connection, tenant_id)
    if changes:
        connection.execute(
            update(t.tenants).where(t.tenants.c.id == tenant_id).values(**changes, updated_at=now())
        )
    return tenant_dict(require_tenant(connection, tenant_id))


# --- subscriptions -----------------------------------------------------------------


def add_subscription(
    connection: Connection, tenant_id: str, sku: str, quantity: int
) -> dict[str, Any]:
    """A purchase of seats adds to the tenant's subscription for that SKU."""
    require_tenant(connection, tenant_id)
    at = now()
    row = _lock_subscription(connection, tenant_id, sku)
    if row is None:
        created = connection.execute(
            _insert_new(connection, t.subscriptions).values(
                tenant_id=tenant_id, sku=sku, quantity=quantity, created_at=at, updated_at=at
            )
        )
        if created.rowcount:
            return _subscription_item(connection, tenant_id, sku)
        # A concurrent first purchase of this SKU committed the row first.
        row = _lock_subscription(connection, tenant_id, sku)
    if row.quantity + quantity > MAX_SUBSCRIPTION_SEATS:
        raise ValidationFailed(
            f"quantity: the subscription would hold more than {MAX_SUBSCRIPTION_SEATS} seats"
        )
    connection.execute(
        update(t.subscriptions)
        .where(t.subscriptions.c.tenant_id == tenant_id, t.subscriptions.c.sku == sku)
        .values(quantity=t.subscriptions.c.quantity + quantity, updated_at=at)
    )
    return _subscription_item(connection, tenant_id, sku)


def _subscription_item(connection: Connection, tenant_id: str, sku: str) -> dict[str, Any]:
    row = connection.execute(
        select(t.subscriptions).where(
            t.subscriptions.c.tenant_id == tenant_id, t.subscriptions.c.sku == sku
        )
    ).one()
    return subscription_items(connection, tenant_id, [row])[0]


def list_subscriptions(connection: Connection, tenant_id: str) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(t.subscriptions)
        .where(t.subscriptions.c.tenant_id == tenant_id)
        .order_by(t.subscriptions.c.sku)
    ).all()
    return subscription_items(connection, tenant_id, rows)


def subscription_items(
    connection: Connection, tenant_id: str, rows: Sequence[Any]
) -> list[dict[str, Any]]:
    """Subscription rows with their assigned and available seats."""
    if not rows:
        return []
    assigned: dict[str, int] = dict(
        connection.execute(
            select(t.user_licenses.c.sku, func.count())
            .where(
                t.user_licenses.c.tenant_id == tenant_id,
                t.user_licenses.c.sku.in_([row.sku for row in rows]),
            )
            .group_by(t.user_licenses.c.sku)
        ).all()
    )
    items = []
    for row in rows:
        used = int(assigned.get(row.sku, 0))
        unlimited = row.sku in UNLIMITED_SKUS
        items.append(
            {
                "sku": row.sku,
                "quantity": None if unlimited else row.quantity,
                "assigned": used,
                "available": None if unlimited else max(row.quantity - used, 0),
                "unlimited": unlimited,
            }
        )
    return items


def _lock_subscription(connection: Connection, tenant_id: str, sku: str) -> Any:
    query = select(t.subscriptions).where(
        t.subscriptions.c.tenant_id == tenant_id, t.subscriptions.c.sku == sku
    )
    if is_postgres(connection):
        query = query.with_for_update()
    return connection.execute(query).first()


# --- users ------------------------------------------------------------------------


@dataclass(frozen=True)
class UserFields:
    upn: str
    display_name: str
    usage_location: str
    kind: str
    email: str | None
    phone_number: str | None
    roles: list[str]


def create_user(
    connection: Connection, tenant_id: str, fields: UserFields, licenses: list[str]
) -> dict[str, Any]:
    require_tenant(connection, tenant_id)
    _check_upn_free(connection, tenant_id, fields.upn, except_user=None)
    user_id = new_id("u")
    at = now()
    created = connection.execute(
        _insert_new(connection, t.users).values(
            tenant_id=tenant_id,
            id=user_id,
            upn=fields.upn,
            upn_key=fields.upn.lower(),
            display_name=fields.display_name,
            usage_location=fields.usage_location,
            kind=fields.kind,
            email=fields.email,
            phone_number=fields.phone_number,
            roles=sorted(set(fields.roles)),
            created_at=at,
            updated_at=at,
        )
    )
    if not created.rowcount:  # a concurrent request created that UPN after our check
        raise _upn_taken(fields.upn)
    # Sorted, as patch_user does: subscription rows are locked in one order.
    for sku in sorted(set(licenses)):
        assign_license(connection, tenant_id, user_id, sku)
    return user_dict(connection, require_user(connection, tenant_id, user_id))


def _check_upn_free(
    connection: Connection, tenant_id: str, upn: str, except_user: str | None
) -> None:
    row = connection.execute(
        select(t.users.c.id).where(
            t.users.c.tenant_id == tenant_id, t.users.c.upn_key == upn.lower()
        )
    ).first()
    if row is not None and row.id != except_user:
        raise _upn_taken(upn)


def _upn_taken(upn: str) -> UpnTaken:
    return UpnTaken(f"a user with upn '{upn}' already exists in this tenant")


def find_user(connection: Connection, tenant_id: str, user_ref: str) -> Any:
    """A user by id, or by upn (the voice platform may only know the upn)."""
    params = {"key_tenant_id": tenant_id, "key_ref": user_ref}
    row = None
    if "@" not in user_ref:  # ids never hold '@'; UPNs always do
        row = connection.execute(_USER_BY_ID, params).first()
    if row is None:
        params["key_ref"] = user_ref.lower()
        row = connection.execute(_USER_BY_UPN, params).first()
    return row


def require_user(connection: Connection, tenant_id: str, user_ref: str) -> Any:
    row = find_user(connection, tenant_id, user_ref)
    if row is None:
        raise NotFound(f"user '{user_ref}' was not found in tenant '{tenant_id}'")
    return row


def licenses_of(connection: Connection, tenant_id: str, user_id: str) -> list[str]:
    return list(
        connection.execute(
            _LICENSES, {"key_tenant_id": tenant_id, "key_user_id": user_id}
        ).scalars()
    )


def user_dict(
    connection: Connection, row: Any, licenses: list[str] | None = None
) -> dict[str, Any]:
    from commcredits.services.clock import rfc3339

    return {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "upn": row.upn,
        "display_name": row.display_name,
        "usage_location": row.usage_location,
        "kind": row.kind,
        "email": row.email,
        "phone_number": row.phone_number,
        "roles": list(row.roles),
        "licenses": licenses
        if licenses is not None
        else licenses_of(connection, row.tenant_id, row.id),
        "created_at": rfc3339(row.created_at),
    }


def patch_user(
    connection: Connection,
    tenant_id: str,
    user_ref: str,
    changes: dict[str, Any],
    licenses: list[str] | None,
) -> dict[str, Any]:
    row = require_user(connection, tenant_id, user_ref)
    values = dict(changes)
    if "upn" in values:
        _check_upn_free(connection, tenant_id, values["upn"], except_user=row.id)
        values["upn_key"] = values["upn"].lower()
    if "roles" in values:
        values["roles"] = sorted(set(values["roles"]))
    if values:
        try:
            connection.execute(
                update(t.users)
                .where(t.users.c.tenant_id == tenant_id, t.users.c.id == row.id)
                .values(**values, updated_at=now())
            )
        except IntegrityError as exc:
            # Another user took this UPN after our check; the transaction rolls back.
            if "upn" not in values:
                raise
            raise _upn_taken(values["upn"]) from exc
    forget_sizes(tenant_id)
    if licenses is not None:
        held = set(licenses_of(connection, tenant_id, row.id))
        wanted = set(licenses)
        for sku in sorted(held - wanted):
            remove_license(connection, tenant_id, row.id, sku)
        for sku in sorted(wanted - held):
            assign_license(connection, tenant_id, row.id, sku)
    return user_dict(connection, require_user(connection, tenant_id, row.id))


def delete_user(connection: Connection, tenant_id: str, user_ref: str) -> None:
    row = require_user(connection, tenant_id, user_ref)
    connection.execute(
        delete(t.user_licenses).where(
            t.user_licenses.c.tenant_id == tenant_id, t.user_licenses.c.user_id == row.id
        )
    )
    connection.execute(
        delete(t.api_tokens).where(
            and_(t.api_tokens.c.tenant_id == tenant_id, t.api_tokens.c.user_id == row.id)
        )
    )
    connection.execute(
        delete(t.users).where(t.users.c.tenant_id == tenant_id, t.users.c.id == row.id)
    )
    forget_sizes(tenant_id)


def assign_license(connection: Connection, tenant_id: str, user_id: str, sku: str) -> bool:
    """Idempotent: assigning a license the user holds changes nothing (returns False).

    The subscription row is locked before the user's licenses are read, so a
    concurrent identical assignment is seen once it commits: it is the user's
    license already, not a taken seat."""
    counted = sku not in UNLIMITED_SKUS
    subscription = _lock_subscription(connection, tenant_id, sku) if counted else None
    held = connection.execute(
        select(t.user_licenses.c.sku).where(
            t.user_licenses.c.tenant_id == tenant_id,
            t.user_licenses.c.user_id == user_id,
            t.user_licenses.c.sku == sku,
        )
    ).first()
    if held is not None:
        return False
    if counted:
        quantity = 0 if subscription is None else subscription.quantity
        assigned = connection.execute(
            select(func.count()).where(
                t.user_licenses.c.tenant_id == tenant_id, t.user_licenses.c.sku == sku
            )
        ).scalar_one()
        if assigned >= quantity:
            raise NoSeatsAvailable(
                f"no seat of '{sku}' is free ({assigned} of {quantity} assigned); "
                "add a subscription or remove the license from another user",
                sku=sku,
            )
    # Unlimited SKUs take no lock: two identical assignments may both get here.
    inserted = connection.execute(
        _insert_new(connection, t.user_licenses).values(
            tenant_id=tenant_id, user_id=user_id, sku=sku, assigned_at=now()
        )
    )
    if not inserted.rowcount:
        return False
    forget_sizes(tenant_id)
    return True


def remove_license(connection: Connection, tenant_id: str, user_id: str, sku: str) -> bool:
    result = connection.execute(
        delete(t.user_licenses).where(
            t.user_licenses.c.tenant_id == tenant_id,
            t.user_licenses.c.user_id == user_id,
            t.user_licenses.c.sku == sku,
        )
    )
    forget_sizes(tenant_id)
    return bool(result.rowcount)


def _insert_new(connection: Connection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: rowcount 0 when a unique key is taken
    (SQLAlchemy reports an INSERT's rowcount only when asked to keep it)."""
    dialect = postgresql if is_postgres(connection) else sqlite
    return dialect.insert(table).on_conflict_do_nothing().execution_options(preserve_rowcount=True)
