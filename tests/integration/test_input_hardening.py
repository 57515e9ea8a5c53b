"""Input that once reached the database or slipped past a check: made-up list
cursors, NUL characters, trailing newlines, non-ISO countries, huge bodies,
and bodies sent without a token. Each is a 4xx problem+json, never a 500."""

from __future__ import annotations

import asyncio
import base64
import json
import select
import socket
from collections.abc import Iterator
from typing import Any

import phonenumbers
import pytest

from commcredits.api import guards
from commcredits.core import geo
from tests.support.api import OPERATOR, add_seats, create_tenant, create_user, unique

PROBLEM_JSON = "application/problem+json"
MEBIBYTE = 1024 * 1024


def assert_problem(response: Any, status: int | tuple[int, ...], code: str) -> dict[str, Any]:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = dict(response.json())
    assert body["code"] == code, body
    assert body["detail"]
    return body


# --- 1. list cursors -----------------------------------------------------------------------


def made_up(values: Any) -> str:
    """A cursor as the service once encoded them, unsigned: any client can make one."""
    raw = json.dumps(values).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MADE_UP_CURSORS = [
    made_up([{"a": 1}]),
    made_up([None]),
    made_up([[1]]),
    made_up([10**40]),
    made_up([5]),
    made_up(["x"]),
    made_up(["x", 5]),
    made_up([None, None]),
    made_up([{"a": 1}, "x"]),
    made_up(["2026-01-01T00:00:00+00:00", 5]),
    made_up(["2026-01-01T00:00:00+00:00", [1]]),
    made_up([True]),
    "!!!not-base64!!!",
    "a.b",
    made_up(["x"]) + ".AAAAAAAAAAAAAAAAAAAAAA",
]

LISTS = [
    "/v1/tenants/{tenant}/users",
    "/v1/tenants/{tenant}/subscriptions",
    "/v1/tenants/{tenant}/payment-methods",
    "/v1/tenants/{tenant}/credits/purchases",
    "/v1/tenants/{tenant}/credits/transactions",
    "/v1/tenants/{tenant}/notifications",
    "/v1/tenants/{tenant}/reports/pstn-usage",
]


@pytest.fixture()
def listed_tenant(client: Any) -> Iterator[dict[str, Any]]:
    """A tenant with two of each thing this file pages through."""
    tenant = create_tenant(client)
    tid = tenant["id"]
    create_user(client, tid)
    create_user(client, tid)
    add_seats(client, tid, "calling_plan_domestic", 1)
    add_seats(client, tid, "audio_conferencing", 1)
    for amount in ("5.00", "7.00"):
        response = client.post(
            f"/v1/tenants/{tid}/credits/adjustments",
            json={"amount": amount, "reason": "cursor test"},
            headers=OPERATOR,
        )
        assert response.status_code == 201, response.text
    yield tenant


@pytest.mark.parametrize("path", LISTS)
def test_a_made_up_cursor_is_a_validation_error(client, listed_tenant, path):
    url = path.format(tenant=listed_tenant["id"])
    for cursor in MADE_UP_CURSORS:
        response = client.get(url, params={"cursor": cursor}, headers=OPERATOR)
        assert_problem(response, (400, 422), "validation_error")


def _cursor_of(client: Any, url: str) -> str:
    response = client.get(url, params={"limit": 1}, headers=OPERATOR)
    assert response.status_code == 200, response.text
    cursor = response.json()["next_cursor"]
    assert cursor
    return str(cursor)


def test_a_cursor_of_another_list_is_a_validation_error(client, listed_tenant):
    base = f"/v1/tenants/{listed_tenant['id']}"
    users = _cursor_of(client, f"{base}/users")
    transactions = _cursor_of(client, f"{base}/credits/transactions")
    # A text key where the key is a number, and a number where it is text.
    for url, cursor in (
        (f"{base}/credits/transactions", users),
        (f"{base}/users", transactions),
        (f"{base}/subscriptions", transactions),
        (f"{base}/credits/purchases", users),
    ):
        response = client.get(url, params={"cursor": cursor}, headers=OPERATOR)
        assert_problem(response, (400, 422), "validation_error")


