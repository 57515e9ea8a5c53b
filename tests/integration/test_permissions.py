"""The permission matrix of SPEC §6, endpoint by endpoint.

One row of ``ROWS`` is one endpoint: who may call it and what a permitted call
answers. Every row is tried by every principal in ``PRINCIPALS``: each admin
role alone, a user with no role, the operator, charging tokens (this tenant's,
all tenants', another tenant's), an admin of another tenant holding every role,
and requests that must not authenticate at all. A refused request must also
change nothing: each row compares the tenant's state before and after.

Rows of endpoints not built yet are skipped until their route exists, so the
table grows with the API: adding an endpoint is adding one line.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from commcredits.core.roles import ALL_ROLES
from tests.support.api import OPERATOR, bearer, charging_token, create_tenant, unique

# --- the permission sets, written from SPEC §6 (not imported from the code under test) ----

SPEC_ROLES = frozenset(
    {
        "global_admin",
        "billing_admin",
        "user_admin",
        "helpdesk_admin",
        "service_support_admin",
        "application_admin",
        "license_admin",
        "cloud_device_admin",
        "authentication_admin",
        "privileged_authentication_admin",
        "teams_admin",
        "teams_communications_admin",
        "teams_communications_support_engineer",
        "teams_communications_support_specialist",
        "skype_for_business_admin",
        "device_admin",
        "azure_ad_joined_device_local_admin",
        "reports_reader",
    }
)
FUNDERS = frozenset({"operator", "global_admin", "billing_admin"})
USER_ADMINS = frozenset({"operator", "global_admin", "user_admin", "license_admin"})
READERS = frozenset(
    {
        "operator",
        "global_admin",
        "billing_admin",
        "user_admin",
        "license_admin",
        "teams_admin",
        "teams_communications_admin",
        "teams_communications_support_engineer",
        "teams_communications_support_specialist",
        "reports_reader",
    }
)
OPERATOR_ONLY = frozenset({"operator"})
CHARGERS = frozenset({"operator", "charging_tenant", "charging_global"})

# Principals that must not authenticate at all: 401 everywhere.
UNAUTHENTICATED = ("anonymous", "bad_token", "wrong_scheme", "deleted_user_token")
# Principals of another tenant: 403 (or, where a row allows it, 404 for another tenant's object).
FOREIGN = ("other_tenant_admin", "charging_other_tenant")
PRINCIPALS = (
    *sorted(ALL_ROLES),
    "no_role",
    "operator",
    "charging_tenant",
    "charging_global",
    *FOREIGN,
    *UNAUTHENTICATED,
)
ANYONE = frozenset(PRINCIPALS) - frozenset(UNAUTHENTICATED)

PROBLEM_JSON = "application/problem+json"
GOOD_CARD = {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2034}
# Auto-recharge as the fixture sets it; a permitted PUT writes the same values back.
AUTO_RECHARGE = {"enabled": False, "threshold": "60.00", "amount": "100.00"}
# A deck whose second line is bad: the operator's upload is refused as bad input
# (proving it got past authorization) and the deck in force is never touched.
BAD_DECK = (
    "service,prefix,destination,number_type,rate_per_minute,connect_fee,"
    "initial_increment_s,subsequent_increment_s,currency\n"
    "outbound,44,United Kingdom,fixed,not-a-rate,0,60,60,USD\n"
)


# --- the world every row runs in ------------------------------------------------------------


@dataclass
class World:
    client: TestClient
    tenant: str  # where every role user lives, and the target of refused requests
    scratch: str  # operator-only writes that are permitted land here, so `tenant` stays put
    scratch_user: str
    other_tenant: str
    victim_user: str  # holds calling_plan_domestic, not audio_conferencing
    victim_pm: str
    headers: dict[str, dict[str, str]]
    call_id: str | None = None
    must_not_exist: list[str] = field(default_factory=list)

    def operator(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers=OPERATOR, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    def fresh_user(self, licenses: tuple[str, ...] = ()) -> str:
        body = {
            "upn": f"{unique('fresh')}@perm.example",
            "display_name": "Fresh",
            "usage_location": "US",
            "licenses": list(licenses),
        }
        return str(self.operator("POST", f"/v1/tenants/{self.tenant}/users", 201, json=body)["id"])

    def fresh_pm(self) -> str:
        path = f"/v1/tenants/{self.tenant}/payment-methods"
        return str(self.operator("POST", path, 201, json=GOOD_CARD)["id"])

    def snapshot(self) -> dict[str, Any]:
        """Everything of `tenant` a request could change, read as the operator."""
        base = f"/v1/tenants/{self.tenant}"
        credits = self.operator("GET", f"{base}/credits", 200)
        return {
            "tenant": self.operator("GET", base, 200),
            "users": by_id(self.operator("GET", f"{base}/users?limit=1000", 200)["items"]),
            "subscriptions": {
                s["sku"]: s["quantity"]
                for s in self.operator("GET", f"{base}/subscriptions", 200)["items"]
            },
            "payment_methods": by_id(self.operator("GET", f"{base}/payment-methods", 200)["items"]),
            "auto_recharge": credits["auto_recharge"],
            "balance": credits["balance"],
            "ledger": by_id(
                self.operator("GET", f"{base}/credits/transactions?limit=1000", 200)["items"]
            ),
        }


def by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in items}


# Path placeholders: what each names, for a permitted request and for a refused one.
# Permitted writes act on fresh objects (or the scratch tenant); refused ones aim at
# the victims, whose state is then checked unchanged.
PLACES: dict[str, Callable[[World, bool], str]] = {
    "tenant": lambda w, ok: w.tenant,
    "write_tenant": lambda w, ok: w.scratch if ok else w.tenant,
    "write_tenant_user": lambda w, ok: w.scratch_user if ok else w.victim_user,
    "victim_user": lambda w, ok: w.victim_user,
    "user": lambda w, ok: w.fresh_user() if ok else w.victim_user,
    "licensed_user": lambda w, ok: (
        w.fresh_user(("calling_plan_domestic",)) if ok else w.victim_user
    ),
    "pm": lambda w, ok: w.fresh_pm() if ok else w.victim_pm,
    "call": lambda w, ok: w.call_id or "no-such-call",
}


def resolve(path: str, world: World, permitted: bool) -> str:
    names = [name for _, name, _, _ in string.Formatter().parse(path) if name]
    return path.format(**{name: PLACES[name](world, permitted) for name in names})


# --- request bodies that depend on the world --------------------------------------------------


def new_tenant(world: World, permitted: bool) -> dict[str, Any]:
    tenant_id = unique("perm-ok" if permitted else "perm-refused")
    if not permitted:
        world.must_not_exist.append(f"/v1/tenants/{tenant_id}")
    return {
        "id": tenant_id,
        "name": "Created",
        "country": "US",
        "billing_country": "US",
        "agreement": "direct",
        "currency": "USD",
    }


def new_user(world: World, permitted: bool) -> dict[str, Any]:
    upn = f"{unique('ok' if permitted else 'refused')}@perm.example"
    if not permitted:
        world.must_not_exist.append(f"/v1/tenants/{world.tenant}/users/{upn}")
    return {"upn": upn, "display_name": "New", "usage_location": "US", "roles": ["global_admin"]}


def current_plans(world: World, permitted: bool) -> Any:
    # The catalog is shared by the whole session: everyone writes back what is in force.
    return world.operator("GET", "/v1/catalog/plans", 200)


def auto_recharge(world: World, permitted: bool) -> dict[str, Any]:
    if permitted:
        return {**AUTO_RECHARGE, "payment_method_id": world.victim_pm}
    return {"enabled": False, "threshold": "77.00", "amount": "88.00", "payment_method_id": None}


def new_call(world: World, permitted: bool) -> dict[str, Any]:
    return {
        "call_id": unique("perm-call"),
        "tenant_id": world.tenant,
        "call_type": "user_out",
        "user_id": world.victim_user,
        "from": "+12025550123",
        "to": "+12025550199",
    }


def new_cdr(world: World, permitted: bool) -> dict[str, Any]:
    record = {**new_call(world, permitted), "started_at": "2024-01-15T10:00:00Z"}
    return {"records": [{**record, "duration_seconds": 0}]}


def cdr_refused(response: Any) -> bool:
    """A batch may refuse another tenant's records one by one instead of as a whole."""
    if response.status_code == 200:
        return all(r["status"] == "rejected" for r in response.json()["results"])
    return response.status_code == 403


