"""Tenants: create, read, patch, and bad input that changes nothing."""

from __future__ import annotations

import pytest

from tests.support.api import OPERATOR, create_tenant, unique


def test_create_with_generated_id_and_read_back(client):
    response = client.post(
        "/v1/tenants",
        json={
            "name": "Fabrikam",
            "country": "GB",
            "billing_country": "GB",
            "agreement": "mca",
            "currency": "GBP",
            "timezone": "Europe/London",
        },
        headers=OPERATOR,
    )
    assert response.status_code == 201
    tenant = response.json()
    assert tenant["id"]
    assert tenant["timezone"] == "Europe/London"
    assert tenant["purchase_override"] is False
    again = client.get(f"/v1/tenants/{tenant['id']}", headers=OPERATOR)
    assert again.status_code == 200
    assert again.json() == tenant


def test_timezone_defaults_to_utc_and_given_id_is_kept(client):
    tenant_id = unique("given")
    tenant = create_tenant(client, id=tenant_id)
    assert tenant["id"] == tenant_id
    assert tenant["timezone"] == "UTC"


def test_duplicate_id_is_a_conflict(client):
    tenant = create_tenant(client)
    response = client.post(
        "/v1/tenants",
        json={
            "id": tenant["id"],
            "name": "Other",
            "country": "US",
            "billing_country": "US",
            "agreement": "direct",
            "currency": "USD",
        },
        headers=OPERATOR,
    )
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert client.get(f"/v1/tenants/{tenant['id']}", headers=OPERATOR).json()["name"] == "Contoso"


def test_patch_purchase_override(client):
    tenant = create_tenant(
        client, agreement="ea", country="DE", billing_country="US", currency="EUR"
    )
    response = client.patch(
        f"/v1/tenants/{tenant['id']}", json={"purchase_override": True}, headers=OPERATOR
    )
    assert response.status_code == 200
    assert response.json()["purchase_override"] is True
    assert response.json()["currency"] == "EUR"


def test_unknown_tenant_is_404(client):
    response = client.get("/v1/tenants/no-such-tenant", headers=OPERATOR)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"


GOOD = {
    "name": "Good",
    "country": "US",
    "billing_country": "US",
    "agreement": "direct",
    "currency": "USD",
}


@pytest.mark.parametrize(
    "change",
    [
        {"country": "XX"},
        {"country": "usa"},
        {"billing_country": 1},
        {"currency": "DOLLAR"},
        {"currency": "ABC"},
        {"agreement": "enterprise"},
        {"timezone": "Mars/Olympus"},
        {"name": ""},
        {"name": "x" * 201},
        {"name": None},
        {"id": "has space"},
        {"id": "x" * 65},
        {"purchase_override": "yes"},
    ],
)
def test_bad_tenant_bodies_are_422_and_change_nothing(client, change):
    tenant_id = unique("bad")
    body = {**GOOD, "id": tenant_id, **change}
    response = client.post("/v1/tenants", json=body, headers=OPERATOR)
    if "purchase_override" in change:
        # Not a create field: ignored, the tenant is created.
        assert response.status_code == 201
        return
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert problem["status"] == 422 and problem["detail"]
    assert response.headers["content-type"].startswith("application/problem+json")
    lookup_id = (
        body["id"] if isinstance(body.get("id"), str) and " " not in body["id"] else tenant_id
    )
    assert client.get(f"/v1/tenants/{lookup_id}", headers=OPERATOR).status_code == 404


@pytest.mark.parametrize(
    "raw", [b"{", b"not json", b"[1, 2]", b'"string"', b"null", b'{"name": "a",}']
)
def test_malformed_json_is_4xx_problem(client, raw):
    response = client.post(
        "/v1/tenants", content=raw, headers={**OPERATOR, "Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    "patch",
    [
        {"purchase_override": "true"},
        {"country": "ZZ"},
        {"name": None},
        {"timezone": 3},
        {"agreement": "free"},
    ],
)
def test_bad_patch_changes_nothing(client, patch):
    tenant = create_tenant(client)
    response = client.patch(f"/v1/tenants/{tenant['id']}", json=patch, headers=OPERATOR)
    assert response.status_code == 422
    assert client.get(f"/v1/tenants/{tenant['id']}", headers=OPERATOR).json() == tenant
