"""Reports and advice for tenant readers (API.md "Reports and advice")."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from commcredits.api import docs_models as docs
from commcredits.api import pagination
from commcredits.api.auth import Principal, require_permission
from commcredits.api.context import AppContext, Auth, Ctx
from commcredits.core.roles import Permission
from commcredits.errors import ValidationFailed
from commcredits.services import directory, reports
from commcredits.services.clock import client_instant
from commcredits.store.db import read_transaction

router = APIRouter(prefix="/v1/tenants/{tenant_id}", tags=["reports"])

CallType = Literal["user_out", "conf_out", "tollfree_in", "user_in"]
ReportFormat = Literal["json", "csv", "xlsx"]
GroupBy = Literal["day", "user", "destination", "call_type"]

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")

FROM_QUERY = Query(
    None, alias="from", description="Calls started at or after this time (RFC 3339, with offset)"
)
TO_QUERY = Query(None, description="Calls started before this time (RFC 3339, with offset)")


def _aware(name: str, value: datetime | None) -> datetime | None:
    # A time without offset would be read in some zone nobody chose.
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(f"{name}: give an RFC 3339 time with an offset, e.g. ...Z")
    return client_instant(name, value)


def _filter(
    ctx: AppContext,
    tenant_id: str,
    start: datetime | None,
    end: datetime | None,
    user_id: str | None = None,
    call_type: str | None = None,
) -> tuple[reports.UsageFilter, Any]:
    with read_transaction(ctx.engine) as connection:
        usage = reports.usage_filter(
            connection,
            tenant_id,
            start=_aware("from", start),
            end=_aware("to", end),
            user_ref=user_id,
            call_type=call_type,
        )
        tenant = directory.require_tenant(connection, tenant_id)
    return usage, tenant


@router.get(
    "/reports/pstn-usage",
    summary="PSTN usage: one row per finished call (JSON page, or streamed CSV or xlsx)",
    responses={
        200: {
            "model": docs.UsagePage,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            },
            "description": "A page of rows (JSON), or the whole report as a file",
        }
    },
)
def pstn_usage(
    tenant_id: str,
    from_: datetime | None = FROM_QUERY,
    to: datetime | None = TO_QUERY,
    user_id: str | None = Query(None, max_length=256, description="The user's id or UPN"),
    call_type: CallType | None = Query(None),
    format: ReportFormat = Query("json"),  # noqa: A002 - the contract's parameter name
    limit: int = Query(pagination.DEFAULT_PAGE_SIZE, description="JSON only"),
    cursor: str | None = Query(None, max_length=1000, description="JSON only"),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> Any:
    require_permission(principal, tenant_id, Permission.READ)
    usage, tenant = _filter(ctx, tenant_id, from_, to, user_id, call_type)
    if format == "json":
        with read_transaction(ctx.engine) as connection:
            return reports.usage_page(connection, usage, limit, cursor)
    filename = f"pstn-usage-{_UNSAFE_FILENAME.sub('_', tenant_id)}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if format == "csv":
        return StreamingResponse(
            reports.csv_chunks(ctx.engine, usage),
            media_type="text/csv; charset=utf-8",
            headers=headers,
        )
    return StreamingResponse(
        reports.xlsx_chunks(ctx.engine, usage, str(tenant.currency)),
        media_type=XLSX_MEDIA_TYPE,
        headers=headers,
    )


@router.get(
    "/reports/pstn-usage/summary",
    summary="PSTN usage totals by day, user, destination or call type",
    responses=docs.body(docs.UsageSummary, "Totals per key"),
)
def pstn_usage_summary(
    tenant_id: str,
    from_: datetime | None = FROM_QUERY,
    to: datetime | None = TO_QUERY,
    group_by: GroupBy = Query("day"),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.READ)
    usage, _ = _filter(ctx, tenant_id, from_, to)
    with read_transaction(ctx.engine) as connection:
        return reports.usage_summary(connection, usage, group_by)


@router.get(
    "/credits/recommendation",
    tags=["credits"],
    summary="Funding advice: one-time amount, auto-recharge threshold and amount",
    responses=docs.body(docs.Recommendation, "The advice and what it is based on"),
)
def credits_recommendation(
    tenant_id: str, ctx: AppContext = Ctx, principal: Principal = Auth
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.READ)
    with read_transaction(ctx.engine) as connection:
        return reports.recommendation(connection, tenant_id)
