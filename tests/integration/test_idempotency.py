"""The Idempotency-Key mechanism."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.api import OPERATOR, create_tenant, unique


def test_same_key_and_body_returns_the_first_response(client):
    tenant = create_tenant(client)
    body = {"upn": f"{unique('u')}@c.example", "display_name": "Once", "usage_location": "US"}
    headers = {**OPERATOR, "Idempotency-Key": unique("key")}
    first = client.post(f"/v1/tenants/{tenant['id']}/users", json=body, headers=headers)
    second = client.post(f"/v1/tenants/{tenant['id']}/users", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    users = client.get(f"/v1/tenants/{tenant['id']}/users", headers=OPERATOR).json()["items"]
    assert len(users) == 1


def test_same_key_with_another_body_is_409(client):
    tenant = create_tenant(client)
    headers = {**OPERATOR, "Idempotency-Key": unique("key")}
    body = {"upn": "one@c.example", "display_name": "One", "usage_location": "US"}
    assert (
        client.post(f"/v1/tenants/{tenant['id']}/users", json=body, headers=headers).status_code
        == 201
    )
    other = {**body, "display_name": "Two"}
    response = client.post(f"/v1/tenants/{tenant['id']}/users", json=other, headers=headers)
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"
    users = client.get(f"/v1/tenants/{tenant['id']}/users", headers=OPERATOR).json()["items"]
    assert [u["display_name"] for u in users] == ["One"]


def test_a_failed_request_leaves_the_key_unused(client):
    tenant = create_tenant(client)
    headers = {**OPERATOR, "Idempotency-Key": unique("key")}
    body = {
        "upn": "seat@c.example",
        "display_name": "S",
        "usage_location": "US",
        "licenses": ["audio_conferencing"],
    }
    refused = client.post(f"/v1/tenants/{tenant['id']}/users", json=body, headers=headers)
    assert refused.status_code == 409 and refused.json()["code"] == "no_seats_available"
    client.post(
        f"/v1/tenants/{tenant['id']}/subscriptions",
        json={"sku": "audio_conferencing", "quantity": 1},
        headers=OPERATOR,
    )
    assert (
        client.post(f"/v1/tenants/{tenant['id']}/users", json=body, headers=headers).status_code
        == 201
    )


def test_keys_belong_to_their_tenant(client):
    one, two = create_tenant(client), create_tenant(client)
    headers = {**OPERATOR, "Idempotency-Key": "shared-key"}
    body = {"upn": "k@c.example", "display_name": "K", "usage_location": "US"}
    a = client.post(f"/v1/tenants/{one['id']}/users", json=body, headers=headers)
    b = client.post(f"/v1/tenants/{two['id']}/users", json=body, headers=headers)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_twenty_parallel_retries_create_exactly_one_object(live_server, client):
    tenant = create_tenant(client)
    url = f"{live_server.url}/v1/tenants/{tenant['id']}/users"
    body = {"upn": f"{unique('race')}@c.example", "display_name": "Race", "usage_location": "US"}
    headers = {**OPERATOR, "Idempotency-Key": unique("race-key")}

    def attempt(_: int) -> httpx.Response:
        return httpx.post(url, json=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(attempt, range(20)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    users = client.get(f"/v1/tenants/{tenant['id']}/users", headers=OPERATOR).json()["items"]
    assert len(users) == 1
