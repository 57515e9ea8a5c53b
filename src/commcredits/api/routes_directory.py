"""Operator and tenant-admin endpoints: tenants, subscriptions, users, licenses, tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select

from commcredits.api import docs_models as docs
from commcredits.api import pagination
from commcredits.api.auth import (
    Principal,
    require_any_tenant_permission,
    require_operator,
    require_permission,
    store_token,
)
from commcredits.api.context import AppContext, Auth, Ctx
from commcredits.api.idempotency import idempotency_key, run_idempotent
from commcredits.api.schemas import (
    SKU,
    ChargingTokenCreate,
    SubscriptionCreate,
    TenantCreate,
    TenantPatch,
    UserCreate,
    UserPatch,
)
from commcredits.core.roles import Permission, may
from commcredits.errors import ValidationFailed
from commcredits.services import audit, directory
from commcredits.store import tables as t
from commcredits.store.db import read_transaction, write_transaction

router = APIRouter(prefix="/v1")

OPERATOR_SCOPE = ""  # idempotency keys of requests that belong to no tenant


def _created(status_and_body: tuple[int, Any]) -> JSONResponse:
    status, body = status_and_body
    return JSONResponse(body, status_code=status)


@router.post(
    "/tenants",
    status_code=201,
    tags=["tenants"],
    summary="Create a tenant",
    responses=docs.body(docs.Tenant, "The tenant", 201),
    openapi_extra=docs.idempotent(),
)
def create_tenant(
    body: TenantCreate, request: Request, ctx: AppContext = Ctx, principal: Principal = Auth
) -> JSONResponse:
    require_operator(principal)
    new = directory.NewTenant(**body.model_dump())

    def action(connection: Any) -> tuple[int, Any]:
        tenant = directory.create_tenant(connection, new)
        audit.record(connection, tenant["id"], principal.actor, "tenant_created", tenant)
        return 201, tenant

    return _created(
        run_idempotent(
            ctx.engine,
            tenant_id=OPERATOR_SCOPE,
            key=idempotency_key(request),
            scope="POST /v1/tenants",
            body=body.model_dump(mode="json"),
            action=action,
        )
    )


@router.get(
    "/tenants/{tenant_id}",
    tags=["tenants"],
    summary="Read a tenant",
    responses=docs.body(docs.Tenant, "The tenant"),
)
def get_tenant(
    tenant_id: str, ctx: AppContext = Ctx, principal: Principal = Auth
) -> dict[str, Any]:
    require_any_tenant_permission(principal, tenant_id)
    with read_transaction(ctx.engine) as connection:
        return directory.tenant_dict(directory.require_tenant(connection, tenant_id))


@router.patch(
    "/tenants/{tenant_id}",
    tags=["tenants"],
    summary="Change a tenant",
    responses=docs.body(docs.Tenant, "The tenant"),
)
def patch_tenant(
    tenant_id: str, body: TenantPatch, ctx: AppContext = Ctx, principal: Principal = Auth
) -> dict[str, Any]:
    require_operator(principal)
    changes = body.model_dump(exclude_unset=True)
    if "currency" in changes:
        raise ValidationFailed(
            "currency: a tenant's currency cannot be changed; its balance and ledger are in it"
        )
    _refuse_nulls(changes)
    with write_transaction(ctx.engine) as connection:
        tenant = directory.patch_tenant(connection, tenant_id, changes)
        audit.record(connection, tenant_id, principal.actor, "tenant_changed", changes)
        return tenant


def _refuse_nulls(changes: dict[str, Any], nullable: tuple[str, ...] = ()) -> None:
    for name, value in changes.items():
        if value is None and name not in nullable:
            raise ValidationFailed(f"{name}: may not be null")


# --- subscriptions ------------------------------------------------------------------


@router.post(
    "/tenants/{tenant_id}/subscriptions",
    status_code=201,
    tags=["licenses"],
    summary="Add seats",
    responses=docs.body(docs.Subscription, "The SKU's subscription with its seats", 201),
    openapi_extra=docs.idempotent(),
)
def add_subscription(
    tenant_id: str,
    body: SubscriptionCreate,
    request: Request,
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> JSONResponse:
    require_operator(principal)

    def action(connection: Any) -> tuple[int, Any]:
        return 201, directory.add_subscription(connection, tenant_id, body.sku, body.quantity)

    return _created(
        run_idempotent(
            ctx.engine,
            tenant_id=tenant_id,
            key=idempotency_key(request),
            scope=f"POST /v1/tenants/{tenant_id}/subscriptions",
            body=body.model_dump(mode="json"),
            action=action,
        )
    )


@router.get(
    "/tenants/{tenant_id}/subscriptions",
    tags=["licenses"],
    summary="List subscriptions",
    responses=docs.body(docs.SubscriptionPage, "A page of subscriptions, one per SKU"),
)
def list_subscriptions(
    tenant_id: str,
    limit: int = Query(pagination.DEFAULT_PAGE_SIZE),
    cursor: str | None = Query(None, max_length=1000),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    _require_users_or_read(principal, tenant_id)
    with read_transaction(ctx.engine) as connection:
        directory.require_tenant(connection, tenant_id)
        query = select(t.subscriptions).where(t.subscriptions.c.tenant_id == tenant_id)
        rows = connection.execute(
            pagination.page(query, [t.subscriptions.c.sku], limit, cursor)
        ).all()
        rows, next_cursor = pagination.split(rows, limit, lambda r: [r.sku])
        items = directory.subscription_items(connection, tenant_id, rows)
    return {"items": items, "next_cursor": next_cursor}


def _require_users_or_read(principal: Principal, tenant_id: str) -> None:
    """Seats are read by those who assign licenses and by the reader roles."""
    if principal.kind == "user" and principal.tenant_id == tenant_id:
        if may(principal.roles, Permission.MANAGE_USERS):
            return
    require_permission(principal, tenant_id, Permission.READ)


# --- users -----------------------------------------------------------------------------


@router.post(
    "/tenants/{tenant_id}/users",
    status_code=201,
    tags=["users"],
    summary="Create a user",
    responses=docs.body(docs.User, "The user", 201),
    openapi_extra=docs.idempotent(),
)
def create_user(
    tenant_id: str,
    body: UserCreate,
    request: Request,
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> JSONResponse:
    require_permission(principal, tenant_id, Permission.MANAGE_USERS)
    fields = directory.UserFields(
        upn=body.upn,
        display_name=body.display_name,
        usage_location=body.usage_location,
        kind=body.kind,
        email=body.email,
        phone_number=body.phone_number,
        roles=list(body.roles),
    )

    def action(connection: Any) -> tuple[int, Any]:
        return 201, directory.create_user(connection, tenant_id, fields, list(body.licenses))

    return _created(
        run_idempotent(
            ctx.engine,
            tenant_id=tenant_id,
            key=idempotency_key(request),
            scope=f"POST /v1/tenants/{tenant_id}/users",
            body=body.model_dump(mode="json"),
            action=action,
        )
    )


@router.get(
    "/tenants/{tenant_id}/users",
    tags=["users"],
    summary="List users",
    responses=docs.body(docs.UserPage, "A page of users"),
)
def list_users(
    tenant_id: str,
    limit: int = Query(pagination.DEFAULT_PAGE_SIZE),
    cursor: str | None = Query(None, max_length=1000),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.MANAGE_USERS)
    with read_transaction(ctx.engine) as connection:
        directory.require_tenant(connection, tenant_id)
        query = select(t.users).where(t.users.c.tenant_id == tenant_id)
        rows = connection.execute(pagination.page(query, [t.users.c.id], limit, cursor)).all()
        rows, next_cursor = pagination.split(rows, limit, lambda r: [r.id])
        licenses = _licenses_by_user(connection, tenant_id, [r.id for r in rows])
        items = [directory.user_dict(connection, r, licenses.get(r.id, [])) for r in rows]
    return {"items": items, "next_cursor": next_cursor}


def _licenses_by_user(connection: Any, tenant_id: str, user_ids: list[str]) -> dict[str, list[str]]:
    if not user_ids:
        return {}
    result: dict[str, list[str]] = {}
    rows = connection.execute(
        select(t.user_licenses.c.user_id, t.user_licenses.c.sku)
        .where(t.user_licenses.c.tenant_id == tenant_id, t.user_licenses.c.user_id.in_(user_ids))
        .order_by(t.user_licenses.c.user_id, t.user_licenses.c.sku)
    ).all()
    for user_id, sku in rows:
        result.setdefault(user_id, []).append(sku)
    return result


@router.get(
    "/tenants/{tenant_id}/users/{user_id}",
    tags=["users"],
    summary="Read a user",
    responses=docs.body(docs.User, "The user"),
)
def get_user(
    tenant_id: str, user_id: str, ctx: AppContext = Ctx, principal: Principal = Auth
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.MANAGE_USERS)
    with read_transaction(ctx.engine) as connection:
        return directory.user_dict(
            connection, directory.require_user(connection, tenant_id, user_id)
        )


@router.patch(
    "/tenants/{tenant_id}/users/{user_id}",
    tags=["users"],
    summary="Change a user",
    responses=docs.body(docs.User, "The user"),
)
def patch_user(
    tenant_id: str,
    user_id: str,
    body: UserPatch,
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.MANAGE_USERS)
    changes = body.model_dump(exclude_unset=True)
    licenses = changes.pop("licenses", None)
    if "licenses" in body.model_fields_set and licenses is None:
        raise ValidationFailed("licenses: may not be null; send [] to remove every license")
    _refuse_nulls(changes, nullable=("email", "phone_number"))
    with write_transaction(ctx.engine) as connection:
        return directory.patch_user(connection, tenant_id, user_id, changes, licenses)


@router.delete(
    "/tenants/{tenant_id}/users/{user_id}", status_code=204, tags=["users"], summary="Delete a user"
)
def delete_user(
    tenant_id: str, user_id: str, ctx: AppContext = Ctx, principal: Principal = Auth
) -> Response:
    require_permission(principal, tenant_id, Permission.MANAGE_USERS)
    with write_transaction(ctx.engine) as connection:
        directory.delete_user(connection, tenant_id, user_id)
    return Response(status_code=204)


@router.put(
    "/tenants/{tenant_id}/users/{user_id}/licenses/{sku}",
    tags=["licenses"],
    summary="Assign a license (idempotent)",
    responses=docs.body(docs.User, "The user, with the license"),
)
def assign_license(
    tenant_id: str, user_id: str, sku: SKU, ctx: AppContext = Ctx, principal: Principal = Auth
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.MANAGE_USERS)
    with write_transaction(ctx.engine) as connection:
        user = directory.require_user(connection, tenant_id, user_id)
        directory.assign_license(connection, tenant_id, user.id, sku)
        return directory.user_dict(connection, user)


@router.delete(
    "/tenants/{tenant_id}/users/{user_id}/licenses/{sku}",
    tags=["licenses"],
    summary="Remove a license",
    responses=docs.body(docs.User, "The user, without the license"),
)
def remove_license(
    tenant_id: str, user_id: str, sku: SKU, ctx: AppContext = Ctx, principal: Principal = Auth
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.MANAGE_USERS)
    with write_transaction(ctx.engine) as connection:
        user = directory.require_user(connection, tenant_id, user_id)
        directory.remove_license(connection, tenant_id, user.id, sku)
        return directory.user_dict(connection, user)


# --- tokens ---------------------------------------------------------------------------------


@router.post(
    "/tenants/{tenant_id}/users/{user_id}/tokens",
    status_code=201,
    tags=["tokens"],
    summary="Mint a token acting as this user",
    responses=docs.body(docs.UserToken, "The token, with that user's roles", 201),
)
def mint_user_token(
    tenant_id: str, user_id: str, ctx: AppContext = Ctx, principal: Principal = Auth
) -> JSONResponse:
    require_operator(principal)
    with write_transaction(ctx.engine) as connection:
        user = directory.require_user(connection, tenant_id, user_id)
        token = store_token(connection, kind="user", tenant_id=tenant_id, user_id=user.id)
        audit.record(
            connection, tenant_id, principal.actor, "user_token_minted", {"user_id": user.id}
        )
    return JSONResponse({"token": token, "kind": "user", "user_id": user.id}, status_code=201)


@router.post(
    "/charging-tokens",
    status_code=201,
    tags=["tokens"],
    summary="Mint a charging token",
    responses=docs.body(docs.ChargingToken, "The voice platform's token", 201),
)
def mint_charging_token(
    body: ChargingTokenCreate | None = None, ctx: AppContext = Ctx, principal: Principal = Auth
) -> JSONResponse:
    require_operator(principal)
    tenant_id = body.tenant_id if body else None
    with write_transaction(ctx.engine) as connection:
        if tenant_id is not None:
            directory.require_tenant(connection, tenant_id)
        token = store_token(connection, kind="charging", tenant_id=tenant_id, user_id=None)
        audit.record(
            connection,
            tenant_id or "",
            principal.actor,
            "charging_token_minted",
            {"tenant_id": tenant_id},
        )
    return JSONResponse(
        {"token": token, "kind": "charging", "tenant_id": tenant_id}, status_code=201
    )
