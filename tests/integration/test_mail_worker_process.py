"""The mail worker as the real processes an operator runs: `commcredits
mail-worker` killed with SIGKILL mid-batch and started again, two of them on
one PostgreSQL database, the worker inside `commcredits serve`, and both
commands refusing SMTP settings no mail could go out with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from commcredits.services.clock import now as clock_now
from commcredits.store import tables as t
from tests.conftest import BACKENDS, OPERATOR_TOKEN
from tests.support.api import OPERATOR, create_tenant, create_user
from tests.support.mail import (
    MAIL_FROM,
    NOTIFICATIONS_PATH,
    counts_for,
    deliveries,
    depleted,
    make_app,
    migrated_database,
    park_outbox,
    tenant_with_admins,
)
from tests.support.server import ServerProcess
from tests.support.smtp import SmtpSink

WAIT_SECONDS = 60


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, pg_cluster: Any) -> str:
    return migrated_database(request.param, pg_cluster)


@pytest.fixture(autouse=True)
def quiet_outbox(request: pytest.FixtureRequest) -> Iterator[None]:
    """A worker process sends whatever is due in its database: leave nothing due."""
    if "database_url" in request.fixturenames:
        park_outbox(request.getfixturevalue("database_url"))
    yield
    if "database_url" in request.fixturenames:
        park_outbox(request.getfixturevalue("database_url"))


@pytest.fixture()
def slow_sink() -> Iterator[SmtpSink]:
    """Stores each message, then takes a moment before answering 250."""
    server = SmtpSink(delay=0.1)
    try:
        yield server.start()
    finally:
        server.stop()


def worker_command(
    database_url: str, smtp_url: str, log: Path, *arguments: str, mail_from: str = MAIL_FROM
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        COMMCREDITS_DATABASE_URL=database_url,
        COMMCREDITS_SMTP_URL=smtp_url,
        COMMCREDITS_MAIL_FROM=mail_from,
        PYTHONUNBUFFERED="1",
    )
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "commcredits.cli", "mail-worker", *arguments],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def identity(message: Any) -> tuple[str, ...]:
    headers = ("Message-ID", "Date", "From", "To", "Subject")
    body = message.get_body(("plain",)).get_content()
    return (*(str(message[name]) for name in headers), body)


# --- SIGKILL mid-batch --------------------------------------------------------------------------


def test_a_worker_killed_mid_batch_loses_nothing(database_url, slow_sink, tmp_path):
    app = make_app(database_url, slow_sink.url)
    engine = app.state.ctx.engine
    with TestClient(app, raise_server_exceptions=False) as client:
        tenant_id, _ = tenant_with_admins(client, 6)
        depleted(client, tenant_id, times=5)
    expected = {row.message_id for row in deliveries(engine, tenant_id)}
    assert len(expected) == 30

    log = tmp_path / "worker.log"
    worker = worker_command(database_url, slow_sink.url, log, "--poll-seconds", "0.1")
    try:
        wait_for(lambda: len(counts_for(slow_sink, tenant_id)) >= 8, "eight mails")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    rows = deliveries(engine, tenant_id)
    statuses = [row.status for row in rows]
    assert "sending" in statuses, statuses  # killed with a claimed batch in hand
    assert len(counts_for(slow_sink, tenant_id)) < len(expected)

    # The dead worker's lease runs out (moved here instead of waited for).
    d = t.deliveries
    with engine.begin() as connection:
        connection.execute(
            update(d)
            .where(d.c.tenant_id == tenant_id, d.c.status == "sending")
            .values(next_attempt_at=clock_now())
        )
    again = worker_command(database_url, slow_sink.url, log, "--once")
    assert again.wait(timeout=WAIT_SECONDS) == 0, log.read_text()

    assert {row.status for row in deliveries(engine, tenant_id)} == {"sent"}
    counts = counts_for(slow_sink, tenant_id)
    assert set(counts) == expected  # nothing lost: one distinct Message-ID per delivery
    # At most the one message in flight at the kill came twice, and then with
    # the same Message-ID and Date: a mailbox de-duplicating by Message-ID
    # shows every message once.
    assert sum(counts.values()) - len(counts) <= 1, counts
    for message_id, copies in counts.items():
        if copies > 1:
            same = [m.message for m in slow_sink.received() if m.message_id == message_id]
            # Only the MIME boundary, drawn at random, may differ.
            assert len({identity(m) for m in same}) == 1


# --- several processes ----------------------------------------------------------------------------


# Several worker processes are a PostgreSQL setup (SQLite has one writer).
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_worker_processes_on_postgresql_send_each_message_once(
    database_url, slow_sink, tmp_path
):
    assert database_url.startswith("postgres")
    senders = ["one@commcredits.test", "two@commcredits.test"]
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    workers = [
        worker_command(database_url, slow_sink.url, log, "--poll-seconds", "0.05", mail_from=s)
        for s, log in zip(senders, logs, strict=True)
    ]
    try:
        for log in logs:
            wait_for(lambda log=log: "mail worker:" in log.read_text(), "the workers to start")
        app = make_app(database_url, slow_sink.url)
        engine = app.state.ctx.engine
        with TestClient(app, raise_server_exceptions=False) as client:
            tenant_id, _ = tenant_with_admins(client, 8)
            depleted(client, tenant_id, times=6)
        expected = {row.message_id for row in deliveries(engine, tenant_id)}
        assert len(expected) == 48
        wait_for(
            lambda: {row.status for row in deliveries(engine, tenant_id)} == {"sent"},
            "every delivery sent",
        )
    finally:
        codes = [stop(worker) for worker in workers]
    assert codes == [0, 0], [log.read_text() for log in logs]
    assert counts_for(slow_sink, tenant_id) == dict.fromkeys(expected, 1)
    by_sender = {s: 0 for s in senders}
    for mail in slow_sink.received():
        if mail.message["X-Commcredits-Tenant"] == tenant_id:
            by_sender[mail.mail_from] += 1
    assert all(by_sender.values()), by_sender  # both took part


def test_the_server_processes_own_worker_sends_an_event(database_url, tmp_path):
    sink = SmtpSink().start()
    server = ServerProcess(
        database_url=database_url,
        operator_token=OPERATOR_TOKEN,
        extra_env={
            "COMMCREDITS_BACKGROUND_WORKERS": "1",
            "COMMCREDITS_SMTP_URL": sink.url,
            "COMMCREDITS_MAIL_FROM": MAIL_FROM,
        },
    )
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            tenant_id = create_tenant(client)["id"]
            admin = create_user(client, tenant_id, roles=["global_admin"])
            depleted(client, tenant_id)  # a balance_depleted, through the API
            wait_for(lambda: bool(counts_for(sink, tenant_id)), "the mail")
            response = client.get(NOTIFICATIONS_PATH.format(tenant_id=tenant_id), headers=OPERATOR)
        assert response.status_code == 200, response.text
        (item,) = response.json()["items"]
        assert (item["event"], item["status"]) == ("balance_depleted", "sent")
        (mail,) = [m for m in sink.received() if m.message["X-Commcredits-Tenant"] == tenant_id]
        assert (mail.recipient, mail.mail_from) == (admin["upn"], MAIL_FROM)
        assert mail.message_id == item["deliveries"][0]["message_id"]
    finally:
        server.stop()
        sink.stop()


# --- settings refused at start ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "mail-worker", "demo"])
@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("COMMCREDITS_SMTP_URL", "smtp://mail.example:port", "COMMCREDITS_SMTP_URL: the port"),
        ("COMMCREDITS_SMTP_CA_FILE", "/nonexistent/ca.pem", "COMMCREDITS_SMTP_CA_FILE"),
        ("COMMCREDITS_MAIL_FROM", "Credits <c@x.example>", "COMMCREDITS_MAIL_FROM"),
    ],
)
def test_bad_mail_settings_refuse_to_start(tmp_path, command, setting, value, says):
    env = dict(os.environ)
    env.update(
        COMMCREDITS_DATABASE_URL=f"sqlite:///{tmp_path}/never.db",
        COMMCREDITS_OPERATOR_TOKEN=OPERATOR_TOKEN,
        COMMCREDITS_SMTP_URL="smtp://127.0.0.1:25",
        COMMCREDITS_MAIL_FROM=MAIL_FROM,
    )
    env[setting] = value
    arguments = {"serve": ["--port", "1"], "demo": ["--no-serve"], "mail-worker": ["--once"]}[
        command
    ]
    done = subprocess.run(
        [sys.executable, "-m", "commcredits.cli", command, *arguments],
        env=env,
        capture_output=True,
        timeout=WAIT_SECONDS,
    )
    assert done.returncode == 2, done
    assert says in done.stderr.decode(), done.stderr
    assert not (tmp_path / "never.db").exists()  # refused before touching anything
