"""The charging endpoints run their database work on the event loop on SQLite
(api/context.on_database), except while another thread holds the SQLite
writer: then they wait in the thread pool, and the loop keeps answering."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from commcredits.store.db import write_transaction
from tests.support.charging import (
    US_NUMBER,
    call_body,
    ensure_plans,
    load_deck,
    make_tenant,
    make_user,
)

PAYG = ("calling_plan_payg", "communications_credits")
WAIT_SECONDS = 10
# The writer is held until the test lets go, far longer than it waits for
# /healthz: an answer can only come while the writer is still held.
HOLD_SECONDS = 60


# The inline path and its writer lock are SQLite's.
@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_a_held_writer_does_not_stall_the_event_loop(client: Any, engine: Any) -> None:
    assert engine.dialect.name == "sqlite"
    load_deck(client)
    ensure_plans(client)
    tenant = make_tenant(client, balance="50.00")
    user = make_user(client, tenant.id, usage_location="US", licenses=PAYG)
    held, release = threading.Event(), threading.Event()
    answers: dict[str, Any] = {}

    def hold_the_writer() -> None:  # as a CDR batch or a background job would
        with write_transaction(engine):
            held.set()
            release.wait(HOLD_SECONDS)

    def start_a_call() -> None:
        body = call_body(tenant, "user_out", US_NUMBER, user=user)
        answers["start"] = client.post("/v1/calls", json=body, headers=tenant.charging)

    def ask_health() -> None:
        answers["healthz"] = client.get("/healthz")

    holder = threading.Thread(target=hold_the_writer)
    holder.start()
    try:
        assert held.wait(WAIT_SECONDS)
        starter = threading.Thread(target=start_a_call)
        starter.start()
        starter.join(0.5)  # the start reaches the writer and waits for it
        assert starter.is_alive(), answers.get("start")
        health = threading.Thread(target=ask_health)
        health.start()
        health.join(WAIT_SECONDS)
        # Answered while the writer is still held: the waiting start is not
        # blocking the loop.
        assert not health.is_alive() and not release.is_set()
        assert answers["healthz"].status_code == 200
    finally:
        release.set()
        holder.join(WAIT_SECONDS)
    starter.join(WAIT_SECONDS)
    assert answers["start"].status_code == 201, answers["start"].text
    assert answers["start"].json()["decision"] == "allow"