def test_a_changed_cursor_is_refused_and_a_given_one_pages_on(client, listed_tenant):
    url = f"/v1/tenants/{listed_tenant['id']}/users"
    first = client.get(url, params={"limit": 1}, headers=OPERATOR).json()
    cursor = first["next_cursor"]
    second = client.get(url, params={"limit": 1, "cursor": cursor}, headers=OPERATOR).json()
    assert second["next_cursor"] is None
    assert {first["items"][0]["id"], second["items"][0]["id"]} == {
        u["id"] for u in client.get(url, headers=OPERATOR).json()["items"]
    }
    payload, _, signature = cursor.partition(".")
    forged = made_up([first["items"][0]["id"][:-1]]) + "." + signature
    response = client.get(url, params={"cursor": forged}, headers=OPERATOR)
    body = assert_problem(response, 422, "validation_error")
    assert "start again without it" in body["detail"]


# --- 6. subscriptions are paginated like every list ------------------------------------------


def test_subscriptions_page_with_limit_and_cursor(client):
    tid = create_tenant(client)["id"]
    for sku in ("audio_conferencing", "calling_plan_domestic", "calling_plan_international"):
        add_seats(client, tid, sku, 2)
    url = f"/v1/tenants/{tid}/subscriptions"
    first = client.get(url, params={"limit": 2}, headers=OPERATOR)
    assert first.status_code == 200, first.text
    assert [s["sku"] for s in first.json()["items"]] == [
        "audio_conferencing",
        "calling_plan_domestic",
    ]
    cursor = first.json()["next_cursor"]
    assert cursor
    second = client.get(url, params={"limit": 2, "cursor": cursor}, headers=OPERATOR).json()
    assert [s["sku"] for s in second["items"]] == ["calling_plan_international"]
    assert second["items"][0] == {
        "sku": "calling_plan_international",
        "quantity": 2,
        "assigned": 0,
        "available": 2,
        "unlimited": False,
    }
    assert second["next_cursor"] is None
    for limit in (0, 1001):
        response = client.get(url, params={"limit": limit}, headers=OPERATOR)
        assert_problem(response, 422, "validation_error")


# --- 2. NUL characters -----------------------------------------------------------------------


def test_nul_in_a_body_string_is_refused_and_changes_nothing(client):
    tid = unique("nul")
    body = {
        "id": tid,
        "name": "Null\u0000Corp",
        "country": "US",
        "billing_country": "US",
        "agreement": "direct",
        "currency": "USD",
    }
    response = client.post("/v1/tenants", json=body, headers=OPERATOR)
    assert_problem(response, 422, "validation_error")
    assert client.get(f"/v1/tenants/{tid}", headers=OPERATOR).status_code == 404


def _tenant_request(name_json: str, tid: str) -> bytes:
    fields = '"country": "US", "billing_country": "US", "agreement": "direct", "currency": "USD"'
    return f'{{"id": "{tid}", "name": {name_json}, {fields}}}'.encode()


def test_nul_in_every_kind_of_body_is_refused(client):
    tenant = create_tenant(client)
    tid = tenant["id"]
    user = create_user(client, tid)
    nul = "a\u0000b"
    cases: list[tuple[str, str, Any]] = [
        ("PATCH", f"/v1/tenants/{tid}", {"name": nul}),
        ("POST", f"/v1/tenants/{tid}/users", {"upn": f"{nul}@x.example", "display_name": "N"}),
        ("PATCH", f"/v1/tenants/{tid}/users/{user['id']}", {"display_name": nul}),
        ("POST", f"/v1/tenants/{tid}/credits/adjustments", {"amount": "1", "reason": nul}),
        (
            "POST",
            f"/v1/tenants/{tid}/credits/purchases",
            {"amount": "10", "payment_method_id": nul},
        ),
        ("POST", "/v1/charging-tokens", {"tenant_id": nul}),
        ("PUT", "/v1/catalog/plans", {"zone": {nul: [nul]}}),
        (
            "POST",
            "/v1/calls",
            {"call_id": nul, "tenant_id": tid, "call_type": "user_out", "to": "+12025550199"},
        ),
        ("POST", "/v1/cdrs", {"records": [{"call_id": nul, "tenant_id": tid}]}),
    ]
    for method, path, body in cases:
        response = client.request(method, path, json=body, headers=OPERATOR)
        assert_problem(response, 422, "validation_error")
    after = client.get(f"/v1/tenants/{tid}/users/{user['id']}", headers=OPERATOR).json()
    assert after["display_name"] == user["display_name"]
    assert client.get(f"/v1/tenants/{tid}", headers=OPERATOR).json() == tenant


