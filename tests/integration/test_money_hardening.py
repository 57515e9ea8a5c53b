"""The money side under hostile or unlucky conditions: what a stored card leaves
behind, idempotent card storage at the provider, the balance ceiling before a
charge, a runner pass that one broken purchase must not stop, the purchase
check of verify-ledger, a timed-out purchase without a key, times out of
range, rate lookups in a bad currency, and the card listing's pages."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from commcredits.adapters.payments.stripe_provider import StripeProvider
from commcredits.api.app import create_app
from commcredits.services import accounts, funding
from commcredits.services.funding import resolve_pending
from commcredits.services.verify import verify_ledger
from commcredits.store import tables as t
from tests.conftest import BACKENDS, fresh_database_url, make_settings
from tests.integration.fake_stripe import FakeStripe
from tests.support.api import OPERATOR, admin, buy, create_tenant, unique
from tests.support.payments import CountingProvider, stripe_backed_app

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_BLOCKED_AT_ATTACH = "4100000000000019"
FAR_EXPIRY_YEAR = date.today().year + 5
STRIPE_KEY = "sk_test_hardening"
SHORT_TIMEOUT_SECONDS = 0.3


# --- helpers -----------------------------------------------------------------------------


def passes_luhn(digits: str) -> bool:
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = int(character) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def visa_cards_ending(last4: str, count: int) -> list[str]:
    """Distinct Luhn-valid Visa numbers that share their last four digits."""
    found = []
    middle = 31_415_926_535
    while len(found) < count:
        candidate = f"4{middle:011d}{last4}"
        if passes_luhn(candidate):
            found.append(candidate)
        middle += 7
    return found


def card_body(number: str, exp_month: int = 12, exp_year: int = FAR_EXPIRY_YEAR) -> dict[str, Any]:
    return {"card_number": number, "exp_month": exp_month, "exp_year": exp_year}


def post_card(
    client: Any, tenant_id: str, headers: dict[str, str], body: Any, key: str | None
) -> Any:
    extra = {"Idempotency-Key": key} if key else {}
    return client.post(
        f"/v1/tenants/{tenant_id}/payment-methods", json=body, headers={**headers, **extra}
    )


def adjust(client: Any, tenant_id: str, amount: str) -> Any:
    return client.post(
        f"/v1/tenants/{tenant_id}/credits/adjustments",
        json={"amount": amount, "reason": "test"},
        headers=OPERATOR,
    )


def funded_tenant(client: Any, number: str = CARD_OK) -> tuple[str, dict[str, str], str]:
    tenant = create_tenant(client)
    headers = admin(client, tenant["id"], "billing_admin")
    card = post_card(client, tenant["id"], headers, card_body(number), None)
    assert card.status_code == 201, card.text
    return tenant["id"], headers, str(card.json()["id"])


def key_rows(engine: Engine, tenant_id: str) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(t.idempotency_keys).where(t.idempotency_keys.c.tenant_id == tenant_id)
            ).all()
        )


def purchases_of(engine: Engine, tenant_id: str) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(t.purchases)
                .where(t.purchases.c.tenant_id == tenant_id)
                .order_by(t.purchases.c.created_at)
            ).all()
        )


def balance(client: Any, tenant_id: str) -> str:
    response = client.get(f"/v1/tenants/{tenant_id}/credits", headers=OPERATOR)
    assert response.status_code == 200, response.text
    return str(response.json()["balance"])


@pytest.fixture()
def counting(app: Any, monkeypatch: pytest.MonkeyPatch) -> CountingProvider:
    services = app.state.ctx.services
    provider = CountingProvider(services["payments"])
    monkeypatch.setitem(services, "payments", provider)
    return provider


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, pg_cluster: Any) -> Iterator[tuple[Any, TestClient]]:
    """An app on a database of its own, for tests whose runner passes or
    corruptions must touch no other test's purchases."""
    app = create_app(make_settings(fresh_database_url(request.param, pg_cluster)))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield app, test_client


# --- 1. a stored card leaves nothing that depends on its hidden digits ------------------------


