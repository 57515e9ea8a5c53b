"""The served /openapi.json describes the API of API.md, health endpoints
included: every operation, its success body with the fields the contract
names, problem+json errors, the bearer scheme and the Idempotency-Key header.
And it is true: real answers of every operation are checked against the
schemas it publishes, members it does not name included."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from commcredits.services.clock import now
from tests.support.api import OPERATOR, bearer, create_tenant, unique
from tests.support.charging import (
    CARD_EXPIRY_YEAR,
    CARD_OK,
    US_NUMBER,
    call_body,
    ensure_plans,
    load_deck,
    make_tenant,
    make_user,
    new_call_id,
)

PROBLEM_JSON = "application/problem+json"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CARD_FAILS_AT_CHARGE = "4000000000000069"  # stored fine; charging it fails expired_card
T = "/v1/tenants/{tenant_id}"

# Every operation of API.md: (method, path, success status, members its body must
# describe). "a.b" is a member of the object a; "items[].x" a member of each item.
USER_FIELDS = ["id", "upn", "display_name", "usage_location", "kind", "email"]
USER_FIELDS += ["phone_number", "roles", "licenses"]
TENANT_FIELDS = ["id", "name", "country", "billing_country", "agreement", "currency"]
TENANT_FIELDS += ["timezone", "purchase_override"]
PLANS_FIELDS = ["plans", "conference_dialout", "plans[].sku", "plans[].country"]
PLANS_FIELDS += ["plans[].domestic_minutes", "plans[].international_minutes"]
PLANS_FIELDS += ["conference_dialout.minutes_per_license", "conference_dialout.included_zone"]
LEDGER_FIELDS = ["id", "at", "kind", "amount", "balance_after", "reference"]
USAGE_COLUMNS = (
    "id, callId, userId, userPrincipalName, userDisplayName, startDateTime, endDateTime, "
    "duration, charge, currency, callType, calleeNumber, callerNumber, destinationContext, "
    "destinationName, conferenceId, licenseCapability, usageCountryCode, "
    "otherPartyCountryCode, funding, pooledSeconds, chargedSeconds"
).split(", ")

CONTRACT: list[tuple[str, str, int, list[str]]] = [
    ("post", "/v1/tenants", 201, TENANT_FIELDS),
    ("get", T, 200, TENANT_FIELDS),
    ("patch", T, 200, TENANT_FIELDS),
    ("post", T + "/subscriptions", 201, ["sku", "quantity", "assigned", "available"]),
    ("get", T + "/subscriptions", 200, ["items", "next_cursor", "items[].assigned"]),
    ("post", T + "/users", 201, USER_FIELDS),
    ("get", T + "/users", 200, ["items", "next_cursor", *[f"items[].{f}" for f in USER_FIELDS]]),
    ("get", T + "/users/{user_id}", 200, USER_FIELDS),
    ("patch", T + "/users/{user_id}", 200, USER_FIELDS),
    ("delete", T + "/users/{user_id}", 204, []),
    ("put", T + "/users/{user_id}/licenses/{sku}", 200, ["id", "licenses"]),
    ("delete", T + "/users/{user_id}/licenses/{sku}", 200, ["id", "licenses"]),
    ("post", T + "/users/{user_id}/tokens", 201, ["token"]),
    ("post", "/v1/charging-tokens", 201, ["token"]),
    ("put", "/v1/catalog/rates", 200, ["loaded"]),
    ("get", "/v1/rates/lookup", 200, ["prefix", "destination", "rate_per_minute", "currency"]),
    ("put", "/v1/catalog/plans", 200, PLANS_FIELDS),
    ("get", "/v1/catalog/plans", 200, PLANS_FIELDS),
    (
        "get",
        T + "/pools",
        200,
        ["items"]
        + [
            f"items[].{f}"
            for f in ["pool", "country", "month", "size_seconds", "used_seconds"]
            + ["remaining_seconds"]
        ],
    ),
    (
        "post",
        T + "/payment-methods",
        201,
        ["id", "brand", "last4", "exp_month", "exp_year"],
    ),
    ("get", T + "/payment-methods", 200, ["items", "next_cursor", "items[].last4"]),
    ("delete", T + "/payment-methods/{method_id}", 204, []),
    (
        "get",
        T + "/credits",
        200,
        ["currency", "balance", "reserved", "available", "status", "eligibility"]
        + ["auto_recharge", "eligibility.can_purchase", "eligibility.reason"]
        + [f"auto_recharge.{f}" for f in ["enabled", "threshold", "amount", "payment_method_id"]],
    ),
    (
        "post",
        T + "/credits/purchases",
        201,
        ["id", "amount", "currency", "status", "failure_code", "balance"],
    ),
    (
        "put",
        T + "/credits/auto-recharge",
        200,
        ["enabled", "threshold", "amount", "payment_method_id"],
    ),
    (
        "get",
        T + "/credits/transactions",
        200,
        ["items", "next_cursor", *[f"items[].{f}" for f in LEDGER_FIELDS]],
    ),
    ("post", T + "/credits/adjustments", 201, LEDGER_FIELDS),
    (
        "post",
        "/v1/calls",
        201,
        ["call_id", "decision", "reason", "funding", "max_duration_seconds"]
        + ["granted_seconds", "rate"]
        + [f"rate.{f}" for f in ["per_minute", "connect_fee", "currency", "destination"]],
    ),
    (
        "post",
        "/v1/calls/{call_id}/update",
        200,
        ["granted_seconds", "max_duration_seconds", "decision"],
    ),
    (
        "post",
        "/v1/calls/{call_id}/end",
        200,
        ["call_id", "charge", "currency", "funding", "pool_seconds", "charged_seconds"]
        + ["balance"],
    ),
    (
        "post",
        "/v1/cdrs",
        200,
        ["results"] + [f"results[].{f}" for f in ["call_id", "status", "charge", "error"]],
    ),
    (
        "get",
        T + "/reports/pstn-usage",
        200,
        ["items", "next_cursor", *[f"items[].{f}" for f in USAGE_COLUMNS]],
    ),
    (
        "get",
        T + "/reports/pstn-usage/summary",
        200,
        ["items"] + [f"items[].{f}" for f in ["key", "calls", "seconds", "charge", "currency"]],
    ),
    (
        "get",
        T + "/credits/recommendation",
        200,
        ["one_time_amount", "auto_recharge_threshold", "auto_recharge_amount", "currency"]
        + ["basis", "note"]
        + [f"basis.{f}" for f in ["days", "total_charge", "average_daily", "peak_daily"]],
    ),
    (
        "get",
        T + "/notifications",
        200,
        ["items"]
        + [f"items[].{f}" for f in ["id", "event", "recipients", "status", "created_at"]]
        + ["items[].sent_at"],
    ),
    ("get", "/healthz", 200, ["status"]),
    ("get", "/readyz", 200, ["status"]),
    ("get", "/metrics", 200, []),
    ("get", "/openapi.json", 200, []),
]
IDEMPOTENT_POSTS = [
    "/v1/calls",
    "/v1/calls/{call_id}/end",
    T + "/credits/purchases",
    "/v1/cdrs",
    "/v1/tenants",
    T + "/subscriptions",
    T + "/users",
    T + "/payment-methods",
    T + "/credits/adjustments",
    "/v1/calls/{call_id}/update",
]
PROBLEM_STATUSES = ["400", "401", "403", "404", "413", "422"]
UNAUTHENTICATED_PATHS = ["/healthz", "/readyz", "/metrics", "/openapi.json"]


@pytest.fixture()
def document(client: Any) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return dict(response.json())


# --- reading the document --------------------------------------------------------------------


def resolve(document: dict[str, Any], node: Any) -> Any:
    """Follow a local $ref (one hop at a time, until none is left)."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"not a local reference: {ref}"
        node = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
            node = node[part]
    return node