# --- the table ------------------------------------------------------------------------------

Body = dict[str, Any] | Callable[[World, bool], Any] | None


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # placeholders from PLACES; a query string may follow
    allowed: frozenset[str]
    success: int | None  # the status of a permitted call; None: anything but 401/403/5xx
    body: Body = None
    csv: str | None = None
    # Parts of the snapshot a permitted call may change; each permitted call may add one item.
    touches: frozenset[str] = frozenset()
    counts: bool = True  # False: permitted calls may add any number of items to `touches`
    foreign_404_ok: bool = False  # API.md: another tenant's object may answer 404
    foreign_refused: Callable[[Any], bool] | None = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def touches(*parts: str) -> frozenset[str]:
    return frozenset(parts)


T = "/v1/tenants/{tenant}"
ROWS = [
    # tenants, tokens, catalog: the operator's writes
    Row("GET", T, READERS, 200),
    Row("POST", "/v1/tenants", OPERATOR_ONLY, 201, body=new_tenant),
    Row("PATCH", "/v1/tenants/{write_tenant}", OPERATOR_ONLY, 200, body={"name": "Renamed"}),
    Row(
        "POST",
        "/v1/tenants/{write_tenant}/subscriptions",
        OPERATOR_ONLY,
        201,
        body={"sku": "calling_plan_international", "quantity": 3},
    ),
    Row("GET", f"{T}/subscriptions", READERS, 200),
    Row("POST", "/v1/tenants/{write_tenant}/users/{write_tenant_user}/tokens", OPERATOR_ONLY, 201),
    Row("POST", "/v1/charging-tokens", OPERATOR_ONLY, 201, body={}),
    Row("PUT", "/v1/catalog/rates", OPERATOR_ONLY, 422, csv=BAD_DECK),
    Row("PUT", "/v1/catalog/plans", OPERATOR_ONLY, 200, body=current_plans),
    Row("GET", "/v1/catalog/plans", ANYONE, 200),
    Row("GET", "/v1/rates/lookup?number=%2B442079460000", ANYONE, None),
    Row(
        "POST",
        "/v1/tenants/{write_tenant}/credits/adjustments",
        OPERATOR_ONLY,
        201,
        body={"amount": "1.00", "reason": "permission matrix"},
    ),
    # users and licenses
    Row("POST", f"{T}/users", USER_ADMINS, 201, body=new_user, touches=touches("users")),
    Row("GET", f"{T}/users", USER_ADMINS, 200),
    Row("GET", f"{T}/users/{{victim_user}}", USER_ADMINS, 200),
    Row(
        "PATCH",
        f"{T}/users/{{user}}",
        USER_ADMINS,
        200,
        body={"display_name": "Changed", "roles": ["global_admin"]},
        touches=touches("users"),
    ),
    Row("DELETE", f"{T}/users/{{user}}", USER_ADMINS, 204),
    Row(
        "PUT",
        f"{T}/users/{{user}}/licenses/audio_conferencing",
        USER_ADMINS,
        200,
        touches=touches("users"),
    ),
    Row(
        "DELETE",
        f"{T}/users/{{licensed_user}}/licenses/calling_plan_domestic",
        USER_ADMINS,
        200,
        touches=touches("users"),
    ),
    # funding
    Row(
        "POST",
        f"{T}/payment-methods",
        FUNDERS,
        201,
        body=GOOD_CARD,
        touches=touches("payment_methods"),
    ),
    Row("GET", f"{T}/payment-methods", FUNDERS, 200),
    Row("DELETE", f"{T}/payment-methods/{{pm}}", FUNDERS, 204),
    Row(
        "POST",
        f"{T}/credits/purchases",
        FUNDERS,
        201,
        body=lambda w, ok: {"amount": "50.00", "payment_method_id": w.victim_pm},
        touches=touches("ledger", "balance"),
    ),
    Row("PUT", f"{T}/credits/auto-recharge", FUNDERS, 200, body=auto_recharge),
    # reads
    Row("GET", f"{T}/credits", READERS, 200),
    Row("GET", f"{T}/credits/auto-recharge", READERS, 200),
    Row("GET", f"{T}/credits/transactions", READERS, 200),
    Row("GET", f"{T}/credits/purchases", READERS, 200),
    Row("GET", f"{T}/credits/purchases/pur_missing", READERS, None),
    Row("GET", f"{T}/pools", READERS, 200),
    Row("GET", f"{T}/overage", READERS, 200),
    Row("GET", f"{T}/reports/pstn-usage", READERS, 200),
    Row("GET", f"{T}/reports/pstn-usage?format=csv", READERS, 200),
    Row("GET", f"{T}/reports/pstn-usage/summary?group_by=day", READERS, 200),
    Row("GET", f"{T}/credits/recommendation", READERS, 200),
    Row("GET", f"{T}/notifications", READERS, 200),
    # charging (the voice platform)
    Row(
        "POST",
        "/v1/calls",
        CHARGERS,
        201,
        body=new_call,
        touches=touches("ledger", "balance"),
        counts=False,
    ),
    Row("GET", "/v1/calls/{call}", CHARGERS, 200, foreign_404_ok=True),
    Row(
        "POST",
        "/v1/calls/{call}/update",
        CHARGERS,
        None,
        body={"used_seconds": 1},
        foreign_404_ok=True,
    ),
    Row(
        "POST",
        "/v1/calls/{call}/end",
        CHARGERS,
        None,
        body={"duration_seconds": 1},
        touches=touches("ledger", "balance"),
        counts=False,
        foreign_404_ok=True,
    ),
    Row(
        "POST",
        "/v1/cdrs",
        CHARGERS,
        200,
        body=new_cdr,
        touches=touches("ledger", "balance"),
        counts=False,
        foreign_refused=cdr_refused,
    ),
]


