"""What /openapi.json says the API answers: the success bodies of API.md, the
problem+json error body, the bearer scheme and the Idempotency-Key header.

Documentation only. The models are named in the routes' ``responses=`` and
never used as ``response_model``: handlers return the services' dicts as they
are, so nothing is validated, filtered or serialised a second time at run
time. tests/integration/test_openapi.py holds the document to what the
handlers send.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from commcredits.api.errors import PROBLEM_JSON
from commcredits.api.idempotency import MAX_KEY_LENGTH

Money = Annotated[
    str,
    Field(
        pattern=r"^-?[0-9]+(\.[0-9]+)?$",
        description="An exact decimal amount as a string; its currency is beside it",
        examples=["12.50"],
    ),
]
CurrencyCode = Annotated[str, Field(description="ISO 4217", examples=["USD"])]
CountryCode = Annotated[str, Field(description="ISO 3166-1 alpha-2", examples=["US"])]
NextCursor = Annotated[
    str | None, Field(description="Pass as `cursor` for the next page; null on the last")
]
Funding = Literal["included", "credits", "mixed", "overage", "free"]
CallType = Literal["user_out", "conf_out", "tollfree_in", "user_in"]
Sku = Literal[
    "calling_plan_domestic",
    "calling_plan_international",
    "calling_plan_payg",
    "audio_conferencing",
    "communications_credits",
]


class Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- tenants, licenses, users, tokens ----------------------------------------------------------


class Tenant(Doc):
    id: str
    name: str
    country: CountryCode
    billing_country: CountryCode
    agreement: Literal["ea", "mca", "csp", "direct", "nce"]
    currency: CurrencyCode
    timezone: str = Field(description="IANA time zone", examples=["Europe/London"])
    purchase_override: bool
    created_at: datetime


class Subscription(Doc):
    sku: Sku
    quantity: int | None = Field(description="Seats bought; null for an unlimited SKU")
    assigned: int
    available: int | None = Field(description="Seats left; null for an unlimited SKU")
    unlimited: bool


class SubscriptionPage(Doc):
    items: list[Subscription]
    next_cursor: NextCursor


class User(Doc):
    id: str
    tenant_id: str
    upn: str
    display_name: str
    usage_location: CountryCode
    kind: Literal["person", "resource_account"]
    email: str | None
    phone_number: str | None = Field(description="E.164")
    roles: list[str]
    licenses: list[Sku]
    created_at: datetime


class UserPage(Doc):
    items: list[User]
    next_cursor: NextCursor


class UserToken(Doc):
    token: str = Field(description="Send as `Authorization: Bearer <token>`")
    kind: Literal["user"]
    user_id: str


class ChargingToken(Doc):
    token: str = Field(description="Send as `Authorization: Bearer <token>`")
    kind: Literal["charging"]
    tenant_id: str | None = Field(description="The one tenant it charges for; null: all")


# --- catalog -----------------------------------------------------------------------------------


class RatesLoaded(Doc):
    loaded: int = Field(description="Rows now in force from this upload")


class RateRow(Doc):
    service: Literal["outbound", "conference_dialout", "tollfree_inbound"]
    prefix: str
    destination: str
    number_type: Literal["fixed", "mobile", "premium", "any"]
    rate_per_minute: Money
    connect_fee: Money
    initial_increment_s: int
    subsequent_increment_s: int
    currency: CurrencyCode
    number: str = Field(description="The number looked up, in E.164")
    number_type_of_number: str = Field(description="The type of the number looked up")
    region: str | None = Field(description="Its country; null for a non-geographic number")


class PlanRow(Doc):
    sku: Sku
    country: CountryCode
    domestic_minutes: int
    international_minutes: int


class ConferenceDialout(Doc):
    minutes_per_license: int
    included_zone: list[CountryCode]


class Plans(Doc):
    plans: list[PlanRow]
    conference_dialout: ConferenceDialout


class Pool(Doc):
    pool: Literal["domestic", "international", "conference_dialout"]
    country: CountryCode | None
    month: str = Field(examples=["2026-03"])
    size_seconds: int
    used_seconds: int
    held_seconds: int = Field(description="Held by calls in progress")
    remaining_seconds: int


class PoolPage(Doc):
    items: list[Pool]
    month: str = Field(examples=["2026-03"])


class Overage(Doc):
    month: str = Field(examples=["2026-03"])
    currency: CurrencyCode
    calls: int
    seconds: int
    total_charge: Money


# --- credits -----------------------------------------------------------------------------------


class PaymentMethod(Doc):
    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    created_at: datetime


class PaymentMethodPage(Doc):
    items: list[PaymentMethod]
    next_cursor: NextCursor


class Eligibility(Doc):
    can_purchase: bool
    reason: Literal["nce", "region_mismatch"] | None


class AutoRecharge(Doc):
    enabled: bool
    threshold: Money | None
    amount: Money | None
    payment_method_id: str | None
    currency: CurrencyCode


class Credits(Doc):
    tenant_id: str
    currency: CurrencyCode
    balance: Money
    reserved: Money = Field(description="Held by calls in progress")
    available: Money = Field(description="balance - reserved")
    status: Literal["active", "depleted", "not_available"]
    eligibility: Eligibility
    auto_recharge: AutoRecharge


class Purchase(Doc):
    id: str
    kind: Literal["purchase", "auto_recharge"]
    amount: Money
    currency: CurrencyCode
    status: Literal["pending", "succeeded", "failed"]
    payment_method_id: str | None
    created_at: datetime
    failure_code: Literal["card_declined", "expired_card", "processing_error"] | None = Field(
        None, description="Present when the purchase failed"
    )


class PurchaseMade(Purchase):
    """A purchase as its POST answers: finished, with the balance after it."""

    status: Literal["succeeded", "failed"]
    balance: Money


class PurchasePage(Doc):
    items: list[Purchase]
    next_cursor: NextCursor


class LedgerLine(Doc):
    id: str
    at: datetime
    kind: Literal["purchase", "auto_recharge", "call_charge", "adjustment"]
    amount: Money = Field(description="Signed: money in positive, charges negative")
    balance_after: Money
    currency: CurrencyCode
    reference: str


class LedgerPage(Doc):
    items: list[LedgerLine]
    next_cursor: NextCursor


# --- charging ----------------------------------------------------------------------------------


class CallRate(Doc):
    per_minute: Money
    connect_fee: Money
    currency: CurrencyCode
    destination: str
    initial_increment_s: int
    subsequent_increment_s: int


class CallStarted(Doc):
    call_id: str
    tenant_id: str
    decision: Literal["allow", "deny"]
    reason: str | None = Field(
        description="Why a call is denied: no_calling_plan, no_credits_license, "
        "insufficient_balance, credits_not_available, destination_not_rated, invalid_number"
    )
    funding: Funding | None
    max_duration_seconds: int | None = Field(description="null: nothing limits the call")
    granted_seconds: int
    rate: CallRate | None


class CallUpdated(Doc):
    call_id: str
    decision: Literal["continue", "terminate"]
    granted_seconds: int = Field(description="From the start of the call")
    max_duration_seconds: int | None = Field(description="From the start of the call")
    state: Literal["denied", "ended"] | None = Field(
        None, description="Present when the call is no longer active"
    )


class CallEnded(Doc):
    call_id: str
    charge: Money = Field(description="The amount posted")
    currency: CurrencyCode
    funding: Funding | None
    pool_seconds: int = Field(description="Billed seconds taken from pools")
    charged_seconds: int = Field(description="Billed seconds paid from credits")
    balance: Money
    duration_seconds: int


class CallView(Doc):
    call_id: str
    tenant_id: str
    state: Literal["active", "denied", "ended"]
    call_type: CallType
    decision: Literal["allow", "deny"]
    reason: str | None
    funding: Funding | None
    started_at: datetime
    ended_at: datetime | None
    granted_seconds: int
    duration_seconds: int | None
    hold: Money = Field(description="Money held for the call now")
    pool_hold_seconds: int
    charge: Money | None
    currency: CurrencyCode
    pool_seconds: int | None
    charged_seconds: int | None
    end_reason: Literal["platform", "swept"] | None


class CdrResult(Doc):
    call_id: str | None
    status: Literal["rated", "duplicate", "rejected"]
    charge: Money | None = Field(None, description="Present when rated")
    funding: Funding | None = Field(None, description="Present when rated")
    error: str | None = Field(None, description="Present when rejected: why")


class CdrResults(Doc):
    results: list[CdrResult] = Field(description="One per record, in the order sent")


# --- reports and advice ------------------------------------------------------------------------


class UsageRow(Doc):
    """One finished call; the CSV and xlsx exports have these columns, in this order
    (the names are the report's, API.md)."""

    id: str
    callId: str
    userId: str | None
    userPrincipalName: str | None
    userDisplayName: str | None
    startDateTime: datetime
    endDateTime: datetime | None
    duration: int | None = Field(description="Seconds")
    charge: Money | None
    currency: CurrencyCode | None
    callType: CallType
    calleeNumber: str | None
    callerNumber: str | None
    destinationContext: Literal["Domestic", "International"] | None
    destinationName: str | None
    conferenceId: str | None
    licenseCapability: str | None
    usageCountryCode: str | None
    otherPartyCountryCode: str | None
    funding: Funding | None
    pooledSeconds: int | None
    chargedSeconds: int | None


class UsagePage(Doc):
    items: list[UsageRow]
    next_cursor: NextCursor


class SummaryItem(Doc):
    key: str | None = Field(
        description="A day (YYYY-MM-DD, tenant's timezone), UPN, destination or call type"
    )
    calls: int
    seconds: int = Field(description="Call durations")
    charge: Money
    currency: CurrencyCode


class UsageSummary(Doc):
    items: list[SummaryItem]
    group_by: Literal["day", "user", "destination", "call_type"]
    currency: CurrencyCode


class RecommendationBasis(Doc):
    days: int
    days_with_usage: int
    total_charge: Money
    average_daily: Money
    peak_daily: Money
    first_day: date | None
    last_day: date | None


class Recommendation(Doc):
    one_time_amount: Money
    auto_recharge_threshold: Money
    auto_recharge_amount: Money
    currency: CurrencyCode
    basis: RecommendationBasis
    enough_history: bool
    note: str


class Delivery(Doc):
    address: str
    status: Literal["pending", "sent", "failed"]
    attempts: int
    sent_at: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None
    message_id: str | None


class Notification(Doc):
    id: str
    event: Literal["recharge_succeeded", "recharge_failed", "balance_depleted", "balance_low"]
    status: Literal["pending", "sent", "failed"]
    created_at: datetime
    sent_at: datetime | None
    recipients: list[str] = Field(description="The addresses mailed, each once")
    deliveries: list[Delivery] = Field(description="Per recipient: status, attempts, Message-ID")
    subject: str
    text: str
    payload: dict[str, Any]


class NotificationPage(Doc):
    items: list[Notification]
    next_cursor: NextCursor
    smtp_configured: bool
    note: str | None = Field(None, description="Present when no SMTP server is configured")


# --- health ------------------------------------------------------------------------------------


class Liveness(Doc):
    status: Literal["ok"]


class Readiness(Doc):
    status: Literal["ready", "not_ready"]
    database: Literal["reachable", "unreachable"]


# --- errors ------------------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str = Field(examples=["amount"])
    message: str


class Problem(Doc):
    """RFC 9457 problem details; members beyond these may follow."""

    type: str = Field(examples=["https://commcredits.dev/problems/validation_error"])
    title: str
    status: int
    detail: str = Field(description="What was wrong, in words a person can act on")
    code: str = Field(
        description="Stable machine code, e.g. validation_error, insufficient_permission, "
        "not_found, no_seats_available, purchase_not_allowed, amount_below_minimum, "
        "idempotency_conflict"
    )
    errors: list[FieldError] | None = Field(
        None, description="validation_error: each invalid field (at most 10)"
    )
    reason: str | None = Field(
        None, description="purchase_not_allowed: nce or region_mismatch; invalid_card: why"
    )
    purchase_id: str | None = Field(
        None, description="payment_provider_unavailable: the purchase still pending"
    )
    minimum: Money | None = Field(None, description="amount_below_minimum")
    line: int | None = Field(None, description="invalid_rate_deck: the bad line (header: 1)")


# --- helpers for the routes --------------------------------------------------------------------


def body(model: type[BaseModel], description: str, status: int = 200) -> dict[int | str, Any]:
    """``responses=`` naming the success body of a route."""
    return {status: {"model": model, "description": description}}


def idempotent() -> dict[str, Any]:
    """``openapi_extra=`` for a route that honours an Idempotency-Key (a fresh dict:
    FastAPI merges it into the operation in place)."""
    return {
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "A retry with the same key and body returns the first "
                "result and does nothing more; the same key with another body is a 409 "
                "idempotency_conflict",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
            }
        ]
    }


