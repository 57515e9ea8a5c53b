"""PSTN usage report, summaries and funding advice (API.md "Reports and advice"),
on SQLite and PostgreSQL.

The scenario: a tenant in New York time with two users and five finished calls
posted as offline records at chosen times, so every total below is computed
by hand from the test deck (tests/support/charging.py).
"""

from __future__ import annotations

import csv
import io
import tracemalloc
import uuid
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from commcredits.services import reports
from commcredits.store import tables as t
from tests.support.api import OPERATOR, admin, create_tenant, unique
from tests.support.charging import (
    DE_FIXED,
    GB_FIXED,
    GB_MOBILE,
    US_NUMBER,
    Tenant,
    ensure_plans,
    load_deck,
    make_tenant,
    make_user,
    rfc3339,
)

# Written from API.md, not imported from the code under test.
COLUMNS = [
    "id",
    "callId",
    "userId",
    "userPrincipalName",
    "userDisplayName",
    "startDateTime",
    "endDateTime",
    "duration",
    "charge",
    "currency",
    "callType",
    "calleeNumber",
    "callerNumber",
    "destinationContext",
    "destinationName",
    "conferenceId",
    "licenseCapability",
    "usageCountryCode",
    "otherPartyCountryCode",
    "funding",
    "pooledSeconds",
    "chargedSeconds",
]
USAGE_PATH = "/v1/tenants/{tenant_id}/reports/pstn-usage"
BOB_NUMBER = "+12015550100"
ALICE_NUMBER = "+12015550111"
NEW_YORK = ZoneInfo("America/New_York")
XLSX_NS = {"x": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}


@pytest.fixture(scope="module")
def reports_app(app: Any) -> Any:
    """The session app, which serves the reports router."""
    assert USAGE_PATH in app.openapi()["paths"]
    return app


@pytest.fixture(scope="module")
def rclient(reports_app: Any) -> Iterator[TestClient]:
    with TestClient(reports_app, raise_server_exceptions=False) as test_client:
        load_deck(test_client)
        ensure_plans(test_client)
        yield test_client


@dataclass(frozen=True)
class Scenario:
    tenant: Tenant
    alice: dict[str, Any]
    bob: dict[str, Any]
    day: datetime  # UTC midnight of "day D", ten days ago
    calls: dict[str, str]  # name -> call id
    reader: dict[str, str]


def post_cdrs(client: TestClient, tenant: Tenant, records: list[dict[str, Any]]) -> list[Any]:
    for record in records:
        record.setdefault("tenant_id", tenant.id)
    response = client.post("/v1/cdrs", json={"records": records}, headers=tenant.charging)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rated"] * len(records), results
    return list(results)


def cdr(
    name: str,
    user: dict[str, Any],
    call_type: str,
    to: str,
    started_at: datetime,
    duration_seconds: int,
    from_number: str | None = None,
) -> dict[str, Any]:
    record = {
        "call_id": f"{name}-{uuid.uuid4().hex[:8]}",
        "call_type": call_type,
        "user_id": user["id"],
        "to": to,
        "started_at": rfc3339(started_at),
        "duration_seconds": duration_seconds,
    }
    if from_number is not None:
        record["from"] = from_number
    return record


@pytest.fixture(scope="module")
def scenario(rclient: TestClient) -> Scenario:
    tenant = make_tenant(rclient, timezone="America/New_York")
    alice = make_user(rclient, tenant.id, licenses=["calling_plan_payg", "communications_credits"])
    bob = make_user(
        rclient,
        tenant.id,
        licenses=["calling_plan_domestic", "communications_credits"],
        phone_number=BOB_NUMBER,
    )
    day = datetime.combine((datetime.now(UTC) - timedelta(days=10)).date(), time(0), UTC)
    records = {
        # 03:00Z is 22:00 the evening before in New York (EST, -5 or EDT, -4).
        "c1": cdr("c1", alice, "user_out", GB_FIXED, day + timedelta(hours=3), 300, ALICE_NUMBER),
        "c2": cdr("c2", alice, "user_out", DE_FIXED, day + timedelta(hours=15), 120),
        "c3": cdr("c3", bob, "user_out", US_NUMBER, day + timedelta(hours=16), 60, BOB_NUMBER),
        "c4": cdr(
            "c4", bob, "user_in", BOB_NUMBER, day + timedelta(hours=26), 600, GB_MOBILE
        ),  # 02:00Z next day: still day D in New York
        "c5": cdr("c5", alice, "user_out", GB_FIXED, day + timedelta(hours=38), 600),
    }
    results = post_cdrs(rclient, tenant, list(records.values()))
    # By hand: GB 0.05 + 0.12/min (30/6); DE 0.015 + 0.06/min (1/1), half-up to cents.
    assert [r["charge"] for r in results] == ["0.65", "0.14", "0.00", "0.00", "1.25"]
    return Scenario(
        tenant=tenant,
        alice=alice,
        bob=bob,
        day=day,
        calls={name: record["call_id"] for name, record in records.items()},
        reader=admin(rclient, tenant.id, "reports_reader"),
    )