def served_routes(app: Any) -> set[tuple[str, str]]:
    """(METHOD, path shape) of every operation the app serves. Read from the OpenAPI
    document, which API.md requires to describe every endpoint."""
    return {
        (method.upper(), shape_of(path))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }


def shape_of(path: str) -> str:
    """A path with its query and its parameter names dropped: '/v1/tenants/{}'."""
    return "/".join(
        "{}" if part.startswith("{") else part for part in path.split("?")[0].split("/")
    )


def route_exists(app: Any, method: str, path: str) -> bool:
    return any(serves(route, (method, shape_of(path))) for route in served_routes(app))


def serves(route: tuple[str, str], row: tuple[str, str]) -> bool:
    """Does the route take the row's requests? A row may name a literal where the
    route has a parameter ('/licenses/audio_conferencing' for '/licenses/{}')."""
    (route_method, route_path), (row_method, row_path) = route, row
    route_parts, row_parts = route_path.split("/"), row_path.split("/")
    return (
        route_method == row_method
        and len(route_parts) == len(row_parts)
        and all(r in ("{}", w) for r, w in zip(route_parts, row_parts, strict=True))
    )


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(app: Any) -> Iterator[World]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield build_world(client, app)


def build_world(client: TestClient, app: Any) -> World:
    tenant = create_tenant(client, name="Permissions")["id"]
    scratch = create_tenant(client, name="Scratch")["id"]
    other = create_tenant(client, name="Elsewhere")["id"]
    world = World(
        client=client,
        tenant=tenant,
        scratch=scratch,
        scratch_user="",
        other_tenant=other,
        victim_user="",
        victim_pm="",
        headers={},
    )
    for sku in ("calling_plan_domestic", "audio_conferencing"):
        world.operator(
            "POST", f"/v1/tenants/{tenant}/subscriptions", 201, json={"sku": sku, "quantity": 100}
        )
    world.scratch_user = user_in(world, scratch, [])
    world.victim_user = user_in(
        world, tenant, ["reports_reader"], licenses=["calling_plan_domestic"]
    )
    world.victim_pm = world.fresh_pm()
    world.operator(
        "PUT",
        f"/v1/tenants/{tenant}/credits/auto-recharge",
        200,
        json={**AUTO_RECHARGE, "payment_method_id": world.victim_pm},
    )

    headers = world.headers
    for role in sorted(ALL_ROLES):
        headers[role] = token_of(world, tenant, user_in(world, tenant, [role]))
    headers["no_role"] = token_of(world, tenant, user_in(world, tenant, []))
    headers["operator"] = OPERATOR
    headers["charging_tenant"] = charging_token(client, tenant)
    headers["charging_global"] = charging_token(client)
    headers["charging_other_tenant"] = charging_token(client, other)
    headers["other_tenant_admin"] = token_of(world, other, user_in(world, other, sorted(ALL_ROLES)))
    headers["anonymous"] = {}
    headers["bad_token"] = bearer("cc_" + uuid.uuid4().hex)
    headers["wrong_scheme"] = {"Authorization": "Basic b3BlcmF0b3I6c2VjcmV0"}
    doomed = user_in(world, tenant, ["global_admin"])
    headers["deleted_user_token"] = token_of(world, tenant, doomed)
    world.operator("DELETE", f"/v1/tenants/{tenant}/users/{doomed}", 204)

    if route_exists(app, "POST", "/v1/calls"):
        call = new_call(world, True)
        response = client.post("/v1/calls", json=call, headers=OPERATOR)
        if response.status_code == 201:
            world.call_id = call["call_id"]
    return world


