"""Credits endpoints (tenant billing admins; adjustments by the operator)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from commcredits.api import docs_models as docs
from commcredits.api import pagination
from commcredits.api.auth import Principal, require_operator, require_permission
from commcredits.api.context import AppContext, Auth, Ctx
from commcredits.api.idempotency import idempotency_key, run_claimed, run_idempotent
from commcredits.api.schemas import Body
from commcredits.core.money import InvalidMoney, parse_amount
from commcredits.core.roles import Permission
from commcredits.errors import ValidationFailed
from commcredits.services import directory, funding
from commcredits.services.clock import client_instant
from commcredits.store.db import read_transaction, write_transaction

router = APIRouter(prefix="/v1/tenants/{tenant_id}", tags=["credits"])

MoneyText = Annotated[str, Field(min_length=1, max_length=32)]
RefId = Annotated[str, Field(min_length=1, max_length=64)]


class PaymentMethodCreate(Body):
    card_number: Annotated[str, Field(min_length=12, max_length=32)]
    exp_month: Annotated[int, Field(ge=1, le=12)]
    exp_year: Annotated[int, Field(ge=1000, le=9999)]


class PurchaseCreate(Body):
    amount: MoneyText
    payment_method_id: RefId


class AutoRechargeUpdate(Body):
    enabled: bool
    threshold: MoneyText | None = None
    amount: MoneyText | None = None
    payment_method_id: RefId | None = None


class AdjustmentCreate(Body):
    amount: MoneyText
    reason: Annotated[str, Field(min_length=1, max_length=500)]


def _currency(ctx: AppContext, tenant_id: str) -> str:
    with read_transaction(ctx.engine) as connection:
        return str(directory.require_tenant(connection, tenant_id).currency)


def _money(field: str, text: str, currency: str, **flags: bool) -> Decimal:
    try:
        return parse_amount(text, currency, **flags)
    except InvalidMoney as exc:
        raise ValidationFailed(f"{field}: {exc.detail}") from exc


@router.get(
    "/credits",
    summary="Balance, holds, status, eligibility and auto-recharge",
    responses=docs.body(docs.Credits, "The tenant's credits"),
)
def get_credits(tenant_id: str, ctx: AppContext = Ctx, principal: Principal = Auth) -> Any:
    require_permission(principal, tenant_id, Permission.READ)
    with read_transaction(ctx.engine) as connection:
        return funding.credits_view(connection, tenant_id)


@router.post(
    "/payment-methods",
    status_code=201,
    summary="Store a card",
    responses=docs.body(docs.PaymentMethod, "The card (never its number)", 201),
    openapi_extra=docs.idempotent(),
)
def add_payment_method(
    tenant_id: str,
    body: PaymentMethodCreate,
    request: Request,
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> JSONResponse:
    require_permission(principal, tenant_id, Permission.FUND)
    key = idempotency_key(request)
    _currency(ctx, tenant_id)  # 404 before the provider is asked anything
    provider = ctx.services["payments"]

    def outside() -> Any:
        return funding.store_card(
            provider, tenant_id, body.card_number, body.exp_month, body.exp_year, key
        )

    def action(connection: Any, card: Any) -> tuple[int, Any]:
        return 201, funding.insert_payment_method(connection, tenant_id, provider.name, card)

    # The key is claimed before the provider is asked, so a replay or a
    # conflicting body makes no second customer or card at the provider.
    status, result = run_claimed(
        ctx.engine,
        tenant_id=tenant_id,
        key=key,
        scope=f"POST /v1/tenants/{tenant_id}/payment-methods",
        body=funding.card_fingerprint(body.card_number, body.exp_month, body.exp_year),
        outside=outside,
        action=action,
    )
    return JSONResponse(result, status_code=status)


@router.get(
    "/payment-methods",
    summary="List stored cards",
    responses=docs.body(docs.PaymentMethodPage, "A page of cards, oldest first"),
)
def list_payment_methods(
    tenant_id: str,
    limit: int = Query(pagination.DEFAULT_PAGE_SIZE),
    cursor: str | None = Query(None, max_length=1000),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.FUND)
    with read_transaction(ctx.engine) as connection:
        return funding.payment_methods_page(connection, tenant_id, limit, cursor)


@router.delete("/payment-methods/{method_id}", status_code=204, summary="Remove a card")
def remove_payment_method(
    tenant_id: str, method_id: str, ctx: AppContext = Ctx, principal: Principal = Auth
) -> Response:
    require_permission(principal, tenant_id, Permission.FUND)
    with write_transaction(ctx.engine) as connection:
        funding.remove_payment_method(connection, tenant_id, method_id, principal.actor)
    return Response(status_code=204)


@router.post(
    "/credits/purchases",
    status_code=201,
    summary="Buy credits once",
    responses=docs.body(
        docs.PurchaseMade, "The purchase: a failed one is a record too, and moves no money", 201
    ),
    openapi_extra=docs.idempotent(),
)
def purchase(
    tenant_id: str,
    body: PurchaseCreate,
    request: Request,
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> JSONResponse:
    require_permission(principal, tenant_id, Permission.FUND)
    key = idempotency_key(request)
    currency = _currency(ctx, tenant_id)
    amount = _money("amount", body.amount, currency)
    result = funding.purchase(
        ctx.engine,
        ctx.services["payments"],
        tenant_id,
        amount,
        body.payment_method_id,
        key,
        principal.actor,
        ctx.settings.max_purchase,
    )
    return JSONResponse(result, status_code=201)


@router.get(
    "/credits/purchases",
    summary="Purchases and auto-recharges, failed ones included",
    responses=docs.body(docs.PurchasePage, "A page of purchases"),
)
def list_purchases(
    tenant_id: str,
    limit: int = Query(pagination.DEFAULT_PAGE_SIZE),
    cursor: str | None = Query(None, max_length=1000),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.READ)
    with read_transaction(ctx.engine) as connection:
        return funding.purchases_page(connection, tenant_id, limit, cursor)


@router.get(
    "/credits/purchases/{purchase_id}",
    summary="One purchase",
    responses=docs.body(docs.Purchase, "The purchase"),
)
def get_purchase(
    tenant_id: str, purchase_id: str, ctx: AppContext = Ctx, principal: Principal = Auth
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.READ)
    with read_transaction(ctx.engine) as connection:
        return funding.get_purchase(connection, tenant_id, purchase_id)


@router.put(
    "/credits/auto-recharge",
    summary="Set auto-recharge",
    responses=docs.body(docs.AutoRecharge, "The settings"),
)
def set_auto_recharge(
    tenant_id: str, body: AutoRechargeUpdate, ctx: AppContext = Ctx, principal: Principal = Auth
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.FUND)
    currency = _currency(ctx, tenant_id)
    threshold = (
        None
        if body.threshold is None
        else _money("threshold", body.threshold, currency, allow_zero=True)
    )
    amount = None if body.amount is None else _money("amount", body.amount, currency)
    if amount is not None and amount > ctx.settings.max_purchase:
        raise ValidationFailed(f"amount: at most {ctx.settings.max_purchase} per purchase")
    wanted = funding.AutoRechargeSettings(body.enabled, threshold, amount, body.payment_method_id)
    with write_transaction(ctx.engine) as connection:
        return funding.set_auto_recharge(connection, tenant_id, wanted, principal.actor)


@router.get(
    "/credits/auto-recharge",
    summary="Read auto-recharge settings",
    responses=docs.body(docs.AutoRecharge, "The settings"),
)
def get_auto_recharge(tenant_id: str, ctx: AppContext = Ctx, principal: Principal = Auth) -> Any:
    require_permission(principal, tenant_id, Permission.READ)
    with read_transaction(ctx.engine) as connection:
        return funding.credits_view(connection, tenant_id)["auto_recharge"]


@router.get(
    "/credits/transactions",
    summary="Ledger lines",
    responses=docs.body(docs.LedgerPage, "A page of ledger lines, oldest first"),
)
def transactions(
    tenant_id: str,
    from_: datetime | None = Query(None, alias="from"),
    to: datetime | None = Query(None),
    limit: int = Query(pagination.DEFAULT_PAGE_SIZE),
    cursor: str | None = Query(None, max_length=1000),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.READ)
    start = client_instant("from", from_)
    end = client_instant("to", to)
    with read_transaction(ctx.engine) as connection:
        directory.require_tenant(connection, tenant_id)
        return funding.transactions_page(connection, tenant_id, start, end, limit, cursor)


@router.post(
    "/credits/adjustments",
    status_code=201,
    summary="Post an adjustment (operator)",
    responses=docs.body(docs.LedgerLine, "The ledger line posted", 201),
    openapi_extra=docs.idempotent(),
)
def adjustment(
    tenant_id: str,
    body: AdjustmentCreate,
    request: Request,
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> JSONResponse:
    require_operator(principal)
    currency = _currency(ctx, tenant_id)
    amount = _money("amount", body.amount, currency, allow_negative=True)
    if amount == 0:
        raise ValidationFailed("amount: an adjustment must not be zero")
    reason = body.reason.strip()
    if not reason:
        raise ValidationFailed("reason: say why the adjustment is made")

    def action(connection: Any) -> tuple[int, Any]:
        return 201, funding.adjust(connection, tenant_id, amount, reason, principal.actor)

    status, result = run_idempotent(
        ctx.engine,
        tenant_id=tenant_id,
        key=idempotency_key(request),
        scope=f"POST /v1/tenants/{tenant_id}/credits/adjustments",
        body=body.model_dump(mode="json"),
        action=action,
    )
    return JSONResponse(result, status_code=status)