def usage_url(tenant_id: str, suffix: str = "") -> str:
    return USAGE_PATH.format(tenant_id=tenant_id) + suffix


def get_items(client: TestClient, s: Scenario, **params: Any) -> list[dict[str, Any]]:
    response = client.get(usage_url(s.tenant.id), params=params, headers=s.reader)
    assert response.status_code == 200, response.text
    page = response.json()
    assert set(page) >= {"items", "next_cursor"}
    return list(page["items"])


def names_of(s: Scenario, items: list[dict[str, Any]]) -> list[str]:
    by_id = {call_id: name for name, call_id in s.calls.items()}
    return [by_id[item["callId"]] for item in items]


# --- the report rows -------------------------------------------------------------------------


def test_rows_carry_the_contract_columns_in_order(rclient: TestClient, scenario: Scenario) -> None:
    s = scenario
    items = get_items(rclient, s)
    assert names_of(s, items) == ["c1", "c2", "c3", "c4", "c5"]  # by startDateTime
    for item in items:
        assert list(item)[: len(COLUMNS)] == COLUMNS
    c1, _, c3, c4, c5 = items
    assert c1 == {
        **{key: c1[key] for key in c1 if key not in COLUMNS},
        "id": s.calls["c1"],
        "callId": s.calls["c1"],
        "userId": s.alice["id"],
        "userPrincipalName": s.alice["upn"],
        "userDisplayName": s.alice["display_name"],
        "startDateTime": rfc3339(s.day + timedelta(hours=3)),
        "endDateTime": rfc3339(s.day + timedelta(hours=3, minutes=5)),
        "duration": 300,
        "charge": "0.65",
        "currency": "CHF",
        "callType": "user_out",
        "calleeNumber": GB_FIXED,
        "callerNumber": ALICE_NUMBER,
        "destinationContext": "International",
        "destinationName": "Test United Kingdom",
        "conferenceId": None,
        "licenseCapability": "communications_credits",
        "usageCountryCode": "US",
        "otherPartyCountryCode": "GB",
        "funding": "credits",
        "pooledSeconds": 0,
        "chargedSeconds": 300,
    }
    # A domestic call from the pool: carried by the calling plan.
    assert (c3["funding"], c3["licenseCapability"], c3["destinationContext"]) == (
        "included",
        "calling_plan_domestic",
        "Domestic",
    )
    assert (c3["pooledSeconds"], c3["chargedSeconds"], c3["charge"]) == (60, 0, "0.00")
    # An inbound call to a user: free, no license used.
    assert (c4["funding"], c4["licenseCapability"], c4["charge"]) == ("free", None, "0.00")
    assert c4["callerNumber"] == GB_MOBILE and c4["duration"] == 600
    assert c5["charge"] == "1.25" and c5["endDateTime"].endswith("Z")


def test_filters_by_time_user_and_call_type(rclient: TestClient, scenario: Scenario) -> None:
    s = scenario
    c2_start = rfc3339(s.day + timedelta(hours=15))
    c4_start = rfc3339(s.day + timedelta(hours=26))
    # from is inclusive, to exclusive, on startDateTime.
    assert names_of(s, get_items(rclient, s, **{"from": c2_start, "to": c4_start})) == [
        "c2",
        "c3",
    ]
    assert names_of(s, get_items(rclient, s, **{"from": c2_start})) == ["c2", "c3", "c4", "c5"]
    assert names_of(s, get_items(rclient, s, to=c2_start)) == ["c1"]
    # An offset other than Z means the same instant.
    new_york = (s.day + timedelta(hours=15)).astimezone(NEW_YORK).isoformat()
    assert names_of(s, get_items(rclient, s, **{"from": new_york})) == ["c2", "c3", "c4", "c5"]
    # The user by id or by UPN (UPNs compare case-insensitively).
    assert names_of(s, get_items(rclient, s, user_id=s.bob["id"])) == ["c3", "c4"]
    assert names_of(s, get_items(rclient, s, user_id=s.alice["upn"].upper())) == [
        "c1",
        "c2",
        "c5",
    ]
    assert get_items(rclient, s, user_id="nobody@contoso.example") == []
    assert names_of(s, get_items(rclient, s, call_type="user_in")) == ["c4"]
    assert names_of(s, get_items(rclient, s, call_type="user_out", user_id=s.bob["id"])) == ["c3"]
    assert get_items(rclient, s, call_type="tollfree_in") == []


