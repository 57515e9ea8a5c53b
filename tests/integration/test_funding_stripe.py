"""Funding through the HTTP API with the Stripe provider configured, against the
local fake Stripe: cards, purchases, declines, and a provider that does not answer."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from commcredits.adapters.payments.stripe_provider import StripeProvider
from commcredits.services.funding import resolve_pending
from commcredits.store import tables as t
from tests.conftest import BACKENDS
from tests.integration.fake_stripe import FakeStripe
from tests.support.api import OPERATOR, admin, buy, create_tenant, unique
from tests.support.payments import stripe_backed_app

API_KEY = "sk_test_x"
CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_EXPIRED = "4000000000000069"
CARD_PROCESSING_ERROR = "4000000000000119"
CARD_AUTHENTICATION_REQUIRED = "4000002760003184"
CARD_BLOCKED_AT_ATTACH = "4100000000000019"
FAR_EXPIRY_YEAR = date.today().year + 5
# The app's own Stripe timeout is 20 s; a test provider that gives up sooner
# keeps the timeout cases fast. It talks to the same fake, with the same key.
SHORT_TIMEOUT_SECONDS = 0.3
SLOW_ANSWER_SECONDS = 0.8
INTENTS = "/v1/payment_intents"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=API_KEY) as server:
        yield server


@pytest.fixture(scope="module", params=BACKENDS)
def stripe_app(request: pytest.FixtureRequest, pg_cluster: Any, fake: FakeStripe) -> Any:
    return stripe_backed_app(request.param, pg_cluster, API_KEY, fake.url)


@pytest.fixture()
def client(stripe_app: Any, fake: FakeStripe) -> Iterator[TestClient]:
    with TestClient(stripe_app, raise_server_exceptions=False) as test_client:
        yield test_client
    fake.slow_seconds = 0
    fake.fail_next_with_status = None
    fake.force_intent_status = None


@pytest.fixture()
def black_hole() -> Iterator[str]:
    """An address that takes connections and never answers: a provider that hangs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(32)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class _KeyInUseHandler(BaseHTTPRequestHandler):
    """Stripe's answer while another request with the same Idempotency-Key is
    still being processed: 409, type idempotency_error."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        payload = json.dumps(
            {
                "error": {
                    "type": "idempotency_error",
                    "message": "There is currently another in-progress request using "
                    "this Idempotent Key (that probably means you submitted twice, "
                    "and the other request is still going through): test. "
                    "Please try again later.",
                }
            }
        ).encode()
        self.send_response(409)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


@pytest.fixture()
def key_in_use() -> Iterator[str]:
    """A Stripe that is still busy with an earlier request under the same key."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeyInUseHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def short_timeout_provider(api_base: str) -> StripeProvider:
    return StripeProvider(api_key=API_KEY, api_base=api_base, timeout_seconds=SHORT_TIMEOUT_SECONDS)


def add_card(client: Any, tenant_id: str, headers: dict[str, str], number: str) -> Any:
    return client.post(
        f"/v1/tenants/{tenant_id}/payment-methods",
        json={"card_number": number, "exp_month": 11, "exp_year": FAR_EXPIRY_YEAR},
        headers=headers,
    )


def setup_tenant(client: Any, **overrides: Any) -> tuple[str, dict[str, str], str]:
    tenant = create_tenant(client, **overrides)
    headers = admin(client, tenant["id"], "billing_admin")
    card = add_card(client, tenant["id"], headers, CARD_OK)
    assert card.status_code == 201, card.text
    return tenant["id"], headers, str(card.json()["id"])


def balance(client: Any, tenant_id: str) -> str:
    return str(client.get(f"/v1/tenants/{tenant_id}/credits", headers=OPERATOR).json()["balance"])