# --- the document ------------------------------------------------------------------------------

BEARER = "bearerAuth"
SCHEMAS = "#/components/schemas/"

_ERRORS: dict[str, str] = {
    "400": "The body is not JSON, or not UTF-8",
    "401": "No token, or one the service does not know (code unauthenticated)",
    "403": "The token lacks the permission, or belongs to another tenant "
    "(insufficient_permission; a refused purchase: purchase_not_allowed with a reason)",
    "404": "No such object, or one of another tenant (not_found)",
    "409": "A conflict: idempotency_conflict, no_seats_available, upn_conflict, "
    "call_conflict, conflict",
    "413": "The body is larger than the service takes (payload_too_large)",
    "422": "Invalid input (validation_error, with errors; amount_below_minimum, "
    "invalid_rate_deck, expired_card, invalid_card, ...); nothing was changed",
    "default": "Any other error, e.g. 503 payment_provider_unavailable, 500 internal_error",
}
_READ_ONLY_METHODS = frozenset({"get", "head"})


def install(app: FastAPI) -> None:
    """Serve FastAPI's generated document, finished by ``finish`` once."""
    generate = app.openapi
    finished: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()  # cached by FastAPI: the same dict until routes change
        if not finished or finished[0] is not document:
            finish(document)
            finished[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def finish(document: dict[str, Any]) -> None:
    """Problem responses in place of FastAPI's validation error schema, the
    bearer scheme on every /v1 operation, and /openapi.json itself."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template=SCHEMAS + "{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    components["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "The operator token, a tenant user's token or a charging token",
        }
    }
    problem_content = {PROBLEM_JSON: {"schema": {"$ref": SCHEMAS + "Problem"}}}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if not path.startswith("/v1/"):
                for response in responses.values():
                    _problem_not_validation_error(response, problem_content)
                continue
            operation["security"] = [{BEARER: []}]
            for status, description in _ERRORS.items():
                if status == "409" and method in _READ_ONLY_METHODS:
                    continue
                responses[status] = {"description": description, "content": problem_content}
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    document["paths"]["/openapi.json"] = {
        "get": {
            "tags": ["health"],
            "summary": "This document (OpenAPI 3.1)",
            "operationId": "openapi_document",
            "responses": {
                "200": {
                    "description": "The OpenAPI document",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }


def _problem_not_validation_error(response: dict[str, Any], content: dict[str, Any]) -> None:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    if schema.get("$ref") == SCHEMAS + "HTTPValidationError":
        response["description"] = _ERRORS["422"]
        response["content"] = content