def test_pages_follow_each_other_without_gaps(rclient: TestClient, scenario: Scenario) -> None:
    s = scenario
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = rclient.get(usage_url(s.tenant.id), params=params, headers=s.reader)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen.extend(names_of(s, page["items"]))
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["c1", "c2", "c3", "c4", "c5"] and pages == 3
    for bad in ({"limit": 0}, {"limit": 1001}, {"cursor": "not-a-cursor"}):
        response = rclient.get(usage_url(s.tenant.id), params=bad, headers=s.reader)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["code"] == "validation_error"


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def test_csv_export_streams_every_row(rclient: TestClient, scenario: Scenario) -> None:
    s = scenario
    response = rclient.get(usage_url(s.tenant.id), params={"format": "csv"}, headers=s.reader)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8"))))
    assert rows[0][: len(COLUMNS)] == COLUMNS
    expected = [[as_text(item[c]) for c in COLUMNS] for item in get_items(rclient, s)]
    assert [row[: len(COLUMNS)] for row in rows[1:]] == expected
    # Filters apply to exports too.
    response = rclient.get(
        usage_url(s.tenant.id),
        params={"format": "csv", "user_id": s.bob["upn"]},
        headers=s.reader,
    )
    rows = list(csv.reader(io.StringIO(response.text)))
    assert [row[1] for row in rows[1:]] == [s.calls["c3"], s.calls["c4"]]