def test_raw_nul_bytes_are_refused_in_json_and_csv(client):
    tid = unique("nul-raw")
    headers = {**OPERATOR, "Content-Type": "application/json"}
    response = client.post(
        "/v1/tenants", content=_tenant_request('"ab\x00cd"', tid), headers=headers
    )
    assert_problem(response, 422, "validation_error")
    rates = client.put(
        "/v1/catalog/rates",
        content=b"service,prefix\nout\x00bound,44\n",
        headers={**OPERATOR, "Content-Type": "text/csv"},
    )
    assert_problem(rates, 422, "validation_error")
    assert client.get(f"/v1/tenants/{tid}", headers=OPERATOR).status_code == 404


def _receive_all(chunks: list[bytes], kind: str) -> None:
    """Deliver ``chunks`` as a server would, one http.request message each."""
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def read() -> None:
        check = guards._BodyCheck(receive, guards.MAX_BODY_BYTES, kind)
        for _ in range(len(chunks)):
            await check.receive()

    asyncio.run(read())


def test_a_nul_escape_is_found_wherever_the_chunks_split_it():
    body = _tenant_request('"ab\\u0000cd"', "t1")
    for at in range(1, len(body)):
        with pytest.raises(guards.RequestRefused) as refused:
            _receive_all([body[:at], body[at:]], "json")
        assert refused.value.status_code == 422
    text = _tenant_request('"ab\\\\u0000cd"', "t1")  # the text "\u0000": no NUL
    for at in range(1, len(text)):
        _receive_all([text[:at], text[at:]], "json")
    form = b"name=ab%00cd&x=1"
    for at in range(1, len(form)):
        with pytest.raises(guards.RequestRefused):
            _receive_all([form[:at], form[at:]], "form")
    _receive_all([b"a,\\u0000,b\n"], "raw")  # text in a CSV, not an escape


