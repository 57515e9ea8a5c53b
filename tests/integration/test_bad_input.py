"""Bad input to every endpoint that takes a body (API.md "Errors").

Each case sends one malformed request as the operator (who may do anything, so
authorization never hides a validation gap) and expects a 4xx
application/problem+json with a stable ``code`` and a non-empty ``detail`` — never
a 500 — and then reads the state back to prove nothing changed.

Cases are built from a valid body per endpoint (never sent as is) by replacing
the whole body, dropping a required field, or giving one field a bad value.
Endpoints not built yet are skipped until their route exists.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.api import OPERATOR, create_tenant, unique

PROBLEM_JSON = "application/problem+json"
VALIDATION = ("validation_error",)
GOOD_CARD = {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2034}
RATE_HEADER = (
    "service,prefix,destination,number_type,rate_per_minute,connect_fee,"
    "initial_increment_s,subsequent_increment_s,currency"
)
GOOD_RATE_ROW = "outbound,4420,United Kingdom - London,fixed,0.0190,0,60,60,USD"
# Numbers whose rate is looked up before and after a refused deck: it must not move.
LOOKUPS = ("+442079460000", "+12025550123")


@dataclass
class World:
    client: TestClient
    tenant: str
    user: str
    payment_method: str
    call: str | None
    # The state each part was last seen in: refused requests leave it as it was, so the
    # next case starts from it without reading it again.
    seen: dict[str, Any] = dataclass_field(default_factory=dict)

    def get(self, path: str) -> Any:
        response = self.client.get(path, headers=OPERATOR)
        assert response.status_code == 200, f"GET {path}: {response.text}"
        return response.json()


# --- what a bad request must leave alone -----------------------------------------------------


def _rates(w: World) -> Any:
    answers = []
    for number in LOOKUPS:
        response = w.client.get(
            "/v1/rates/lookup", params={"number": number, "currency": "USD"}, headers=OPERATOR
        )
        answers.append((response.status_code, response.json()))
    return answers


def _call(w: World) -> Any:
    return None if w.call is None else w.get(f"/v1/calls/{w.call}")


STATE: dict[str, Callable[[World], Any]] = {
    "tenant": lambda w: w.get(f"/v1/tenants/{w.tenant}"),
    "users": lambda w: w.get(f"/v1/tenants/{w.tenant}/users?limit=1000")["items"],
    "user": lambda w: w.get(f"/v1/tenants/{w.tenant}/users/{w.user}"),
    "subscriptions": lambda w: w.get(f"/v1/tenants/{w.tenant}/subscriptions")["items"],
    "payment_methods": lambda w: w.get(f"/v1/tenants/{w.tenant}/payment-methods")["items"],
    "credits": lambda w: w.get(f"/v1/tenants/{w.tenant}/credits"),
    "ledger": lambda w: w.get(f"/v1/tenants/{w.tenant}/credits/transactions?limit=1000")["items"],
    "plans": lambda w: w.get("/v1/catalog/plans"),
    "rates": _rates,
    "call": _call,
}


# --- the endpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {tenant}, {user}, {call} come from the world
    base: Callable[[World], Any]  # a valid body; cases spoil it
    watch: tuple[str, ...]  # STATE parts the endpoint could change
    # The object a wrongly accepted body would have created: it must not exist.
    created: Callable[[World, Any], str | None] = lambda w, body: None
    body_optional: bool = False  # an empty or null body is valid (not a bad case)


def _key(body: Any, name: str) -> str | None:
    value = body.get(name) if isinstance(body, dict) else None
    usable = isinstance(value, str) and value.isprintable() and value and "/" not in value
    return value if usable else None


def _tenant_body(w: World) -> dict[str, Any]:
    return {
        "id": unique("bad-input"),
        "name": "Bad Input",
        "country": "US",
        "billing_country": "US",
        "agreement": "direct",
        "currency": "USD",
        "timezone": "America/New_York",
    }


def _user_body(w: World) -> dict[str, Any]:
    return {
        "upn": f"{unique('new')}@bad.example",
        "display_name": "New User",
        "usage_location": "US",
        "kind": "person",
        "email": "new@bad.example",
        "phone_number": "+12025550188",
        "roles": ["billing_admin"],
        "licenses": ["communications_credits"],
    }


def _call_body(w: World) -> dict[str, Any]:
    return {
        "call_id": unique("bad-call"),
        "tenant_id": w.tenant,
        "call_type": "user_out",
        "user_id": w.user,
        "from": "+12025550123",
        "to": "+12025550199",
        # Live calls start now (a start more than a day old is refused), and a
        # record is at most 400 days old: an hour ago suits both.
        "started_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
    }


def _cdr_body(w: World) -> dict[str, Any]:
    return {"records": [{**_call_body(w), "duration_seconds": 60}]}


def _created_tenant(w: World, body: Any) -> str | None:
    tenant_id = _key(body, "id")
    return None if tenant_id is None else f"/v1/tenants/{tenant_id}"


def _created_user(w: World, body: Any) -> str | None:
    upn = _key(body, "upn")
    return None if upn is None else f"/v1/tenants/{w.tenant}/users/{upn}"


def _created_call(w: World, body: Any) -> str | None:
    call_id = _key(body, "call_id")
    return None if call_id is None else f"/v1/calls/{call_id}"


TENANT = "/v1/tenants/{tenant}"
ENDPOINTS: dict[str, Endpoint] = {
    "create tenant": Endpoint("POST", "/v1/tenants", _tenant_body, (), created=_created_tenant),
    "patch tenant": Endpoint("PATCH", TENANT, lambda w: {"name": "Renamed"}, ("tenant",)),
    "add seats": Endpoint(
        "POST",
        f"{TENANT}/subscriptions",
        lambda w: {"sku": "calling_plan_international", "quantity": 5},
        ("subscriptions",),
    ),
    "create user": Endpoint(
        "POST", f"{TENANT}/users", _user_body, ("users", "subscriptions"), created=_created_user
    ),
    "patch user": Endpoint(
        "PATCH",
        f"{TENANT}/users/{{user}}",
        lambda w: {"display_name": "Renamed"},
        ("user", "subscriptions"),
    ),
    "charging token": Endpoint(
        "POST", "/v1/charging-tokens", lambda w: {"tenant_id": w.tenant}, (), body_optional=True
    ),
    "rates": Endpoint("PUT", "/v1/catalog/rates", lambda w: None, ("rates",)),
    "plans": Endpoint("PUT", "/v1/catalog/plans", lambda w: w.get("/v1/catalog/plans"), ("plans",)),
    "payment method": Endpoint(
        "POST", f"{TENANT}/payment-methods", lambda w: dict(GOOD_CARD), ("payment_methods",)
    ),
    "purchase": Endpoint(
        "POST",
        f"{TENANT}/credits/purchases",
        lambda w: {"amount": "60.00", "payment_method_id": w.payment_method},
        ("credits", "ledger"),
    ),
    "auto-recharge": Endpoint(
        "PUT",
        f"{TENANT}/credits/auto-recharge",
        lambda w: {
            "enabled": False,
            "threshold": "70.00",
            "amount": "120.00",
            "payment_method_id": w.payment_method,
        },
        ("credits",),
    ),
    "adjustment": Endpoint(
        "POST",
        f"{TENANT}/credits/adjustments",
        lambda w: {"amount": "5.00", "reason": "goodwill"},
        ("credits", "ledger"),
    ),
    "start call": Endpoint(
        "POST", "/v1/calls", _call_body, ("credits", "ledger"), created=_created_call
    ),
    "update call": Endpoint(
        "POST", "/v1/calls/{call}/update", lambda w: {"used_seconds": 30}, ("call", "credits")
    ),
    "end call": Endpoint(
        "POST",
        "/v1/calls/{call}/end",
        lambda w: {"duration_seconds": 30},
        ("call", "credits", "ledger"),
    ),
    "cdrs": Endpoint("POST", "/v1/cdrs", _cdr_body, ("credits", "ledger")),
}


# --- the cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A body sent as bytes, not built from the valid one."""

    content: bytes
    content_type: str = "application/json"