def test_the_stored_request_digest_depends_only_on_what_is_kept_of_the_card(client, engine):
    tid, headers, _ = funded_tenant(client)
    first, second = visa_cards_ending("4242", 2)
    one = post_card(client, tid, headers, card_body(first), "card-one")
    two = post_card(client, tid, headers, card_body(second), "card-two")
    assert one.status_code == two.status_code == 201, (one.text, two.text)
    assert one.json()["id"] != two.json()["id"]

    digests = {row.key: row.request_hash for row in key_rows(engine, tid)}
    # Two cards alike in brand, last4 and expiry leave the same digest: it cannot
    # depend on the other digits, so it cannot be brute-forced back to them.
    assert digests["card-one"] == digests["card-two"]
    scope = f"POST /v1/tenants/{tid}/payment-methods"
    for number in (first, second):
        whole = hashlib.sha256(
            f'{scope}\n{{"card_number":"{number}","exp_month":12,'
            f'"exp_year":{FAR_EXPIRY_YEAR}}}'.encode()
        ).hexdigest()
        assert whole not in digests.values()

    # No column of any table holds either number, nor its middle digits.
    with engine.connect() as connection:
        for table in t.metadata.sorted_tables:
            for row in connection.execute(select(table)).all():
                text = repr(tuple(row))
                for number in (first, second):
                    assert number not in text, table.name
                    assert number[1:12] not in text, table.name


def test_card_replay_and_conflict_still_work(client, engine):
    tid, headers, _ = funded_tenant(client)
    key = unique("card")
    body = card_body("5555555555554444", exp_month=3)
    first = post_card(client, tid, headers, body, key)
    again = post_card(client, tid, headers, body, key)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json()
    other_expiry = post_card(client, tid, headers, {**body, "exp_month": 4}, key)
    assert other_expiry.status_code == 409, other_expiry.text
    assert other_expiry.json()["code"] == "idempotency_conflict"
    other_card = post_card(client, tid, headers, card_body("4000056655665556", 3), key)
    assert other_card.status_code == 409
    listing = client.get(f"/v1/tenants/{tid}/payment-methods", headers=headers).json()
    assert [i["last4"] for i in listing["items"]] == ["4242", "4444"]


# --- 2. the key is claimed before the provider keeps anything ---------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=STRIPE_KEY) as server:
        yield server


@pytest.fixture(scope="module", params=BACKENDS)
def stripe_app(request: pytest.FixtureRequest, pg_cluster: Any, fake: FakeStripe) -> Any:
    return stripe_backed_app(request.param, pg_cluster, STRIPE_KEY, fake.url)


