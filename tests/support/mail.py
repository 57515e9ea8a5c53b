"""Helpers shared by the mail delivery tests: an app wired to an SMTP sink, a
tenant with admins, events made through the API, and what the outbox holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from commcredits.api import routes_notifications
from commcredits.api.app import create_app
from commcredits.config import sqlalchemy_url
from commcredits.services import notify
from commcredits.store import tables as t
from commcredits.store.db import make_engine
from commcredits.store.migrate import upgrade
from tests.conftest import fresh_database_url, make_settings
from tests.support.api import OPERATOR, create_tenant, create_user, unique
from tests.support.smtp import SmtpSink

MAIL_FROM = "credits@commcredits.test"
NOTIFICATIONS_PATH = "/v1/tenants/{tenant_id}/notifications"


def migrated_database(backend: str, pg_cluster: Any) -> str:
    """A fresh database of ``backend``, migrated once: the apps below skip it."""
    url = fresh_database_url(backend, pg_cluster)
    engine = make_engine(sqlalchemy_url(url))
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


def make_app(database_url: str, smtp_url: str | None, **env: str) -> Any:
    overrides = {"COMMCREDITS_MAIL_FROM": MAIL_FROM, **env}
    if smtp_url:
        overrides["COMMCREDITS_SMTP_URL"] = smtp_url
    app = create_app(make_settings(database_url, **overrides), migrate=False)
    if not any(getattr(route, "path", "") == NOTIFICATIONS_PATH for route in app.routes):
        app.include_router(routes_notifications.router)
    return app


def park_outbox(database_url: str) -> None:
    """Mark every delivery still to send as failed, so that a test sharing the
    database cannot send what an earlier one left due."""
    engine = make_engine(sqlalchemy_url(database_url))
    d = t.deliveries
    try:
        with engine.begin() as connection:
            connection.execute(
                update(d).where(d.c.status.in_(("pending", "sending"))).values(status="failed")
            )
    finally:
        engine.dispose()


def tenant_with_admins(client: TestClient, count: int, **emails: str) -> tuple[str, set[str]]:
    """``count`` billing admins known by their UPN, and a global admin per
    keyword with that e-mail address."""
    tenant = create_tenant(client)
    addresses = set()
    for _ in range(count):
        addresses.add(create_user(client, tenant["id"], roles=["billing_admin"])["upn"])
    for label, email in emails.items():
        create_user(
            client,
            tenant["id"],
            upn=f"{unique(label)}@contoso.example",
            email=email,
            roles=["global_admin"],
        )
        addresses.add(email)
    return tenant["id"], addresses


def depleted(client: Any, tenant_id: str, times: int = 1) -> None:
    """Each round trip above zero and back is one balance_depleted event."""
    for _ in range(times):
        for amount in ("75", "-75"):
            response = client.post(
                f"/v1/tenants/{tenant_id}/credits/adjustments",
                json={"amount": amount, "reason": "test"},
                headers=OPERATOR,
            )
            assert response.status_code == 201, response.text


def deliveries(engine: Any, tenant_id: str) -> list[Any]:
    d = t.deliveries
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(d).where(d.c.tenant_id == tenant_id).order_by(d.c.message_id)
            ).all()
        )


def run_until_idle(app: Any, at: datetime, mailer: Any = None, batch: int = 50) -> int:
    ctx = app.state.ctx
    total = 0
    while worked := notify.deliver_pending(
        ctx.engine, ctx.settings, now=at, mailer=mailer, batch=batch
    ):
        total += worked
    return total


def counts_for(sink: SmtpSink, tenant_id: str) -> dict[str, int]:
    """Message-ID -> copies the server took, for one tenant's mails."""
    counts: dict[str, int] = {}
    for item in sink.received():
        if item.message["X-Commcredits-Tenant"] == tenant_id:
            counts[item.message_id] = counts.get(item.message_id, 0) + 1
    return counts


def listing(client: Any, tenant_id: str) -> list[dict[str, Any]]:
    response = client.get(NOTIFICATIONS_PATH.format(tenant_id=tenant_id), headers=OPERATOR)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])
