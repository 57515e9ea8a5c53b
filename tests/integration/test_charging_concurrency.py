"""Many calls of one tenant at once, against a real server process: together
they never spend more than the balance (SPEC §3 "Online charging"), and an
auto-recharge running meanwhile is bought exactly once (SPEC §2 "Funding")."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from commcredits.services.verify import verify_ledger
from tests.conftest import OPERATOR_TOKEN
from tests.support.charging import (
    US_NUMBER,
    Tenant,
    add_card,
    call_body,
    charges_by_call,
    credits,
    enable_auto_recharge,
    end,
    ensure_plans,
    ledger,
    ledger_total,
    load_deck,
    make_tenant,
    make_user,
    pools,
    purchases_of,
    run_to_max,
    start,
    tenant_problems,
    update,
    wait_until,
)
from tests.support.server import ServerProcess

PAYG = ("calling_plan_payg", "communications_credits")
PARALLEL_CALLS = 100
RECHARGE_CALLS = 20
CLIENT_THREADS = 50
RECHARGE_TIMEOUT_SECONDS = 30
# Long enough for 20 calls to start and end while the provider is answering.
PROVIDER_DELAY_MS = 4000
RETRIES_AT_ONCE = 16
RETRY_ROUNDS = 3
US_RATE_PER_MINUTE = Decimal("0.085")  # the deck's US row, 60/60, no connect fee


@pytest.fixture(scope="module")
def deck(app: Any) -> None:
    with TestClient(app) as client:
        load_deck(client)


@pytest.fixture(scope="module")
def worker_server(backend_url: str, deck: None) -> Iterator[ServerProcess]:
    """A real server process (so clients are truly parallel) whose recharge
    runner and sweeper run; grants are long enough that nothing is swept."""
    server = ServerProcess(
        database_url=backend_url,
        operator_token=OPERATOR_TOKEN,
        extra_env={"COMMCREDITS_BACKGROUND_WORKERS": "1"},
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def slow_provider_server(backend_url: str, deck: None) -> Iterator[ServerProcess]:
    """A server whose simulated payment provider answers late, so a recharge
    stays in flight while calls run (COMMCREDITS_SIMULATED_PROVIDER_DELAY_MS)."""
    server = ServerProcess(
        database_url=backend_url,
        operator_token=OPERATOR_TOKEN,
        extra_env={
            "COMMCREDITS_BACKGROUND_WORKERS": "1",
            "COMMCREDITS_SIMULATED_PROVIDER_DELAY_MS": str(PROVIDER_DELAY_MS),
        },
    ).start()
    try:
        yield server
    finally:
        server.stop()


def http_client(server: ServerProcess) -> httpx.Client:
    limits = httpx.Limits(max_connections=CLIENT_THREADS, max_keepalive_connections=CLIENT_THREADS)
    return httpx.Client(base_url=server.url, timeout=60, limits=limits)


def us_charge(seconds: int) -> Decimal:
    minutes = -(-seconds // 60)
    return (US_RATE_PER_MINUTE * minutes).quantize(Decimal("0.01"), "ROUND_HALF_UP")


def run_call_to_its_max(
    http: httpx.Client, tenant: Tenant, user: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Start; if allowed, update until the grant stops growing, then end at the
    granted seconds reached, as a platform that uses all it is given."""
    started = start(http, tenant, "user_out", US_NUMBER, user=user)
    if started["decision"] == "deny":
        return started, None
    reached = run_to_max(http, tenant, started)
    return started, end(http, tenant, started["call_id"], reached)


def test_parallel_calls_never_spend_more_than_the_balance(client, engine, worker_server):
    tenant = make_tenant(client, balance="2.00")
    users = [make_user(client, tenant.id, usage_location="CH", licenses=PAYG) for _ in range(4)]

    with http_client(worker_server) as http, ThreadPoolExecutor(CLIENT_THREADS) as pool:
        futures = [
            pool.submit(run_call_to_its_max, http, tenant, users[n % len(users)])
            for n in range(PARALLEL_CALLS)
        ]
        outcomes = [future.result() for future in futures]

    allowed = [(started, ended) for started, ended in outcomes if ended is not None]
    denied = [started for started, ended in outcomes if ended is None]
    assert allowed, "the balance covers a few calls"
    assert denied and {d["reason"] for d in denied} == {"insufficient_balance"}
    for started, ended in allowed:
        assert started["funding"] == "credits"
        assert ended["charged_seconds"] % 60 == 0
        assert Decimal(ended["charge"]) == us_charge(ended["charged_seconds"]), ended

    view = credits(client, tenant.id)
    lines = ledger(client, tenant.id)
    spent = sum((Decimal(ended["charge"]) for _, ended in allowed), Decimal(0))
    assert Decimal(view["balance"]) >= 0
    assert Decimal(view["balance"]) == Decimal("2.00") - spent
    assert Decimal(view["balance"]) == ledger_total(lines)
    assert Decimal(view["reserved"]) == 0
    assert Decimal(view["available"]) == Decimal(view["balance"])
    charged = charges_by_call(lines)
    assert set(charged.values()) <= {1}
    assert set(charged) == {s["call_id"] for s, e in allowed if Decimal(e["charge"]) > 0}
    assert tenant_problems(verify_ledger(engine), tenant.id) == []