def lines(client: Any, tenant_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/tenants/{tenant_id}/credits/transactions", headers=OPERATOR)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def customers_of(fake: FakeStripe, tenant_id: str) -> set[str]:
    return {
        c["id"]
        for c in fake.customers.values()
        if c["metadata"].get("tenant_reference") == tenant_id
    }


def intents_of(fake: FakeStripe, tenant_id: str) -> list[dict[str, Any]]:
    customers = customers_of(fake, tenant_id)
    return [i for i in fake.payment_intents.values() if i["customer"] in customers]


def intent_requests_of(fake: FakeStripe, tenant_id: str) -> list[Any]:
    customers = customers_of(fake, tenant_id)
    return [r for r in fake.requests_to("POST", INTENTS) if r.form.get("customer") in customers]


def purchase_row(stripe_app: Any, tenant_id: str, purchase_id: str) -> Any:
    with stripe_app.state.ctx.engine.connect() as connection:
        return connection.execute(
            select(t.purchases).where(
                t.purchases.c.tenant_id == tenant_id, t.purchases.c.id == purchase_id
            )
        ).one()


def test_store_card_keeps_only_the_stripe_token(client, stripe_app, fake):
    tenant = create_tenant(client)
    tid = tenant["id"]
    headers = admin(client, tid, "billing_admin")
    response = add_card(client, tid, headers, "5555555555554444")
    assert response.status_code == 201, response.text
    card = response.json()
    assert (card["brand"], card["last4"]) == ("mastercard", "4444")
    assert (card["exp_month"], card["exp_year"]) == (11, FAR_EXPIRY_YEAR)
    assert "5555555555554444" not in response.text
    # At Stripe: a customer for the tenant, with the card attached to it.
    (customer,) = customers_of(fake, tid)
    attached = [pm for pm in fake.payment_methods.values() if pm["customer"] == customer]
    assert len(attached) == 1 and attached[0]["card"]["last4"] == "4444"
    with stripe_app.state.ctx.engine.connect() as connection:
        row = connection.execute(
            select(t.payment_methods).where(t.payment_methods.c.tenant_id == tid)
        ).one()
    assert row.provider == "stripe"
    assert row.provider_token == f"{customer}/{attached[0]['id']}"
    assert "5555555555554444" not in repr(tuple(row))
    listing = client.get(f"/v1/tenants/{tid}/payment-methods", headers=headers)
    assert [i["id"] for i in listing.json()["items"]] == [card["id"]]


def test_expired_and_blocked_cards_are_refused_when_stored(client, fake):
    tenant = create_tenant(client)
    tid = tenant["id"]
    headers = admin(client, tid, "billing_admin")
    requests_before = len(fake.requests)
    expired = client.post(
        f"/v1/tenants/{tid}/payment-methods",
        json={"card_number": CARD_OK, "exp_month": 1, "exp_year": date.today().year - 1},
        headers=headers,
    )
    assert expired.status_code == 422, expired.text
    assert expired.json()["code"] == "expired_card"
    assert len(fake.requests) == requests_before  # refused before Stripe is asked
    blocked = add_card(client, tid, headers, CARD_BLOCKED_AT_ATTACH)
    assert blocked.status_code == 422, blocked.text
    listing = client.get(f"/v1/tenants/{tid}/payment-methods", headers=headers)
    assert listing.json()["items"] == []


def test_purchase_charges_one_payment_intent(client, stripe_app, fake):
    tid, headers, card = setup_tenant(client)
    response = buy(client, tid, headers, "75.25", card)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["balance"]) == ("succeeded", "75.25")
    (intent,) = intents_of(fake, tid)
    assert (intent["amount"], intent["currency"], intent["status"]) == (7525, "usd", "succeeded")
    (request,) = intent_requests_of(fake, tid)
    assert request.idempotency_key == body["id"]  # the purchase is the key
    assert purchase_row(stripe_app, tid, body["id"]).provider_reference == intent["id"]
    assert [(x["kind"], x["amount"]) for x in lines(client, tid)] == [("purchase", "75.25")]


def test_purchase_in_a_zero_decimal_currency(client, fake):
    tid, headers, card = setup_tenant(client, country="JP", billing_country="JP", currency="JPY")
    response = buy(client, tid, headers, "5000", card)
    assert response.status_code == 201, response.text
    (intent,) = intents_of(fake, tid)
    assert (intent["amount"], intent["currency"]) == (5000, "jpy")
    assert balance(client, tid) == "5000"