def user_in(world: World, tenant: str, roles: list[str], licenses: list[str] | None = None) -> str:
    body = {
        "upn": f"{unique('role')}@perm.example",
        "display_name": "Role holder",
        "usage_location": "US",
        "roles": roles,
        "licenses": licenses or [],
    }
    return str(world.operator("POST", f"/v1/tenants/{tenant}/users", 201, json=body)["id"])


def token_of(world: World, tenant: str, user_id: str) -> dict[str, str]:
    minted = world.operator("POST", f"/v1/tenants/{tenant}/users/{user_id}/tokens", 201)
    return bearer(minted["token"])


# --- the tests ------------------------------------------------------------------------------


def test_the_role_list_is_the_spec_list() -> None:
    assert ALL_ROLES == SPEC_ROLES


def test_every_principal_is_distinct(world: World) -> None:
    """Guards the fixture: two principals sharing a token would hide a matrix cell."""
    tokens = [h.get("Authorization") for who, h in world.headers.items() if who != "anonymous"]
    assert len(tokens) == len(set(tokens))
    assert set(world.headers) == set(PRINCIPALS)


def test_every_route_has_a_row(app: Any) -> None:
    """A new endpoint must be added to the table."""
    rows = [(row.method, shape_of(row.path)) for row in ROWS]
    missing = sorted(
        f"{method} {path}"
        for method, path in served_routes(app)
        if path.startswith("/v1/") and not any(serves((method, path), row) for row in rows)
    )
    assert not missing, f"endpoints without a row in ROWS: {missing}"


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_permission_matrix(app: Any, world: World, row: Row) -> None:
    if not route_exists(app, row.method, row.path):
        pytest.skip(f"{row.method} {row.path} is not built yet")
    world.must_not_exist.clear()
    before = world.snapshot()
    wrong: list[str] = []
    permitted_calls = 0
    for who in PRINCIPALS:
        permitted = who in row.allowed
        permitted_calls += permitted
        response = send(world, row, who, permitted)
        verdict = judge(row, who, permitted, response)
        if verdict:
            wrong.append(f"{who}: {verdict} (got {response.status_code}: {response.text[:200]})")
    wrong += state_changes(row, before, world.snapshot(), permitted_calls)
    for path in world.must_not_exist:
        if world.client.get(path, headers=OPERATOR).status_code != 404:
            wrong.append(f"a refused request created {path}")
    assert not wrong, f"{row.id}:\n  " + "\n  ".join(wrong)