def all_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in all_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in all_refs(value)]
    return []


def success_schema(document: dict[str, Any], method: str, path: str, status: int) -> Any:
    response = document["paths"][path][method]["responses"][str(status)]
    return resolve(document, response["content"]["application/json"]["schema"])


def member_schema(document: dict[str, Any], schema: Any, dotted: str) -> Any:
    """The schema of ``dotted`` in an object schema ("a.b", "items[].x")."""
    for part in dotted.split("."):
        schema = non_null(document, schema)
        if part.endswith("[]"):
            schema = non_null(document, schema["properties"][part[:-2]])
            assert schema.get("type") == "array", dotted
            schema = schema["items"]
        else:
            assert part in schema.get("properties", {}), f"{dotted}: no member {part}"
            schema = schema["properties"][part]
    return schema


def non_null(document: dict[str, Any], schema: Any) -> Any:
    """The schema of a value that may be null, without the null."""
    schema = resolve(document, schema)
    options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
    return resolve(document, options[0]) if len(options) == 1 else schema


# --- the document's shape ----------------------------------------------------------------------


def test_it_is_openapi_3_and_every_reference_resolves(document: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.\d+\.\d+", document["openapi"])
    assert document["info"]["title"] and document["info"]["version"]
    refs = all_refs(document)
    assert refs, "a document without one $ref describes no body"
    for ref in refs:
        resolve(document, {"$ref": ref})
    operation_ids = [
        operation["operationId"]
        for operations in document["paths"].values()
        for operation in operations.values()
    ]
    assert len(operation_ids) == len(set(operation_ids))


@pytest.mark.parametrize(
    "method, path, status, fields", CONTRACT, ids=[f"{m} {p}" for m, p, _, _ in CONTRACT]
)
def test_every_contract_operation_is_described(
    document: dict[str, Any], method: str, path: str, status: int, fields: list[str]
) -> None:
    assert path in document["paths"], path
    assert method in document["paths"][path], f"{method.upper()} {path}"
    responses = document["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path}: no {status} response"
    if not fields:
        return
    schema = success_schema(document, method, path, status)
    assert schema.get("properties"), f"{method.upper()} {path}: an empty success schema"
    for dotted in fields:
        member_schema(document, schema, dotted)


def test_every_json_success_body_has_a_schema(document: dict[str, Any]) -> None:
    empty = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                json_body = response.get("content", {}).get("application/json")
                if status.startswith("2") and json_body is not None:
                    schema = resolve(document, json_body["schema"])
                    if not schema.get("properties") and path != "/openapi.json":
                        empty.append(f"{method.upper()} {path} {status}")
    assert not empty, empty


def test_money_members_are_strings(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for model, member in [
        ("Credits", "balance"),
        ("Credits", "available"),
        ("CallEnded", "charge"),
        ("LedgerLine", "amount"),
        ("CallRate", "per_minute"),
        ("Recommendation", "one_time_amount"),
    ]:
        assert schemas[model]["properties"][member]["type"] == "string", (model, member)


def test_errors_are_problems(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in str(document)
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])
    assert problem.get("additionalProperties") is True  # reason, errors, purchase_id, ...
    for member in ("reason", "errors", "purchase_id"):
        assert member in problem["properties"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status, response in responses.items():
                if status.startswith(("4", "5")) or status == "default":
                    if path == "/readyz":
                        continue
                    assert set(response["content"]) == {PROBLEM_JSON}, (path, method, status)
                    schema = response["content"][PROBLEM_JSON]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}
            if path.startswith("/v1/"):
                wanted = PROBLEM_STATUSES + ([] if method == "get" else ["409"])
                missing = [s for s in wanted if s not in responses]
                assert not missing, f"{method.upper()} {path} lacks {missing}"


def test_every_v1_operation_needs_the_bearer_token(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert len(schemes) == 1
    ((name, scheme),) = schemes.items()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert "security" not in document  # no global default: health needs no token
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1/"):
                assert operation.get("security") == [{name: []}], (method, path)
            else:
                assert not operation.get("security"), (method, path)
    for path in UNAUTHENTICATED_PATHS:
        assert "get" in document["paths"][path]


@pytest.mark.parametrize("path", IDEMPOTENT_POSTS)
def test_idempotency_key_is_documented(document: dict[str, Any], path: str) -> None:
    parameters = document["paths"][path]["post"].get("parameters", [])
    (key,) = [p for p in parameters if p["name"] == "Idempotency-Key"]
    assert key["in"] == "header" and key["required"] is False
    assert key["schema"] == {"type": "string", "minLength": 1, "maxLength": 255}


def test_idempotency_key_only_where_it_is_honoured(document: dict[str, Any]) -> None:
    documented = {
        path
        for path, operations in document["paths"].items()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "Idempotency-Key"
    }
    assert documented == set(IDEMPOTENT_POSTS)


def test_usage_report_offers_json_csv_and_xlsx(document: dict[str, Any]) -> None:
    content = document["paths"][T + "/reports/pstn-usage"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/csv", XLSX}
    assert content[XLSX]["schema"]["format"] == "binary"
    formats = [
        p
        for p in document["paths"][T + "/reports/pstn-usage"]["get"]["parameters"]
        if p["name"] == "format"
    ]
    assert resolve(document, formats[0]["schema"])["enum"] == ["json", "csv", "xlsx"]


# --- the document is true ----------------------------------------------------------------------

PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def violations(document: dict[str, Any], schema: Any, value: Any, where: str) -> list[str]:
    """How ``value`` breaks ``schema`` (the subset of JSON Schema the document
    uses), and every object member the schema does not name."""
    schema = resolve(document, schema)
    if "anyOf" in schema:
        tries = [violations(document, option, value, where) for option in schema["anyOf"]]
        if any(not found for found in tries):
            return []
        return [f"{where}: {value!r} matches no option ({'; '.join(sum(tries, []))})"]
    kind = schema.get("type")
    if kind is not None:
        expected = PYTHON_TYPES[kind]
        if not isinstance(value, expected) or (kind in ("integer", "number") and value is True):
            return [f"{where}: {value!r} is not {kind}"]
        if kind != "boolean" and isinstance(value, bool):
            return [f"{where}: {value!r} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in {schema['enum']}"]
    if "const" in schema and value != schema["const"]:
        return [f"{where}: {value!r} is not {schema['const']!r}"]
    found: list[str] = []
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if schema.get("format") == "date-time":
            if not value.endswith("Z"):
                found.append(f"{where}: {value!r} is not an RFC 3339 time in UTC (...Z)")
            datetime.fromisoformat(value)
        if schema.get("format") == "date":
            date.fromisoformat(value)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"{where}: required member {name} is missing")
        for name, member in value.items():
            if name in properties:
                found += violations(document, properties[name], member, f"{where}.{name}")
            elif properties:
                found.append(f"{where}: member {name} is not in the document")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += violations(document, schema["items"], item, f"{where}[{index}]")
    return found


class Checker:
    """Sends requests and holds each answer to the document's schema for it."""

    def __init__(self, client: Any, document: dict[str, Any]) -> None:
        self.client = client
        self.document = document
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(
        self,
        method: str,
        template: str,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        **request: Any,
    ) -> Any:
        path_values = {k: request.pop(k) for k in list(request) if f"{{{k}}}" in template}
        url = template.format(**path_values)
        response = self.client.request(method.upper(), url, headers=headers, **request)
        assert response.status_code == status, f"{method.upper()} {url}: {response.text}"
        self.seen.add((method, template, status))
        responses = self.document["paths"][template][method]["responses"]
        described = responses.get(str(status)) or responses["default"]
        if status == 204:
            assert not response.content
            return None
        media_type = response.headers["content-type"].split(";")[0]
        assert media_type in described.get("content", {}), (
            f"{method.upper()} {template} {status}: {media_type} is not documented"
        )
        if media_type not in ("application/json", PROBLEM_JSON):
            return response.content
        body = response.json()
        schema = described["content"][media_type]["schema"]
        wrong = violations(self.document, schema, body, f"{method.upper()} {template} {status}")
        assert not wrong, "\n".join(wrong)
        return body


def test_served_answers_match_the_document(client: Any, document: dict[str, Any]) -> None:
    check = Checker(client, document)
    load_deck(client)
    plans = ensure_plans(client)
    check("get", "/healthz", 200)
    check("get", "/readyz", 200)
    check("get", "/metrics", 200)
    check("get", "/openapi.json", 200)

    # Tenants, seats, users, licenses, tokens.
    check("get", T, 401, tenant_id="nope")
    body = {
        "name": "Fabrikam",
        "country": "CH",
        "billing_country": "CH",
        "agreement": "direct",
        "currency": "CHF",
    }
    tenant = check("post", "/v1/tenants", 201, json=body, headers=OPERATOR)
    tid = tenant["id"]
    check("get", T, 200, tenant_id=tid, headers=OPERATOR)
    check("get", T, 404, tenant_id=unique("absent"), headers=OPERATOR)
    check("patch", T, 200, tenant_id=tid, json={"purchase_override": True}, headers=OPERATOR)
    check("post", "/v1/tenants", 422, json={"name": 5}, headers=OPERATOR)
    seats = {"sku": "calling_plan_international", "quantity": 2}
    check("post", T + "/subscriptions", 201, tenant_id=tid, json=seats, headers=OPERATOR)
    credits_seat = {"sku": "communications_credits", "quantity": 1}
    check("post", T + "/subscriptions", 201, tenant_id=tid, json=credits_seat, headers=OPERATOR)
    check("get", T + "/subscriptions", 200, tenant_id=tid, headers=OPERATOR)
    caller_body = {
        "upn": f"{unique('caller')}@fabrikam.example",
        "display_name": "Caller",
        "usage_location": "US",
        "phone_number": US_NUMBER,
        "licenses": ["calling_plan_international", "communications_credits"],
    }
    caller = check("post", T + "/users", 201, tenant_id=tid, json=caller_body, headers=OPERATOR)
    admin_body = {
        "upn": f"{unique('billing')}@fabrikam.example",
        "display_name": "Billing",
        "usage_location": "US",
        "email": "billing@fabrikam.example",
        "roles": ["billing_admin"],
    }
    billing = check("post", T + "/users", 201, tenant_id=tid, json=admin_body, headers=OPERATOR)
    check("get", T + "/users", 200, tenant_id=tid, headers=OPERATOR)
    user_path = T + "/users/{user_id}"
    check("get", user_path, 200, tenant_id=tid, user_id=caller["id"], headers=OPERATOR)
    rename = {"display_name": "Renamed"}
    check(
        "patch", user_path, 200, tenant_id=tid, user_id=caller["id"], json=rename, headers=OPERATOR
    )
    license_path = user_path + "/licenses/{sku}"
    ids = {"tenant_id": tid, "user_id": billing["id"], "sku": "communications_credits"}
    check("put", license_path, 200, headers=OPERATOR, **ids)
    check("delete", license_path, 200, headers=OPERATOR, **ids)
    token = check(
        "post", user_path + "/tokens", 201, tenant_id=tid, user_id=billing["id"], headers=OPERATOR
    )
    billing_headers = bearer(token["token"])
    check("post", "/v1/charging-tokens", 201, json={"tenant_id": tid}, headers=OPERATOR)
    check("post", "/v1/charging-tokens", 201, json={}, headers=OPERATOR)

    # Catalog.
    check("put", "/v1/catalog/plans", 200, json=plans, headers=OPERATOR)
    check("get", "/v1/catalog/plans", 200, headers=OPERATOR)
    lookup = {"number": US_NUMBER, "currency": "CHF"}
    check("get", "/v1/rates/lookup", 200, params=lookup, headers=OPERATOR)
    check("put", "/v1/catalog/rates", 422, content=b"not,a,deck\n", headers=OPERATOR)

    # Credits.
    card = {"card_number": CARD_OK, "exp_month": 12, "exp_year": CARD_EXPIRY_YEAR}
    method = check("post", T + "/payment-methods", 201, tenant_id=tid, json=card, headers=OPERATOR)
    failing = {**card, "card_number": CARD_FAILS_AT_CHARGE}
    bad_card = check(
        "post", T + "/payment-methods", 201, tenant_id=tid, json=failing, headers=OPERATOR
    )
    check("get", T + "/payment-methods", 200, tenant_id=tid, headers=billing_headers)
    check("get", T + "/credits", 200, tenant_id=tid, headers=billing_headers)
    buy = {"amount": "100.00", "payment_method_id": method["id"]}
    purchase = check(
        "post",
        T + "/credits/purchases",
        201,
        tenant_id=tid,
        json=buy,
        headers={**billing_headers, "Idempotency-Key": unique("key")},
    )
    assert purchase["status"] == "succeeded"
    failed_buy = {"amount": "60.00", "payment_method_id": bad_card["id"]}
    failed = check(
        "post", T + "/credits/purchases", 201, tenant_id=tid, json=failed_buy, headers=OPERATOR
    )
    assert failed["status"] == "failed" and failed["failure_code"] == "expired_card"
    key = {**OPERATOR, "Idempotency-Key": unique("key")}
    check("post", T + "/credits/purchases", 201, tenant_id=tid, json=buy, headers=key)
    conflicting = {**buy, "amount": "70.00"}
    check("post", T + "/credits/purchases", 409, tenant_id=tid, json=conflicting, headers=key)
    check("get", T + "/credits/purchases", 200, tenant_id=tid, headers=OPERATOR)
    one = T + "/credits/purchases/{purchase_id}"
    check("get", one, 200, tenant_id=tid, purchase_id=purchase["id"], headers=OPERATOR)
    recharge = {
        "enabled": True,
        "threshold": "20.00",
        "amount": "50.00",
        "payment_method_id": method["id"],
    }
    check("put", T + "/credits/auto-recharge", 200, tenant_id=tid, json=recharge, headers=OPERATOR)
    check("get", T + "/credits/auto-recharge", 200, tenant_id=tid, headers=OPERATOR)
    check("get", T + "/credits", 200, tenant_id=tid, headers=OPERATOR)
    adjustment = {"amount": "-1.50", "reason": "correction"}
    check("post", T + "/credits/adjustments", 201, tenant_id=tid, json=adjustment, headers=OPERATOR)

    nce = create_tenant(client, agreement="nce")
    problem = check(
        "post", T + "/credits/purchases", 403, tenant_id=nce["id"], json=buy, headers=OPERATOR
    )
    assert problem["code"] == "purchase_not_allowed" and problem["reason"] == "nce"

    # Charging, online and offline.
    fabrikam = make_tenant(client, balance="5.00")
    payg = make_user(client, fabrikam.id, licenses=["calling_plan_payg", "communications_credits"])
    started = check(
        "post",
        "/v1/calls",
        201,
        json=call_body(fabrikam, "user_out", US_NUMBER, user=payg),
        headers={**fabrikam.charging, "Idempotency-Key": unique("key")},
    )
    assert started["decision"] == "allow" and started["rate"] is not None, started
    denied_body = call_body(fabrikam, "user_out", US_NUMBER, user=make_user(client, fabrikam.id))
    denied = check("post", "/v1/calls", 201, json=denied_body, headers=fabrikam.charging)
    assert denied["decision"] == "deny" and denied["rate"] is None
    call = {"call_id": started["call_id"], "headers": fabrikam.charging}
    check("post", "/v1/calls/{call_id}/update", 200, json={"used_seconds": 30}, **call)
    check("get", "/v1/calls/{call_id}", 200, **call)
    check("post", "/v1/calls/{call_id}/end", 200, json={"duration_seconds": 61}, **call)
    check("post", "/v1/calls/{call_id}/update", 200, json={"used_seconds": 90}, **call)
    check("get", "/v1/calls/{call_id}", 200, **call)
    check("get", "/v1/calls/{call_id}", 200, call_id=denied["call_id"], headers=fabrikam.charging)
    record = {
        **call_body(fabrikam, "user_out", US_NUMBER, user=payg),
        "started_at": (now().replace(microsecond=0)).isoformat().replace("+00:00", "Z"),
        "duration_seconds": 60,
    }
    duplicate = {**record, "call_id": started["call_id"]}
    rejected = {"call_id": new_call_id(), "tenant_id": fabrikam.id}
    batch = {"records": [record, duplicate, rejected]}
    results = check("post", "/v1/cdrs", 200, json=batch, headers=fabrikam.charging)["results"]
    assert [r["status"] for r in results] == ["rated", "duplicate", "rejected"]

    # Pools, overage, reports, advice, notifications.
    for tenant_id in (tid, fabrikam.id):
        check("get", T + "/pools", 200, tenant_id=tenant_id, headers=OPERATOR)
        check("get", T + "/overage", 200, tenant_id=tenant_id, headers=OPERATOR)
    usage = T + "/reports/pstn-usage"
    rows = check("get", usage, 200, tenant_id=fabrikam.id, headers=OPERATOR)["items"]
    assert len(rows) == 2
    for format_ in ("csv", "xlsx"):
        check(
            "get", usage, 200, tenant_id=fabrikam.id, params={"format": format_}, headers=OPERATOR
        )
    for group_by in ("day", "user", "destination", "call_type"):
        check(
            "get",
            usage + "/summary",
            200,
            tenant_id=fabrikam.id,
            params={"group_by": group_by},
            headers=OPERATOR,
        )
    check("get", T + "/credits/recommendation", 200, tenant_id=fabrikam.id, headers=OPERATOR)
    for tenant_id in (tid, fabrikam.id):
        check("get", T + "/credits/transactions", 200, tenant_id=tenant_id, headers=OPERATOR)
    balance = Decimal(check("get", T + "/credits", 200, tenant_id=tid, headers=OPERATOR)["balance"])
    drain = {"amount": str(-balance), "reason": "drain: balance_depleted"}
    check("post", T + "/credits/adjustments", 201, tenant_id=tid, json=drain, headers=OPERATOR)
    notices = check("get", T + "/notifications", 200, tenant_id=tid, headers=OPERATOR)
    assert any(n["recipients"] for n in notices["items"]), notices

    # Removals.
    check("delete", user_path, 204, tenant_id=tid, user_id=caller["id"], headers=OPERATOR)
    removal = T + "/payment-methods/{method_id}"
    check("delete", removal, 204, tenant_id=tid, method_id=bad_card["id"], headers=OPERATOR)

    answered = {(method, path) for method, path, _ in check.seen}
    unchecked = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
        if (method, path) not in answered
    ]
    assert not unchecked, f"operations whose answers this test does not check: {unchecked}"
