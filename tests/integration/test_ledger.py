"""The ledger stays whole: a random mix of purchases, adjustments and
auto-recharges leaves every balance equal to the sum of its lines, and
`verify-ledger` notices when a database says otherwise."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, select, update

from commcredits.api.app import create_app
from commcredits.services.funding import resolve_pending
from commcredits.services.verify import verify_ledger
from commcredits.store import tables as t
from tests.conftest import BACKENDS, fresh_database_url, make_settings
from tests.support.api import OPERATOR, admin, create_tenant

CARD_OK = "4242424242424242"
FAILING_CARDS = ("4000000000000002", "4000000000000069", "4000000000000119")
FAR_EXPIRY_YEAR = date.today().year + 5
STEPS = 40
CLI_TIMEOUT_SECONDS = 60


@dataclass
class Fresh:
    url: str
    app: Any
    client: TestClient

    @property
    def engine(self) -> Engine:
        return self.app.state.ctx.engine


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, pg_cluster: Any) -> Iterator[Fresh]:
    """An app on a database of its own: what happens here touches no other test."""
    url = fresh_database_url(request.param, pg_cluster)
    app = create_app(make_settings(url))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Fresh(url, app, client)


def add_card(client: Any, tenant_id: str, headers: dict[str, str], number: str) -> str:
    response = client.post(
        f"/v1/tenants/{tenant_id}/payment-methods",
        json={"card_number": number, "exp_month": 12, "exp_year": FAR_EXPIRY_YEAR},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def all_transactions(client: Any, tenant_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = client.get(
            f"/v1/tenants/{tenant_id}/credits/transactions", params=params, headers=OPERATOR
        ).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def balance_of(client: Any, tenant_id: str) -> Decimal:
    response = client.get(f"/v1/tenants/{tenant_id}/credits", headers=OPERATOR)
    assert response.status_code == 200, response.text
    return Decimal(response.json()["balance"])


def purchases_of(engine: Engine, tenant_id: str) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(t.purchases).where(t.purchases.c.tenant_id == tenant_id)
            ).all()
        )


def money(rng: random.Random, low_cents: int, high_cents: int) -> Decimal:
    return Decimal(rng.randint(low_cents, high_cents)).scaleb(-2)


@dataclass
class TenantModel:
    """What the test expects of one tenant, kept beside the service."""

    tenant_id: str
    headers: dict[str, str]
    good_card: str
    bad_cards: list[str]
    manual_total: Decimal = Decimal(0)  # purchases and adjustments the test saw posted

    def expected_balance(self, engine: Engine) -> Decimal:
        recharged = sum(
            (
                r.amount
                for r in purchases_of(engine, self.tenant_id)
                if r.kind == "auto_recharge" and r.status == "succeeded"
            ),
            Decimal(0),
        )
        return self.manual_total + recharged


def new_tenant_model(client: Any) -> TenantModel:
    tenant = create_tenant(client)
    tid = tenant["id"]
    headers = admin(client, tid, "billing_admin")
    return TenantModel(
        tenant_id=tid,
        headers=headers,
        good_card=add_card(client, tid, headers, CARD_OK),
        bad_cards=[add_card(client, tid, headers, n) for n in FAILING_CARDS],
    )


def step(fresh: Fresh, rng: random.Random, model: TenantModel) -> str:
    client, tid = fresh.client, model.tenant_id
    action = rng.choices(
        ["buy", "buy_failing", "adjust", "auto_on", "auto_off", "resolve"],
        weights=[5, 2, 6, 2, 1, 3],
    )[0]
    if action in ("buy", "buy_failing"):
        amount = money(rng, 5000, 60000)
        card = model.good_card if action == "buy" else rng.choice(model.bad_cards)
        before = balance_of(client, tid)
        response = client.post(
            f"/v1/tenants/{tid}/credits/purchases",
            json={"amount": str(amount), "payment_method_id": card},
            headers=model.headers,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        if action == "buy":
            assert body["status"] == "succeeded", body
            model.manual_total += amount
            assert Decimal(body["balance"]) == before + amount
        else:
            assert body["status"] == "failed" and body["failure_code"], body
            assert Decimal(body["balance"]) == before
    elif action == "adjust":
        amount = money(rng, 1, 40000) * rng.choice([1, -1])
        response = fresh.client.post(
            f"/v1/tenants/{tid}/credits/adjustments",
            json={"amount": str(amount), "reason": f"random step {rng.random():.6f}"},
            headers=OPERATOR,
        )
        assert response.status_code == 201, response.text
        assert Decimal(response.json()["amount"]) == amount
        model.manual_total += amount
    elif action == "auto_on":
        # A high threshold, so later steps keep crossing it.
        card = model.good_card if rng.random() < 0.7 else rng.choice(model.bad_cards)
        response = client.put(
            f"/v1/tenants/{tid}/credits/auto-recharge",
            json={
                "enabled": True,
                "threshold": str(money(rng, 20000, 200000)),
                "amount": str(money(rng, 5000, 50000)),
                "payment_method_id": card,
            },
            headers=model.headers,
        )
        assert response.status_code == 200, response.text
    elif action == "auto_off":
        response = client.put(
            f"/v1/tenants/{tid}/credits/auto-recharge",
            json={"enabled": False},
            headers=model.headers,
        )
        assert response.status_code == 200, response.text
    else:
        resolve_pending(fresh.engine, fresh.app.state.ctx.services["payments"])
    return action


def check_invariants(fresh: Fresh, model: TenantModel) -> None:
    rows = purchases_of(fresh.engine, model.tenant_id)
    in_flight = [r for r in rows if r.kind == "auto_recharge" and r.status == "pending"]
    assert len(in_flight) <= 1, "never a second recharge while one is in flight"
    assert balance_of(fresh.client, model.tenant_id) == model.expected_balance(fresh.engine)


@pytest.mark.parametrize("seed", [20240611])
def test_random_funding_keeps_the_ledger_whole(fresh, seed):
    rng = random.Random(seed)
    models = [new_tenant_model(fresh.client) for _ in range(2)]
    actions: list[str] = []
    for _ in range(STEPS):
        model = rng.choice(models)
        actions.append(step(fresh, rng, model))
        check_invariants(fresh, model)
    resolve_pending(fresh.engine, fresh.app.state.ctx.services["payments"])

    report = verify_ledger(fresh.engine)
    assert report.ok, report.problems
    assert report.tenants_checked == len(models)

    recharges: list[Any] = []
    for model in models:
        tid = model.tenant_id
        lines = all_transactions(fresh.client, tid)
        balance = balance_of(fresh.client, tid)
        assert balance == model.expected_balance(fresh.engine)
        assert sum((Decimal(x["amount"]) for x in lines), Decimal(0)) == balance
        running = Decimal(0)
        for line in lines:
            running += Decimal(line["amount"])
            assert Decimal(line["balance_after"]) == running, line
        assert len({x["id"] for x in lines}) == len(lines)

        rows = purchases_of(fresh.engine, tid)
        assert all(r.status in ("succeeded", "failed") for r in rows), "nothing left pending"
        succeeded = [r for r in rows if r.status == "succeeded"]
        funding_lines = [x for x in lines if x["kind"] in ("purchase", "auto_recharge")]
        assert len(funding_lines) == len(succeeded)
        assert all(r.ledger_seq is not None for r in succeeded)
        assert all(r.ledger_seq is None for r in rows if r.status == "failed")
        assert len({r.ledger_seq for r in succeeded}) == len(succeeded)
        recharge_rows = [r for r in rows if r.kind == "auto_recharge"]
        recharges += recharge_rows
        with fresh.engine.connect() as connection:
            events = dict(
                connection.execute(
                    select(t.outbox_events.c.event, func.count())
                    .where(t.outbox_events.c.tenant_id == tid)
                    .group_by(t.outbox_events.c.event)
                ).all()
            )
        assert events.get("recharge_succeeded", 0) == sum(
            1 for r in recharge_rows if r.status == "succeeded"
        )
        assert events.get("recharge_failed", 0) == sum(
            1 for r in recharge_rows if r.status == "failed"
        )
    # The seed is chosen so the run exercises every path it claims to.
    assert {"buy", "buy_failing", "adjust", "auto_on", "resolve"} <= set(actions)
    assert any(r.status == "succeeded" for r in recharges)
    assert any(r.status == "failed" for r in recharges)


def run_verify_ledger_command(url: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COMMCREDITS_DATABASE_URL=url)
    return subprocess.run(
        [sys.executable, "-m", "commcredits.cli", "verify-ledger"],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
    )


def test_verify_ledger_reports_a_corrupted_database(fresh):
    client, engine = fresh.client, fresh.engine
    tenants = [new_tenant_model(client) for _ in range(3)]
    for model in tenants:
        response = client.post(
            f"/v1/tenants/{model.tenant_id}/credits/purchases",
            json={"amount": "100", "payment_method_id": model.good_card},
            headers=model.headers,
        )
        assert response.status_code == 201, response.text
        for amount in ("-12.34", "5.00"):
            adjusted = client.post(
                f"/v1/tenants/{model.tenant_id}/credits/adjustments",
                json={"amount": amount, "reason": "setup"},
                headers=OPERATOR,
            )
            assert adjusted.status_code == 201, adjusted.text

    good = verify_ledger(engine)
    assert good.ok, good.problems
    assert (good.tenants_checked, good.transactions_checked) == (3, 9)
    command = run_verify_ledger_command(fresh.url)
    assert command.returncode == 0, command.stdout + command.stderr

    balance_off, line_off, entry_gone = (m.tenant_id for m in tenants)
    accounts, lines, entries = t.credits_accounts, t.ledger_transactions, t.ledger_entries
    with engine.begin() as connection:
        # A balance nobody posted.
        connection.execute(
            update(accounts)
            .where(accounts.c.tenant_id == balance_off)
            .values(balance=accounts.c.balance + 1)
        )
        # A ledger line whose amount no longer matches its entries.
        connection.execute(
            update(lines)
            .where(lines.c.tenant_id == line_off, lines.c.seq == 2)
            .values(amount=Decimal("-2.34"))
        )
        # One side of a double entry lost.
        connection.execute(
            delete(entries).where(
                entries.c.tenant_id == entry_gone,
                entries.c.seq == 3,
                entries.c.account != "credits",
            )
        )

    report = verify_ledger(engine)
    assert not report.ok
    for tenant_id in (balance_off, line_off, entry_gone):
        assert any(tenant_id in p for p in report.problems), (tenant_id, report.problems)
    command = run_verify_ledger_command(fresh.url)
    assert command.returncode == 1, command.stdout + command.stderr
    assert balance_off in command.stdout
    # The API still reports the (corrupted) stored balance; only the check notices.
    assert balance_of(client, balance_off) == Decimal("93.66")


def test_very_large_balances_never_answer_500(fresh):
    """Each adjustment is a valid amount (12 integer digits); together they pass
    what a single amount may hold. The service may refuse one (a 4xx), but
    must not fail, and what it stored must still add up."""
    client, tid = fresh.client, create_tenant(fresh.client)["id"]
    statuses = []
    for _ in range(12):
        response = client.post(
            f"/v1/tenants/{tid}/credits/adjustments",
            json={"amount": "999999999999.99", "reason": "large goodwill"},
            headers=OPERATOR,
        )
        statuses.append(response.status_code)
    assert all(s == 201 or 400 <= s < 500 for s in statuses), statuses
    lines = all_transactions(client, tid)
    assert len(lines) == statuses.count(201)
    assert balance_of(client, tid) == sum((Decimal(x["amount"]) for x in lines), Decimal(0))
    report = verify_ledger(fresh.engine)
    assert report.ok, report.problems
