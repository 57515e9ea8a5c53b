"""Helpers for the charging tests: a small deterministic rate deck of their own,
tenants with seats, users, licenses and a funded balance, and start/update/end
calls the way a voice platform does.

They speak the HTTP API only, so the same helpers drive the in-process
TestClient and an httpx.Client pointed at a real server process.

The catalog is shared by every test of a database. The deck below uses the
currency CHF only, which no other test uses, so loading it replaces nothing
that other tests rely on (a PUT replaces only the (service, currency) pairs
it holds).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from commcredits.services.catalog import sample_plans
from commcredits.store import tables as t
from tests.support.api import OPERATOR, add_seats, charging_token, create_tenant, unique

CURRENCY = "CHF"
CARD_OK = "4242424242424242"
CARD_EXPIRY_YEAR = datetime.now(UTC).year + 5
LEDGER_PAGE_LIMIT = 1000
MAX_UPDATES_PER_CALL = 200

# One row per tariff the tests compute by hand. Destinations:
#   outbound     +1 (US) 60/60 0.085/min: 60 s cost 0.085, which rounds half-up to 0.09
#                +44 (GB) 30/6, connect fee 0.05          +49 (DE) 1/1, connect fee 0.015
#                +449 GB premium, 1.20/min 60/60           +33 (FR): no row (not rated)
#   conference_dialout  +1 and +44 30/6 0.12/min, +55 (BR, outside the included zone) 0.30/min
#   tollfree_inbound    caller GB fixed 0.04, GB mobile 0.15, the GB toll-free number
#                       itself 0.05, caller US 0.03; +49 (DE) has no row.
DECK_CSV = """\
service,prefix,destination,number_type,rate_per_minute,connect_fee,initial_increment_s,subsequent_increment_s,currency
outbound,1,Test United States,any,0.085,0,60,60,CHF
outbound,44,Test United Kingdom,any,0.12,0.05,30,6,CHF
outbound,449,Test United Kingdom - Premium,premium,1.2,0,60,60,CHF
outbound,49,Test Germany,any,0.06,0.015,1,1,CHF
conference_dialout,1,Test Conf United States,any,0.12,0,30,6,CHF
conference_dialout,44,Test Conf United Kingdom,any,0.12,0,30,6,CHF
conference_dialout,55,Test Conf Brazil,any,0.30,0,60,60,CHF
tollfree_inbound,44,Test TF caller UK - Fixed,fixed,0.04,0,60,60,CHF
tollfree_inbound,44,Test TF caller UK - Mobile,mobile,0.15,0,60,60,CHF
tollfree_inbound,44800,Test TF UK toll-free number,any,0.05,0,60,60,CHF
tollfree_inbound,1,Test TF caller United States,any,0.03,0,60,60,CHF
"""

# Numbers libphonenumber considers valid, by what the deck does with them.
US_NUMBER = "+12015550123"
GB_FIXED = "+441212345678"
GB_MOBILE = "+447400123456"
GB_PREMIUM = "+449012345678"
GB_TOLL_FREE = "+448001234567"
DE_FIXED = "+4930123456"
DE_TOLL_FREE = "+498001234567890"
FR_FIXED = "+33123456789"
BR_FIXED = "+551123456789"
CH_FIXED = "+41212345678"


def load_deck(client: Any) -> None:
    response = client.put(
        "/v1/catalog/rates",
        content=DECK_CSV.encode(),
        headers={**OPERATOR, "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"loaded": DECK_CSV.count("\n") - 1}


def ensure_plans(client: Any) -> dict[str, Any]:
    """The plans in force; the shipped sample is loaded when none are set."""
    current = client.get("/v1/catalog/plans", headers=OPERATOR)
    assert current.status_code == 200, current.text
    document = dict(current.json())
    if not document.get("plans"):
        response = client.put("/v1/catalog/plans", json=sample_plans(), headers=OPERATOR)
        assert response.status_code == 200, response.text
        document = dict(response.json())
    return document


def plan_minutes(plans: dict[str, Any], sku: str, country: str) -> tuple[int, int]:
    """(domestic, international) minutes per license of a plan in a country."""
    for row in plans["plans"]:
        if row["sku"] == sku and row["country"] == country:
            return int(row["domestic_minutes"]), int(row["international_minutes"])
    raise AssertionError(f"the plans in force have no {sku} for {country}")


# --- tenants and users -----------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    id: str
    currency: str
    charging: dict[str, str]  # headers of a charging token for this tenant


def make_tenant(
    client: Any,
    *,
    balance: str | None = None,
    country: str = "CH",
    billing_country: str | None = None,
    agreement: str = "direct",
    timezone: str | None = None,
    currency: str = CURRENCY,
) -> Tenant:
    """A tenant of its own, funded with ``balance`` by an operator adjustment."""
    overrides: dict[str, Any] = {
        "country": country,
        "billing_country": billing_country or country,
        "agreement": agreement,
        "currency": currency,
    }
    if timezone is not None:
        overrides["timezone"] = timezone
    tenant = create_tenant(client, **overrides)
    if balance is not None and Decimal(balance) != 0:
        fund(client, tenant["id"], balance)
    return Tenant(id=tenant["id"], currency=currency, charging=charging_token(client, tenant["id"]))


def fund(client: Any, tenant_id: str, amount: str) -> dict[str, Any]:
    response = client.post(
        f"/v1/tenants/{tenant_id}/credits/adjustments",
        json={"amount": amount, "reason": "test funding"},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


SEATED_SKUS = (
    "calling_plan_domestic",
    "calling_plan_international",
    "calling_plan_payg",
    "audio_conferencing",
)


def make_user(
    client: Any,
    tenant_id: str,
    *,
    usage_location: str = "US",
    licenses: Iterable[str] = (),
    kind: str = "person",
    phone_number: str | None = None,
) -> dict[str, Any]:
    """A user holding ``licenses``; a seat of each seated SKU is bought for it first."""
    wanted = list(licenses)
    for sku in wanted:
        if sku in SEATED_SKUS:
            add_seats(client, tenant_id, sku, 1)
    body: dict[str, Any] = {
        "upn": f"{unique('caller')}@charging.example",
        "display_name": "Charging Test User",
        "usage_location": usage_location,
        "kind": kind,
        "licenses": wanted,
    }
    if phone_number is not None:
        body["phone_number"] = phone_number
    response = client.post(f"/v1/tenants/{tenant_id}/users", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    return dict(response.json())


# --- calls -----------------------------------------------------------------------------------


def new_call_id() -> str:
    return f"call-{uuid.uuid4().hex}"


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_ago(seconds: float) -> str:
    return rfc3339(datetime.now(UTC) - timedelta(seconds=seconds))


def call_body(
    tenant: Tenant,
    call_type: str,
    to: str,
    *,
    user: dict[str, Any] | None = None,
    from_number: str | None = None,
    started_at: str | None = None,
    call_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "call_id": call_id or new_call_id(),
        "tenant_id": tenant.id,
        "call_type": call_type,
        "to": to,
    }
    if user is not None:
        body["user_id"] = user["id"]
    if from_number is not None:
        body["from"] = from_number
    if started_at is not None:
        body["started_at"] = started_at
    return body


def start(client: Any, tenant: Tenant, call_type: str, to: str, **details: Any) -> dict[str, Any]:
    """POST /v1/calls; the answer (allow or deny), checked to be a 201."""
    body = call_body(tenant, call_type, to, **details)
    response = client.post("/v1/calls", json=body, headers=tenant.charging)
    assert response.status_code == 201, response.text
    answer = dict(response.json())
    assert answer["call_id"] == body["call_id"]
    return answer


def update(client: Any, tenant: Tenant, call_id: str, used_seconds: int) -> dict[str, Any]:
    response = client.post(
        f"/v1/calls/{call_id}/update", json={"used_seconds": used_seconds}, headers=tenant.charging
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def end(client: Any, tenant: Tenant, call_id: str, duration_seconds: int) -> dict[str, Any]:
    response = client.post(
        f"/v1/calls/{call_id}/end",
        json={"duration_seconds": duration_seconds},
        headers=tenant.charging,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def call_state(client: Any, tenant: Tenant, call_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/calls/{call_id}", headers=tenant.charging)
    assert response.status_code == 200, response.text
    return dict(response.json())


def run_to_max(client: Any, tenant: Tenant, started: dict[str, Any]) -> int:
    """Keep an allowed call alive, update after update, until the service stops
    extending its grant; answers the granted seconds it reached."""
    call_id = started["call_id"]
    granted = int(started["granted_seconds"])
    for _ in range(MAX_UPDATES_PER_CALL):
        answer = update(client, tenant, call_id, granted)
        if answer["decision"] == "terminate":
            assert answer["granted_seconds"] == granted, answer
            return granted
        assert answer["granted_seconds"] > granted, answer
        granted = int(answer["granted_seconds"])
    raise AssertionError(f"call {call_id} was still extended after {MAX_UPDATES_PER_CALL} updates")


# --- money -----------------------------------------------------------------------------------


def credits(client: Any, tenant_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/tenants/{tenant_id}/credits", headers=OPERATOR)
    assert response.status_code == 200, response.text
    return dict(response.json())


def ledger(client: Any, tenant_id: str) -> list[dict[str, Any]]:
    """Every ledger line of the tenant, oldest first."""
    lines: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": LEDGER_PAGE_LIMIT}
        if cursor:
            params["cursor"] = cursor
        response = client.get(
            f"/v1/tenants/{tenant_id}/credits/transactions", params=params, headers=OPERATOR
        )
        assert response.status_code == 200, response.text
        page = response.json()
        lines.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return lines


def ledger_total(lines: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(line["amount"]) for line in lines), Decimal(0))


def add_card(client: Any, tenant_id: str) -> str:
    response = client.post(
        f"/v1/tenants/{tenant_id}/payment-methods",
        json={"card_number": CARD_OK, "exp_month": 12, "exp_year": CARD_EXPIRY_YEAR},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def enable_auto_recharge(
    client: Any, tenant_id: str, *, threshold: str, amount: str, payment_method_id: str
) -> dict[str, Any]:
    response = client.put(
        f"/v1/tenants/{tenant_id}/credits/auto-recharge",
        json={
            "enabled": True,
            "threshold": threshold,
            "amount": amount,
            "payment_method_id": payment_method_id,
        },
        headers=OPERATOR,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def pools(client: Any, tenant_id: str, month: str | None = None) -> dict[tuple[str, Any], Any]:
    """GET pools of a month, keyed by (pool, country)."""
    params = {"month": month} if month else {}
    response = client.get(f"/v1/tenants/{tenant_id}/pools", params=params, headers=OPERATOR)
    assert response.status_code == 200, response.text
    return {(item["pool"], item["country"]): item for item in response.json()["items"]}


def tenant_problems(report: Any, tenant_id: str) -> list[str]:
    """verify_ledger's findings about one tenant (other tests share the database)."""
    return [problem for problem in report.problems if problem.startswith(f"{tenant_id}:")]


