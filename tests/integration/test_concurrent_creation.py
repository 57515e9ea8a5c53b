"""Twenty real clients at once against a served process, without an
Idempotency-Key: the same tenant id, the same UPN, the same license, the first
seats of a SKU. The database's unique keys decide; every answer is the one the
check would have given (409 or the idempotent success), never a 500, and
exactly one object exists."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import update

from commcredits.services import directory
from commcredits.store import tables as t
from tests.support.api import OPERATOR, add_seats, create_tenant, create_user, unique

CLIENTS = 20


def at_once(base_url: str, send: Callable[[httpx.Client], httpx.Response]) -> list[httpx.Response]:
    """``send`` from CLIENTS threads, each with its own connection, released together."""
    barrier = threading.Barrier(CLIENTS)

    def one(_: int) -> httpx.Response:
        with httpx.Client(timeout=60) as http:
            # Connect first, so that the requests leave together.
            http.get(f"{base_url}/healthz").raise_for_status()
            barrier.wait()
            return send(http)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(one, range(CLIENTS)))


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def test_parallel_creations_of_one_tenant_id(live_server, client):
    tenant_id = unique("race-tenant")
    body = {
        "id": tenant_id,
        "name": "Race",
        "country": "US",
        "billing_country": "US",
        "agreement": "direct",
        "currency": "USD",
    }
    responses = at_once(
        live_server.url,
        lambda http: http.post(f"{live_server.url}/v1/tenants", json=body, headers=OPERATOR),
    )
    assert statuses(responses) == {201: 1, 409: CLIENTS - 1}, [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"conflict"}
    tenant = client.get(f"/v1/tenants/{tenant_id}", headers=OPERATOR)
    assert tenant.status_code == 200
    credits = client.get(f"/v1/tenants/{tenant_id}/credits", headers=OPERATOR)
    assert credits.status_code == 200, credits.text


def test_parallel_creations_of_one_upn(live_server, client):
    tid = create_tenant(client)["id"]
    upn = f"{unique('race')}@race.example"
    url = f"{live_server.url}/v1/tenants/{tid}/users"
    responses = at_once(
        live_server.url,
        lambda http: http.post(
            url,
            json={"upn": upn, "display_name": "Race", "usage_location": "US"},
            headers=OPERATOR,
        ),
    )
    assert statuses(responses) == {201: 1, 409: CLIENTS - 1}, [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"upn_conflict"}
    users = client.get(f"/v1/tenants/{tid}/users", headers=OPERATOR).json()["items"]
    assert [u["upn"] for u in users] == [upn]


def test_parallel_patches_to_one_upn(live_server, client):
    tid = create_tenant(client)["id"]
    users = [create_user(client, tid) for _ in range(CLIENTS)]
    upn = f"{unique('taken')}@race.example"
    turn = iter(users)
    lock = threading.Lock()

    def patch(http: httpx.Client) -> httpx.Response:
        with lock:
            user = next(turn)
        return http.patch(
            f"{live_server.url}/v1/tenants/{tid}/users/{user['id']}",
            json={"upn": upn},
            headers=OPERATOR,
        )

    responses = at_once(live_server.url, patch)
    assert statuses(responses) == {200: 1, 409: CLIENTS - 1}, [r.text for r in responses]
    listed = client.get(f"/v1/tenants/{tid}/users", headers=OPERATOR).json()["items"]
    assert [u["upn"] for u in listed].count(upn) == 1


def test_parallel_identical_license_assignments_all_succeed(live_server, client):
    tid = create_tenant(client)["id"]
    # One seat: a request that waited for the seat must find it is already this
    # user's, not that the last seat is gone.
    add_seats(client, tid, "calling_plan_domestic", 1)
    user = create_user(client, tid)
    for sku in ("calling_plan_domestic", "communications_credits"):
        url = f"{live_server.url}/v1/tenants/{tid}/users/{user['id']}/licenses/{sku}"
        responses = at_once(live_server.url, lambda http, url=url: http.put(url, headers=OPERATOR))
        assert statuses(responses) == {200: CLIENTS}, [r.text for r in responses]
        assert all(sku in r.json()["licenses"] for r in responses)
    held = client.get(f"/v1/tenants/{tid}/users/{user['id']}", headers=OPERATOR).json()
    assert held["licenses"] == ["calling_plan_domestic", "communications_credits"]
    seats = client.get(f"/v1/tenants/{tid}/subscriptions", headers=OPERATOR).json()["items"]
    domestic = next(s for s in seats if s["sku"] == "calling_plan_domestic")
    assert (domestic["assigned"], domestic["available"]) == (1, 0)


def test_parallel_first_purchases_of_seats_add_up(live_server, client):
    tid = create_tenant(client)["id"]
    url = f"{live_server.url}/v1/tenants/{tid}/subscriptions"
    responses = at_once(
        live_server.url,
        lambda http: http.post(
            url, json={"sku": "audio_conferencing", "quantity": 1}, headers=OPERATOR
        ),
    )
    assert statuses(responses) == {201: CLIENTS}, [r.text for r in responses]
    seats = client.get(f"/v1/tenants/{tid}/subscriptions", headers=OPERATOR).json()["items"]
    assert [(s["sku"], s["quantity"]) for s in seats] == [("audio_conferencing", CLIENTS)]


def test_seats_stop_short_of_the_integer_column(client: Any, engine: Any):
    tid = create_tenant(client)["id"]
    add_seats(client, tid, "audio_conferencing", 1)
    # A billion seats bought a million at a time, without the thousand requests.
    with engine.begin() as connection:
        connection.execute(
            update(t.subscriptions)
            .where(t.subscriptions.c.tenant_id == tid)
            .values(quantity=directory.MAX_SUBSCRIPTION_SEATS - 1)
        )
    url = f"/v1/tenants/{tid}/subscriptions"
    response = client.post(url, json={"sku": "audio_conferencing", "quantity": 1}, headers=OPERATOR)
    assert response.status_code == 201, response.text
    assert response.json()["quantity"] == directory.MAX_SUBSCRIPTION_SEATS
    response = client.post(url, json={"sku": "audio_conferencing", "quantity": 1}, headers=OPERATOR)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    seats = client.get(url, headers=OPERATOR).json()["items"]
    assert seats[0]["quantity"] == directory.MAX_SUBSCRIPTION_SEATS