Make = Callable[[Any], Any] | Raw


@dataclass(frozen=True)
class Case:
    endpoint: str
    label: str
    make: Make
    codes: tuple[str, ...] = VALIDATION

    @property
    def id(self) -> str:
        return f"{self.endpoint}: {self.label}"


def shapes(endpoint: str, *, has_required: bool = True) -> list[Case]:
    """Bodies that are not a JSON object at all, or not JSON."""
    cases = [
        Case(endpoint, "malformed JSON", Raw(b'{"name": ')),
        Case(endpoint, "not UTF-8", Raw(b'{"name": "\xff\xfe"}')),
        Case(endpoint, "deeply nested", Raw(b"[" * 20_000 + b"]" * 20_000)),
        Case(endpoint, "array of the body", lambda base: [base]),
        Case(endpoint, "string", lambda base: "body"),
    ]
    if not ENDPOINTS[endpoint].body_optional:
        cases += [
            Case(endpoint, "null", lambda base: None),
            Case(endpoint, "empty body", Raw(b"")),
        ]
    if has_required:
        cases.append(Case(endpoint, "empty object", lambda base: {}))
    return cases


def missing(endpoint: str, *names: str) -> list[Case]:
    return [
        Case(endpoint, f"{name} missing", lambda base, n=name: _without(base, n)) for name in names
    ]


