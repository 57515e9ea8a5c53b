"""Offline charging: POST /v1/cdrs (API.md; issue "Charging", item 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from commcredits.services.verify import verify_ledger
from tests.support.api import OPERATOR, charging_token
from tests.support.charging import (
    DE_FIXED,
    US_NUMBER,
    backdate_tenant,
    credits,
    ensure_plans,
    ledger,
    ledger_total,
    load_deck,
    make_tenant,
    make_user,
    month_text,
    new_call_id,
    pools,
    recent_month_cut,
    rfc3339,
    start,
    tenant_problems,
)

PAYG = ("calling_plan_payg", "communications_credits")


@pytest.fixture(autouse=True)
def catalog(client):
    load_deck(client)
    ensure_plans(client)


def record(tenant, user, to=US_NUMBER, duration=125, started_at=None, call_id=None, **extra):
    body = {
        "call_id": call_id or new_call_id(),
        "tenant_id": tenant.id,
        "call_type": "user_out",
        "user_id": user["id"] if user else None,
        "from": None,
        "to": to,
        "started_at": started_at or rfc3339(datetime.now(UTC) - timedelta(hours=1)),
        "duration_seconds": duration,
    }
    body.update(extra)
    return body


def post(client, tenant, records):
    response = client.post("/v1/cdrs", json={"records": records}, headers=tenant.charging)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_a_batch_is_rated_with_the_online_rules_and_posted_once(client):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    first, second = (
        record(tenant, user, duration=125),
        record(tenant, user, to=DE_FIXED, duration=61),
    )
    results = post(client, tenant, [first, second])
    # US: 125 s on 60/60 bills 180 s at 0.085/min = 0.255 -> 0.26 (half-up, once).
    # DE: 61 s on 1/1 at 0.06/min + 0.015 connect = 0.076 -> 0.08.
    assert results == [
        {"call_id": first["call_id"], "status": "rated", "charge": "0.26", "funding": "credits"},
        {"call_id": second["call_id"], "status": "rated", "charge": "0.08", "funding": "credits"},
    ]
    assert credits(client, tenant.id)["balance"] == "9.66"
    lines = ledger(client, tenant.id)
    assert [line["kind"] for line in lines] == ["adjustment", "call_charge", "call_charge"]
    assert ledger_total(lines) == Decimal("9.66")


def test_records_are_idempotent_by_call_id(client):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    one = record(tenant, user)
    first = post(client, tenant, [one, one])
    assert [r["status"] for r in first] == ["rated", "duplicate"]
    again = post(client, tenant, [one])
    assert again == [{"call_id": one["call_id"], "status": "duplicate"}]
    assert credits(client, tenant.id)["balance"] == "9.74"
    # An online call with the same id is the same call too.
    online = start(client, tenant, "user_out", US_NUMBER, user=user)
    duplicate = post(client, tenant, [record(tenant, user, call_id=online["call_id"])])
    assert duplicate[0]["status"] == "duplicate"


def test_bad_records_are_rejected_and_the_rest_rated(client):
    tenant = make_tenant(client, balance="10.00")
    payg = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    no_plan = make_user(
        client, tenant.id, usage_location="CH", licenses=("communications_credits",)
    )
    now = datetime.now(UTC)
    good = record(tenant, payg)
    batch = [
        record(tenant, payg, to="+1 201 555 0123"),
        good,
        record(tenant, no_plan),
        record(tenant, None, user_id="nobody@nowhere.example"),
        record(tenant, payg, started_at=rfc3339(now - timedelta(days=401))),
        record(tenant, payg, started_at=rfc3339(now + timedelta(minutes=10))),
        record(tenant, payg, duration="60"),
        record(tenant, payg, call_type="video_call"),
        {"call_id": "no-fields"},
        "not an object",
        # The edges of what a datetime holds: refused, not an overflow.
        record(tenant, payg, started_at="9999-12-31T23:59:59-23:59"),
        record(tenant, payg, started_at="0001-01-01T00:00:00+14:00"),
    ]
    results = post(client, tenant, batch)
    assert len(results) == len(batch)
    statuses = [r["status"] for r in results]
    assert statuses == ["rejected", "rated"] + ["rejected"] * 10
    assert "future" in results[10]["error"]
    assert "400 days" in results[11]["error"]
    assert results[0]["error"] == "invalid_number"
    assert results[2]["error"] == "no_calling_plan"
    assert "not found" in results[3]["error"]
    assert "400 days" in results[4]["error"]
    assert "future" in results[5]["error"]
    assert results[6]["error"].startswith("duration_seconds")
    assert results[7]["error"].startswith("call_type")
    assert all(r.get("error") for r in results if r["status"] == "rejected")
    assert credits(client, tenant.id)["balance"] == "9.74"


def test_records_may_take_the_balance_below_zero_and_then_credit_calls_are_denied(client, engine):
    tenant = make_tenant(client, balance="0.10")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    results = post(client, tenant, [record(tenant, user, duration=125)])
    assert results[0]["status"] == "rated" and results[0]["charge"] == "0.26"
    account = credits(client, tenant.id)
    assert account["balance"] == "-0.16"
    assert account["status"] == "depleted"
    denied = start(client, tenant, "user_out", US_NUMBER, user=user)
    assert denied["decision"] == "deny"
    assert denied["reason"] == "insufficient_balance"
    assert tenant_problems(verify_ledger(engine), tenant.id) == []


def test_pools_follow_each_records_month_in_the_tenant_timezone(client, engine):
    tenant = make_tenant(client, balance="10.00", country="US", timezone="America/New_York")
    user = make_user(client, tenant.id, usage_location="US", licenses=("calling_plan_domestic",))
    backdate_tenant(engine, tenant.id, days=70)  # the tenant held its plan last month too
    # 03:00Z on the 1st is still the last day of the month before in New York;
    # 05:30Z is the 1st there.
    cut = recent_month_cut()
    before, after = cut, cut + timedelta(hours=2, minutes=30)
    results = post(
        client,
        tenant,
        [
            record(tenant, user, to=US_NUMBER, duration=61, started_at=rfc3339(before)),
            record(tenant, user, to=US_NUMBER, duration=30, started_at=rfc3339(after)),
        ],
    )
    assert [(r["status"], r["charge"], r["funding"]) for r in results] == [
        ("rated", "0.00", "included"),
        ("rated", "0.00", "included"),
    ]
    previous = pools(client, tenant.id, month_text(cut - timedelta(days=1)))
    current = pools(client, tenant.id, month_text(cut))
    assert previous[("domestic", "US")]["used_seconds"] == 120  # 61 s on 60/60
    assert current[("domestic", "US")]["used_seconds"] == 60
    assert credits(client, tenant.id)["balance"] == "10.00"


def test_a_late_record_of_a_month_before_the_tenant_existed_draws_no_pool(client):
    """A month that ended before the tenant was created had no license, so no
    pool: a late record of it is rated from credits (or refused), whatever
    plans the tenant holds today."""
    tenant = make_tenant(client, balance="10.00", country="US", timezone="America/New_York")
    both = make_user(
        client,
        tenant.id,
        usage_location="US",
        licenses=("calling_plan_domestic", "communications_credits"),
    )
    plan_only = make_user(
        client, tenant.id, usage_location="US", licenses=("calling_plan_domestic",)
    )
    long_ago = datetime.now(UTC) - timedelta(days=120)
    results = post(
        client,
        tenant,
        [
            record(tenant, both, duration=61, started_at=rfc3339(long_ago)),
            record(tenant, plan_only, duration=61, started_at=rfc3339(long_ago)),
        ],
    )
    # 61 s on 60/60 at 0.085/min = 0.17.
    assert (results[0]["status"], results[0]["funding"]) == ("rated", "credits")
    assert results[0]["charge"] == "0.17"
    assert (results[1]["status"], results[1]["error"]) == ("rejected", "no_credits_license")
    old_month = pools(client, tenant.id, month_text(long_ago))
    assert old_month[("domestic", "US")]["size_seconds"] == 0, old_month
    assert credits(client, tenant.id)["balance"] == "9.83"


def test_nce_records_are_overage_and_move_no_credits(client):
    tenant = make_tenant(client, agreement="nce")
    user = make_user(client, tenant.id, usage_location="CH", licenses=("calling_plan_payg",))
    started = datetime.now(UTC) - timedelta(hours=1)
    results = post(
        client, tenant, [record(tenant, user, duration=125, started_at=rfc3339(started))]
    )
    assert results[0]["status"] == "rated"
    assert results[0]["funding"] == "overage"
    assert results[0]["charge"] == "0.26"
    assert credits(client, tenant.id)["balance"] == "0.00"
    month = started.strftime("%Y-%m")
    overage = client.get(
        f"/v1/tenants/{tenant.id}/overage", params={"month": month}, headers=OPERATOR
    ).json()
    assert overage["total_charge"] == "0.26" and overage["calls"] == 1


def test_a_token_of_another_tenant_gets_its_records_rejected(client):
    tenant = make_tenant(client, balance="10.00")
    other = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    response = client.post(
        "/v1/cdrs", json={"records": [record(tenant, user)]}, headers=other.charging
    )
    assert response.status_code == 200
    assert response.json()["results"][0]["status"] == "rejected"
    assert credits(client, tenant.id)["balance"] == "10.00"


def test_batches_are_limited_to_ten_thousand_records(client):
    tenant = make_tenant(client)
    response = client.post(
        "/v1/cdrs",
        json={"records": [{"call_id": f"x{i}"} for i in range(10_001)]},
        headers=charging_token(client, tenant.id),
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_a_full_batch_of_ten_thousand_records_is_rated_in_one_request(client, engine):
    tenant = make_tenant(client, balance="2000.00")
    users = [make_user(client, tenant.id, usage_location="CH", licenses=PAYG) for _ in range(3)]
    started_at = rfc3339(datetime.now(UTC) - timedelta(hours=2))
    batch = [
        record(tenant, users[n % len(users)], duration=61, started_at=started_at)
        for n in range(10_000)
    ]
    results = post(client, tenant, batch)
    assert len(results) == 10_000
    assert {(r["status"], r["charge"], r["funding"]) for r in results} == {
        ("rated", "0.17", "credits")  # 61 s on 60/60 at 0.085/min
    }
    assert [r["call_id"] for r in results] == [r["call_id"] for r in batch]
    assert credits(client, tenant.id)["balance"] == "300.00"  # 2000 - 10,000 x 0.17
    assert tenant_problems(verify_ledger(engine), tenant.id) == []
