"""Funding the credits balance through the HTTP API: eligibility, cards, purchases,
amounts, idempotency, adjustments, transactions and auto-recharge (SPEC §2, §4)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from commcredits.adapters.payments.simulated import SimulatedProvider
from commcredits.api.app import create_app
from commcredits.services.funding import resolve_pending
from commcredits.store import tables as t
from tests.conftest import make_settings
from tests.support.api import OPERATOR, admin, buy, create_tenant, unique
from tests.support.payments import CountingProvider

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_EXPIRED = "4000000000000069"
CARD_PROCESSING_ERROR = "4000000000000119"
# The simulated provider judges expiry by the real clock: a year always ahead of it.
FAR_EXPIRY_YEAR = date.today().year + 5


# --- helpers that speak the API ------------------------------------------------------


def billing_admin(client: Any, tenant_id: str) -> dict[str, str]:
    return admin(client, tenant_id, "billing_admin")


def add_card(
    client: Any,
    tenant_id: str,
    headers: dict[str, str],
    number: str = CARD_OK,
    exp_month: int = 12,
    exp_year: int = FAR_EXPIRY_YEAR,
) -> dict[str, Any]:
    response = client.post(
        f"/v1/tenants/{tenant_id}/payment-methods",
        json={"card_number": number, "exp_month": exp_month, "exp_year": exp_year},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def credits(client: Any, tenant_id: str, headers: dict[str, str] = OPERATOR) -> dict[str, Any]:
    response = client.get(f"/v1/tenants/{tenant_id}/credits", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def adjust(client: Any, tenant_id: str, amount: str, reason: str = "goodwill") -> dict[str, Any]:
    response = client.post(
        f"/v1/tenants/{tenant_id}/credits/adjustments",
        json={"amount": amount, "reason": reason},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def set_auto_recharge(client: Any, tenant_id: str, headers: dict[str, str], **settings: Any) -> Any:
    return client.put(
        f"/v1/tenants/{tenant_id}/credits/auto-recharge", json=settings, headers=headers
    )


def all_transactions(client: Any, tenant_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every ledger line, following the cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        response = client.get(
            f"/v1/tenants/{tenant_id}/credits/transactions", params=query, headers=OPERATOR
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def purchase_rows(engine: Any, tenant_id: str) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(t.purchases)
                .where(t.purchases.c.tenant_id == tenant_id)
                .order_by(t.purchases.c.created_at)
            ).all()
        )


def outbox_events(engine: Any, tenant_id: str, event: str | None = None) -> list[Any]:
    query = select(t.outbox_events).where(t.outbox_events.c.tenant_id == tenant_id)
    if event is not None:
        query = query.where(t.outbox_events.c.event == event)
    with engine.connect() as connection:
        return list(connection.execute(query.order_by(t.outbox_events.c.created_at)).all())


def funded_tenant(client: Any, **overrides: Any) -> tuple[str, dict[str, str], str]:
    """A new tenant, a billing admin's headers, and a stored good card."""
    tenant = create_tenant(client, **overrides)
    headers = billing_admin(client, tenant["id"])
    card = add_card(client, tenant["id"], headers)
    return tenant["id"], headers, card["id"]


@pytest.fixture()
def counting_provider(app: Any, monkeypatch: pytest.MonkeyPatch) -> CountingProvider:
    services = app.state.ctx.services
    counting = CountingProvider(services["payments"])
    monkeypatch.setitem(services, "payments", counting)
    return counting


# --- 1. eligibility --------------------------------------------------------------------


def test_nce_tenant_cannot_buy_and_shows_not_available(client):
    tid, headers, card = funded_tenant(client, agreement="nce")
    refused = buy(client, tid, headers, "100", card)
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "purchase_not_allowed"
    assert refused.json()["reason"] == "nce"
    view = credits(client, tid, headers)
    assert view["status"] == "not_available"
    assert view["eligibility"] == {"can_purchase": False, "reason": "nce"}
    assert view["balance"] == "0.00"
    assert all_transactions(client, tid) == []

    # The operator override is the EA region mitigation; it does not make NCE prepaid.
    patched = client.patch(f"/v1/tenants/{tid}", json={"purchase_override": True}, headers=OPERATOR)
    assert patched.status_code == 200
    again = buy(client, tid, headers, "100", card)
    assert again.status_code == 403 and again.json()["reason"] == "nce"