def test_calls_ending_while_an_auto_recharge_is_in_flight_buy_it_once(
    client, engine, worker_server
):
    tenant = make_tenant(client, balance="60.00")
    users = [make_user(client, tenant.id, usage_location="CH", licenses=PAYG) for _ in range(4)]
    card = add_card(client, tenant.id)
    # Just below the balance: the first hold crosses it and sets off the recharge.
    enable_auto_recharge(
        client, tenant.id, threshold="59.90", amount="50.00", payment_method_id=card
    )
    assert purchases_of(engine, tenant.id) == []

    def call(n: int) -> dict[str, Any]:
        started = start(http, tenant, "user_out", US_NUMBER, user=users[n % len(users)])
        assert started["decision"] == "allow", started
        granted = update(http, tenant, started["call_id"], started["granted_seconds"])
        return end(http, tenant, started["call_id"], granted["granted_seconds"])

    with http_client(worker_server) as http, ThreadPoolExecutor(RECHARGE_CALLS) as pool:
        ended = list(pool.map(call, range(RECHARGE_CALLS)))

    def settled() -> list[Any]:
        rows = purchases_of(engine, tenant.id)
        return rows if rows and all(row.status != "pending" for row in rows) else []

    purchases = wait_until(settled, RECHARGE_TIMEOUT_SECONDS, "the auto-recharge to finish")
    assert [(p.kind, p.status) for p in purchases] == [("auto_recharge", "succeeded")]
    lines = ledger(client, tenant.id)
    recharges = [line for line in lines if line["kind"] == "auto_recharge"]
    assert [line["amount"] for line in recharges] == ["50.00"]
    spent = sum((Decimal(e["charge"]) for e in ended), Decimal(0))
    assert spent > 0
    view = credits(client, tenant.id)
    assert Decimal(view["balance"]) == Decimal("110.00") - spent == ledger_total(lines)
    assert Decimal(view["reserved"]) == 0
    assert set(charges_by_call(lines).values()) == {1}
    assert len(charges_by_call(lines)) == RECHARGE_CALLS
    assert tenant_problems(verify_ledger(engine), tenant.id) == []


def test_a_call_started_and_ended_by_many_retries_at_once_is_held_and_charged_once(
    client, engine, worker_server
):
    """API.md: calls are idempotent by their call_id, so a platform retrying a
    start or an end (here, many copies at once) gets the first answer."""
    tenant = make_tenant(client, balance="5.00")
    user = make_user(client, tenant.id, usage_location="CH", licenses=PAYG)
    balance = Decimal("5.00")

    with http_client(worker_server) as http, ThreadPoolExecutor(RETRIES_AT_ONCE) as pool:
        for _ in range(RETRY_ROUNDS):
            body = call_body(tenant, "user_out", US_NUMBER, user=user)
            copies = [body] * RETRIES_AT_ONCE
            starts = list(
                pool.map(
                    lambda copy: http.post("/v1/calls", json=copy, headers=tenant.charging), copies
                )
            )
            statuses = [response.status_code for response in starts]
            assert set(statuses) == {201}, statuses
            assert len({response.text for response in starts}) == 1
            first = starts[0].json()
            assert first["decision"] == "allow"
            # One hold, not one per copy: 300 s at most on 60/60 at 0.085/min.
            reserved = Decimal(credits(client, tenant.id)["reserved"])
            assert reserved == us_charge(first["granted_seconds"])
            ends = list(pool.map(lambda copy: end(http, tenant, copy["call_id"], 61), copies))
            assert all(answer == ends[0] for answer in ends)
            balance -= Decimal("0.17")  # 61 s -> 2 minutes at 0.085
            assert ends[0]["charge"] == "0.17" and Decimal(ends[0]["balance"]) == balance

    lines = ledger(client, tenant.id)
    assert set(charges_by_call(lines).values()) == {1}
    assert len(charges_by_call(lines)) == RETRY_ROUNDS
    view = credits(client, tenant.id)
    assert Decimal(view["balance"]) == balance and Decimal(view["reserved"]) == 0
    assert tenant_problems(verify_ledger(engine), tenant.id) == []