def wait_until(predicate: Any, timeout_seconds: float, what: str, poll_seconds: float = 0.2) -> Any:
    """Poll ``predicate`` until it answers something truthy; fail after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        outcome = predicate()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds} s waiting for {what}")
        time.sleep(poll_seconds)


def purchases_of(engine: Any, tenant_id: str) -> list[Any]:
    """The tenant's purchase records (read from the database: there is no list endpoint)."""
    with engine.connect() as connection:
        return list(
            connection.execute(select(t.purchases).where(t.purchases.c.tenant_id == tenant_id))
        )


def charges_by_call(lines: list[dict[str, Any]]) -> dict[str, int]:
    """How many call_charge lines each call has (the reference is "call <call_id>")."""
    counts: dict[str, int] = {}
    for line in lines:
        if line["kind"] == "call_charge":
            call_id = str(line["reference"]).removeprefix("call ")
            counts[call_id] = counts.get(call_id, 0) + 1
    return counts


def backdate_tenant(engine: Any, tenant_id: str, days: int) -> None:
    """Move the tenant's creation and its license assignments ``days`` back, so
    that past months have pools (a month before a tenant existed has none)."""
    shift = timedelta(days=days)
    with engine.begin() as connection:
        created = connection.execute(
            select(t.tenants.c.created_at).where(t.tenants.c.id == tenant_id)
        ).scalar_one()
        connection.execute(
            t.tenants.update().where(t.tenants.c.id == tenant_id).values(created_at=created - shift)
        )
        rows = connection.execute(
            select(t.user_licenses).where(t.user_licenses.c.tenant_id == tenant_id)
        ).all()
        for row in rows:
            connection.execute(
                t.user_licenses.update()
                .where(
                    t.user_licenses.c.tenant_id == tenant_id,
                    t.user_licenses.c.user_id == row.user_id,
                    t.user_licenses.c.sku == row.sku,
                )
                .values(assigned_at=row.assigned_at - shift)
            )


def recent_month_cut(at: datetime | None = None) -> datetime:
    """03:00Z on the 1st of this month (of the last one while that is less than
    a few hours past): still the previous day, and month, in New York."""
    at = at or datetime.now(UTC)
    first = at.replace(day=1, hour=3, minute=0, second=0, microsecond=0)
    if at < first + timedelta(hours=4):
        first = (first - timedelta(days=1)).replace(day=1)
    return first


def month_text(instant: datetime) -> str:
    return f"{instant.year:04d}-{instant.month:02d}"
