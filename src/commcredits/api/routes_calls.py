"""Charging endpoints for the voice platform: online calls and offline records;
and the tenant's pools and overage for its admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator, Field

from commcredits.api import docs_models as docs
from commcredits.api.auth import Principal, require_charging, require_permission
from commcredits.api.context import AppContext, Auth, Ctx, on_database
from commcredits.api.idempotency import idempotency_key, run_idempotent
from commcredits.api.schemas import Body
from commcredits.core.pools import InvalidMonth, current_month, month_bounds
from commcredits.core.roles import Permission
from commcredits.errors import NotFound, ValidationFailed
from commcredits.services import calls, cdrs, directory, pool_store
from commcredits.services.clock import now
from commcredits.store.db import read_transaction, write_transaction

router = APIRouter(prefix="/v1", tags=["charging"])

CALL_TYPE = Literal["user_out", "conf_out", "tollfree_in", "user_in"]
MAX_CALL_SECONDS = 7 * 24 * 3600
CallId = Annotated[str, Field(min_length=1, max_length=128)]
Number = Annotated[str, Field(min_length=1, max_length=32)]


# RFC 3339 strings arrive as JSON strings: parse them (lax) though the body is strict.
def _rfc3339_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time string, e.g. '2026-03-01T03:00:00Z'")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339_text), Field(strict=False)]


class CallStart(Body):
    call_id: CallId
    tenant_id: Annotated[str, Field(min_length=1, max_length=64)]
    call_type: CALL_TYPE
    user_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    from_: Number | None = Field(None, alias="from")
    to: Number
    started_at: Timestamp | None = None


class CallUpdate(Body):
    used_seconds: Annotated[int, Field(ge=0, le=MAX_CALL_SECONDS)]
    tenant_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class CallEnd(Body):
    duration_seconds: Annotated[int, Field(ge=0, le=MAX_CALL_SECONDS)]
    tenant_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class CdrRecord(Body):
    call_id: CallId
    tenant_id: Annotated[str, Field(min_length=1, max_length=64)]
    call_type: CALL_TYPE
    user_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    from_: Number | None = Field(None, alias="from")
    to: Number
    started_at: Timestamp
    duration_seconds: Annotated[int, Field(ge=0, le=MAX_CALL_SECONDS)]


class CdrBatch(Body):
    records: Annotated[list[Any], Field(max_length=10_000)]


def _check_started_at(started_at: datetime | None) -> None:
    if started_at is not None and started_at.tzinfo is None:
        raise ValidationFailed("started_at: give an RFC 3339 time with an offset, e.g. ...Z")


# The charging endpoints are the hot path: `async def` with their database
# work placed by `on_database` (inline on SQLite, thread pool on PostgreSQL).


@router.post(
    "/calls",
    status_code=201,
    summary="Start a call: decide, hold, grant",
    responses=docs.body(docs.CallStarted, "The decision (a denied call is answered 201 too)", 201),
    openapi_extra=docs.idempotent(),
)
async def start_call(
    body: CallStart, request: Request, ctx: AppContext = Ctx, principal: Principal = Auth
) -> JSONResponse:
    return await on_database(ctx, _start_call, body, request, ctx, principal)


def _start_call(
    body: CallStart, request: Request, ctx: AppContext, principal: Principal
) -> JSONResponse:
    require_charging(principal, body.tenant_id)
    _check_started_at(body.started_at)
    call = calls.CallRequest(
        call_id=body.call_id,
        tenant_id=body.tenant_id,
        call_type=body.call_type,
        user_ref=body.user_id,
        from_number=body.from_,
        to_number=body.to,
        started_at=body.started_at,
    )
    index, plans = ctx.catalog.current()
    prepared = calls.prepare_start(ctx.engine, call, index, plans)
    if isinstance(prepared, dict):
        return JSONResponse(prepared, status_code=201)
    grant = ctx.settings.grant_seconds
    _, result = run_idempotent(
        ctx.engine,
        tenant_id=body.tenant_id,
        key=idempotency_key(request),
        scope="POST /v1/calls",
        body=body.model_dump(mode="json", by_alias=True),
        action=lambda connection: (201, calls.start_in(connection, prepared, plans, grant)),
    )
    return JSONResponse(result, status_code=201)


def _tenant_of_call(ctx: AppContext, principal: Principal, call_id: str, hint: str | None) -> str:
    scoped = principal.tenant_id if principal.kind == "charging" else None
    if scoped is not None and hint is not None and hint != scoped:
        raise NotFound(f"call '{call_id}' was not found")
    if scoped or hint:
        # Known tenant: the call is looked up in the write transaction itself
        # (404 there if it does not exist), saving a round trip.
        return str(scoped or hint)
    tenant_id = calls.locate(ctx.engine, call_id, None)
    require_charging(principal, tenant_id)
    return tenant_id


@router.post(
    "/calls/{call_id}/update",
    summary="Report progress; extend the grant or terminate",
    responses=docs.body(docs.CallUpdated, "Continue or terminate, with the grant"),
    openapi_extra=docs.idempotent(),
)
async def update_call(
    call_id: str,
    body: CallUpdate,
    request: Request,
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> JSONResponse:
    return await on_database(ctx, _update_call, call_id, body, request, ctx, principal)


def _update_call(
    call_id: str, body: CallUpdate, request: Request, ctx: AppContext, principal: Principal
) -> JSONResponse:
    require_charging(principal)
    tenant_id = _tenant_of_call(ctx, principal, call_id, body.tenant_id)
    _, plans = ctx.catalog.current()
    grant = ctx.settings.grant_seconds
    _, result = run_idempotent(
        ctx.engine,
        tenant_id=tenant_id,
        key=idempotency_key(request),
        scope=f"POST /v1/calls/{call_id}/update",
        body=body.model_dump(mode="json"),
        action=lambda connection: (
            200,
            calls.update_in(connection, tenant_id, call_id, body.used_seconds, plans, grant),
        ),
    )
    return JSONResponse(result)


@router.post(
    "/calls/{call_id}/end",
    summary="End a call: post the exact charge",
    responses=docs.body(docs.CallEnded, "The charge posted; ending twice answers the same"),
    openapi_extra=docs.idempotent(),
)
async def end_call(
    call_id: str,
    body: CallEnd,
    request: Request,
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> JSONResponse:
    return await on_database(ctx, _end_call, call_id, body, request, ctx, principal)


def _end_call(
    call_id: str, body: CallEnd, request: Request, ctx: AppContext, principal: Principal
) -> JSONResponse:
    require_charging(principal)
    tenant_id = _tenant_of_call(ctx, principal, call_id, body.tenant_id)
    _, result = run_idempotent(
        ctx.engine,
        tenant_id=tenant_id,
        key=idempotency_key(request),
        scope=f"POST /v1/calls/{call_id}/end",
        body=body.model_dump(mode="json"),
        action=lambda connection: (
            200,
            calls.end_in(connection, tenant_id, call_id, body.duration_seconds),
        ),
    )
    return JSONResponse(result)


@router.get(
    "/calls/{call_id}",
    summary="A call's state",
    responses=docs.body(docs.CallView, "The call"),
)
def get_call(
    call_id: str,
    tenant_id: str | None = Query(None, max_length=64),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    require_charging(principal)
    owner = _tenant_of_call(ctx, principal, call_id, tenant_id)
    with read_transaction(ctx.engine) as connection:
        return calls.call_view(connection, owner, call_id)


@router.post(
    "/cdrs",
    summary="Rate finished calls (offline charging)",
    responses=docs.body(docs.CdrResults, "One result per record"),
    openapi_extra=docs.idempotent(),
)
def post_cdrs(
    body: CdrBatch, request: Request, ctx: AppContext = Ctx, principal: Principal = Auth
) -> dict[str, Any]:
    require_charging(principal)
    index, plans = ctx.catalog.current()
    scoped = principal.tenant_id if principal.kind == "charging" else None
    key = idempotency_key(request)
    if key is None:
        return {"results": cdrs.rate_batch(ctx.engine, body.records, index, plans, scoped)}
    # A retried batch answers what the first one did (``rated``, not
    # ``duplicate``). A batch may name several tenants: a key of an unscoped
    # token belongs to no tenant ("").
    _, result = run_idempotent(
        ctx.engine,
        tenant_id=scoped or "",
        key=key,
        scope="POST /v1/cdrs",
        body=body.model_dump(mode="json"),
        action=lambda connection: (
            200,
            {"results": cdrs.rate_batch_in(connection, body.records, index, plans, scoped)},
        ),
    )
    return dict(result)


# --- pools and overage (tenant readers) ----------------------------------------------------------


def _month(value: str | None, timezone: str) -> str:
    if value is None:
        return current_month(now(), timezone)
    try:
        month_bounds(value, timezone)
    except InvalidMonth as exc:
        raise ValidationFailed(f"month: {exc}; write it YYYY-MM") from exc
    return value


@router.get(
    "/tenants/{tenant_id}/pools",
    tags=["pools"],
    summary="Minute pools of a month",
    responses=docs.body(docs.PoolPage, "The pools of the month"),
)
def get_pools(
    tenant_id: str,
    month: str | None = Query(None, max_length=7),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.READ)
    _, plans = ctx.catalog.current()
    with write_transaction(ctx.engine) as connection:
        tenant = directory.require_tenant(connection, tenant_id)
        wanted = _month(month, tenant.timezone)
        items = pool_store.pools_view(connection, tenant_id, wanted, plans, tenant.timezone)
    return {"items": items, "month": wanted}


@router.get(
    "/tenants/{tenant_id}/overage",
    tags=["pools"],
    summary="NCE overage of a month",
    responses=docs.body(docs.Overage, "The month's overage"),
)
def get_overage(
    tenant_id: str,
    month: str | None = Query(None, max_length=7),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.READ)
    with read_transaction(ctx.engine) as connection:
        tenant = directory.require_tenant(connection, tenant_id)
        wanted = _month(month, tenant.timezone)
        return calls.overage_view(connection, tenant, wanted)