def _without(base: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k != name}


def field(
    endpoint: str, name: str, values: list[tuple[str, Any]], codes: tuple[str, ...] = VALIDATION
) -> list[Case]:
    """The valid body with ``name`` set to each bad value in turn."""
    return [
        Case(endpoint, f"{name} {label}", lambda base, v=value: {**base, name: v}, codes)
        for label, value in values
    ]


STRING_TYPES = [("null", None), ("int", 5), ("list", ["x"])]
INT_TYPES = [("null", None), ("string", "5"), ("float", 5.5), ("bool", True)]
BOOL_TYPES = [("null", None), ("string", "true"), ("int", 1)]
COUNTRY = [*STRING_TYPES, ("UK", "UK"), ("lower case", "us"), ("alpha-3", "USA")]
# Money on the wire: a JSON string holding a plain decimal (API.md, SPEC §2).
MONEY = [
    ("float", 12.5),
    ("int", 60),
    ("exponent", "1e3"),
    ("too many fraction digits", "60.001"),
    ("empty", ""),
    ("leading space", " 60.00"),
    ("plus sign", "+60.00"),
    ("thousands separator", "1,000.00"),
    ("NaN", "NaN"),
    ("Infinity", "Infinity"),
    ("letters", "sixty"),
    ("Arabic-Indic digits", "\u0666\u0660"),
    ("leading zeros", "060.00"),
    ("13 integer digits", "1000000000000"),
    ("over-long", "1" * 40),
]
# The same, shorter, for the second and later money fields of the API.
SOME_MONEY = [
    ("float", 12.5),
    ("int", 60),
    ("exponent", "1e3"),
    ("too many fraction digits", "60.001"),
    ("letters", "sixty"),
]
NEGATIVE_MONEY = [("negative", "-60.00"), ("negative zero", "-0.00")]
OVER_LONG_ID = ("over-long", "x" * 65)
LONG_UPN = "u" * 300 + "@x.example"
WEEK = 7 * 24 * 3600
PM_NOT_FOUND = ("payment_method_not_found", "not_found")
BELOW_MINIMUM = ("amount_below_minimum",)


def _enabled_without(name: str) -> Callable[[Any], Any]:
    return lambda base: {**_without(base, name), "enabled": True}


def _plans_with(bad_plan: dict[str, Any] | None = None, **conference: Any) -> Callable[[Any], Any]:
    def make(base: dict[str, Any]) -> dict[str, Any]:
        doc = copy.deepcopy(base)
        if bad_plan is not None:
            good = {
                "sku": "calling_plan_domestic",
                "country": "ZW",
                "domestic_minutes": 100,
                "international_minutes": 0,
            }
            doc["plans"].append({**good, **bad_plan})
        doc["conference_dialout"].update(conference)
        return doc

    return make


