"""Small helpers that speak the HTTP API the way a client would."""

from __future__ import annotations

import uuid
from typing import Any

OPERATOR = {"Authorization": "Bearer test-operator-token"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_tenant(client: Any, **overrides: Any) -> dict[str, Any]:
    body = {
        "id": unique("t"),
        "name": "Contoso",
        "country": "US",
        "billing_country": "US",
        "agreement": "direct",
        "currency": "USD",
    }
    body.update(overrides)
    response = client.post("/v1/tenants", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    return dict(response.json())


def add_seats(client: Any, tenant_id: str, sku: str, quantity: int) -> dict[str, Any]:
    response = client.post(
        f"/v1/tenants/{tenant_id}/subscriptions",
        json={"sku": sku, "quantity": quantity},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def create_user(client: Any, tenant_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "upn": f"{unique('user')}@contoso.example",
        "display_name": "A User",
        "usage_location": "US",
    }
    body.update(overrides)
    response = client.post(f"/v1/tenants/{tenant_id}/users", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    return dict(response.json())


def user_token(client: Any, tenant_id: str, user_id: str) -> str:
    response = client.post(f"/v1/tenants/{tenant_id}/users/{user_id}/tokens", headers=OPERATOR)
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def admin(client: Any, tenant_id: str, *roles: str) -> dict[str, str]:
    """Headers of a new user of the tenant holding ``roles``."""
    user = create_user(client, tenant_id, roles=list(roles))
    return bearer(user_token(client, tenant_id, user["id"]))


def charging_token(client: Any, tenant_id: str | None = None) -> dict[str, str]:
    body = {"tenant_id": tenant_id} if tenant_id else {}
    response = client.post("/v1/charging-tokens", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    return bearer(response.json()["token"])


def buy(
    client: Any,
    tenant_id: str,
    headers: dict[str, str],
    amount: str,
    payment_method_id: str,
    key: str | None = None,
) -> Any:
    """POST .../credits/purchases, with an Idempotency-Key when given; the raw answer."""
    extra = {"Idempotency-Key": key} if key else {}
    return client.post(
        f"/v1/tenants/{tenant_id}/credits/purchases",
        json={"amount": amount, "payment_method_id": payment_method_id},
        headers={**headers, **extra},
    )
