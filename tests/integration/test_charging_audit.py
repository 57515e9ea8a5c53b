"""Online and offline charging corner cases: a sweep racing an update, updates
past or well before the grant, dated starts, pool-only records past their
pool, duplicates inside a batch, retried batches, metrics and NCE overage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from commcredits.services import calls
from commcredits.store.db import write_transaction
from tests.support.api import OPERATOR
from tests.support.charging import (
    FR_FIXED,
    US_NUMBER,
    backdate_tenant,
    call_body,
    call_state,
    credits,
    end,
    ensure_plans,
    ledger,
    load_deck,
    make_tenant,
    make_user,
    new_call_id,
    rfc3339,
    seconds_ago,
    start,
    update,
)

PAYG = ("calling_plan_payg", "communications_credits")
GRANT = 300  # COMMCREDITS_GRANT_SECONDS in the test settings (the default)


@pytest.fixture(scope="module")
def plans(app: Any) -> Iterator[dict[str, Any]]:
    with TestClient(app) as client:
        load_deck(client)
        yield ensure_plans(client)


@pytest.fixture(autouse=True)
def _grant_is_the_default(app: Any) -> None:
    assert app.state.ctx.settings.grant_seconds == GRANT


def money(text: str) -> Decimal:
    return Decimal(text)


def post_cdrs(client: Any, tenant: Any, records: list[Any], key: str | None = None) -> Any:
    headers = dict(tenant.charging)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/cdrs", json={"records": records}, headers=headers)


def cdr(tenant: Any, user: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {
        "call_id": new_call_id(),
        "tenant_id": tenant.id,
        "call_type": "user_out",
        "user_id": user["id"],
        "to": US_NUMBER,
        "started_at": rfc3339(datetime.now(UTC) - timedelta(hours=1)),
        "duration_seconds": 61,
    }
    body.update(fields)
    return body


def metric(client: Any, sample: str) -> float:
    """A sample's value in GET /metrics (0 when it was never set)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    for line in response.text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


# --- the sweeper against an update ---------------------------------------------------------------


def test_a_call_extended_after_the_sweeper_claimed_it_is_left_running(client, plans, engine):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    # 315 s old with a 300 s grant: past the grant and the 10 s grace.
    started = start(client, tenant, "user_out", US_NUMBER, user=user, started_at=seconds_ago(315))
    assert started["granted_seconds"] == GRANT
    mine = (tenant.id, started["call_id"])
    claimed: list[tuple[str, str]] = []
    while mine not in claimed:
        batch = calls.claim_expired(engine)
        assert batch, "the expired call was never claimed"
        claimed.extend(batch)

    # The platform's update lands between the claim and the close.
    extended = update(client, tenant, started["call_id"], 315)
    assert extended["decision"] == "continue" and extended["granted_seconds"] == 600

    assert calls.close_claimed(engine, [mine]) == 0
    state = call_state(client, tenant, started["call_id"])
    assert state["state"] == "active" and state["ended_at"] is None
    ended = end(client, tenant, started["call_id"], 400)
    # 400 s on 60/60 -> 7 minutes at 0.085 = 0.595 -> 0.60.
    assert ended["charge"] == "0.60" and ended["charged_seconds"] == 420
    assert money(credits(client, tenant.id)["reserved"]) == 0


# --- updates ------------------------------------------------------------------------------------


def test_an_update_past_the_grant_answers_terminate(client, plans):
    tenant = make_tenant(client, balance="0.90")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    started = start(client, tenant, "user_out", US_NUMBER, user=user)
    # 0.90 / 0.085 = 10.6 minutes: 600 s at most, 300 granted now (0.425 -> 0.43 held).
    assert (started["granted_seconds"], started["max_duration_seconds"]) == (300, 600)

    late = update(client, tenant, started["call_id"], 1000)

    assert late["decision"] == "terminate", late
    assert late["granted_seconds"] == 300
    assert credits(client, tenant.id)["reserved"] == "0.43"
    ended = end(client, tenant, started["call_id"], 1000)
    assert ended["charged_seconds"] == 300 and ended["charge"] == "0.43"