@pytest.fixture()
def sclient(stripe_app: Any) -> Iterator[TestClient]:
    with TestClient(stripe_app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture()
def black_hole() -> Iterator[str]:
    """An address that takes connections and never answers: a provider that hangs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(32)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def stripe_objects_of(fake: FakeStripe, tenant_id: str) -> tuple[int, int]:
    customers = {
        c["id"]
        for c in fake.customers.values()
        if c["metadata"].get("tenant_reference") == tenant_id
    }
    methods = [pm for pm in fake.payment_methods.values() if pm["customer"] in customers]
    return len(customers), len(methods)


def test_a_card_retry_or_conflict_creates_nothing_more_at_stripe(sclient, fake):
    tid = create_tenant(sclient)["id"]
    headers = admin(sclient, tid, "billing_admin")
    key = unique("card")
    payment_method_requests = len(fake.requests_to("POST", "/v1/payment_methods"))
    first = post_card(sclient, tid, headers, card_body(CARD_OK), key)
    assert first.status_code == 201, first.text
    assert stripe_objects_of(fake, tid) == (1, 1)
    for _ in range(3):
        replay = post_card(sclient, tid, headers, card_body(CARD_OK), key)
        assert replay.status_code == 201 and replay.json() == first.json()
    conflict = post_card(sclient, tid, headers, card_body(CARD_OK, exp_month=1), key)
    assert conflict.status_code == 409, conflict.text
    assert stripe_objects_of(fake, tid) == (1, 1)
    assert len(fake.requests_to("POST", "/v1/payment_methods")) == payment_method_requests + 1


def test_a_card_refused_at_stripe_gives_its_key_back(sclient, fake):
    tid = create_tenant(sclient)["id"]
    headers = admin(sclient, tid, "billing_admin")
    key = unique("card")
    refused = post_card(sclient, tid, headers, card_body(CARD_BLOCKED_AT_ATTACH), key)
    assert refused.status_code == 422, refused.text
    # A corrected request with the same key is a new request, not a conflict.
    stored = post_card(sclient, tid, headers, card_body(CARD_OK), key)
    assert stored.status_code == 201, stored.text
    assert stored.json()["last4"] == "4242"


# --- 3. the balance ceiling is checked before the card is charged -----------------------------


def test_a_purchase_past_the_balance_ceiling_charges_nothing(client, engine, counting):
    tid, headers, card = funded_tenant(client)
    near = accounts.MAX_BALANCE - Decimal("60")
    assert adjust(client, tid, format(near, "f")).status_code == 201
    response = buy(client, tid, headers, "60.01", card, key=unique("buy"))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert "nothing was charged" in response.json()["detail"]
    assert counting.charge_keys == []
    assert purchases_of(engine, tid) == []
    assert key_rows(engine, tid) == []
    assert balance(client, tid) == format(near, "f")
    fits = buy(client, tid, headers, "60", card)  # exactly to the ceiling
    assert fits.status_code == 201, fits.text
    assert fits.json()["status"] == "succeeded"
    # Full now: an adjustment up is refused too, and plain ones down still work.
    assert adjust(client, tid, "0.01").status_code == 422
    assert adjust(client, tid, "-5").status_code == 201


def test_a_pending_purchase_counts_against_the_ceiling(
    sclient, stripe_app, fake, monkeypatch, black_hole
):
    tid = create_tenant(sclient)["id"]
    headers = admin(sclient, tid, "billing_admin")
    card = post_card(sclient, tid, headers, card_body(CARD_OK), None).json()["id"]
    assert (
        adjust(sclient, tid, format(accounts.MAX_BALANCE - Decimal("100"), "f")).status_code == 201
    )
    services = stripe_app.state.ctx.services
    monkeypatch.setitem(
        services,
        "payments",
        StripeProvider(
            api_key=STRIPE_KEY, api_base=black_hole, timeout_seconds=SHORT_TIMEOUT_SECONDS
        ),
    )
    assert buy(sclient, tid, headers, "60", card).status_code == 503  # 60 pending
    refused = buy(sclient, tid, headers, "50", card)
    assert refused.status_code == 422, refused.text
    assert "pending" in refused.json()["detail"]
    assert adjust(sclient, tid, "50").status_code == 422
    assert [p.status for p in purchases_of(stripe_app.state.ctx.engine, tid)] == ["pending"]


# --- 3. a runner pass resolves each purchase on its own ---------------------------------------


def auto_recharging_tenant(client: Any) -> tuple[str, str]:
    """A tenant whose balance just fell below its threshold: one pending recharge."""
    tid, headers, card = funded_tenant(client)
    assert adjust(client, tid, "500").status_code == 201
    settings = client.put(
        f"/v1/tenants/{tid}/credits/auto-recharge",
        json={"enabled": True, "threshold": "100", "amount": "200", "payment_method_id": card},
        headers=headers,
    )
    assert settings.status_code == 200, settings.text
    assert adjust(client, tid, "-450").status_code == 201
    return tid, card


def corrupt_purchase(engine: Engine, tenant_id: str, **values: Any) -> str:
    (row,) = purchases_of(engine, tenant_id)
    with engine.begin() as connection:
        connection.execute(
            update(t.purchases)
            .where(t.purchases.c.tenant_id == tenant_id, t.purchases.c.id == row.id)
            .values(**values)
        )
    return str(row.id)


def test_one_broken_purchase_does_not_stop_the_others(fresh):
    app, client = fresh
    engine = app.state.ctx.engine
    provider = app.state.ctx.services["payments"]
    # Broken before the provider is asked: a currency nobody can charge in.
    not_asked, _ = auto_recharging_tenant(client)
    not_asked_id = corrupt_purchase(engine, not_asked, currency="ZZZ")
    # Broken after the provider charged: an amount the balance cannot take.
    charged, _ = auto_recharging_tenant(client)
    charged_id = corrupt_purchase(engine, charged, amount=accounts.MAX_BALANCE)
    healthy, _ = auto_recharging_tenant(client)  # written last, so claimed last

    assert resolve_pending(engine, provider) == 1
    assert [p.status for p in purchases_of(engine, healthy)] == ["succeeded"]
    assert balance(client, healthy) == "250.00"
    for tenant_id in (not_asked, charged):
        (row,) = purchases_of(engine, tenant_id)
        assert (row.status, row.attempts) == ("pending", 1)
        assert row.claim_expires_at is not None  # held back for a while

    resolve_pending(engine, provider)  # still held back: nothing tried
    assert [p.attempts for p in purchases_of(engine, not_asked)] == [1]

    # Much later, at the last attempt.
    with engine.begin() as connection:
        connection.execute(
            update(t.purchases)
            .where(t.purchases.c.id.in_([not_asked_id, charged_id]))
            .values(attempts=funding.MAX_PROVIDER_ATTEMPTS - 1, claim_expires_at=None)
        )
    assert resolve_pending(engine, provider) == 1
    (given_up,) = purchases_of(engine, not_asked)
    assert (given_up.status, given_up.failure_code) == ("failed", "processing_error")
    assert given_up.ledger_seq is None
    # The card was charged for this one: it is never failed, it waits for an operator.
    (kept,) = purchases_of(engine, charged)
    assert (kept.status, kept.attempts) == ("pending", funding.MAX_PROVIDER_ATTEMPTS)
    assert balance(client, not_asked) == balance(client, charged) == "50.00"
    with engine.connect() as connection:
        account = connection.execute(
            select(t.credits_accounts).where(t.credits_accounts.c.tenant_id == not_asked)
        ).one()
    assert account.recharge_purchase_id is None  # the recharge machine is free again


# --- 4. verify-ledger checks purchases against their lines ------------------------------------


def test_verify_ledger_finds_purchases_without_their_line(fresh):
    app, client = fresh
    engine = app.state.ctx.engine
    posted_tenant, headers, card = funded_tenant(client)
    assert buy(client, posted_tenant, headers, "100", card).json()["status"] == "succeeded"
    failed_tenant, headers, _ = funded_tenant(client)
    declined = post_card(client, failed_tenant, headers, card_body(CARD_DECLINED), None)
    assert buy(client, failed_tenant, headers, "70", declined.json()["id"]).json()["status"] == (
        "failed"
    )
    good = buy(client, failed_tenant, headers, "80", _card_of(client, failed_tenant, headers))
    assert good.json()["status"] == "succeeded"
    report = verify_ledger(engine)
    assert report.ok, report.problems

    succeeded_id = purchases_of(engine, posted_tenant)[0].id
    failed_id = purchases_of(engine, failed_tenant)[0].id
    with engine.begin() as connection:
        # A posted purchase that says it failed, and a failed one that says it succeeded:
        # every balance still adds up; only the purchase check can tell.
        connection.execute(
            update(t.purchases)
            .where(t.purchases.c.id == succeeded_id)
            .values(status="failed", failure_code="card_declined")
        )
        connection.execute(
            update(t.purchases)
            .where(t.purchases.c.id == failed_id)
            .values(status="succeeded", failure_code=None)
        )
    report = verify_ledger(engine)
    assert not report.ok
    assert any(succeeded_id in p and "moved no money" in p for p in report.problems), report
    assert any(failed_id in p and "0 ledger lines" in p for p in report.problems), report


def _card_of(client: Any, tenant_id: str, headers: dict[str, str]) -> str:
    items = client.get(f"/v1/tenants/{tenant_id}/payment-methods", headers=headers).json()["items"]
    return str(next(i["id"] for i in items if i["last4"] == "4242"))


# --- 5. a timed-out purchase without a key points at itself -----------------------------------


def test_a_timed_out_purchase_without_a_key_says_where_to_look(
    sclient, stripe_app, fake, monkeypatch, black_hole
):
    tid = create_tenant(sclient)["id"]
    headers = admin(sclient, tid, "billing_admin")
    card = post_card(sclient, tid, headers, card_body(CARD_OK), None).json()["id"]
    services = stripe_app.state.ctx.services
    configured = services["payments"]
    monkeypatch.setitem(
        services,
        "payments",
        StripeProvider(
            api_key=STRIPE_KEY, api_base=black_hole, timeout_seconds=SHORT_TIMEOUT_SECONDS
        ),
    )
    timed_out = buy(sclient, tid, headers, "65", card)
    assert timed_out.status_code == 503, timed_out.text
    problem = timed_out.json()
    purchase_id = problem["purchase_id"]
    assert f"GET /v1/tenants/{tid}/credits/purchases/{purchase_id}" in problem["detail"]
    assert "Idempotency-Key" not in problem["detail"]
    assert "Do not buy again" in problem["detail"]
    looked_up = sclient.get(f"/v1/tenants/{tid}/credits/purchases/{purchase_id}", headers=headers)
    assert looked_up.json()["status"] == "pending"

    services["payments"] = configured
    resolve_pending(stripe_app.state.ctx.engine, configured)
    looked_up = sclient.get(f"/v1/tenants/{tid}/credits/purchases/{purchase_id}", headers=headers)
    assert looked_up.json()["status"] == "succeeded"
    assert balance(sclient, tid) == "65.00"
    customers = {
        c["id"] for c in fake.customers.values() if c["metadata"].get("tenant_reference") == tid
    }
    intents = [i for i in fake.payment_intents.values() if i["customer"] in customers]
    assert len(intents) == 1

    # With a key, the same outage says to retry with it.
    monkeypatch.setitem(
        services,
        "payments",
        StripeProvider(
            api_key=STRIPE_KEY, api_base=black_hole, timeout_seconds=SHORT_TIMEOUT_SECONDS
        ),
    )
    keyed = buy(sclient, tid, headers, "66", card, key=unique("buy"))
    assert keyed.status_code == 503
    assert "Retry with the same Idempotency-Key" in keyed.json()["detail"]
    assert keyed.json()["purchase_id"]


# --- 6. times without a UTC form --------------------------------------------------------------

OUT_OF_RANGE = ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00")


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("name", ["from", "to"])
@pytest.mark.parametrize(
    "path", ["credits/transactions", "reports/pstn-usage", "reports/pstn-usage/summary"]
)
def test_a_time_out_of_range_is_a_validation_error(client, path, name, value):
    tid = _reader_tenant(client)
    response = client.get(f"/v1/tenants/{tid}/{path}", params={name: value}, headers=OPERATOR)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"
    assert name in response.json()["detail"]


_TENANTS: dict[int, str] = {}


def _reader_tenant(client: Any) -> str:
    key = id(client.app)
    if key not in _TENANTS:
        _TENANTS[key] = create_tenant(client)["id"]
    return _TENANTS[key]


# --- 8. rate lookups in a currency that is not one ---------------------------------------------


@pytest.mark.parametrize("currency", ["usd", "XYZ", "US1", "XXX"])
def test_rate_lookup_in_an_invalid_currency_is_a_validation_error(client, currency):
    response = client.get(
        "/v1/rates/lookup",
        params={"number": "+442079460000", "currency": currency},
        headers=OPERATOR,
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert "currency" in response.json()["detail"]


def test_rate_lookup_in_a_currency_without_a_deck_is_not_found(client):
    response = client.get(
        "/v1/rates/lookup", params={"number": "+442079460000", "currency": "ZAR"}, headers=OPERATOR
    )
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"


# --- 10. the card listing comes in pages ------------------------------------------------------


def test_payment_methods_are_listed_in_pages(client):
    tid, headers, first = funded_tenant(client)
    for number in ("5555555555554444", "4000056655665556"):
        assert post_card(client, tid, headers, card_body(number), None).status_code == 201
    path = f"/v1/tenants/{tid}/payment-methods"
    page = client.get(path, params={"limit": 2}, headers=headers).json()
    assert len(page["items"]) == 2 and page["items"][0]["id"] == first
    rest = client.get(path, params={"limit": 2, "cursor": page["next_cursor"]}, headers=headers)
    assert rest.status_code == 200, rest.text
    assert [i["last4"] for i in rest.json()["items"]] == ["5556"]
    assert rest.json()["next_cursor"] is None
    whole = client.get(path, headers=headers).json()
    assert [i["id"] for i in whole["items"]] == [
        i["id"] for i in page["items"] + rest.json()["items"]
    ]
    for params in ({"limit": 0}, {"limit": 1001}, {"cursor": "not-a-cursor"}):
        bad = client.get(path, params=params, headers=headers)
        assert bad.status_code == 422, (params, bad.text)
        assert bad.json()["code"] == "validation_error"


# --- 11. a tenant id too long to exist -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("subscriptions", {"sku": "audio_conferencing", "quantity": 1}),
        ("credits/adjustments", {"amount": "5", "reason": "x"}),
        ("payment-methods", card_body(CARD_OK)),
    ],
)
def test_an_over_long_tenant_id_with_a_key_is_not_found(client, path, body):
    response = client.post(
        f"/v1/tenants/{'a' * 100}/{path}",
        json=body,
        headers={**OPERATOR, "Idempotency-Key": "k"},
    )
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"