def _rate_deck(*lines: str) -> Raw:
    return Raw(("\n".join(lines) + "\n").encode(), "text/csv")


def _rate_row(**changes: str) -> str:
    columns = RATE_HEADER.split(",")
    values = dict(zip(columns, GOOD_RATE_ROW.split(","), strict=True))
    values.update(changes)
    return ",".join(values[c] for c in columns)


RATES_BAD = ("invalid_rate_deck", "validation_error")
CASES: list[Case] = [
    # POST /v1/tenants
    *shapes("create tenant"),
    *missing("create tenant", "name", "country", "billing_country", "agreement", "currency"),
    *field("create tenant", "id", [("int", 5), ("empty", ""), ("space", "a b"), OVER_LONG_ID]),
    *field("create tenant", "name", [*STRING_TYPES, ("empty", ""), ("over-long", "n" * 201)]),
    *field("create tenant", "country", COUNTRY),
    *field("create tenant", "billing_country", [("int", 5), ("UK", "UK")]),
    *field(
        "create tenant", "agreement", [("int", 5), ("unknown", "bogus"), ("upper case", "DIRECT")]
    ),
    *field(
        "create tenant",
        "currency",
        [*STRING_TYPES, ("lower case", "usd"), ("unknown", "ZZZ"), ("a metal", "XAU")],
    ),
    *field(
        "create tenant",
        "timezone",
        [("int", 5), ("unknown", "Mars/Olympus"), ("over-long", "A/" + "b" * 70)],
    ),
    # PATCH /v1/tenants/{id}
    *shapes("patch tenant", has_required=False),
    *field("patch tenant", "name", [*STRING_TYPES, ("empty", ""), ("over-long", "n" * 201)]),
    *field("patch tenant", "country", [("null", None), ("int", 5), ("UK", "UK")]),
    *field("patch tenant", "billing_country", [("null", None), ("alpha-3", "USA")]),
    *field("patch tenant", "agreement", [("null", None), ("int", 5), ("unknown", "bogus")]),
    *field("patch tenant", "timezone", [("null", None), ("unknown", "Nowhere/Town")]),
    *field("patch tenant", "purchase_override", BOOL_TYPES),
    # POST .../subscriptions
    *shapes("add seats"),
    *missing("add seats", "sku", "quantity"),
    *field("add seats", "sku", [*STRING_TYPES, ("unknown", "bogus"), ("upper case", "AUDIO")]),
    *field(
        "add seats",
        "quantity",
        [*INT_TYPES, ("zero", 0), ("negative", -1), ("too many", 1_000_001), ("huge", 10**30)],
    ),
    # POST .../users
    *shapes("create user"),
    *missing("create user", "upn", "display_name", "usage_location"),
    *field("create user", "upn", [*STRING_TYPES, ("no at sign", "x"), ("over-long", LONG_UPN)]),
    *field("create user", "display_name", [*STRING_TYPES, ("empty", ""), ("over-long", "d" * 257)]),
    *field("create user", "usage_location", COUNTRY),
    *field("create user", "kind", [("int", 5), ("unknown", "robot")]),
    *field("create user", "email", [("int", 5), ("not an address", "x"), ("over-long", LONG_UPN)]),
    *field(
        "create user",
        "phone_number",
        [
            ("int", 12025550188),
            ("spaces", "+1 202 555 0188"),
            ("no plus", "12025550188"),
            ("unassigned country code", "+99912345"),
        ],
    ),
    *field(
        "create user",
        "roles",
        [
            ("a string", "global_admin"),
            ("unknown role", ["emperor"]),
            ("int entry", [5]),
            ("too many", ["global_admin"] * 33),
        ],
    ),
    *field("create user", "licenses", [("a string", "communications_credits"), ("unknown", ["x"])]),
    # PATCH .../users/{id}
    *shapes("patch user", has_required=False),
    *field("patch user", "upn", [*STRING_TYPES, ("no at sign", "x"), ("over-long", LONG_UPN)]),
    *field("patch user", "display_name", [("null", None), ("int", 5), ("over-long", "d" * 257)]),
    *field("patch user", "usage_location", [("null", None), ("UK", "UK")]),
    *field("patch user", "kind", [("null", None), ("unknown", "robot")]),
    *field("patch user", "email", [("int", 5), ("not an address", "x")]),
    *field("patch user", "phone_number", [("int", 12025550188), ("spaces", "+1 202 555 0188")]),
    *field("patch user", "roles", [("null", None), ("a string", "x"), ("unknown", ["emperor"])]),
    *field("patch user", "licenses", [("null", None), ("a string", "x"), ("unknown", ["x"])]),
    # POST /v1/charging-tokens
    *shapes("charging token", has_required=False),
    *field("charging token", "tenant_id", [("int", 5), ("space", "a b"), OVER_LONG_ID]),
    *field("charging token", "tenant_id", [("unknown", "no-such-tenant")], codes=("not_found",)),
    # PUT /v1/catalog/plans
    *shapes("plans"),
    *missing("plans", "plans", "conference_dialout"),
    *field("plans", "plans", [("null", None), ("a string", "x")]),
    *field("plans", "conference_dialout", [("null", None), ("a list", [])]),
    Case("plans", "plan with unknown SKU", _plans_with({"sku": "bogus"})),
    Case("plans", "plan of a SKU without minutes", _plans_with({"sku": "audio_conferencing"})),
    Case("plans", "plan with country UK", _plans_with({"country": "UK"})),
    Case("plans", "plan with negative minutes", _plans_with({"domestic_minutes": -1})),
    Case("plans", "plan with minutes as a string", _plans_with({"domestic_minutes": "100"})),
    Case("plans", "plan with fractional minutes", _plans_with({"international_minutes": 1.5})),
    Case("plans", "plan with boolean minutes", _plans_with({"domestic_minutes": True})),
    Case("plans", "plan with a null country", _plans_with({"country": None})),
    Case("plans", "plan that is not an object", lambda b: {**b, "plans": [*b["plans"], "x"]}),
    Case("plans", "negative conference minutes", _plans_with(minutes_per_license=-1)),
    Case("plans", "conference minutes as a string", _plans_with(minutes_per_license="60")),
    Case("plans", "included zone with UK", _plans_with(included_zone=["US", "UK"])),
    Case("plans", "included zone as a string", _plans_with(included_zone="US")),
    # PUT /v1/catalog/rates (CSV): the whole upload is refused, the deck in force stays
    Case("rates", "empty deck", _rate_deck(""), RATES_BAD),
    Case("rates", "no header", _rate_deck(GOOD_RATE_ROW), RATES_BAD),
    Case("rates", "wrong header", _rate_deck("a,b,c", GOOD_RATE_ROW), RATES_BAD),
    Case(
        "rates", "not UTF-8", Raw(RATE_HEADER.encode() + b"\n\xff\xfe,1\n", "text/csv"), RATES_BAD
    ),
    *[
        Case("rates", f"row with {label}", _rate_deck(RATE_HEADER, GOOD_RATE_ROW, row), RATES_BAD)
        for label, row in [
            ("an exponent rate", _rate_row(rate_per_minute="1e3")),
            ("a text rate", _rate_row(rate_per_minute="cheap")),
            ("a negative rate", _rate_row(rate_per_minute="-0.01")),
            ("7 fraction digits", _rate_row(rate_per_minute="0.0000001")),
            ("an exponent fee", _rate_row(connect_fee="1E-2")),
            ("an unknown service", _rate_row(service="inbound")),
            ("an unknown currency", _rate_row(currency="ZZZ")),
            ("a zero increment", _rate_row(initial_increment_s="0")),
            ("a text increment", _rate_row(subsequent_increment_s="sixty")),
            # A leading '+' is allowed (decisions.md): "+4420" is 4420 again.
            ("a duplicate prefix written with a plus", _rate_row(prefix="+4420")),
            ("a prefix with two plus signs", _rate_row(prefix="++4420")),
            ("a plus inside a prefix", _rate_row(prefix="44+20")),
            ("a prefix with a leading zero", _rate_row(prefix="0044")),
            ("a plus prefix with a leading zero", _rate_row(prefix="+044")),
            ("a text prefix", _rate_row(prefix="uk")),
            ("too few columns", "outbound,4420,London"),
            ("too many columns", GOOD_RATE_ROW + ",extra"),
        ]
    ],
    # POST .../payment-methods
    *shapes("payment method"),
    *missing("payment method", "card_number", "exp_month", "exp_year"),
    *field(
        "payment method",
        "card_number",
        [("null", None), ("int", 4242424242424242), ("too short", "4242"), ("over-long", "4" * 33)],
    ),
    *field(
        "payment method",
        "card_number",
        [("failing the Luhn check", "4242424242424241"), ("letters", "abcdabcdabcdabcd")],
        codes=("invalid_card", "validation_error"),
    ),
    *field("payment method", "exp_month", [*INT_TYPES, ("zero", 0), ("thirteen", 13)]),
    *field("payment method", "exp_year", [*INT_TYPES, ("three digits", 999), ("negative", -2030)]),
    *field("payment method", "exp_year", [("past", 2001)], codes=("expired_card",)),
    # POST .../credits/purchases
    *shapes("purchase"),
    *missing("purchase", "amount", "payment_method_id"),
    *field("purchase", "amount", [("null", None), *MONEY, *NEGATIVE_MONEY]),
    *field(
        "purchase", "amount", [("zero", "0")], codes=("validation_error", "amount_below_minimum")
    ),
    *field("purchase", "amount", [("below the minimum", "10.00")], codes=("amount_below_minimum",)),
    *field(
        "purchase",
        "amount",
        [("above the maximum", "999999999999.99")],
        codes=("validation_error", "amount_above_maximum"),
    ),
    *field("purchase", "payment_method_id", [*STRING_TYPES, ("empty", ""), OVER_LONG_ID]),
    *field("purchase", "payment_method_id", [("unknown", "pm_nope")], codes=PM_NOT_FOUND),
    # PUT .../credits/auto-recharge
    *shapes("auto-recharge"),
    *missing("auto-recharge", "enabled"),
    *field("auto-recharge", "enabled", BOOL_TYPES),
    *field("auto-recharge", "threshold", [*SOME_MONEY, *NEGATIVE_MONEY]),
    *field("auto-recharge", "amount", [*SOME_MONEY, *NEGATIVE_MONEY]),
    *field("auto-recharge", "amount", [("below the minimum", "10.00")], codes=BELOW_MINIMUM),
    *field("auto-recharge", "payment_method_id", [("int", 5), ("empty", ""), OVER_LONG_ID]),
    *field("auto-recharge", "payment_method_id", [("unknown", "pm_nope")], codes=PM_NOT_FOUND),
    Case("auto-recharge", "enabled without a threshold", _enabled_without("threshold")),
    Case("auto-recharge", "enabled without a card", _enabled_without("payment_method_id")),
    # POST .../credits/adjustments (a signed amount: negative is allowed here)
    *shapes("adjustment"),
    *missing("adjustment", "amount", "reason"),
    *field("adjustment", "amount", [("null", None), ("zero", "0.00"), *SOME_MONEY]),
    *field("adjustment", "reason", [*STRING_TYPES, ("blank", "   "), ("over-long", "r" * 501)]),
    # POST /v1/calls
    *shapes("start call"),
    *missing("start call", "call_id", "tenant_id", "call_type", "to"),
    *field("start call", "call_id", [("int", 5), ("empty", ""), ("over-long", "c" * 129)]),
    *field("start call", "tenant_id", [("null", None), ("int", 5), OVER_LONG_ID]),
    *field("start call", "call_type", [("int", 5), ("unknown", "sideways"), ("upper", "USER_OUT")]),
    *field("start call", "user_id", [("int", 5), ("list", ["u"])]),
    *field("start call", "from", [("int", 12025550123), ("over-long", "+1" + "2" * 40)]),
    *field("start call", "to", [("null", None), ("int", 5), ("over-long", "+1" + "2" * 40)]),
    *field(
        "start call",
        "started_at",
        [("int", 1700000000), ("words", "yesterday"), ("no offset", "2024-01-15T10:00:00")],
    ),
    # POST /v1/calls/{id}/update and /end
    *shapes("update call"),
    *field(
        "update call", "used_seconds", [*INT_TYPES, ("negative", -1), ("over a week", WEEK + 1)]
    ),
    *shapes("end call"),
    *field(
        "end call", "duration_seconds", [*INT_TYPES, ("negative", -1), ("over a week", WEEK + 1)]
    ),
    # POST /v1/cdrs (bad records are rejected one by one; a bad batch is refused whole)
    *shapes("cdrs"),
    *field("cdrs", "records", [("null", None), ("a string", "x"), ("too many", [{}] * 10_001)]),
]


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(app: Any) -> Iterator[World]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield build_world(client)