def read_xlsx(content: bytes) -> list[list[tuple[str, str | None]]]:
    """Rows of the first sheet as (type, text) cells: 's' text, 'n' number."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        shared: list[str] = []
        if "xl/sharedStrings.xml" in archive.namelist():
            root = ElementTree.fromstring(archive.read("xl/sharedStrings.xml"))
            shared = ["".join(si.itertext()) for si in root.findall("x:si", XLSX_NS)]
        sheet = ElementTree.fromstring(archive.read("xl/worksheets/sheet1.xml"))
    rows: list[list[tuple[str, str | None]]] = []
    for row in sheet.iterfind(".//x:sheetData/x:row", XLSX_NS):
        cells: list[tuple[str, str | None]] = []
        for cell in row.findall("x:c", XLSX_NS):
            column = _column_index(cell.attrib["r"])
            while len(cells) < column:
                cells.append(("blank", None))
            kind = cell.attrib.get("t", "n")
            if kind == "inlineStr":
                cells.append(("s", "".join(cell.find("x:is", XLSX_NS).itertext())))  # type: ignore[union-attr]
            elif kind == "s":
                cells.append(("s", shared[int(cell.findtext("x:v", namespaces=XLSX_NS) or "")]))
            else:
                cells.append(("n", cell.findtext("x:v", namespaces=XLSX_NS)))
        rows.append(cells)
    return rows


def _column_index(reference: str) -> int:
    letters = "".join(ch for ch in reference if ch.isalpha())
    index = 0
    for letter in letters:
        index = index * 26 + (ord(letter) - ord("A") + 1)
    return index - 1


def test_xlsx_export_has_the_header_and_typed_cells(
    rclient: TestClient, scenario: Scenario
) -> None:
    s = scenario
    response = rclient.get(usage_url(s.tenant.id), params={"format": "xlsx"}, headers=s.reader)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert ".xlsx" in response.headers["content-disposition"]
    rows = read_xlsx(response.content)
    assert [text for _, text in rows[0][: len(COLUMNS)]] == COLUMNS
    items = get_items(rclient, s)
    assert len(rows) == 1 + len(items)
    numbers = {"duration", "charge", "pooledSeconds", "chargedSeconds"}
    for cells, item in zip(rows[1:], items, strict=True):
        cells = cells + [("blank", None)] * (len(COLUMNS) - len(cells))
        for column, (kind, text) in zip(COLUMNS, cells, strict=False):
            value = item[column]
            if value is None:
                assert kind == "blank", (column, kind, text)
            elif column in numbers:
                assert kind == "n" and Decimal(text or "") == Decimal(str(value)), column
            else:
                assert (kind, text) == ("s", value), column


# --- summaries -------------------------------------------------------------------------------


def summary(client: TestClient, s: Scenario, **params: Any) -> list[dict[str, Any]]:
    response = client.get(usage_url(s.tenant.id, "/summary"), params=params, headers=s.reader)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    for item in items:
        assert set(item) >= {"key", "calls", "seconds", "charge", "currency"}
        assert item["currency"] == "CHF"
    return list(items)


def triples(items: list[dict[str, Any]]) -> dict[Any, tuple[int, int, str]]:
    return {item["key"]: (item["calls"], item["seconds"], item["charge"]) for item in items}


def test_summary_by_day_cuts_days_in_the_tenant_timezone(
    rclient: TestClient, scenario: Scenario
) -> None:
    s = scenario
    day_d = s.day.date()
    before, after = day_d - timedelta(days=1), day_d + timedelta(days=1)
    items = summary(rclient, s, group_by="day")
    assert [item["key"] for item in items] == [d.isoformat() for d in (before, day_d, after)]
    assert triples(items) == {
        before.isoformat(): (1, 300, "0.65"),  # c1 at 03:00Z: the evening before in New York
        day_d.isoformat(): (3, 120 + 60 + 600, "0.14"),  # c2, c3, and c4 at 02:00Z next day
        after.isoformat(): (1, 600, "1.25"),
    }
    # A range: [from, to) on the start time.
    ranged = summary(
        rclient,
        s,
        group_by="day",
        **{
            "from": rfc3339(s.day + timedelta(hours=15)),
            "to": rfc3339(s.day + timedelta(hours=26)),
        },
    )
    assert triples(ranged) == {day_d.isoformat(): (2, 180, "0.14")}


def test_summary_by_user_destination_and_call_type(rclient: TestClient, scenario: Scenario) -> None:
    s = scenario
    assert triples(summary(rclient, s, group_by="user")) == {
        s.alice["upn"]: (3, 300 + 120 + 600, "2.04"),
        s.bob["upn"]: (2, 60 + 600, "0.00"),
    }
    by_destination = triples(summary(rclient, s, group_by="destination"))
    c4 = get_items(rclient, s, call_type="user_in")[0]
    c4_key = c4["destinationName"] or c4["otherPartyCountryCode"]
    assert by_destination == {
        "Test United Kingdom": (2, 900, "1.90"),
        "Test Germany": (1, 120, "0.14"),
        "Test United States": (1, 60, "0.00"),
        c4_key: (1, 600, "0.00"),
    }
    assert triples(summary(rclient, s, group_by="call_type")) == {
        "user_out": (4, 1080, "2.04"),
        "user_in": (1, 600, "0.00"),
    }


# --- funding advice --------------------------------------------------------------------------


def recommendation(client: TestClient, tenant_id: str, headers: dict[str, str]) -> Any:
    response = client.get(f"/v1/tenants/{tenant_id}/credits/recommendation", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_too_little_history_recommends_the_minimum(rclient: TestClient, scenario: Scenario) -> None:
    s = scenario
    advice = recommendation(rclient, s.tenant.id, s.reader)
    assert (
        advice["one_time_amount"],
        advice["auto_recharge_threshold"],
        advice["auto_recharge_amount"],
        advice["currency"],
    ) == ("50.00", "50.00", "50.00", "CHF")
    assert "Too little history" in advice["note"]
    # History starts at the first call: the evening before day D, in New York.
    today = datetime.now(NEW_YORK).date()
    first_day = (s.day + timedelta(hours=3)).astimezone(NEW_YORK).date()
    assert advice["basis"]["days"] == (today - first_day).days
    assert advice["basis"]["total_charge"] == "2.04"  # c1 + c2 + c5, paid from credits
    assert advice["basis"]["peak_daily"] == "1.25"

    empty = make_tenant(rclient)
    advice = recommendation(rclient, empty.id, OPERATOR)
    assert advice["basis"] == {
        **advice["basis"],
        "days": 0,
        "total_charge": "0.00",
        "average_daily": "0.00",
        "peak_daily": "0.00",
    }
    assert advice["one_time_amount"] == "50.00" and "0 days of history" in advice["note"]


def test_recommendation_from_45_days_of_history(rclient: TestClient) -> None:
    zone = ZoneInfo("Europe/Zurich")
    tenant = make_tenant(rclient, timezone="Europe/Zurich")
    caller = make_user(rclient, tenant.id, licenses=["calling_plan_payg", "communications_credits"])
    pooled = make_user(rclient, tenant.id, licenses=["calling_plan_domestic"])
    today = datetime.now(zone).date()
    records = []
    for days_ago in range(1, 46):
        noon = datetime.combine(today - timedelta(days=days_ago), time(12), zone)
        # 100 minutes to GB every day: 0.05 + 100 × 0.12 = 12.05.
        records.append(cdr("day", caller, "user_out", GB_FIXED, noon.astimezone(UTC), 6000))
    # The peak day: 300 more minutes, 0.05 + 36 = 36.05, so 48.10 that day.
    peak = datetime.combine(today - timedelta(days=10), time(13), zone).astimezone(UTC)
    records.append(cdr("peak", caller, "user_out", GB_FIXED, peak, 18000))
    # Pool minutes cost the balance nothing: they count as history, not as spend.
    records.append(cdr("pool", pooled, "user_out", US_NUMBER, peak, 600))
    post_cdrs(rclient, tenant, records)

    advice = recommendation(rclient, tenant.id, admin(rclient, tenant.id, "billing_admin"))
    assert advice["basis"] == {
        **advice["basis"],
        "days": 45,
        "total_charge": "578.30",  # 45 × 12.05 + 36.05
        "average_daily": "12.85",  # 578.30 / 45 = 12.8511...
        "peak_daily": "48.10",
    }
    # threshold 3 × 48.10 = 144.30 -> 150; amount 14 × 12.8511 = 179.92 -> 180;
    # one-time 30 × 12.8511 = 385.53 -> 390 (rounded up to tens).
    assert (
        advice["one_time_amount"],
        advice["auto_recharge_threshold"],
        advice["auto_recharge_amount"],
        advice["currency"],
    ) == ("390.00", "150.00", "180.00", "CHF")
    assert "45 days" in advice["note"]


# --- who may read, and bad input -------------------------------------------------------------

ENDPOINTS = [
    "/reports/pstn-usage",
    "/reports/pstn-usage?format=csv",
    "/reports/pstn-usage?format=xlsx",
    "/reports/pstn-usage/summary?group_by=user",
    "/credits/recommendation",
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_only_readers_of_the_tenant_may_read(
    rclient: TestClient, scenario: Scenario, endpoint: str
) -> None:
    s = scenario
    url = f"/v1/tenants/{s.tenant.id}{endpoint}"
    for role in ("reports_reader", "teams_admin", "billing_admin", "global_admin"):
        assert rclient.get(url, headers=admin(rclient, s.tenant.id, role)).status_code == 200
    assert rclient.get(url, headers=OPERATOR).status_code == 200
    for role in ("helpdesk_admin", "device_admin"):
        response = rclient.get(url, headers=admin(rclient, s.tenant.id, role))
        assert response.status_code == 403, (role, response.text)
    assert rclient.get(url, headers=admin(rclient, s.tenant.id)).status_code == 403
    assert rclient.get(url, headers=s.tenant.charging).status_code == 403
    other = create_tenant(rclient)
    response = rclient.get(url, headers=admin(rclient, other["id"], "global_admin"))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert rclient.get(url).status_code == 401
    missing = f"/v1/tenants/{unique('missing')}{endpoint}"
    assert rclient.get(missing, headers=OPERATOR).status_code == 404


@pytest.mark.parametrize(
    ("suffix", "params"),
    [
        ("", {"from": "yesterday"}),
        ("", {"to": "2026-13-01T00:00:00Z"}),
        ("", {"from": "2026-03-01T00:00:00"}),  # no offset
        ("", {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}),
        ("", {"call_type": "user_sideways"}),
        ("", {"format": "pdf"}),
        ("", {"format": "csv", "from": "nope"}),
        ("/summary", {"group_by": "week"}),
        ("/summary", {"to": "soon"}),
    ],
)
def test_bad_parameters_are_a_validation_error(
    rclient: TestClient, scenario: Scenario, suffix: str, params: dict[str, str]
) -> None:
    s = scenario
    response = rclient.get(usage_url(s.tenant.id, suffix), params=params, headers=s.reader)
    assert response.status_code == 422, (params, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"


def test_openapi_describes_the_reports(reports_app: Any) -> None:
    paths = reports_app.openapi()["paths"]
    assert USAGE_PATH in paths
    assert USAGE_PATH + "/summary" in paths
    assert "/v1/tenants/{tenant_id}/credits/recommendation" in paths


# --- exports in constant memory --------------------------------------------------------------


def insert_synthetic_calls(engine: Any, tenant_id: str, count: int, start: datetime) -> None:
    """``count`` finished calls a minute apart, written straight to the table."""
    template = {
        "tenant_id": tenant_id,
        "source": "offline",
        "state": "ended",
        "call_type": "user_out",
        "user_id": "u-synthetic",
        "user_upn": "synthetic@contoso.example",
        "user_display_name": "Synthetic Caller",
        "from_number": ALICE_NUMBER,
        "to_number": GB_FIXED,
        "destination_region": "GB",
        "destination_name": "Test United Kingdom",
        "destination_context": "International",
        "number_type": "fixed",
        "usage_country": "US",
        "decision": "allow",
        "funding": "credits",
        "duration_seconds": 300,
        "granted_seconds": 300,
        "hold_amount": Decimal(0),
        "pool_hold_seconds": 0,
        "currency": "CHF",
        "charge": Decimal("0.65"),
        "pool_seconds": 0,
        "charged_seconds": 300,
        "credits_allowed": True,
        "overage": False,
        "end_reason": "offline",
        "request_hash": "",
    }
    batch_rows = 5000
    with engine.begin() as connection:
        for first in range(0, count, batch_rows):
            rows = []
            for number in range(first, min(first + batch_rows, count)):
                started_at = start + timedelta(minutes=number)
                rows.append(
                    {
                        **template,
                        "call_id": f"synthetic-{number:07d}",
                        "started_at": started_at,
                        "ended_at": started_at + timedelta(seconds=300),
                    }
                )
            connection.execute(insert(t.calls), rows)


def peak_memory(chunks: Iterator[bytes]) -> tuple[int, int]:
    """(peak traced bytes while consuming, bytes produced)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        produced = 0
        for chunk in chunks:
            produced += len(chunk)
        return tracemalloc.get_traced_memory()[1] - baseline, produced
    finally:
        tracemalloc.stop()