def test_calls_ending_while_the_provider_is_still_charging_buy_the_recharge_once(
    client, engine, slow_provider_server
):
    """The recharge is really in flight: the first hold crosses the threshold,
    the runner is inside the (slow) provider, and only then do 20 calls start
    and end at once, each crossing the threshold again."""
    tenant = make_tenant(client, balance="60.00")
    users = [make_user(client, tenant.id, usage_location="CH", licenses=PAYG) for _ in range(4)]
    card = add_card(client, tenant.id)
    enable_auto_recharge(
        client, tenant.id, threshold="59.90", amount="50.00", payment_method_id=card
    )

    with http_client(slow_provider_server) as http, ThreadPoolExecutor(RECHARGE_CALLS) as pool:
        trigger = start(http, tenant, "user_out", US_NUMBER, user=users[0])
        assert trigger["decision"] == "allow"

        def in_flight() -> bool:
            rows = purchases_of(engine, tenant.id)
            return len(rows) == 1 and rows[0].status == "pending" and rows[0].attempts == 0

        wait_until(in_flight, RECHARGE_TIMEOUT_SECONDS, "the recharge to be pending")

        def call(n: int) -> tuple[dict[str, Any], bool]:
            started = start(http, tenant, "user_out", US_NUMBER, user=users[n % len(users)])
            assert started["decision"] == "allow", started
            ended = end(http, tenant, started["call_id"], started["granted_seconds"])
            statuses = [row.status for row in purchases_of(engine, tenant.id)]
            return ended, statuses == ["pending"]

        outcomes = list(pool.map(call, range(RECHARGE_CALLS)))
        ended = [answer for answer, _ in outcomes]
        ended.append(end(http, tenant, trigger["call_id"], 61))

    # The ends really overlapped the recharge: the provider had not answered yet.
    during = sum(1 for _, pending in outcomes if pending)
    assert during > 0, "no end ran while the recharge was in flight; raise PROVIDER_DELAY_MS"

    def settled() -> list[Any]:
        rows = purchases_of(engine, tenant.id)
        return rows if rows and all(row.status != "pending" for row in rows) else []

    purchases = wait_until(settled, RECHARGE_TIMEOUT_SECONDS, "the auto-recharge to finish")
    assert [(p.kind, p.status) for p in purchases] == [("auto_recharge", "succeeded")]
    lines = ledger(client, tenant.id)
    assert [line["amount"] for line in lines if line["kind"] == "auto_recharge"] == ["50.00"]
    spent = sum((Decimal(e["charge"]) for e in ended), Decimal(0))
    view = credits(client, tenant.id)
    assert Decimal(view["balance"]) == Decimal("110.00") - spent == ledger_total(lines)
    assert Decimal(view["reserved"]) == 0
    assert len(charges_by_call(lines)) == RECHARGE_CALLS + 1
    assert tenant_problems(verify_ledger(engine), tenant.id) == []


def test_two_calls_racing_for_the_last_pool_seconds_never_take_more_than_remain(
    client, engine, worker_server
):
    ensure_plans(client)
    tenant = make_tenant(client)
    organizer = make_user(client, tenant.id, usage_location="US", licenses=("audio_conferencing",))
    size = pools(client, tenant.id)[("conference_dialout", None)]["size_seconds"]
    left = 120
    assert size > left
    # Spend the conferencing pool down to its last 120 s (on the 30/6 grid).
    spender = start(client, tenant, "conf_out", US_NUMBER, user=organizer)
    granted = spender["granted_seconds"]
    while granted < size - left:
        granted = update(client, tenant, spender["call_id"], granted)["granted_seconds"]
    assert end(client, tenant, spender["call_id"], size - left)["pool_seconds"] == size - left
    assert pools(client, tenant.id)[("conference_dialout", None)]["remaining_seconds"] == left

    barrier = threading.Barrier(2)

    def race(http: httpx.Client) -> dict[str, Any] | None:
        barrier.wait()
        started = start(http, tenant, "conf_out", US_NUMBER, user=organizer)
        if started["decision"] == "deny":
            assert started["reason"] == "no_credits_license", started
            return None
        reached = run_to_max(http, tenant, started)
        return end(http, tenant, started["call_id"], reached)

    with http_client(worker_server) as first, http_client(worker_server) as second:
        with ThreadPoolExecutor(2) as pool:
            ended = [e for e in pool.map(race, (first, second)) if e is not None]

    assert ended, "the last seconds went to one of the calls"
    taken = sum(e["pool_seconds"] for e in ended)
    assert taken <= left, ended
    assert all(e["charged_seconds"] == 0 and e["charge"] == "0.00" for e in ended), ended
    pool_now = pools(client, tenant.id)[("conference_dialout", None)]
    assert pool_now["used_seconds"] == size - left + taken <= size
    assert pool_now["held_seconds"] == 0