def build_world(client: TestClient) -> World:
    def call(method: str, path: str, expect: int, body: Any = None) -> Any:
        response = client.request(method, path, json=body, headers=OPERATOR)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        return response.json()

    tenant = create_tenant(client, name="Bad Input")["id"]
    base = f"/v1/tenants/{tenant}"
    call("POST", f"{base}/subscriptions", 201, {"sku": "calling_plan_domestic", "quantity": 10})
    user = call(
        "POST",
        f"{base}/users",
        201,
        {
            "upn": "victim@bad.example",
            "display_name": "Victim",
            "usage_location": "US",
            "roles": ["billing_admin"],
            "licenses": ["calling_plan_domestic", "communications_credits"],
        },
    )["id"]
    payment_method = call("POST", f"{base}/payment-methods", 201, GOOD_CARD)["id"]
    call("POST", f"{base}/credits/adjustments", 201, {"amount": "100.00", "reason": "float"})
    call(
        "PUT",
        f"{base}/credits/auto-recharge",
        200,
        {
            "enabled": False,
            "threshold": "50.00",
            "amount": "80.00",
            "payment_method_id": payment_method,
        },
    )
    world = World(client, tenant, user, payment_method, call=None)
    started = client.post("/v1/calls", json=_call_body(world), headers=OPERATOR)
    # Without a call the update and end cases would have nothing to spoil.
    assert started.status_code == 201, started.text
    world.call = started.json()["call_id"]
    return world