def test_ineligible_tenant_cannot_enable_auto_recharge(client):
    tid, headers, card = funded_tenant(client, agreement="nce")
    response = set_auto_recharge(
        client, tid, headers, enabled=True, threshold="100", amount="100", payment_method_id=card
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "purchase_not_allowed"
    assert response.json()["reason"] == "nce"
    assert credits(client, tid)["auto_recharge"]["enabled"] is False
    # Switching it off is always fine.
    off = set_auto_recharge(client, tid, headers, enabled=False)
    assert off.status_code == 200 and off.json()["enabled"] is False


def test_ea_region_mismatch_until_operator_override(client):
    tid, headers, card = funded_tenant(client, agreement="ea", country="DE", billing_country="US")
    refused = buy(client, tid, headers, "100", card)
    assert refused.status_code == 403
    assert refused.json()["code"] == "purchase_not_allowed"
    assert refused.json()["reason"] == "region_mismatch"
    view = credits(client, tid, headers)
    assert view["status"] == "not_available"
    assert view["eligibility"] == {"can_purchase": False, "reason": "region_mismatch"}
    recharge = set_auto_recharge(
        client, tid, headers, enabled=True, threshold="60", amount="100", payment_method_id=card
    )
    assert recharge.status_code == 403
    assert recharge.json()["reason"] == "region_mismatch"

    patched = client.patch(f"/v1/tenants/{tid}", json={"purchase_override": True}, headers=OPERATOR)
    assert patched.status_code == 200, patched.text
    assert patched.json()["purchase_override"] is True
    view = credits(client, tid, headers)
    assert view["eligibility"] == {"can_purchase": True, "reason": None}
    assert view["status"] == "depleted"  # eligible, nothing available yet
    bought = buy(client, tid, headers, "100", card)
    assert bought.status_code == 201, bought.text
    assert bought.json()["status"] == "succeeded"
    assert credits(client, tid, headers)["status"] == "active"

    # Lifting the override closes the door again.
    client.patch(f"/v1/tenants/{tid}", json={"purchase_override": False}, headers=OPERATOR)
    again = buy(client, tid, headers, "100", card)
    assert again.status_code == 403 and again.json()["reason"] == "region_mismatch"
    assert credits(client, tid, headers)["status"] == "not_available"


@pytest.mark.parametrize(
    ("agreement", "country", "billing_country"),
    [
        ("ea", "GB", "GB"),
        ("mca", "DE", "US"),
        ("csp", "FR", "GB"),
        ("direct", "US", "CA"),
    ],
)
def test_eligible_agreements_can_buy(client, agreement, country, billing_country):
    tid, headers, card = funded_tenant(
        client, agreement=agreement, country=country, billing_country=billing_country
    )
    before = credits(client, tid, headers)
    assert before["eligibility"] == {"can_purchase": True, "reason": None}
    assert before["status"] == "depleted"
    bought = buy(client, tid, headers, "75.50", card)
    assert bought.status_code == 201, bought.text
    assert bought.json()["status"] == "succeeded"
    after = credits(client, tid, headers)
    assert after["status"] == "active"
    assert after["balance"] == after["available"] == "75.50"


# --- 2. cards ---------------------------------------------------------------------------


def test_good_card_purchase_grows_balance_with_a_purchase_line(client):
    tid, headers, card = funded_tenant(client)
    response = buy(client, tid, headers, "120.25", card)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["amount"] == "120.25" and body["currency"] == "USD"
    assert body["balance"] == "120.25"
    assert "failure_code" not in body or body["failure_code"] is None
    view = credits(client, tid, headers)
    assert view["balance"] == "120.25" and view["reserved"] == "0.00"
    lines = all_transactions(client, tid)
    assert [(x["kind"], x["amount"], x["balance_after"]) for x in lines] == [
        ("purchase", "120.25", "120.25")
    ]
    second = buy(client, tid, headers, "50", card)
    assert second.json()["balance"] == "170.25"
    assert credits(client, tid)["balance"] == "170.25"


@pytest.mark.parametrize(
    ("number", "failure_code"),
    [
        (CARD_DECLINED, "card_declined"),
        (CARD_EXPIRED, "expired_card"),
        (CARD_PROCESSING_ERROR, "processing_error"),
    ],
)
def test_failing_cards_record_a_failed_purchase_and_move_no_money(
    client, engine, number, failure_code
):
    tid, headers, good = funded_tenant(client)
    buy(client, tid, headers, "60", good)
    bad = add_card(client, tid, headers, number)  # each test card can be stored
    response = buy(client, tid, headers, "100", bad["id"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "failed"
    assert body["failure_code"] == failure_code
    assert body["balance"] == "60.00"
    assert credits(client, tid)["balance"] == "60.00"
    assert [x["kind"] for x in all_transactions(client, tid)] == ["purchase"]
    rows = purchase_rows(engine, tid)
    failed = [r for r in rows if r.id == body["id"]]
    assert len(failed) == 1 and failed[0].status == "failed" and failed[0].ledger_seq is None


def test_card_with_past_expiry_is_refused_when_stored(client):
    tenant = create_tenant(client)
    headers = billing_admin(client, tenant["id"])
    today = datetime.now(UTC).date()  # the provider's clock is UTC
    response = client.post(
        f"/v1/tenants/{tenant['id']}/payment-methods",
        json={"card_number": CARD_OK, "exp_month": 12, "exp_year": today.year - 1},
        headers=headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "expired_card"
    listing = client.get(f"/v1/tenants/{tenant['id']}/payment-methods", headers=headers)
    assert listing.json()["items"] == []
    # A card is good through the end of its expiry month.
    this_month = add_card(client, tenant["id"], headers, exp_month=today.month, exp_year=today.year)
    assert (this_month["exp_month"], this_month["exp_year"]) == (today.month, today.year)


def test_card_that_expires_after_storing_fails_as_expired_when_charged(app, client, monkeypatch):
    tid, headers, _ = funded_tenant(client)
    today = datetime.now(UTC).date()  # the provider's clock is UTC
    card = add_card(client, tid, headers, exp_month=today.month, exp_year=today.year)
    next_year = date(today.year + 1, today.month, 1)
    monkeypatch.setitem(
        app.state.ctx.services, "payments", SimulatedProvider(clock=lambda: next_year)
    )
    response = buy(client, tid, headers, "50", card["id"])
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "failed"
    assert response.json()["failure_code"] == "expired_card"
    assert credits(client, tid)["balance"] == "0.00"


def test_card_listing_shows_display_fields_never_the_number(client, engine):
    tenant = create_tenant(client)
    tid = tenant["id"]
    headers = billing_admin(client, tid)
    response = client.post(
        f"/v1/tenants/{tid}/payment-methods",
        json={"card_number": "5555555555554444", "exp_month": 7, "exp_year": FAR_EXPIRY_YEAR},
        headers={**headers, "Idempotency-Key": unique("card")},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert "5555555555554444" not in response.text
    assert (created["brand"], created["last4"]) == ("mastercard", "4444")
    assert (created["exp_month"], created["exp_year"]) == (7, FAR_EXPIRY_YEAR)
    visa = add_card(client, tid, headers)
    listing = client.get(f"/v1/tenants/{tid}/payment-methods", headers=headers)
    assert listing.status_code == 200
    assert "5555555555554444" not in listing.text and CARD_OK not in listing.text
    items = listing.json()["items"]
    assert {i["id"] for i in items} == {created["id"], visa["id"]}
    allowed = {"id", "brand", "last4", "exp_month", "exp_year", "created_at"}
    for item in items:
        assert set(item) <= allowed, item
        assert not any("number" in name or "token" in name for name in item)
    # Nor is the full number kept anywhere we store things about the card.
    with engine.connect() as connection:
        stored = [
            *connection.execute(
                select(t.payment_methods).where(t.payment_methods.c.tenant_id == tid)
            ).all(),
            *connection.execute(
                select(t.idempotency_keys).where(t.idempotency_keys.c.tenant_id == tid)
            ).all(),
            *connection.execute(select(t.audit_log).where(t.audit_log.c.tenant_id == tid)).all(),
        ]
    for row in stored:
        text = repr(tuple(row))
        assert "5555555555554444" not in text and CARD_OK not in text, text


def test_only_billing_roles_manage_cards_and_buy(client):
    tid, _, card = funded_tenant(client)
    reader = admin(client, tid, "user_admin")
    assert buy(client, tid, reader, "50", card).status_code == 403
    assert client.get(f"/v1/tenants/{tid}/payment-methods", headers=reader).status_code == 403
    global_admin = admin(client, tid, "global_admin")
    assert buy(client, tid, global_admin, "50", card).status_code == 201
    other_tid, other_headers, _ = funded_tenant(client)
    assert buy(client, tid, other_headers, "50", card).status_code in (403, 404)
    assert client.post(f"/v1/tenants/{tid}/credits/purchases", json={}).status_code == 401
    assert credits(client, tid)["balance"] == "50.00"
    assert credits(client, other_tid)["balance"] == "0.00"


def test_readers_see_balance_and_transactions_but_cannot_fund(client):
    tid, headers, card = funded_tenant(client)
    buy(client, tid, headers, "50", card)
    reader = admin(client, tid, "reports_reader")
    view = client.get(f"/v1/tenants/{tid}/credits", headers=reader)
    assert view.status_code == 200 and view.json()["balance"] == "50.00"
    listed = client.get(f"/v1/tenants/{tid}/credits/transactions", headers=reader)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1
    assert buy(client, tid, reader, "50", card).status_code == 403
    assert add_card_response(client, tid, reader).status_code == 403
    no_read = admin(client, tid, "helpdesk_admin")
    assert client.get(f"/v1/tenants/{tid}/credits", headers=no_read).status_code == 403
    assert client.get(f"/v1/tenants/{tid}/credits/transactions", headers=no_read).status_code == 403
    stranger = admin(client, create_tenant(client)["id"], "global_admin")
    assert client.get(f"/v1/tenants/{tid}/credits", headers=stranger).status_code in (403, 404)
    assert client.get(f"/v1/tenants/{tid}/credits/transactions", headers=stranger).status_code in (
        403,
        404,
    )
    assert client.get("/v1/tenants/no-such-tenant/credits", headers=OPERATOR).status_code == 404


def add_card_response(client: Any, tenant_id: str, headers: dict[str, str]) -> Any:
    return client.post(
        f"/v1/tenants/{tenant_id}/payment-methods",
        json={"card_number": CARD_OK, "exp_month": 12, "exp_year": FAR_EXPIRY_YEAR},
        headers=headers,
    )


def test_deleting_a_card_removes_it_and_disables_auto_recharge_using_it(client):
    tid, headers, card = funded_tenant(client)
    spare = add_card(client, tid, headers, "5555555555554444")
    adjust(client, tid, "500")
    enabled = set_auto_recharge(
        client, tid, headers, enabled=True, threshold="100", amount="200", payment_method_id=card
    )
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["enabled"] is True

    # Removing another card leaves auto-recharge alone.
    assert (
        client.delete(f"/v1/tenants/{tid}/payment-methods/{spare['id']}", headers=headers)
    ).status_code == 204
    assert credits(client, tid)["auto_recharge"]["enabled"] is True

    removed = client.delete(f"/v1/tenants/{tid}/payment-methods/{card}", headers=headers)
    assert removed.status_code == 204
    listing = client.get(f"/v1/tenants/{tid}/payment-methods", headers=headers).json()
    assert listing["items"] == []
    settings = credits(client, tid)["auto_recharge"]
    assert settings["enabled"] is False
    assert settings["payment_method_id"] is None
    gone = buy(client, tid, headers, "50", card)
    assert gone.status_code == 404, gone.text
    again = client.delete(f"/v1/tenants/{tid}/payment-methods/{card}", headers=headers)
    assert again.status_code == 404


# --- 3. amounts --------------------------------------------------------------------------


ACCEPTED_AMOUNTS = ["50", "50.00", "50.5", "999999.99", "1000000", "1000000.00"]
REFUSED_AMOUNTS: list[tuple[Any, str]] = [
    ("49.99", "amount_below_minimum"),
    ("1", "amount_below_minimum"),
    ("1000000.01", "validation_error"),
    ("1000001", "validation_error"),
    ("9999999999999", "validation_error"),
    ("50.001", "validation_error"),
    ("-50", "validation_error"),
    ("0", "validation_error"),
    ("5e1", "validation_error"),
    ("fifty", "validation_error"),
    (" 50", "validation_error"),
    ("", "validation_error"),
    (50, "validation_error"),
    (50.0, "validation_error"),
    (None, "validation_error"),
]


def test_accepted_amounts(client):
    tid, headers, card = funded_tenant(client)
    expected = Decimal(0)
    for amount in ACCEPTED_AMOUNTS:
        response = buy(client, tid, headers, amount, card)
        assert response.status_code == 201, (amount, response.text)
        assert response.json()["status"] == "succeeded"
        expected += Decimal(amount)
        assert Decimal(response.json()["balance"]) == expected
    assert Decimal(credits(client, tid)["balance"]) == expected


def test_refused_amounts_change_nothing(client, engine):
    tid, headers, card = funded_tenant(client)
    for amount, code in REFUSED_AMOUNTS:
        response = client.post(
            f"/v1/tenants/{tid}/credits/purchases",
            json={"amount": amount, "payment_method_id": card},
            headers=headers,
        )
        assert response.status_code == 422, (amount, response.text)
        assert response.json()["code"] == code, (amount, response.json())
    assert credits(client, tid)["balance"] == "0.00"
    assert purchase_rows(engine, tid) == []


def test_maximum_purchase_is_configurable(backend_url):
    app = create_app(make_settings(backend_url, COMMCREDITS_MAX_PURCHASE="500"))
    with TestClient(app, raise_server_exceptions=False) as client:
        tid, headers, card = funded_tenant(client)
        over = buy(client, tid, headers, "500.01", card)
        assert over.status_code == 422, over.text
        assert over.json()["code"] == "validation_error"
        recharge = set_auto_recharge(
            client,
            tid,
            headers,
            enabled=True,
            threshold="60",
            amount="501",
            payment_method_id=card,
        )
        assert recharge.status_code == 422, recharge.text
        assert buy(client, tid, headers, "500", card).status_code == 201
        assert credits(client, tid)["balance"] == "500.00"


def test_jpy_tenant_buys_whole_yen(client, engine):
    tid, headers, card = funded_tenant(client, country="JP", billing_country="JP", currency="JPY")
    fractional = buy(client, tid, headers, "50.5", card)
    assert fractional.status_code == 422
    assert fractional.json()["code"] == "validation_error"
    assert buy(client, tid, headers, "49", card).json()["code"] == "amount_below_minimum"
    response = buy(client, tid, headers, "5000", card)
    assert response.status_code == 201, response.text
    assert response.json()["amount"] == "5000" and response.json()["currency"] == "JPY"
    view = credits(client, tid)
    assert (view["currency"], view["balance"]) == ("JPY", "5000")
    assert [x["amount"] for x in all_transactions(client, tid)] == ["5000"]
    assert len(purchase_rows(engine, tid)) == 1


# --- 4. idempotent purchases -------------------------------------------------------------


def test_purchase_retry_with_same_key_returns_first_result_once(client, engine, counting_provider):
    tid, headers, card = funded_tenant(client)
    key = unique("buy")
    first = buy(client, tid, headers, "80", card, key=key)
    second = buy(client, tid, headers, "80", card, key=key)
    assert first.status_code == second.status_code == 201, second.text
    assert first.json() == second.json()
    assert first.json()["balance"] == "80.00"
    lines = all_transactions(client, tid)
    assert [(x["kind"], x["amount"]) for x in lines] == [("purchase", "80.00")]
    assert len(purchase_rows(engine, tid)) == 1
    assert counting_provider.charge_keys == [first.json()["id"]]
    # Without a key, the same body is a new purchase.
    third = buy(client, tid, headers, "80", card)
    assert third.json()["id"] != first.json()["id"]
    assert credits(client, tid)["balance"] == "160.00"


def test_failed_purchase_replays_as_failed_without_charging_again(
    client, engine, counting_provider
):
    tid, headers, _ = funded_tenant(client)
    declined = add_card(client, tid, headers, CARD_DECLINED)
    key = unique("buy")
    first = buy(client, tid, headers, "80", declined["id"], key=key)
    second = buy(client, tid, headers, "80", declined["id"], key=key)
    assert first.json() == second.json()
    assert first.json()["status"] == "failed"
    assert len(counting_provider.charge_keys) == 1
    assert len(purchase_rows(engine, tid)) == 1


def test_same_key_with_another_body_is_a_conflict(client, engine):
    tid, headers, card = funded_tenant(client)
    key = unique("buy")
    assert buy(client, tid, headers, "80", card, key=key).status_code == 201
    other_amount = buy(client, tid, headers, "90", card, key=key)
    assert other_amount.status_code == 409, other_amount.text
    assert other_amount.json()["code"] == "idempotency_conflict"
    spare = add_card(client, tid, headers, "5555555555554444")
    other_card = buy(client, tid, headers, "80", spare["id"], key=key)
    assert other_card.status_code == 409
    assert other_card.json()["code"] == "idempotency_conflict"
    assert credits(client, tid)["balance"] == "80.00"
    assert len(all_transactions(client, tid)) == 1
    assert len(purchase_rows(engine, tid)) == 1


def test_ten_parallel_retries_buy_once(live_server, client, engine):
    tid, headers, card = funded_tenant(client)
    url = f"{live_server.url}/v1/tenants/{tid}/credits/purchases"
    body = {"amount": "250", "payment_method_id": card}
    key_headers = {**headers, "Idempotency-Key": unique("race")}

    def attempt(_: int) -> httpx.Response:
        return httpx.post(url, json=body, headers=key_headers, timeout=30)

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(attempt, range(10)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert all(r.json()["status"] == "succeeded" for r in responses)
    assert credits(client, tid)["balance"] == "250.00"
    assert [x["kind"] for x in all_transactions(client, tid)] == ["purchase"]
    assert len(purchase_rows(engine, tid)) == 1


# --- 5. adjustments ----------------------------------------------------------------------


def test_adjustments_post_signed_lines_with_an_audit_record(client, engine):
    tenant = create_tenant(client)
    tid = tenant["id"]
    plus = adjust(client, tid, "25.50", "goodwill for outage")
    assert plus["kind"] == "adjustment"
    assert plus["amount"] == "25.50" and plus["balance_after"] == "25.50"
    assert plus["id"] and plus["at"]
    minus = adjust(client, tid, "-10.25", "  correction of a double charge  ")
    assert minus["amount"] == "-10.25" and minus["balance_after"] == "15.25"
    assert credits(client, tid)["balance"] == "15.25"
    lines = all_transactions(client, tid)
    assert [x["id"] for x in lines] == [plus["id"], minus["id"]]
    assert lines[0] == {k: v for k, v in plus.items() if k in lines[0]}

    with engine.connect() as connection:
        audits = connection.execute(
            select(t.audit_log).where(
                t.audit_log.c.tenant_id == tid, t.audit_log.c.action == "adjustment_posted"
            )
        ).all()
    by_ledger_id = {a.detail["ledger_id"]: a for a in audits}
    assert set(by_ledger_id) == {plus["id"], minus["id"]}
    assert by_ledger_id[plus["id"]].detail["reason"] == "goodwill for outage"
    assert by_ledger_id[plus["id"]].detail["amount"] == "25.50"
    assert by_ledger_id[minus["id"]].detail["amount"] == "-10.25"
    assert "correction of a double charge" in by_ledger_id[minus["id"]].detail["reason"]
    assert all(a.actor for a in audits)


BAD_ADJUSTMENTS: list[dict[str, Any]] = [
    {"amount": "10", "reason": ""},
    {"amount": "10", "reason": "   "},
    {"amount": "10", "reason": "\t\n"},
    {"amount": "10"},
    {"amount": "0", "reason": "nothing"},
    {"amount": "0.00", "reason": "nothing"},
    {"amount": "-0", "reason": "nothing"},
    {"amount": "10.001", "reason": "too fine"},
    {"amount": 10, "reason": "a number"},
    {"reason": "no amount"},
]


def test_bad_adjustments_are_refused(client, engine):
    tenant = create_tenant(client)
    for body in BAD_ADJUSTMENTS:
        response = client.post(
            f"/v1/tenants/{tenant['id']}/credits/adjustments", json=body, headers=OPERATOR
        )
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] == "validation_error", body
    assert all_transactions(client, tenant["id"]) == []
    assert credits(client, tenant["id"])["balance"] == "0.00"
    with engine.connect() as connection:
        assert (
            connection.execute(
                select(t.audit_log).where(
                    t.audit_log.c.tenant_id == tenant["id"],
                    t.audit_log.c.action == "adjustment_posted",
                )
            ).all()
            == []
        )


def test_adjustments_are_operator_only(client):
    tenant = create_tenant(client)
    tid = tenant["id"]
    for role in ("billing_admin", "global_admin"):
        response = client.post(
            f"/v1/tenants/{tid}/credits/adjustments",
            json={"amount": "100", "reason": "self-service"},
            headers=admin(client, tid, role),
        )
        assert response.status_code == 403, response.text
    assert credits(client, tid)["balance"] == "0.00"


def test_adjustment_with_idempotency_key_posts_once(client):
    tenant = create_tenant(client)
    tid = tenant["id"]
    headers = {**OPERATOR, "Idempotency-Key": unique("adj")}
    body = {"amount": "40", "reason": "refund"}
    url = f"/v1/tenants/{tid}/credits/adjustments"
    first = client.post(url, json=body, headers=headers)
    second = client.post(url, json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    conflict = client.post(url, json={**body, "amount": "41"}, headers=headers)
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"
    assert credits(client, tid)["balance"] == "40.00"


# --- 6. transactions ---------------------------------------------------------------------


def _at(line: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(line["at"].replace("Z", "+00:00"))


def _wire(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_transactions_filter_by_time(client):
    tenant = create_tenant(client)
    tid = tenant["id"]
    lines = []
    for amount in ("10", "20", "30"):
        lines.append(adjust(client, tid, amount))
        time.sleep(0.05)
    a, b, c = (_at(x) for x in lines)
    assert a < b < c

    def between(start: datetime | None, end: datetime | None) -> list[str]:
        params = {}
        if start is not None:
            params["from"] = _wire(start)
        if end is not None:
            params["to"] = _wire(end)
        return [x["amount"] for x in all_transactions(client, tid, **params)]

    assert between(a + (b - a) / 2, b + (c - b) / 2) == ["20.00"]
    assert between(a + (b - a) / 2, None) == ["20.00", "30.00"]
    assert between(None, b + (c - b) / 2) == ["10.00", "20.00"]
    assert between(b, None) == ["20.00", "30.00"]  # `from` is inclusive
    assert between(c + timedelta(seconds=1), None) == []
    assert between(None, a - timedelta(seconds=1)) == []
    # An offset is honoured: the same instant written in another zone.
    later = (b + (c - b) / 2).astimezone(datetime.fromisoformat("2000-01-01T00:00:00+05:30").tzinfo)
    assert [x["amount"] for x in all_transactions(client, tid, **{"from": later.isoformat()})] == [
        "30.00"
    ]
    bad = client.get(
        f"/v1/tenants/{tid}/credits/transactions", params={"from": "yesterday"}, headers=OPERATOR
    )
    assert bad.status_code == 422


def test_transactions_paginate_and_add_up_to_the_balance(client):
    tid, headers, card = funded_tenant(client)
    buy(client, tid, headers, "100", card)
    adjust(client, tid, "-30.10")
    declined = add_card(client, tid, headers, CARD_DECLINED)
    buy(client, tid, headers, "500", declined["id"])  # failed: no line
    adjust(client, tid, "5.05")
    buy(client, tid, headers, "60.40", card)
    adjust(client, tid, "-200")

    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = client.get(
            f"/v1/tenants/{tid}/credits/transactions", params=params, headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len({x["id"] for x in seen}) == len(seen) == 5
    assert [x["amount"] for x in seen] == ["100.00", "-30.10", "5.05", "60.40", "-200.00"]
    assert [x["kind"] for x in seen] == [
        "purchase",
        "adjustment",
        "adjustment",
        "purchase",
        "adjustment",
    ]
    running = Decimal(0)
    for line in seen:
        running += Decimal(line["amount"])
        assert Decimal(line["balance_after"]) == running, line
    view = credits(client, tid, headers)
    assert Decimal(view["balance"]) == running == Decimal("-64.65")
    assert view["status"] == "depleted"
    assert all(_at(x) <= _at(y) for x, y in zip(seen, seen[1:], strict=False))
    for limit in (0, 1001):
        response = client.get(
            f"/v1/tenants/{tid}/credits/transactions", params={"limit": limit}, headers=headers
        )
        assert response.status_code == 422


# --- 8. auto-recharge and balance events ----------------------------------------------


def recharge_purchases(engine: Any, tenant_id: str) -> list[Any]:
    return [r for r in purchase_rows(engine, tenant_id) if r.kind == "auto_recharge"]


def run_recharges(app: Any) -> int:
    ctx = app.state.ctx
    return resolve_pending(ctx.engine, ctx.services["payments"])


def test_auto_recharge_buys_once_per_crossing(app, client, engine):
    tid, headers, card = funded_tenant(client)
    adjust(client, tid, "500")
    settings = set_auto_recharge(
        client, tid, headers, enabled=True, threshold="100", amount="200", payment_method_id=card
    )
    assert settings.status_code == 200, settings.text
    assert settings.json()["enabled"] is True
    assert (settings.json()["threshold"], settings.json()["amount"]) == ("100.00", "200.00")
    assert recharge_purchases(engine, tid) == []  # 500 is above the line

    adjust(client, tid, "-450")  # available 50 < 100
    pending = recharge_purchases(engine, tid)
    assert len(pending) == 1 and pending[0].status == "pending"
    assert pending[0].amount == Decimal("200")
    adjust(client, tid, "-10")  # a second drop while one is in flight
    assert len(recharge_purchases(engine, tid)) == 1
    # Saving the settings again while it is in flight does not start another.
    resaved = set_auto_recharge(
        client, tid, headers, enabled=True, threshold="100", amount="200", payment_method_id=card
    )
    assert resaved.status_code == 200, resaved.text
    assert len(recharge_purchases(engine, tid)) == 1

    run_recharges(app)
    done = recharge_purchases(engine, tid)
    assert len(done) == 1 and done[0].status == "succeeded"
    lines = all_transactions(client, tid)
    assert [x["kind"] for x in lines].count("auto_recharge") == 1
    assert lines[-1]["kind"] == "auto_recharge" and lines[-1]["amount"] == "200.00"
    assert credits(client, tid)["balance"] == "240.00"
    succeeded = outbox_events(engine, tid, "recharge_succeeded")
    assert len(succeeded) == 1
    assert succeeded[0].payload["purchase_id"] == done[0].id
    assert outbox_events(engine, tid, "recharge_failed") == []
    assert outbox_events(engine, tid, "balance_low") == []  # auto-recharge is on

    run_recharges(app)  # nothing more to do
    assert len(recharge_purchases(engine, tid)) == 1
    assert credits(client, tid)["balance"] == "240.00"

    # Back above the line, so the next crossing recharges again.
    adjust(client, tid, "-150")  # 90 < 100
    assert len(recharge_purchases(engine, tid)) == 2
    run_recharges(app)
    assert credits(client, tid)["balance"] == "290.00"
    assert [x["kind"] for x in all_transactions(client, tid)].count("auto_recharge") == 2
    assert len(outbox_events(engine, tid, "recharge_succeeded")) == 2


@pytest.mark.parametrize(
    ("number", "failure_code"),
    [(CARD_DECLINED, "card_declined"), (CARD_EXPIRED, "expired_card")],
)
def test_failed_auto_recharge_records_a_failure_and_an_event(
    app, client, engine, number, failure_code
):
    tid, headers, _ = funded_tenant(client)
    bad = add_card(client, tid, headers, number)
    adjust(client, tid, "500")
    set_auto_recharge(
        client,
        tid,
        headers,
        enabled=True,
        threshold="100",
        amount="200",
        payment_method_id=bad["id"],
    )
    adjust(client, tid, "-450")
    assert len(recharge_purchases(engine, tid)) == 1
    run_recharges(app)
    rows = recharge_purchases(engine, tid)
    assert len(rows) == 1
    assert (rows[0].status, rows[0].failure_code) == ("failed", failure_code)
    assert "auto_recharge" not in [x["kind"] for x in all_transactions(client, tid)]
    assert credits(client, tid)["balance"] == "50.00"
    failed = outbox_events(engine, tid, "recharge_failed")
    assert len(failed) == 1
    assert failed[0].payload["failure_code"] == failure_code
    assert failed[0].payload["reason"]
    if failure_code == "expired_card":
        assert "expired" in failed[0].payload["reason"]
    assert outbox_events(engine, tid, "recharge_succeeded") == []

    # Still below the line: the crossing is spent, no retry storm.
    adjust(client, tid, "-5")
    run_recharges(app)
    assert len(recharge_purchases(engine, tid)) == 1
    # Up above and down again: a new crossing, a new attempt.
    adjust(client, tid, "100")
    adjust(client, tid, "-100")
    assert len(recharge_purchases(engine, tid)) == 2


def test_tenant_that_becomes_ineligible_gets_no_auto_recharge(app, client, engine):
    tid, headers, card = funded_tenant(client)
    adjust(client, tid, "500")
    set_auto_recharge(
        client, tid, headers, enabled=True, threshold="100", amount="200", payment_method_id=card
    )
    patched = client.patch(f"/v1/tenants/{tid}", json={"agreement": "nce"}, headers=OPERATOR)
    assert patched.status_code == 200, patched.text
    assert credits(client, tid)["status"] == "not_available"
    adjust(client, tid, "-450")
    run_recharges(app)
    assert recharge_purchases(engine, tid) == []
    assert credits(client, tid)["balance"] == "50.00"
    assert "auto_recharge" not in [x["kind"] for x in all_transactions(client, tid)]


def test_auto_recharge_settings_are_validated(client):
    tid, headers, card = funded_tenant(client)
    cases = [
        {"enabled": True, "threshold": "100", "amount": "49.99", "payment_method_id": card},
        {"enabled": True, "threshold": "100", "payment_method_id": card},
        {"enabled": True, "threshold": "100", "amount": "100"},
        {"enabled": True, "threshold": "-1", "amount": "100", "payment_method_id": card},
        {"enabled": True, "threshold": "100", "amount": "1000000.01", "payment_method_id": card},
        {"enabled": True, "threshold": "100", "amount": "100", "payment_method_id": "pm_nope"},
    ]
    for body in cases:
        response = set_auto_recharge(client, tid, headers, **body)
        assert 400 <= response.status_code < 500, (body, response.text)
    assert credits(client, tid)["auto_recharge"]["enabled"] is False
    assert (
        set_auto_recharge(client, tid, admin(client, tid, "user_admin"), enabled=False).status_code
        == 403
    )


def test_balance_events_fire_once_per_crossing_and_rearm(client, engine):
    tid, headers, _ = funded_tenant(client)
    # A threshold with auto-recharge off: the low-balance line (SPEC §4).
    settings = set_auto_recharge(client, tid, headers, enabled=False, threshold="100")
    assert settings.status_code == 200, settings.text

    def count(event: str) -> int:
        return len(outbox_events(engine, tid, event))

    adjust(client, tid, "300")
    assert (count("balance_low"), count("balance_depleted")) == (0, 0)
    adjust(client, tid, "-250")  # 50: below the threshold
    assert count("balance_low") == 1
    adjust(client, tid, "-10")  # 40: still below, no second mail
    assert count("balance_low") == 1
    adjust(client, tid, "100")  # 140: re-armed
    adjust(client, tid, "-50")  # 90: a new crossing
    assert count("balance_low") == 2
    assert count("balance_depleted") == 0

    adjust(client, tid, "-90")  # 0: depleted ("zero or below")
    assert count("balance_depleted") == 1
    adjust(client, tid, "-5")  # -5: still depleted
    assert count("balance_depleted") == 1
    adjust(client, tid, "10")  # 5: re-armed
    adjust(client, tid, "-5")  # 0: a new crossing
    assert count("balance_depleted") == 2
    assert count("balance_low") == 2
    payload = outbox_events(engine, tid, "balance_depleted")[0].payload
    assert payload["balance"] == "0.00"
    assert count("recharge_succeeded") == count("recharge_failed") == 0


def test_purchases_are_listed_failed_ones_included_and_paginated(client):
    tenant = create_tenant(client)
    headers = billing_admin(client, tenant["id"])
    good = add_card(client, tenant["id"], headers)
    declined = add_card(client, tenant["id"], headers, number="4000000000000002")
    first = buy(client, tenant["id"], headers, "60.00", good["id"]).json()
    second = buy(client, tenant["id"], headers, "70.00", declined["id"]).json()
    third = buy(client, tenant["id"], headers, "80.00", good["id"]).json()
    assert second["status"] == "failed" and second["failure_code"] == "card_declined"
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get(
            f"/v1/tenants/{tenant['id']}/credits/purchases", params=params, headers=headers
        ).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [p["id"] for p in seen] == [first["id"], second["id"], third["id"]]
    assert [p["status"] for p in seen] == ["succeeded", "failed", "succeeded"]
    one = client.get(
        f"/v1/tenants/{tenant['id']}/credits/purchases/{second['id']}", headers=headers
    )
    assert one.status_code == 200 and one.json()["failure_code"] == "card_declined"
    missing = client.get(
        f"/v1/tenants/{tenant['id']}/credits/purchases/pur_missing", headers=headers
    )
    assert missing.status_code == 404