def test_exports_run_in_constant_memory(
    rclient: TestClient, reports_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many times the rows must not take more memory: the peak is one batch of
    rows, whatever the count (small batches keep the test quick)."""
    monkeypatch.setattr(reports, "EXPORT_BATCH_ROWS", 200)
    engine = reports_app.state.ctx.engine
    tenant = make_tenant(rclient)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    insert_synthetic_calls(engine, tenant.id, 6_000, start)

    def first(count: int) -> reports.UsageFilter:
        return reports.UsageFilter(tenant.id, end=start + timedelta(minutes=count))

    small_peak, small_bytes = peak_memory(reports.csv_chunks(engine, first(1_000)))
    large_peak, large_bytes = peak_memory(reports.csv_chunks(engine, first(6_000)))
    assert large_bytes > 5 * small_bytes  # the large export really is six times larger
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)

    small_peak, small_bytes = peak_memory(reports.xlsx_chunks(engine, first(400), "CHF"))
    large_peak, large_bytes = peak_memory(reports.xlsx_chunks(engine, first(1_600), "CHF"))
    assert large_bytes > 3 * small_bytes
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
    rows = read_xlsx(b"".join(reports.xlsx_chunks(engine, first(3), "CHF")))
    assert [cells[1][1] for cells in rows[1:]] == [f"synthetic-{n:07d}" for n in range(3)]


def test_xlsx_goes_on_in_a_new_sheet_past_excels_row_limit(
    rclient: TestClient, reports_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reports, "XLSX_MAX_DATA_ROWS", 2)
    engine = reports_app.state.ctx.engine
    tenant = make_tenant(rclient)
    insert_synthetic_calls(engine, tenant.id, 5, datetime(2026, 2, 1, tzinfo=UTC))
    content = b"".join(reports.xlsx_chunks(engine, reports.UsageFilter(tenant.id), "CHF"))
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        sheets = sorted(n for n in archive.namelist() if n.startswith("xl/worksheets/sheet"))
        call_ids = []
        for name in sheets:
            sheet = ElementTree.fromstring(archive.read(name))
            rows = sheet.findall(".//x:sheetData/x:row", XLSX_NS)
            assert "".join(rows[0].itertext()).startswith("idcallId")  # a header on each
            call_ids += ["".join(row.findall("x:c", XLSX_NS)[1].itertext()) for row in rows[1:]]
    assert len(sheets) == 3
    assert call_ids == [f"synthetic-{n:07d}" for n in range(5)]
