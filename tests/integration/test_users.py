"""Users, subscriptions and license seats."""

from __future__ import annotations

import pytest

from tests.support.api import OPERATOR, add_seats, create_tenant, create_user


@pytest.fixture()
def tenant(client):
    return create_tenant(client)


def test_create_user_with_licenses_takes_seats(client, tenant):
    tid = tenant["id"]
    add_seats(client, tid, "calling_plan_domestic", 2)
    user = create_user(
        client,
        tid,
        licenses=["calling_plan_domestic", "communications_credits"],
        roles=["billing_admin"],
        phone_number="+12025550123",
        email="a@contoso.example",
    )
    assert sorted(user["licenses"]) == ["calling_plan_domestic", "communications_credits"]
    assert user["kind"] == "person"
    subs = {
        s["sku"]: s
        for s in client.get(f"/v1/tenants/{tid}/subscriptions", headers=OPERATOR).json()["items"]
    }
    assert subs["calling_plan_domestic"]["assigned"] == 1
    assert subs["calling_plan_domestic"]["available"] == 1


def test_no_seats_available(client, tenant):
    tid = tenant["id"]
    add_seats(client, tid, "audio_conferencing", 1)
    first = create_user(client, tid)
    second = create_user(client, tid)
    put = client.put(
        f"/v1/tenants/{tid}/users/{first['id']}/licenses/audio_conferencing", headers=OPERATOR
    )
    assert put.status_code == 200
    again = client.put(
        f"/v1/tenants/{tid}/users/{first['id']}/licenses/audio_conferencing", headers=OPERATOR
    )
    assert again.status_code == 200  # idempotent: no second seat taken
    denied = client.put(
        f"/v1/tenants/{tid}/users/{second['id']}/licenses/audio_conferencing", headers=OPERATOR
    )
    assert denied.status_code == 409
    assert denied.json()["code"] == "no_seats_available"
    removed = client.delete(
        f"/v1/tenants/{tid}/users/{first['id']}/licenses/audio_conferencing", headers=OPERATOR
    )
    assert removed.status_code == 200 and removed.json()["licenses"] == []
    assert (
        client.put(
            f"/v1/tenants/{tid}/users/{second['id']}/licenses/audio_conferencing", headers=OPERATOR
        ).status_code
        == 200
    )


def test_user_created_with_license_beyond_seats_is_refused_whole(client, tenant):
    tid = tenant["id"]
    response = client.post(
        f"/v1/tenants/{tid}/users",
        json={
            "upn": "x@contoso.example",
            "display_name": "X",
            "usage_location": "US",
            "licenses": ["calling_plan_payg"],
        },
        headers=OPERATOR,
    )
    assert response.status_code == 409
    assert response.json()["code"] == "no_seats_available"
    listing = client.get(f"/v1/tenants/{tid}/users", headers=OPERATOR).json()
    assert listing["items"] == []


def test_communications_credits_needs_no_seat(client, tenant):
    user = create_user(client, tenant["id"])
    response = client.put(
        f"/v1/tenants/{tenant['id']}/users/{user['id']}/licenses/communications_credits",
        headers=OPERATOR,
    )
    assert response.status_code == 200
    assert response.json()["licenses"] == ["communications_credits"]


def test_upn_unique_in_tenant_case_insensitive(client, tenant):
    create_user(client, tenant["id"], upn="dup@contoso.example")
    response = client.post(
        f"/v1/tenants/{tenant['id']}/users",
        json={"upn": "DUP@contoso.example", "display_name": "D", "usage_location": "US"},
        headers=OPERATOR,
    )
    assert response.status_code == 409
    other = create_tenant(client)
    create_user(client, other["id"], upn="dup@contoso.example")  # another tenant: fine


@pytest.mark.parametrize(
    "change",
    [
        {"roles": ["emperor"]},
        {"licenses": ["calling_plan_galactic"]},
        {"phone_number": "+1 202 555 0123"},
        {"phone_number": "+99912345"},
        {"phone_number": "02079460000"},
        {"usage_location": "UK"},
        {"kind": "robot"},
        {"upn": "no-at-sign"},
        {"display_name": "x" * 300},
        {"roles": "global_admin"},
        {"email": 5},
    ],
)
def test_bad_user_bodies(client, tenant, change):
    body = {"upn": "ok@contoso.example", "display_name": "OK", "usage_location": "US", **change}
    response = client.post(f"/v1/tenants/{tenant['id']}/users", json=body, headers=OPERATOR)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert client.get(f"/v1/tenants/{tenant['id']}/users", headers=OPERATOR).json()["items"] == []


def test_get_by_id_or_upn_patch_and_delete(client, tenant):
    tid = tenant["id"]
    user = create_user(client, tid, upn="pat@contoso.example")
    by_upn = client.get(f"/v1/tenants/{tid}/users/pat@contoso.example", headers=OPERATOR)
    assert by_upn.status_code == 200 and by_upn.json()["id"] == user["id"]
    patched = client.patch(
        f"/v1/tenants/{tid}/users/{user['id']}",
        json={"display_name": "Pat", "roles": ["user_admin"], "email": "pat@mail.example"},
        headers=OPERATOR,
    )
    assert patched.status_code == 200
    assert patched.json()["display_name"] == "Pat"
    assert patched.json()["roles"] == ["user_admin"]
    bad = client.patch(
        f"/v1/tenants/{tid}/users/{user['id']}", json={"roles": ["nope"]}, headers=OPERATOR
    )
    assert bad.status_code == 422
    assert client.get(f"/v1/tenants/{tid}/users/{user['id']}", headers=OPERATOR).json()[
        "roles"
    ] == ["user_admin"]
    assert (
        client.delete(f"/v1/tenants/{tid}/users/{user['id']}", headers=OPERATOR).status_code == 204
    )
    assert client.get(f"/v1/tenants/{tid}/users/{user['id']}", headers=OPERATOR).status_code == 404


def test_user_list_pagination(client, tenant):
    tid = tenant["id"]
    created = {create_user(client, tid)["id"] for _ in range(5)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"/v1/tenants/{tid}/users", params=params, headers=OPERATOR).json()
        seen += [u["id"] for u in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert set(seen) == created and len(seen) == 5
    assert (
        client.get(f"/v1/tenants/{tid}/users", params={"limit": 1001}, headers=OPERATOR).status_code
        == 422
    )
    assert (
        client.get(
            f"/v1/tenants/{tid}/users", params={"cursor": "garbage!"}, headers=OPERATOR
        ).status_code
        == 422
    )
