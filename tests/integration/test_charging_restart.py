"""Crash and restart safety of online charging: a server process killed with
calls in flight and a recharge pending, and two server processes sharing one
database. The sweeper and the recharge runner must act once per job: one
charge per call, one auto-recharge per crossing, and a ledger that verifies.

Server processes here grant 5 s at a time, and calls start in the past, so
their grants run out a few seconds into the test (grant + calls.SWEEP_GRACE_SECONDS).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from commcredits.services import calls
from commcredits.services.verify import verify_ledger
from tests.conftest import OPERATOR_TOKEN
from tests.support.charging import (
    DE_FIXED,
    Tenant,
    add_card,
    call_state,
    charges_by_call,
    credits,
    enable_auto_recharge,
    end,
    ledger,
    ledger_total,
    load_deck,
    make_tenant,
    make_user,
    purchases_of,
    seconds_ago,
    start,
    tenant_problems,
    wait_until,
)
from tests.support.server import ServerProcess

PAYG = ("calling_plan_payg", "communications_credits")
GRANT_SECONDS = 5
# Calls start this long ago, so their grant (5 s) and the sweeper's grace (10 s)
# run out this many seconds after the test starts them: long enough to kill a
# server with the calls still open, or at once when nothing needs to happen first.
EXPIRES_IN_SECONDS = 5
EXPIRES_AT_ONCE = 1
SETTLE_TIMEOUT_SECONDS = 45
# The DE row of the deck: 1/1, 0.06/min + 0.015 connect fee. A 5 s grant costs
# 0.015 + 0.005 = 0.02.
SWEPT_CHARGE = Decimal("0.02")
CALLS_IN_FLIGHT = 6


@pytest.fixture(scope="module")
def deck(app: Any) -> None:
    with TestClient(app) as client:
        load_deck(client)


def server(backend_url: str) -> ServerProcess:
    return ServerProcess(
        database_url=backend_url,
        operator_token=OPERATOR_TOKEN,
        extra_env={
            "COMMCREDITS_BACKGROUND_WORKERS": "1",
            "COMMCREDITS_GRANT_SECONDS": str(GRANT_SECONDS),
        },
    )


@pytest.fixture()
def servers() -> Iterator[list[ServerProcess]]:
    """Server processes a test starts; whatever is still running is stopped."""
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


def start_servers(servers: list[ServerProcess], backend_url: str, count: int) -> list[Any]:
    new = [server(backend_url) for _ in range(count)]
    servers.extend(new)
    with ThreadPoolExecutor(count) as pool:
        running = list(pool.map(ServerProcess.start, new))
    return running


def start_past_call(
    http: httpx.Client, tenant: Tenant, user: dict[str, Any], expires_in_seconds: int
) -> dict[str, Any]:
    ago = GRANT_SECONDS + calls.SWEEP_GRACE_SECONDS - expires_in_seconds
    started = start(http, tenant, "user_out", DE_FIXED, user=user, started_at=seconds_ago(ago))
    assert started["decision"] == "allow", started
    assert started["granted_seconds"] == GRANT_SECONDS, started
    return started


def all_settled(client: Any, engine: Any, tenant: Tenant, call_ids: list[str]) -> bool:
    if any(row.status == "pending" for row in purchases_of(engine, tenant.id)):
        return False
    return all(call_state(client, tenant, call_id)["state"] == "ended" for call_id in call_ids)


def assert_swept_once_each(client: Any, engine: Any, tenant: Tenant, call_ids: list[str]) -> None:
    for call_id in call_ids:
        state = call_state(client, tenant, call_id)
        assert state["end_reason"] == "swept", state
        assert state["duration_seconds"] == GRANT_SECONDS, state
        assert Decimal(state["charge"]) == SWEPT_CHARGE, state
    lines = ledger(client, tenant.id)
    charged = charges_by_call(lines)
    assert {call_id: charged.get(call_id) for call_id in call_ids} == dict.fromkeys(call_ids, 1)
    recharges = [line for line in lines if line["kind"] == "auto_recharge"]
    assert [line["amount"] for line in recharges] == ["50.00"], recharges
    assert [(p.kind, p.status) for p in purchases_of(engine, tenant.id)] == [
        ("auto_recharge", "succeeded")
    ]
    view = credits(client, tenant.id)
    assert Decimal(view["balance"]) == ledger_total(lines)
    assert Decimal(view["reserved"]) == 0
    assert tenant_problems(verify_ledger(engine), tenant.id) == []


def test_a_killed_server_restarts_and_settles_each_call_and_recharge_once(
    client, engine, backend_url, deck, servers
):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    card = add_card(client, tenant.id)
    (first,) = start_servers(servers, backend_url, 1)

    with httpx.Client(base_url=first.url, timeout=30) as http:
        in_flight = [
            start_past_call(http, tenant, user, EXPIRES_IN_SECONDS)["call_id"]
            for _ in range(CALLS_IN_FLIGHT)
        ]
    first.kill()
    # Killed with the calls still open: nobody has swept them.
    assert {call_state(client, tenant, c)["state"] for c in in_flight} == {"active"}

    # While no server runs, a recharge is set off (available 9.88 is below 10.00)
    # and stays pending: the in-process app runs no workers.
    enable_auto_recharge(
        client, tenant.id, threshold="10.00", amount="50.00", payment_method_id=card
    )
    assert [p.status for p in purchases_of(engine, tenant.id)] == ["pending"]

    start_servers(servers, backend_url, 1)
    wait_until(
        lambda: all_settled(client, engine, tenant, in_flight),
        SETTLE_TIMEOUT_SECONDS,
        "the restarted server to sweep the dead calls and finish the recharge",
    )

    assert_swept_once_each(client, engine, tenant, in_flight)
    # The platform's late end changes nothing.
    late = end(client, tenant, in_flight[0], 300)
    assert Decimal(late["charge"]) == SWEPT_CHARGE
    assert len(charges_by_call(ledger(client, tenant.id))) == CALLS_IN_FLIGHT
    expected = Decimal("10.00") + Decimal("50.00") - SWEPT_CHARGE * CALLS_IN_FLIGHT
    assert Decimal(credits(client, tenant.id)["balance"]) == expected


def test_two_servers_on_one_database_sweep_and_recharge_once_per_job(
    client, engine, backend_url, deck, servers
):
    tenant = make_tenant(client, balance="10.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    card = add_card(client, tenant.id)
    # The third hold (3 x 0.02) takes available below 9.95: one recharge.
    enable_auto_recharge(
        client, tenant.id, threshold="9.95", amount="50.00", payment_method_id=card
    )
    pair = start_servers(servers, backend_url, 2)
    call_count = 5 * len(pair)

    def start_on(n: int) -> str:
        with httpx.Client(base_url=pair[n % len(pair)].url, timeout=30) as http:
            return str(start_past_call(http, tenant, user, EXPIRES_AT_ONCE)["call_id"])

    with ThreadPoolExecutor(call_count) as pool:
        call_ids = list(pool.map(start_on, range(call_count)))

    wait_until(
        lambda: all_settled(client, engine, tenant, call_ids),
        SETTLE_TIMEOUT_SECONDS,
        "the two servers to sweep every call and finish the recharge",
    )

    assert_swept_once_each(client, engine, tenant, call_ids)
    expected = Decimal("10.00") + Decimal("50.00") - SWEPT_CHARGE * call_count
    assert Decimal(credits(client, tenant.id)["balance"]) == expected