def test_an_escaped_backslash_before_u0000_is_text_not_nul(client):
    tid = unique("backslash")
    response = client.post(
        "/v1/tenants",
        content=_tenant_request('"a\\\\u0000b"', tid),
        headers={**OPERATOR, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "a\\u0000b"


def test_nul_in_a_path_or_query_is_refused(client):
    tid = create_tenant(client)["id"]
    for path in (
        "/v1/tenants/a%00b",
        f"/v1/tenants/{tid}/users/u%00x",
        f"/v1/tenants/{tid}/users/u%00x/licenses/communications_credits",
        f"/v1/tenants/{tid}/credits/purchases/p%00x",
        "/v1/calls/c%00x",
    ):
        response = client.get(path, headers=OPERATOR)
        assert_problem(response, 422, "validation_error")
    response = client.put(
        f"/v1/tenants/{tid}/users/u%00x/licenses/communications_credits", headers=OPERATOR
    )
    assert_problem(response, 422, "validation_error")
    response = client.get(
        "/v1/rates/lookup", params={"number": "+1202555\u00000123"}, headers=OPERATOR
    )
    assert_problem(response, 422, "validation_error")
    response = client.get(
        f"/v1/tenants/{tid}/reports/pstn-usage", params={"user_id": "a\u0000"}, headers=OPERATOR
    )
    assert_problem(response, 422, "validation_error")


# --- 4. identifiers end where they end ------------------------------------------------------


def test_a_tenant_id_with_a_trailing_newline_is_refused(client):
    body = {
        "id": "x8\n",
        "name": "Newline",
        "country": "US",
        "billing_country": "US",
        "agreement": "direct",
        "currency": "USD",
    }
    response = client.post("/v1/tenants", json=body, headers=OPERATOR)
    assert_problem(response, 422, "validation_error")
    assert client.get("/v1/tenants/x8%0A", headers=OPERATOR).status_code == 404


@pytest.mark.parametrize(
    "overrides",
    [
        {"phone_number": "+14155552672\n"},
        {"upn": "a@acme.com\n"},
        {"email": "a@acme.com\n"},
    ],
)
def test_user_identifiers_with_a_trailing_newline_are_refused(client, overrides):
    tid = create_tenant(client)["id"]
    body = {"upn": f"{unique('nl')}@acme.com", "display_name": "NL", "usage_location": "US"}
    body.update(overrides)
    response = client.post(f"/v1/tenants/{tid}/users", json=body, headers=OPERATOR)
    assert_problem(response, 422, "validation_error")
    users = client.get(f"/v1/tenants/{tid}/users", headers=OPERATOR).json()["items"]
    assert users == []
    ok = create_user(client, tid, phone_number="+14155552672", email="a@acme.com")
    patched = client.patch(f"/v1/tenants/{tid}/users/{ok['id']}", json=overrides, headers=OPERATOR)
    assert_problem(patched, 422, "validation_error")


def test_a_charging_token_for_a_tenant_id_with_a_newline_is_refused(client):
    response = client.post("/v1/charging-tokens", json={"tenant_id": "x8\n"}, headers=OPERATOR)
    assert_problem(response, 422, "validation_error")


# --- 5. countries are ISO 3166-1, time zones IANA zones ---------------------------------------

NOT_ISO_COUNTRIES = ["XK", "AC", "DG", "EA", "IC", "TA", "CP", "CQ", "EU", "UN", "ZZ"]


def test_the_country_list_is_iso_3166_alpha_2():
    assert all(not geo.is_country(code) for code in NOT_ISO_COUNTRIES)
    assert sum(1 for _ in geo._countries()) == 249
    for code in ("US", "GB", "DE", "FR", "JP", "AX", "BQ", "SS", "SX", "CW", "PS", "TW"):
        assert geo.is_country(code), code
    # Every phonenumbers region but the three non-ISO ones names a country.
    regions = set(phonenumbers.SUPPORTED_REGIONS)
    assert {r for r in regions if not geo.is_country(r)} == {"AC", "TA", "XK"}


def test_time_zones_are_real_zones():
    for name in ("localtime", "Factory"):
        assert not geo.is_timezone(name)
    for name in ("UTC", "Europe/London", "America/New_York", "Asia/Kolkata"):
        assert geo.is_timezone(name)


@pytest.mark.parametrize("code", ["XK", "AC", "DG", "EA", "IC", "TA", "CP"])
def test_a_non_iso_country_is_refused_everywhere(client, code):
    tid = unique("geo")
    for field in ("country", "billing_country"):
        body = {
            "id": tid,
            "name": "Geo",
            "country": "US",
            "billing_country": "US",
            "agreement": "direct",
            "currency": "USD",
            field: code,
        }
        response = client.post("/v1/tenants", json=body, headers=OPERATOR)
        assert_problem(response, 422, "validation_error")
    assert client.get(f"/v1/tenants/{tid}", headers=OPERATOR).status_code == 404
    tenant = create_tenant(client)
    response = client.post(
        f"/v1/tenants/{tenant['id']}/users",
        json={"upn": f"{unique('g')}@geo.example", "display_name": "G", "usage_location": code},
        headers=OPERATOR,
    )
    assert_problem(response, 422, "validation_error")
    patched = client.patch(
        f"/v1/tenants/{tenant['id']}", json={"billing_country": code}, headers=OPERATOR
    )
    assert_problem(patched, 422, "validation_error")


@pytest.mark.parametrize("zone", ["localtime", "Factory"])
def test_a_pseudo_time_zone_is_refused(client, zone):
    tid = unique("tz")
    body = {
        "id": tid,
        "name": "TZ",
        "country": "US",
        "billing_country": "US",
        "agreement": "direct",
        "currency": "USD",
        "timezone": zone,
    }
    assert_problem(client.post("/v1/tenants", json=body, headers=OPERATOR), 422, "validation_error")
    tenant = create_tenant(client)
    patched = client.patch(f"/v1/tenants/{tenant['id']}", json={"timezone": zone}, headers=OPERATOR)
    assert_problem(patched, 422, "validation_error")


# --- 7. request size -------------------------------------------------------------------------


def test_a_50_mb_body_is_413_before_it_is_read(client):
    tid = unique("huge")
    body = _tenant_request('"' + "x" * (50 * 1024 * 1024) + '"', tid)
    response = client.post(
        "/v1/tenants", content=body, headers={**OPERATOR, "Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")
    assert client.get(f"/v1/tenants/{tid}", headers=OPERATOR).status_code == 404


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(live_server):
    """Over a real socket: a chunked upload is answered 413 once it passes the
    limit, while the client is still sending."""
    chunk = b"x" * MEBIBYTE
    sent_mebibytes = 0
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/tenants HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer test-operator-token\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent_mebibytes < 64:  # 64 MiB if nobody stops it
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent_mebibytes += 1
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_response(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"code":"payload_too_large"' in answer
    assert sent_mebibytes < 64


def _read_response(sock: socket.socket) -> bytes:
    received = b""
    try:
        while b"payload_too_large" not in received:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    except (ConnectionResetError, TimeoutError):
        pass
    return received


def test_a_full_cdr_batch_fits_with_room():
    longest = {
        "call_id": "c" * 128,
        "tenant_id": "t" * 64,
        "call_type": "tollfree_in",
        "user_id": "u" * 256,
        "from": "+" + "9" * 31,
        "to": "+" + "9" * 31,
        "started_at": "2026-03-01T03:00:00.123456+05:30",
        "duration_seconds": 604800,
    }
    typical = {
        "call_id": "3f2a9c1e-5b7d-4e8a-9c0b-1d2e3f4a5b6c",
        "tenant_id": "contoso",
        "call_type": "user_out",
        "user_id": "adele.vance@contoso.example",
        "from": "+12025550123",
        "to": "+442079460000",
        "started_at": "2026-03-01T03:00:00Z",
        "duration_seconds": 184,
    }
    typical_size = len(json.dumps({"records": [typical] * 10_000}))
    longest_size = len(json.dumps({"records": [longest] * 10_000}))
    assert typical_size * 4 < guards.MAX_BODY_BYTES
    assert longest_size < guards.MAX_BODY_BYTES


# --- 8. who you are comes before what you sent -----------------------------------------------

BODY_ROUTES = [
    ("POST", "/v1/tenants"),
    ("PATCH", "/v1/tenants/t1"),
    ("POST", "/v1/tenants/t1/users"),
    ("POST", "/v1/tenants/t1/subscriptions"),
    ("POST", "/v1/tenants/t1/credits/purchases"),
    ("POST", "/v1/tenants/t1/credits/adjustments"),
    ("PUT", "/v1/tenants/t1/credits/auto-recharge"),
    ("POST", "/v1/tenants/t1/payment-methods"),
    ("POST", "/v1/calls"),
    ("POST", "/v1/cdrs"),
    ("PUT", "/v1/catalog/plans"),
    ("PUT", "/v1/catalog/rates"),
    ("POST", "/v1/charging-tokens"),
]


@pytest.mark.parametrize("method, path", BODY_ROUTES)
def test_no_or_unknown_token_is_401_before_the_body_is_looked_at(client, method, path):
    for headers in ({}, {"Authorization": "Bearer cc_not-a-token"}, {"Authorization": "Basic x"}):
        for body in (b"{not json", b'{"name": 5}', b"\x00" * 10):
            response = client.request(
                method, path, content=body, headers={**headers, "Content-Type": "application/json"}
            )
            assert_problem(response, 401, "unauthenticated")
            assert response.headers["www-authenticate"] == "Bearer"


def test_the_operator_still_gets_the_body_errors(client):
    response = client.post(
        "/v1/tenants",
        content=b"{not json",
        headers={**OPERATOR, "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "validation_error")


def test_open_endpoints_need_no_token(client):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/"):
        assert client.get(path).status_code == 200, path


def test_a_refused_request_is_counted_under_its_route(client):
    client.post("/v1/tenants/t-metrics/users", content=b"{not json")
    text = client.get("/metrics").text
    assert 'method="POST",route="/v1/tenants/{tenant_id}/users",status="401"' in text
