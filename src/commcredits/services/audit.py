"""The audit trail: who did what, when. Written in the transaction of the change."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, insert

from commcredits.services.clock import now
from commcredits.services.ids import new_id
from commcredits.store import tables as t


def record(connection: Connection, tenant_id: str, actor: str, action: str, detail: Any) -> None:
    connection.execute(
        insert(t.audit_log).values(
            tenant_id=tenant_id,
            id=new_id("aud"),
            at=now(),
            actor=actor,
            action=action,
            detail=json.loads(json.dumps(detail, default=str)),
        )
    )