@pytest.mark.parametrize(
    ("number", "failure_code"),
    [
        (CARD_DECLINED, "card_declined"),
        (CARD_EXPIRED, "expired_card"),
        (CARD_PROCESSING_ERROR, "processing_error"),
        (CARD_AUTHENTICATION_REQUIRED, "card_declined"),
    ],
)
def test_declined_charge_is_a_failed_purchase(client, stripe_app, fake, number, failure_code):
    tid, headers, _ = setup_tenant(client)
    stored = add_card(client, tid, headers, number)
    assert stored.status_code == 201, stored.text
    response = buy(client, tid, headers, "60", stored.json()["id"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["failure_code"], body["balance"]) == (
        "failed",
        failure_code,
        "0.00",
    )
    assert lines(client, tid) == []
    assert balance(client, tid) == "0.00"
    row = purchase_row(stripe_app, tid, body["id"])
    assert row.status == "failed" and row.ledger_seq is None
    assert len(intent_requests_of(fake, tid)) == 1  # a decline is final: no retry


def test_intent_left_unfinished_is_not_posted(client, fake):
    tid, headers, card = setup_tenant(client)
    fake.force_intent_status = "requires_action"
    response = buy(client, tid, headers, "60", card)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "failed"
    assert lines(client, tid) == []


@pytest.mark.parametrize("hiccup", ["slow_answer", "server_error"])
def test_a_lost_answer_is_retried_with_the_same_key_and_posted_once(
    client, stripe_app, fake, monkeypatch, hiccup
):
    tid, headers, card = setup_tenant(client)
    monkeypatch.setitem(stripe_app.state.ctx.services, "payments", short_timeout_provider(fake.url))
    if hiccup == "slow_answer":
        fake.slow_seconds = SLOW_ANSWER_SECONDS  # charged at Stripe, answer too late
    else:
        fake.fail_next_with_status = 503  # nothing done at Stripe
    response = buy(client, tid, headers, "90", card, key=unique("buy"))
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "succeeded"
    requests = intent_requests_of(fake, tid)
    assert len(requests) >= 2  # the inline retry
    assert len({r.idempotency_key for r in requests}) == 1
    assert len(intents_of(fake, tid)) == 1
    assert [x["amount"] for x in lines(client, tid)] == ["90.00"]
    assert balance(client, tid) == "90.00"


def test_provider_timeout_is_503_and_a_retry_completes_once(
    client, stripe_app, fake, monkeypatch, black_hole
):
    tid, headers, card = setup_tenant(client)
    key = unique("buy")
    services = stripe_app.state.ctx.services
    configured = services["payments"]
    monkeypatch.setitem(services, "payments", short_timeout_provider(black_hole))
    timed_out = buy(client, tid, headers, "120", card, key=key)
    assert timed_out.status_code == 503, timed_out.text
    assert timed_out.headers["content-type"].startswith("application/problem+json")
    problem = timed_out.json()
    assert problem["code"] == "payment_provider_unavailable"
    assert problem["status"] == 503
    # No money moved, and the purchase waits, pending, for an answer.
    assert balance(client, tid) == "0.00"
    assert lines(client, tid) == []
    with stripe_app.state.ctx.engine.connect() as connection:
        rows = connection.execute(select(t.purchases).where(t.purchases.c.tenant_id == tid)).all()
    assert [r.status for r in rows] == ["pending"]

    # A retry during the outage is still 503 and still moves nothing.
    again = buy(client, tid, headers, "120", card, key=key)
    assert again.status_code == 503
    assert balance(client, tid) == "0.00"

    services["payments"] = configured  # the provider is back
    done = buy(client, tid, headers, "120", card, key=key)
    assert done.status_code == 201, done.text
    assert done.json()["status"] == "succeeded"
    assert done.json()["id"] == rows[0].id
    replay = buy(client, tid, headers, "120", card, key=key)
    assert replay.json() == done.json()
    (intent,) = intents_of(fake, tid)
    assert intent["amount"] == 12000
    assert {r.idempotency_key for r in intent_requests_of(fake, tid)} == {rows[0].id}
    assert [(x["kind"], x["amount"]) for x in lines(client, tid)] == [("purchase", "120.00")]
    assert balance(client, tid) == "120.00"


def test_pending_purchase_is_finished_by_the_runner_then_the_retry_replays(
    client, stripe_app, fake, monkeypatch, black_hole
):
    tid, headers, card = setup_tenant(client)
    key = unique("buy")
    services = stripe_app.state.ctx.services
    configured = services["payments"]
    monkeypatch.setitem(services, "payments", short_timeout_provider(black_hole))
    assert buy(client, tid, headers, "55", card, key=key).status_code == 503
    services["payments"] = configured

    resolve_pending(stripe_app.state.ctx.engine, configured)
    assert balance(client, tid) == "55.00"
    retried = buy(client, tid, headers, "55", card, key=key)
    assert retried.status_code == 201, retried.text
    assert (retried.json()["status"], retried.json()["balance"]) == ("succeeded", "55.00")
    assert len(intents_of(fake, tid)) == 1
    assert len(lines(client, tid)) == 1
    resolve_pending(stripe_app.state.ctx.engine, configured)
    assert balance(client, tid) == "55.00"
    assert Decimal(lines(client, tid)[0]["amount"]) == Decimal("55")


def test_key_still_in_use_at_stripe_is_unavailable_not_a_server_error(
    client, stripe_app, fake, monkeypatch, key_in_use
):
    """Two server processes finishing the same pending purchase can reach Stripe
    at once; the second gets 409 idempotency_error ("in progress"). The outcome
    is unknown, exactly as after a timeout: 503, nothing posted, retry later."""
    tid, headers, card = setup_tenant(client)
    key = unique("buy")
    services = stripe_app.state.ctx.services
    configured = services["payments"]
    monkeypatch.setitem(services, "payments", short_timeout_provider(key_in_use))
    busy = buy(client, tid, headers, "70", card, key=key)
    assert busy.status_code == 503, busy.text
    assert busy.json()["code"] == "payment_provider_unavailable"
    assert balance(client, tid) == "0.00"
    services["payments"] = configured
    done = buy(client, tid, headers, "70", card, key=key)
    assert done.status_code == 201, done.text
    assert done.json()["status"] == "succeeded"
    assert len(intents_of(fake, tid)) == 1
    assert balance(client, tid) == "70.00"


def test_a_card_retried_after_a_lost_answer_is_made_once_at_stripe(
    client, stripe_app, fake, monkeypatch
):
    """Stripe keeps the card but its answer comes too late: the retry with the
    same Idempotency-Key reuses what the first attempt made (Stripe keys of our
    own per step), so the tenant ends with one card, one customer at Stripe."""
    tenant = create_tenant(client)
    tid = tenant["id"]
    headers = {**admin(client, tid, "billing_admin"), "Idempotency-Key": unique("card")}
    monkeypatch.setitem(stripe_app.state.ctx.services, "payments", short_timeout_provider(fake.url))
    cards_before = set(fake.payment_methods)
    fake.slow_seconds = SLOW_ANSWER_SECONDS
    lost = add_card(client, tid, headers, "5555555555554444")
    assert lost.status_code == 503, lost.text
    fake.slow_seconds = 0
    retried = add_card(client, tid, headers, "5555555555554444")
    assert retried.status_code == 201, retried.text
    made = set(fake.payment_methods) - cards_before
    assert len(made) == 1, made
    (customer,) = customers_of(fake, tid)
    assert fake.payment_methods[made.pop()]["customer"] == customer
    listing = client.get(f"/v1/tenants/{tid}/payment-methods", headers=headers)
    assert [i["id"] for i in listing.json()["items"]] == [retried.json()["id"]]