def test_early_updates_do_not_grow_the_grant_or_the_hold(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    started = start(client, tenant, "user_out", US_NUMBER, user=user)
    assert started["granted_seconds"] == GRANT
    held = credits(client, tenant.id)["reserved"]
    assert held == "0.43"

    for _ in range(3):
        early = update(client, tenant, started["call_id"], 0)
        assert (early["decision"], early["granted_seconds"]) == ("continue", GRANT), early
        assert credits(client, tenant.id)["reserved"] == held

    # One slice ahead of what was used: 100 + 300 = 400, aligned down to 360 on 60/60.
    later = update(client, tenant, started["call_id"], 100)
    assert (later["decision"], later["granted_seconds"]) == ("continue", 360)
    assert credits(client, tenant.id)["reserved"] == "0.51"  # 6 x 0.085
    end(client, tenant, started["call_id"], 100)
    assert money(credits(client, tenant.id)["reserved"]) == 0


# --- dated starts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "started_at",
    [
        "2019-06-01T12:00:00Z",
        "2031-06-01T12:00:00Z",
        "future:600",
        "past:90000",
    ],
)
def test_a_start_dated_far_from_now_is_refused_and_stores_nothing(client, plans, started_at):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    if started_at.startswith("future:"):
        started_at = seconds_ago(-int(started_at.split(":")[1]))
    elif started_at.startswith("past:"):
        started_at = seconds_ago(int(started_at.split(":")[1]))
    body = call_body(tenant, "user_out", US_NUMBER, user=user, started_at=started_at)

    response = client.post("/v1/calls", json=body, headers=tenant.charging)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"
    assert "started_at" in response.json()["detail"]
    missing = client.get(f"/v1/calls/{body['call_id']}", headers=tenant.charging)
    assert missing.status_code == 404
    assert money(credits(client, tenant.id)["reserved"]) == 0


