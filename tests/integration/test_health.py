"""Health, readiness, metrics and the OpenAPI document need no token."""

from __future__ import annotations


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "reachable"


def test_metrics_count_requests_by_route_and_status(client):
    client.get("/v1/tenants/nope", headers={"Authorization": "Bearer wrong"})
    text = client.get("/metrics").text
    assert 'route="/v1/tenants/{tenant_id}"' in text
    assert 'status="401"' in text
    assert "commcredits_http_request_duration_seconds_bucket" in text


def test_openapi_describes_every_contract_path(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/tenants",
        "/v1/tenants/{tenant_id}",
        "/v1/tenants/{tenant_id}/subscriptions",
        "/v1/tenants/{tenant_id}/users",
        "/v1/tenants/{tenant_id}/users/{user_id}",
        "/v1/tenants/{tenant_id}/users/{user_id}/licenses/{sku}",
        "/v1/tenants/{tenant_id}/users/{user_id}/tokens",
        "/v1/charging-tokens",
        "/v1/catalog/rates",
        "/v1/catalog/plans",
        "/v1/rates/lookup",
    ]:
        assert path in paths, path


def test_no_token_is_401_problem(client):
    response = client.get("/v1/tenants/any")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert response.headers["content-type"].startswith("application/problem+json")


def test_root_page_points_to_the_api(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