def send(world: World, row: Row, who: str, permitted: bool) -> Any:
    path = resolve(row.path, world, permitted)
    headers = dict(world.headers[who])
    kwargs: dict[str, Any] = {}
    if row.csv is not None:
        kwargs["content"] = row.csv.encode()
        headers["Content-Type"] = "text/csv"
    elif row.body is not None:
        kwargs["json"] = row.body(world, permitted) if callable(row.body) else row.body
    return world.client.request(row.method, path, headers=headers, **kwargs)


def judge(row: Row, who: str, permitted: bool, response: Any) -> str | None:
    """What is wrong with the answer, or None."""
    status = response.status_code
    if status >= 500:
        return "a server error"
    if who in UNAUTHENTICATED:
        if status != 401:
            return "expected 401"
        return problem_mismatch(response, "unauthenticated")
    if permitted:
        if status in (401, 403):
            return "permitted but refused"
        if row.success is not None and status != row.success:
            return f"permitted: expected {row.success}"
        return None
    if who in FOREIGN and row.foreign_refused is not None:
        return None if row.foreign_refused(response) else "another tenant's token was not refused"
    if who in FOREIGN and row.foreign_404_ok and status == 404:
        return problem_mismatch(response, "not_found")
    if status != 403:
        return "expected 403"
    return problem_mismatch(response, "insufficient_permission")


def problem_mismatch(response: Any, code: str) -> str | None:
    if not response.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return f"not {PROBLEM_JSON}"
    body = response.json()
    if body.get("code") != code:
        return f"expected code {code!r}"
    if not body.get("detail"):
        return "an empty detail"
    return None


def state_changes(
    row: Row, before: dict[str, Any], after: dict[str, Any], permitted_calls: int
) -> list[str]:
    """Parts a permitted call does not touch must be equal; touched collections may only grow,
    by one item per permitted call, and what was there stays as it was."""
    found: list[str] = []
    for part, old in before.items():
        new = after[part]
        if part not in row.touches:
            if new != old:
                found.append(f"{part} changed: {old!r} -> {new!r}")
            continue
        if part == "balance":
            lines = after["ledger"].items()
            added = sum(
                (Decimal(line["amount"]) for i, line in lines if i not in before["ledger"]),
                Decimal(0),
            )
            if Decimal(new) != Decimal(old) + added:
                found.append(f"balance {old} -> {new} does not match the new ledger lines")
            continue
        changed = [key for key, item in old.items() if new.get(key) != item]
        if changed:
            found.append(f"{part}: existing items changed or vanished: {changed}")
        grown = len([key for key in new if key not in old])
        if row.counts and grown != permitted_calls:
            found.append(f"{part}: {grown} new items, but {permitted_calls} permitted calls")
    return found