def test_a_start_a_little_off_now_is_accepted(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    for started_at in (seconds_ago(-120), seconds_ago(23 * 3600)):
        answer = start(client, tenant, "user_out", US_NUMBER, user=user, started_at=started_at)
        assert answer["decision"] == "allow", answer
        end(client, tenant, answer["call_id"], 10)


# --- a pool-only record past its pool ------------------------------------------------------------


def test_a_pool_only_record_past_its_pool_is_included_and_charges_nothing(client, plans, engine):
    size = int(plans["conference_dialout"]["minutes_per_license"]) * 60
    tenant = make_tenant(client, balance="10.00")
    organizer = make_user(client, tenant.id, usage_location="US", licenses=("audio_conferencing",))
    backdate_tenant(engine, tenant.id, days=70)  # whichever month the record starts in
    duration = size + 480  # on the 30/6 grid: billed as is
    record = cdr(
        tenant,
        organizer,
        call_type="conf_out",
        duration_seconds=duration,
        started_at=rfc3339(datetime.now(UTC) - timedelta(seconds=duration + 600)),
    )

    response = post_cdrs(client, tenant, [record])

    assert response.status_code == 200, response.text
    assert response.json()["results"] == [
        {"call_id": record["call_id"], "status": "rated", "charge": "0.00", "funding": "included"}
    ]
    state = call_state(client, tenant, record["call_id"])
    assert (state["pool_seconds"], state["charged_seconds"]) == (size, 0)
    assert state["funding"] == "included" and state["duration_seconds"] == duration
    assert credits(client, tenant.id)["balance"] == "10.00"


# --- duplicates inside a batch --------------------------------------------------------------------


def test_a_rejected_record_does_not_make_a_later_one_of_its_id_a_duplicate(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    call_id = new_call_id()
    rated_id = new_call_id()
    batch = [
        cdr(tenant, user, call_id=call_id, to=FR_FIXED),  # not in the deck
        cdr(tenant, user, call_id=call_id),
        cdr(tenant, user, call_id=rated_id),
        cdr(tenant, user, call_id=rated_id, to=FR_FIXED),
    ]

    response = post_cdrs(client, tenant, batch)

    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "rated", "rated", "duplicate"]
    assert results[0]["error"] == "destination_not_rated"
    assert credits(client, tenant.id)["balance"] == "9.66"  # 2 x 0.17


# --- Idempotency-Key on POST /v1/cdrs ---------------------------------------------------------------


def test_a_retried_batch_with_its_key_answers_the_first_result(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    batch = [cdr(tenant, user), cdr(tenant, user, to=FR_FIXED)]
    key = f"cdrs-{new_call_id()}"

    first = post_cdrs(client, tenant, batch, key=key)
    again = post_cdrs(client, tenant, batch, key=key)
    other = post_cdrs(client, tenant, [cdr(tenant, user)], key=key)
    unkeyed = post_cdrs(client, tenant, batch)

    assert first.status_code == 200, first.text
    assert [r["status"] for r in first.json()["results"]] == ["rated", "rejected"]
    assert again.status_code == 200 and again.json() == first.json()
    assert other.status_code == 409, other.text
    assert other.json()["code"] == "idempotency_conflict"
    assert [r["status"] for r in unkeyed.json()["results"]] == ["duplicate", "rejected"]
    lines = ledger(client, tenant.id)
    assert [line["kind"] for line in lines] == ["adjustment", "call_charge"]
    assert credits(client, tenant.id)["balance"] == "9.83"


def test_a_batch_key_of_an_operator_spans_tenants(client, plans):
    first_tenant = make_tenant(client, balance="10.00")
    second_tenant = make_tenant(client, balance="10.00")
    batch = [
        cdr(t, make_user(client, t.id, usage_location="CH", licenses=PAYG))
        for t in (second_tenant, first_tenant)
    ]
    headers = {**OPERATOR, "Idempotency-Key": f"cdrs-{new_call_id()}"}

    first = client.post("/v1/cdrs", json={"records": batch}, headers=headers)
    again = client.post("/v1/cdrs", json={"records": batch}, headers=headers)

    assert first.status_code == 200, first.text
    assert [r["status"] for r in first.json()["results"]] == ["rated", "rated"]
    assert again.json() == first.json()
    for tenant in (first_tenant, second_tenant):
        assert credits(client, tenant.id)["balance"] == "9.83"


# --- metrics --------------------------------------------------------------------------------------


GRANTED = "commcredits_seconds_granted_total"
STARTED = 'commcredits_calls_started_total{funding="credits"}'
POSTED = 'commcredits_charges_posted_total{source="online"}'


def test_seconds_granted_count_every_extension(client, plans):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    before = metric(client, GRANTED)
    started = start(client, tenant, "user_out", US_NUMBER, user=user)
    assert metric(client, GRANTED) == before + GRANT
    update(client, tenant, started["call_id"], 0)  # nothing new granted
    assert metric(client, GRANTED) == before + GRANT
    extended = update(client, tenant, started["call_id"], GRANT)
    assert extended["granted_seconds"] == 2 * GRANT
    assert metric(client, GRANTED) == before + 2 * GRANT
    posted = metric(client, POSTED)
    end(client, tenant, started["call_id"], 61)
    assert metric(client, POSTED) == posted + 1


def test_a_start_rolled_back_counts_nothing(client, plans, app, engine):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    index, catalog_plans = app.state.ctx.catalog.current()
    request = calls.CallRequest(
        call_id=new_call_id(),
        tenant_id=tenant.id,
        call_type="user_out",
        user_ref=user["id"],
        from_number=None,
        to_number=US_NUMBER,
        started_at=None,
    )
    prepared = calls.prepare_start(engine, request, index, catalog_plans)
    assert not isinstance(prepared, dict)
    granted, started = metric(client, GRANTED), metric(client, STARTED)

    with pytest.raises(RuntimeError), write_transaction(engine) as connection:
        answer = calls.start_in(connection, prepared, catalog_plans, GRANT)
        assert answer["decision"] == "allow"
        raise RuntimeError("something after the start failed: the transaction rolls back")

    assert (metric(client, GRANTED), metric(client, STARTED)) == (granted, started)
    missing = client.get(f"/v1/calls/{request.call_id}", headers=tenant.charging)
    assert missing.status_code == 404


# --- NCE overage ------------------------------------------------------------------------------------


def test_overage_counts_only_calls_with_an_overage_charge(client, plans):
    tenant = make_tenant(client, agreement="nce", country="US")
    planned = make_user(client, tenant.id, usage_location="US", licenses=("calling_plan_domestic",))
    payg = make_user(client, tenant.id, usage_location="US", licenses=("calling_plan_payg",))

    included = start(client, tenant, "user_out", US_NUMBER, user=planned)
    assert included["funding"] == "included"
    assert end(client, tenant, included["call_id"], 100)["funding"] == "included"
    overage = start(client, tenant, "user_out", US_NUMBER, user=payg)
    assert overage["funding"] == "overage"
    assert end(client, tenant, overage["call_id"], 61)["charge"] == "0.17"

    month = datetime.now(UTC).strftime("%Y-%m")
    response = client.get(
        f"/v1/tenants/{tenant.id}/overage", params={"month": month}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["calls"], body["seconds"], body["total_charge"]) == (1, 61, "0.17")
