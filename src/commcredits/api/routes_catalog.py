"""Catalog endpoints: rate decks (CSV), plans, rate lookup."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Query, Request

from commcredits.api import docs_models as docs
from commcredits.api.auth import Principal, require_operator
from commcredits.api.context import AppContext, Auth, Ctx
from commcredits.core.money import is_known_currency
from commcredits.core.numbers import InvalidNumber, analyse_number
from commcredits.errors import NotFound, ValidationFailed
from commcredits.services import catalog

router = APIRouter(prefix="/v1", tags=["catalog"])

MAX_DECK_BYTES = 64 * 1024 * 1024

SERVICE = Literal["outbound", "conference_dialout", "tollfree_inbound"]


@router.put(
    "/catalog/rates",
    summary="Load rate decks from CSV (replaces the decks of each service and currency uploaded)",
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
    responses=docs.body(docs.RatesLoaded, "The deck is in force"),
)
async def put_rates(
    request: Request, ctx: AppContext = Ctx, principal: Principal = Auth
) -> dict[str, Any]:
    require_operator(principal)
    raw = await request.body()
    if len(raw) > MAX_DECK_BYTES:
        raise ValidationFailed(f"the deck is larger than {MAX_DECK_BYTES // (1024 * 1024)} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed("the deck must be UTF-8 text") from exc
    from starlette.concurrency import run_in_threadpool

    loaded = await run_in_threadpool(catalog.put_rates, ctx.engine, text)
    ctx.catalog.invalidate()
    return {"loaded": loaded}


@router.get(
    "/rates/lookup",
    summary="The rate row a number matches",
    responses=docs.body(docs.RateRow, "The matched row, with what was read of the number"),
)
def lookup_rate(
    number: str = Query(..., max_length=32),
    service: SERVICE = Query("outbound"),
    currency: str = Query("USD", min_length=3, max_length=3),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    try:
        info = analyse_number(number, None)
    except InvalidNumber as exc:
        raise ValidationFailed(str(exc), reason="invalid_number") from exc
    if not is_known_currency(currency):
        # A deck is only ever loaded in a known currency: "usd" or "XYZ" is a
        # mistake in the request, not a deck that happens to be missing.
        raise ValidationFailed(
            f"currency {currency!r} is not an ISO 4217 code in upper case, e.g. USD"
        )
    index, _plans = ctx.catalog.current()
    row = index.lookup(service, currency, info.digits, info.number_type)
    if row is None:
        raise NotFound(f"no {service} rate in {currency} matches {number}")
    result = catalog.rate_row_dict(row)
    result["number"] = info.e164
    result["number_type_of_number"] = info.number_type
    result["region"] = info.region
    return result


@router.get(
    "/catalog/plans",
    summary="Included minutes and the conferencing zone",
    responses=docs.body(docs.Plans, "The plans in force"),
)
def get_plans(ctx: AppContext = Ctx, principal: Principal = Auth) -> dict[str, Any]:
    return catalog.get_plans(ctx.catalog)


@router.put(
    "/catalog/plans",
    summary="Set included minutes and the conferencing zone",
    responses=docs.body(docs.Plans, "The plans now in force"),
)
def put_plans(
    document: dict[str, Any] = Body(...), ctx: AppContext = Ctx, principal: Principal = Auth
) -> dict[str, Any]:
    require_operator(principal)
    doc = catalog.put_plans(ctx.engine, document)
    ctx.catalog.invalidate()
    return doc
