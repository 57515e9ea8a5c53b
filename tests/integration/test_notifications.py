"""Notification mails end to end (SPEC §4, §6): the four events triggered for
real through the API, delivered by the mail worker pass to a real SMTP server
process on loopback, and the tenant's notification listing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from commcredits.api import routes_notifications
from commcredits.api.app import create_app
from commcredits.config import sqlalchemy_url
from commcredits.core.roles import NOTIFIED_ROLES
from commcredits.services import notify
from commcredits.services.clock import now as clock_now
from commcredits.services.funding import resolve_pending
from commcredits.store import tables as t
from commcredits.store.db import make_engine
from commcredits.store.migrate import upgrade
from tests.conftest import BACKENDS, fresh_database_url, make_settings
from tests.support.api import (
    OPERATOR,
    admin,
    bearer,
    create_tenant,
    create_user,
    unique,
    user_token,
)
from tests.support.smtp import Received, SmtpSink

MAIL_FROM = "credits@commcredits.test"
PUBLIC_URL = "https://credits.example.test"
ADMIN_URL = PUBLIC_URL + "/"
CARD_OK = "4242424242424242"
CARD_EXPIRED = "4000000000000069"  # stores fine, fails as expired_card when charged
FAR_EXPIRY_YEAR = date.today().year + 5
# Markup and a line break: must be escaped in HTML and must not add a header.
TENANT_NAME = "Contoso <Ops> & Sons\r\nBcc: intruder@evil.example"
EVENT_ORDER = ["recharge_succeeded", "recharge_failed", "balance_low", "balance_depleted"]
NOTIFICATIONS_PATH = "/v1/tenants/{tenant_id}/notifications"


def with_notifications(app: Any) -> Any:
    if not any(getattr(route, "path", "") == NOTIFICATIONS_PATH for route in app.routes):
        app.include_router(routes_notifications.router)
    return app


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, pg_cluster: Any) -> str:
    """A fresh database per backend, migrated once: the apps below skip it."""
    url = fresh_database_url(request.param, pg_cluster)
    engine = make_engine(sqlalchemy_url(url))
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="module")
def mail_app(database_url: str, sink: SmtpSink) -> Any:
    settings = make_settings(
        database_url,
        COMMCREDITS_SMTP_URL=sink.url,
        COMMCREDITS_MAIL_FROM=MAIL_FROM,
        COMMCREDITS_PUBLIC_URL=PUBLIC_URL,
    )
    return with_notifications(create_app(settings, migrate=False))


@pytest.fixture(scope="module")
def outbox_app(database_url: str) -> Any:
    """The embedded default: no SMTP server configured."""
    settings = make_settings(database_url, COMMCREDITS_PUBLIC_URL=PUBLIC_URL)
    return with_notifications(create_app(settings, migrate=False))


def deliver_all(app: Any) -> int:
    ctx = app.state.ctx
    at = clock_now()
    done = 0
    while worked := notify.deliver_pending(ctx.engine, ctx.settings, now=at):
        done += worked
    return done


def of_tenant(sink: SmtpSink, tenant_id: str) -> list[Received]:
    return [r for r in sink.received() if r.message["X-Commcredits-Tenant"] == tenant_id]


# --- the scenario: a tenant whose balance goes through all four events ------------------------


def add_card(client: TestClient, tenant_id: str, headers: dict[str, str], number: str) -> str:
    response = client.post(
        f"/v1/tenants/{tenant_id}/payment-methods",
        json={"card_number": number, "exp_month": 12, "exp_year": FAR_EXPIRY_YEAR},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def adjust(client: TestClient, tenant_id: str, amount: str) -> None:
    response = client.post(
        f"/v1/tenants/{tenant_id}/credits/adjustments",
        json={"amount": amount, "reason": "test"},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text


def auto_recharge(client: TestClient, tenant_id: str, headers: dict[str, str], **body: Any) -> None:
    response = client.put(
        f"/v1/tenants/{tenant_id}/credits/auto-recharge", json=body, headers=headers
    )
    assert response.status_code == 200, response.text


def run_recharges(app: Any) -> None:
    ctx = app.state.ctx
    assert resolve_pending(ctx.engine, ctx.services["payments"]) == 1


def staff(client: TestClient, tenant_id: str) -> dict[str, Any]:
    """One user per notified role (one of them with an e-mail address besides
    the UPN), one holding two notified roles, and users who get nothing."""
    expected: set[str] = set()
    for role in sorted(NOTIFIED_ROLES):
        upn = f"{unique(role.replace('_', '-'))}@contoso.example"
        body: dict[str, Any] = {"upn": upn, "roles": [role]}
        if role == "global_admin":
            body["email"] = f"{unique('ga-mailbox')}@mail.contoso.example"
        create_user(client, tenant_id, **body)
        expected.add(body.get("email", upn))
    both = create_user(client, tenant_id, roles=["billing_admin", "teams_admin"])
    expected.add(both["upn"])
    reader = create_user(client, tenant_id, roles=["reports_reader"])
    nobody = create_user(client, tenant_id, email=f"{unique('nobody')}@mail.contoso.example")
    return {
        "expected": expected,
        "ignored": {reader["upn"], nobody["upn"], nobody["email"]},
        "reader": bearer(user_token(client, tenant_id, reader["id"])),
        "funder": bearer(user_token(client, tenant_id, both["id"])),
    }


def four_events(client: TestClient, app: Any, tenant_id: str, headers: dict[str, str]) -> None:
    good = add_card(client, tenant_id, headers, CARD_OK)
    expired = add_card(client, tenant_id, headers, CARD_EXPIRED)
    adjust(client, tenant_id, "500")
    auto_recharge(
        client,
        tenant_id,
        headers,
        enabled=True,
        threshold="100",
        amount="200",
        payment_method_id=good,
    )
    adjust(client, tenant_id, "-450")  # 50 < 100: a recharge of 200
    run_recharges(app)  # -> recharge_succeeded, balance 250
    auto_recharge(
        client,
        tenant_id,
        headers,
        enabled=True,
        threshold="100",
        amount="200",
        payment_method_id=expired,
    )
    adjust(client, tenant_id, "-200")  # 50 < 100 again, the card has expired
    run_recharges(app)  # -> recharge_failed
    auto_recharge(client, tenant_id, headers, enabled=False, threshold="100")
    adjust(client, tenant_id, "-10")  # 40 < 100 with auto-recharge off -> balance_low
    adjust(client, tenant_id, "-40")  # 0 -> balance_depleted


@pytest.fixture(scope="module")
def scenario(mail_app: Any, sink: SmtpSink) -> dict[str, Any]:
    """Runs once per backend; the tests below read what it left."""
    with TestClient(mail_app, raise_server_exceptions=False) as client:
        tenant = create_tenant(client, name=TENANT_NAME)
        people = staff(client, tenant["id"])
        four_events(client, mail_app, tenant["id"], people["funder"])
        before = listing(client, tenant["id"])
        delivered = deliver_all(mail_app)
        after = listing(client, tenant["id"])
    return {
        "tenant_id": tenant["id"],
        **people,
        "before": before,
        "after": after,
        "delivered": delivered,
        "mails": of_tenant(sink, tenant["id"]),
    }


def listing(client: TestClient, tenant_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(
        NOTIFICATIONS_PATH.format(tenant_id=tenant_id), params=params, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


# --- who receives what -------------------------------------------------------------------------


def test_every_notified_role_gets_each_event_exactly_once(scenario):
    mails = scenario["mails"]
    expected = scenario["expected"]
    assert len(expected) == len(NOTIFIED_ROLES) + 1
    assert scenario["delivered"] == len(expected) * 4
    by_recipient: dict[str, list[str]] = {}
    for mail in mails:
        assert mail.recipient == str(mail.message["To"])
        assert mail.mail_from == MAIL_FROM == str(mail.message["From"])
        by_recipient.setdefault(mail.recipient, []).append(str(mail.message["X-Commcredits-Event"]))
    assert set(by_recipient) == expected
    for events in by_recipient.values():
        assert sorted(events) == sorted(EVENT_ORDER)
    # No duplicates: every Message-ID reached the server once.
    assert set(Counter(m.message_id for m in mails).values()) == {1}
    assert len(mails) == len(expected) * 4


def test_email_is_preferred_over_upn_and_non_notified_users_get_nothing(scenario):
    recipients = {mail.recipient for mail in scenario["mails"]}
    assert any(address.startswith("ga-mailbox-") for address in recipients)
    assert not any(address.startswith("global-admin-") for address in recipients)
    assert not recipients & scenario["ignored"]


def test_recipients_are_fixed_when_the_event_happens(mail_app, sink):
    with TestClient(mail_app, raise_server_exceptions=False) as client:
        tenant_id = create_tenant(client)["id"]
        was_admin = create_user(client, tenant_id, roles=["billing_admin"])
        becomes_admin = create_user(client, tenant_id, roles=["reports_reader"])
        adjust(client, tenant_id, "60")
        adjust(client, tenant_id, "-60")  # the first balance_depleted
        for user, roles in [(was_admin, []), (becomes_admin, ["teams_admin"])]:
            response = client.patch(
                f"/v1/tenants/{tenant_id}/users/{user['id']}",
                json={"roles": roles},
                headers=OPERATOR,
            )
            assert response.status_code == 200, response.text
        # The first event's recipients did not move with the roles.
        (first,) = listing(client, tenant_id)["items"]
        assert [r["address"] for r in first["deliveries"]] == [was_admin["upn"]]
        adjust(client, tenant_id, "60")
        adjust(client, tenant_id, "-60")  # the second, after the change
        deliver_all(mail_app)
        second, first = listing(client, tenant_id)["items"]
    assert [r["address"] for r in first["deliveries"]] == [was_admin["upn"]]
    assert [r["address"] for r in second["deliveries"]] == [becomes_admin["upn"]]
    assert {first["status"], second["status"]} == {"sent"}
    got = sorted((mail.recipient, mail.message_id) for mail in of_tenant(sink, tenant_id))
    assert got == sorted(
        [
            (was_admin["upn"], first["deliveries"][0]["message_id"]),
            (becomes_admin["upn"], second["deliveries"][0]["message_id"]),
        ]
    )


# --- what the mails say ------------------------------------------------------------------------


def one_mail(scenario: dict[str, Any], event: str) -> Received:
    for mail in scenario["mails"]:
        if mail.message["X-Commcredits-Event"] == event:
            return mail
    raise AssertionError(f"no {event} mail")


def parts(mail: Received) -> tuple[str, str, str]:
    message = mail.message
    assert message.get_content_type() == "multipart/alternative"
    kinds = [part.get_content_type() for part in message.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    return str(message["Subject"]), text, html


@pytest.mark.parametrize(
    ("event", "subject_words", "figures", "advice"),
    [
        (
            "recharge_succeeded",
            ["auto-recharge", "200.00 USD", "succeeded"],
            ["200.00 USD", "250.00 USD"],
            "Nothing is needed",
        ),
        (
            "recharge_failed",
            ["auto-recharge", "200.00 USD", "failed", "the card has expired"],
            ["200.00 USD", "50.00 USD", "the card has expired"],
            "Add a valid payment method",
        ),
        (
            "balance_low",
            ["balance is low", "40.00 USD", "100.00 USD"],
            ["40.00 USD", "100.00 USD"],
            "Buy credits, or turn on auto-recharge",
        ),
        ("balance_depleted", ["balance depleted", "0.00 USD"], ["0.00 USD"], "Buy credits now"),
    ],
)
def test_mail_names_tenant_event_amounts_next_steps_and_link(
    scenario, event, subject_words, figures, advice
):
    subject, text, html = parts(one_mail(scenario, event))
    assert subject.startswith("Contoso <Ops> & Sons Bcc: intruder@evil.example:")
    for words in subject_words:
        assert words in subject
    for figure in figures:
        assert figure in text
        assert figure in html
    assert advice in text and advice in html
    assert "Contoso <Ops> & Sons" in text
    assert ADMIN_URL in text
    assert f'href="{ADMIN_URL}"' in html
    # Autoescaped: the tenant's name is text in the HTML, never markup.
    assert "Contoso &lt;Ops&gt; &amp; Sons" in html
    assert "<Ops>" not in html


def test_headers_are_those_of_the_delivery(scenario, mail_app):
    mail = one_mail(scenario, "balance_depleted")
    message = mail.message
    assert message["Bcc"] is None  # the line break in the name added no header
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] is not None
    items = {item["event"]: item for item in scenario["after"]["items"]}
    stored = {r["address"]: r["message_id"] for r in items["balance_depleted"]["deliveries"]}
    assert stored[mail.recipient] == mail.message_id


# --- the listing -------------------------------------------------------------------------------


def test_listing_before_and_after_delivery(scenario):
    before, after = scenario["before"], scenario["after"]
    assert [item["event"] for item in before["items"]] == EVENT_ORDER[::-1]  # newest first
    assert before["smtp_configured"] is True and "note" not in before
    for item in before["items"]:
        assert item["status"] == "pending" and item["sent_at"] is None
        assert {r["status"] for r in item["deliveries"]} == {"pending"}
    for item in after["items"]:
        assert item["status"] == "sent"
        addresses = {r["address"] for r in item["deliveries"]}
        assert addresses == scenario["expected"]
        # API.md's recipients: the addresses, each once, in the deliveries' order.
        assert item["recipients"] == [r["address"] for r in item["deliveries"]]
        for recipient in item["deliveries"]:
            assert recipient["status"] == "sent" and recipient["attempts"] == 1
            assert recipient["last_error"] is None and recipient["sent_at"]
        assert item["sent_at"] == max(r["sent_at"] for r in item["deliveries"])
        assert item["subject"] and item["text"]
    failed = next(item for item in after["items"] if item["event"] == "recharge_failed")
    assert failed["payload"]["failure_code"] == "expired_card"
    assert "the card has expired" in failed["subject"]
    assert "the card has expired" in failed["text"]


def test_listing_pages_newest_first(mail_app, scenario):
    tenant_id = scenario["tenant_id"]
    with TestClient(mail_app, raise_server_exceptions=False) as client:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1}
            if cursor:
                params["cursor"] = cursor
            page = listing(client, tenant_id, **params)
            assert len(page["items"]) <= 1
            seen += [item["event"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == EVENT_ORDER[::-1]
        assert len(listing(client, tenant_id, limit=3)["items"]) == 3
        path = NOTIFICATIONS_PATH.format(tenant_id=tenant_id)
        for params in ({"limit": 0}, {"limit": 1001}, {"cursor": "not-a-cursor"}):
            response = client.get(path, params=params, headers=OPERATOR)
            assert response.status_code == 422, (params, response.text)
            assert response.json()["code"] == "validation_error"


def test_only_readers_of_the_tenant_see_its_notifications(mail_app, scenario):
    tenant_id = scenario["tenant_id"]
    path = NOTIFICATIONS_PATH.format(tenant_id=tenant_id)
    with TestClient(mail_app, raise_server_exceptions=False) as client:
        allowed = client.get(path, headers=scenario["reader"])  # reports_reader: READ
        assert allowed.status_code == 200
        assert len(allowed.json()["items"]) == 4
        helpdesk = admin(client, tenant_id, "helpdesk_admin")  # mailed, but reads nothing
        assert client.get(path, headers=helpdesk).status_code == 403
        other = create_tenant(client)
        stranger = admin(client, other["id"], "global_admin")
        assert client.get(path, headers=stranger).status_code == 403
        assert client.get(path).status_code == 401
        missing = NOTIFICATIONS_PATH.format(tenant_id=unique("t"))
        assert client.get(missing, headers=OPERATOR).status_code == 404
        # Another tenant's list is its own: empty.
        assert listing(client, other["id"])["items"] == []


# --- no SMTP server: the outbox keeps the mails --------------------------------------------------


def test_without_smtp_mails_wait_in_the_outbox_and_are_readable(outbox_app, sink):
    ctx = outbox_app.state.ctx
    with TestClient(outbox_app, raise_server_exceptions=False) as client:
        tenant = create_tenant(client, name="Fabrikam")
        user = create_user(client, tenant["id"], roles=["global_admin"])
        adjust(client, tenant["id"], "100")
        adjust(client, tenant["id"], "-100")
        assert notify.deliver_pending(ctx.engine, ctx.settings) == 0
        page = listing(client, tenant["id"])
    assert page["smtp_configured"] is False and "COMMCREDITS_SMTP_URL" in page["note"]
    (item,) = page["items"]
    assert (item["event"], item["status"], item["sent_at"]) == ("balance_depleted", "pending", None)
    assert item["deliveries"] == [
        {
            "address": user["upn"],
            "status": "pending",
            "attempts": 0,
            "sent_at": None,
            "next_attempt_at": item["deliveries"][0]["next_attempt_at"],
            "last_error": None,
            "message_id": item["deliveries"][0]["message_id"],
        }
    ]
    assert item["subject"] == "Fabrikam: Communications Credits balance depleted (0.00 USD)"
    assert "has reached zero" in item["text"] and ADMIN_URL in item["text"]
    assert of_tenant(sink, tenant["id"]) == []


def test_event_without_recipients_has_nothing_left_to_send(outbox_app):
    with TestClient(outbox_app, raise_server_exceptions=False) as client:
        tenant = create_tenant(client)
        create_user(client, tenant["id"], roles=["reports_reader"])
        adjust(client, tenant["id"], "60")
        adjust(client, tenant["id"], "-60")
        (item,) = listing(client, tenant["id"])["items"]
    assert (item["event"], item["deliveries"], item["status"]) == ("balance_depleted", [], "sent")


def test_event_status_rules():
    assert notify.event_status(["sent", "sent"]) == "sent"
    assert notify.event_status(["sent", "pending"]) == "pending"
    assert notify.event_status(["failed", "sending"]) == "pending"
    assert notify.event_status(["failed", "sent"]) == "failed"
    assert notify.event_status([]) == "sent"


def test_failed_recipient_makes_the_event_failed(outbox_app):
    engine = outbox_app.state.ctx.engine
    with TestClient(outbox_app, raise_server_exceptions=False) as client:
        tenant = create_tenant(client)
        for _ in range(2):
            create_user(client, tenant["id"], roles=["billing_admin"])
        adjust(client, tenant["id"], "60")
        adjust(client, tenant["id"], "-60")
        (item,) = listing(client, tenant["id"])["items"]
        first, second = (r["address"] for r in item["deliveries"])
        d = t.deliveries
        with engine.begin() as connection:
            connection.execute(
                update(d)
                .where(d.c.tenant_id == tenant["id"], d.c.recipient == first)
                .values(status="sent", sent_at=clock_now())
            )
            connection.execute(
                update(d)
                .where(d.c.tenant_id == tenant["id"], d.c.recipient == second)
                .values(status="failed", last_error="550 mailbox unavailable")
            )
        (item,) = listing(client, tenant["id"])["items"]
    assert (item["status"], item["sent_at"]) == ("failed", None)
    assert {r["address"]: r["last_error"] for r in item["deliveries"]}[second] == (
        "550 mailbox unavailable"
    )
