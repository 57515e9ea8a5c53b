"""The tenant's notification mails (SPEC §4): what was sent to whom, and what
is still waiting in the outbox."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from commcredits.api import docs_models as docs
from commcredits.api import pagination
from commcredits.api.auth import Principal, require_permission
from commcredits.api.context import AppContext, Auth, Ctx
from commcredits.core.roles import Permission
from commcredits.services import notify
from commcredits.store.db import read_transaction

router = APIRouter(prefix="/v1/tenants/{tenant_id}", tags=["notifications"])


@router.get(
    "/notifications",
    summary="Notification mails, newest first, with each recipient's delivery",
    responses=docs.body(docs.NotificationPage, "A page of notifications"),
)
def list_notifications(
    tenant_id: str,
    limit: int = Query(pagination.DEFAULT_PAGE_SIZE),
    cursor: str | None = Query(None, max_length=1000),
    ctx: AppContext = Ctx,
    principal: Principal = Auth,
) -> dict[str, Any]:
    require_permission(principal, tenant_id, Permission.READ)
    with read_transaction(ctx.engine) as connection:
        return notify.notifications_page(
            connection, tenant_id, ctx.settings, limit=limit, cursor=cursor
        )