def route_exists(app: Any, method: str, path: str) -> bool:
    def shape(p: str) -> str:
        return "/".join("{}" if part.startswith("{") else part for part in p.split("/"))

    return any(
        shape(p) == shape(path) and method.lower() in operations
        for p, operations in app.openapi()["paths"].items()
    )


# --- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_and_changes_nothing(app: Any, world: World, case: Case) -> None:
    endpoint = ENDPOINTS[case.endpoint]
    if not route_exists(app, endpoint.method, endpoint.path):
        pytest.skip(f"{endpoint.method} {endpoint.path} is not built yet")
    path = endpoint.path.format(tenant=world.tenant, user=world.user, call=world.call)
    before = {part: world.seen.get(part) or STATE[part](world) for part in endpoint.watch}

    kwargs: dict[str, Any]
    if isinstance(case.make, Raw):
        kwargs = {"content": case.make.content, "headers": {"Content-Type": case.make.content_type}}
        body = None
    else:
        body = case.make(endpoint.base(world))
        kwargs = {"json": body}
    kwargs["headers"] = {**OPERATOR, **kwargs.get("headers", {})}
    response = world.client.request(endpoint.method, path, **kwargs)

    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    problem = response.json()
    assert problem.get("code") in case.codes, problem
    assert isinstance(problem.get("detail"), str) and problem["detail"].strip(), problem
    assert problem.get("status") == response.status_code, problem

    after = {part: STATE[part](world) for part in endpoint.watch}
    world.seen.update(after)
    assert after == before, "a refused request changed state"
    created = endpoint.created(world, body)
    if created is not None:
        assert world.client.get(created, headers=OPERATOR).status_code == 404, created
