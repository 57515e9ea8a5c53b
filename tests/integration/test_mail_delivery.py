"""The mail worker pass against a real SMTP server process (SPEC §4): an
outage, a crash between send and record, parallel workers, refusals, retries
and SMTP login. Time is simulated by passing ``now=`` forward, never by sleeping."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from commcredits.adapters.mail import Mailer, MailError, SmtpMailer, parse_smtp_url
from commcredits.api import routes_notifications
from commcredits.api.app import create_app
from commcredits.config import sqlalchemy_url
from commcredits.services import notify
from commcredits.services.clock import as_utc
from commcredits.services.clock import now as clock_now
from commcredits.store import tables as t
from commcredits.store.db import make_engine
from commcredits.store.migrate import upgrade
from tests.conftest import BACKENDS, fresh_database_url, make_settings
from tests.support.api import OPERATOR, create_tenant, create_user, unique
from tests.support.smtp import SmtpSink

MAIL_FROM = "credits@commcredits.test"
NOTIFICATIONS_PATH = "/v1/tenants/{tenant_id}/notifications"
LEASE = timedelta(seconds=notify.SENDING_LEASE_SECONDS)


class WorkerCrash(Exception):
    """Stands for the process dying: deliver_pending does not catch it."""


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, pg_cluster: Any) -> str:
    """A fresh database per backend, migrated once: the apps below skip it."""
    url = fresh_database_url(request.param, pg_cluster)
    engine = make_engine(sqlalchemy_url(url))
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture()
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink()
    try:
        yield server.start()
    finally:
        server.stop()


def make_app(database_url: str, smtp_url: str) -> Any:
    app = create_app(
        make_settings(database_url, COMMCREDITS_SMTP_URL=smtp_url, COMMCREDITS_MAIL_FROM=MAIL_FROM),
        migrate=False,
    )
    if not any(getattr(route, "path", "") == NOTIFICATIONS_PATH for route in app.routes):
        app.include_router(routes_notifications.router)
    return app


@pytest.fixture(autouse=True)
def quiet_outbox(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests share a database per backend; a delivery one test leaves due must
    not be sent by the next one. Park them all as failed afterwards."""
    yield
    if "database_url" not in request.fixturenames:
        return
    engine = make_engine(sqlalchemy_url(request.getfixturevalue("database_url")))
    d = t.deliveries
    try:
        with engine.begin() as connection:
            connection.execute(
                update(d).where(d.c.status.in_(("pending", "sending"))).values(status="failed")
            )
    finally:
        engine.dispose()


def tenant_with_admins(client: TestClient, count: int, **emails: str) -> tuple[str, set[str]]:
    tenant = create_tenant(client)
    addresses = set()
    for _ in range(count):
        addresses.add(create_user(client, tenant["id"], roles=["billing_admin"])["upn"])
    for label, email in emails.items():
        create_user(
            client,
            tenant["id"],
            upn=f"{unique(label)}@contoso.example",
            email=email,
            roles=["global_admin"],
        )
        addresses.add(email)
    return tenant["id"], addresses


def depleted(client: TestClient, tenant_id: str, times: int = 1) -> None:
    """Each round trip above zero and back is one balance_depleted event."""
    for _ in range(times):
        for amount in ("75", "-75"):
            response = client.post(
                f"/v1/tenants/{tenant_id}/credits/adjustments",
                json={"amount": amount, "reason": "test"},
                headers=OPERATOR,
            )
            assert response.status_code == 201, response.text


def deliveries(engine: Any, tenant_id: str) -> list[Any]:
    d = t.deliveries
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(d).where(d.c.tenant_id == tenant_id).order_by(d.c.message_id)
            ).all()
        )


def run_until_idle(app: Any, at: datetime, mailer: Mailer | None = None, batch: int = 50) -> int:
    ctx = app.state.ctx
    total = 0
    while worked := notify.deliver_pending(
        ctx.engine, ctx.settings, now=at, mailer=mailer, batch=batch
    ):
        total += worked
    return total


def counts_for(sink: SmtpSink, tenant_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in sink.received():
        if item.message["X-Commcredits-Tenant"] == tenant_id:
            counts[item.message_id] = counts.get(item.message_id, 0) + 1
    return counts


def listing(client: TestClient, tenant_id: str) -> list[dict[str, Any]]:
    response = client.get(NOTIFICATIONS_PATH.format(tenant_id=tenant_id), headers=OPERATOR)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


# --- an SMTP outage ------------------------------------------------------------------------------


def test_outage_then_recovery_delivers_every_message_exactly_once(database_url, sink):
    app = make_app(database_url, sink.url)
    engine = app.state.ctx.engine
    sink.stop()  # down before anything happens
    with TestClient(app, raise_server_exceptions=False) as client:
        tenant_id, addresses = tenant_with_admins(client, 3)
        depleted(client, tenant_id, times=2)
        expected = {row.message_id for row in deliveries(engine, tenant_id)}
        assert len(expected) == 2 * len(addresses)

        start = clock_now()
        assert run_until_idle(app, start) >= len(expected)
        for row in deliveries(engine, tenant_id):
            assert (row.status, row.attempts) == ("pending", 1)
            assert "cannot reach the SMTP server" in row.last_error
            assert as_utc(row.next_attempt_at) == start + timedelta(seconds=5)
        assert run_until_idle(app, start + timedelta(seconds=1)) == 0  # backing off
        assert run_until_idle(app, start + timedelta(seconds=10)) >= len(expected)  # still down
        assert {row.attempts for row in deliveries(engine, tenant_id)} == {2}
        items = listing(client, tenant_id)
        assert {item["status"] for item in items} == {"pending"}
        assert all(r["last_error"] for item in items for r in item["recipients"])

        sink.start()  # back up, on the same port
        run_until_idle(app, start + timedelta(minutes=1))
        assert counts_for(sink, tenant_id) == dict.fromkeys(expected, 1)
        rows = deliveries(engine, tenant_id)
        assert {(row.status, row.attempts, row.last_error) for row in rows} == {("sent", 3, None)}
        assert run_until_idle(app, start + timedelta(hours=1)) == 0
        assert counts_for(sink, tenant_id) == dict.fromkeys(expected, 1)
        items = listing(client, tenant_id)
        assert {item["status"] for item in items} == {"sent"}
        assert all(item["sent_at"] for item in items)


# --- a crash between the SMTP send and recording it -------------------------------------------------


class CrashingMailer:
    """The real SMTP client, until the process "dies" at the n-th message:
    just before sending it, or just after the server accepted it."""

    def __init__(self, inner: Mailer, crash_at: int, after_send: bool) -> None:
        self.inner = inner
        self.crash_at = crash_at
        self.after_send = after_send
        self.count = 0

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        self.count += 1
        if self.count == self.crash_at and not self.after_send:
            raise WorkerCrash()
        self.inner.send(message, sender=sender, recipient=recipient)
        if self.count == self.crash_at:
            raise WorkerCrash()

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("after_send", [False, True], ids=["before-send", "after-send"])
def test_crash_mid_batch_loses_nothing_and_resends_only_with_the_same_message_id(
    database_url, sink, after_send
):
    app = make_app(database_url, sink.url)
    engine = app.state.ctx.engine
    with TestClient(app, raise_server_exceptions=False) as client:
        tenant_id, _ = tenant_with_admins(client, 4)
        depleted(client, tenant_id, times=2)
    expected = {row.message_id for row in deliveries(engine, tenant_id)}
    assert len(expected) == 8

    start = clock_now()
    crashing = CrashingMailer(SmtpMailer(parse_smtp_url(sink.url)), 3, after_send)
    with pytest.raises(WorkerCrash):
        notify.deliver_pending(engine, app.state.ctx.settings, now=start, mailer=crashing)
    rows = deliveries(engine, tenant_id)
    assert sorted(row.status for row in rows) == ["sending"] * 6 + ["sent"] * 2
    in_flight = 3 if after_send else 2
    assert sum(counts_for(sink, tenant_id).values()) == in_flight

    # Within the lease nobody touches the claimed rows: the dead worker may
    # still be sending, as far as anyone can tell.
    assert run_until_idle(app, start + LEASE - timedelta(seconds=1)) == 0
    # After it, the rows are claimed again and sent with their Message-IDs.
    run_until_idle(app, start + LEASE + timedelta(seconds=1))
    rows = deliveries(engine, tenant_id)
    assert {row.status for row in rows} == {"sent"}
    counts = counts_for(sink, tenant_id)
    assert set(counts) == expected  # nothing lost
    # A mailbox that drops repeated Message-IDs shows each message once; the
    # server saw a second copy only of the one message in flight at the crash.
    expected_copies = sorted([1] * 7 + [2]) if after_send else [1] * 8
    assert sorted(counts.values()) == expected_copies


def test_parallel_workers_never_send_one_message_twice(database_url, sink):
    app = make_app(database_url, sink.url)
    engine = app.state.ctx.engine
    with TestClient(app, raise_server_exceptions=False) as client:
        tenant_id, _ = tenant_with_admins(client, 6)
        depleted(client, tenant_id, times=3)
    expected = {row.message_id for row in deliveries(engine, tenant_id)}
    assert len(expected) == 18
    at = clock_now()
    errors: list[BaseException] = []
    gate = threading.Barrier(4)

    def worker() -> None:
        try:
            gate.wait()
            run_until_idle(app, at, batch=2)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert counts_for(sink, tenant_id) == dict.fromkeys(expected, 1)
    assert {(row.status, row.attempts) for row in deliveries(engine, tenant_id)} == {("sent", 1)}


# --- refusals and retries --------------------------------------------------------------------------


def test_refused_recipients_fail_or_retry_by_reply_code(database_url):
    refused = f"{unique('gone')}@mail.contoso.example"
    busy = f"{unique('busy')}@mail.contoso.example"
    server = SmtpSink(rejects={refused: 550, busy: 451}).start()
    try:
        app = make_app(database_url, server.url)
        engine = app.state.ctx.engine
        with TestClient(app, raise_server_exceptions=False) as client:
            tenant_id, addresses = tenant_with_admins(client, 1, gone=refused, busy=busy)
            depleted(client, tenant_id)
            start = clock_now()
            run_until_idle(app, start)
            rows = {row.recipient: row for row in deliveries(engine, tenant_id)}
            assert rows[refused].status == "failed" and "550" in rows[refused].last_error
            assert rows[busy].status == "pending" and "451" in rows[busy].last_error
            (good,) = addresses - {refused, busy}
            assert rows[good].status == "sent"
            (item,) = listing(client, tenant_id)
            assert item["status"] == "pending"  # busy may still get through

            # The last permitted attempt fails too: the delivery gives up.
            d = t.deliveries
            with engine.begin() as connection:
                connection.execute(
                    update(d)
                    .where(d.c.tenant_id == tenant_id, d.c.recipient == busy)
                    .values(attempts=notify.MAX_DELIVERY_ATTEMPTS - 1)
                )
            run_until_idle(app, start + timedelta(hours=1))
            rows = {row.recipient: row for row in deliveries(engine, tenant_id)}
            assert rows[busy].status == "failed"
            assert rows[busy].attempts == notify.MAX_DELIVERY_ATTEMPTS
            (item,) = listing(client, tenant_id)
            assert (item["status"], item["sent_at"]) == ("failed", None)
        assert set(counts_for(server, tenant_id).values()) == {1}
        assert len(counts_for(server, tenant_id)) == 1
    finally:
        server.stop()


def test_stale_claim_after_the_last_attempt_is_given_up(database_url, sink):
    app = make_app(database_url, sink.url)
    engine = app.state.ctx.engine
    with TestClient(app, raise_server_exceptions=False) as client:
        tenant_id, _ = tenant_with_admins(client, 1)
        depleted(client, tenant_id)
    start = clock_now()
    d = t.deliveries
    with engine.begin() as connection:
        connection.execute(
            update(d)
            .where(d.c.tenant_id == tenant_id)
            .values(status="sending", attempts=notify.MAX_DELIVERY_ATTEMPTS, next_attempt_at=start)
        )
    run_until_idle(app, start + timedelta(seconds=1))
    (row,) = deliveries(engine, tenant_id)
    assert (row.status, row.last_error) == ("failed", "the last attempt did not finish")
    assert counts_for(sink, tenant_id) == {}


def test_smtp_login(database_url):
    server = SmtpSink(auth="mailer:s3cret pass").start()
    try:
        good = f"smtp://mailer:s3cret%20pass@127.0.0.1:{server.port}"
        bad = f"smtp://mailer:wrong@127.0.0.1:{server.port}"
        wrong_app = make_app(database_url, bad)
        with TestClient(wrong_app, raise_server_exceptions=False) as client:
            tenant_id, addresses = tenant_with_admins(client, 2)
            depleted(client, tenant_id)
        start = clock_now()
        run_until_idle(wrong_app, start)
        rows = deliveries(wrong_app.state.ctx.engine, tenant_id)
        assert {row.status for row in rows} == {"pending"}
        assert all("login failed" in row.last_error for row in rows)

        right_app = make_app(database_url, good)
        run_until_idle(right_app, start + timedelta(minutes=1))
        rows = deliveries(right_app.state.ctx.engine, tenant_id)
        assert {row.status for row in rows} == {"sent"}
        assert {item.recipient for item in server.received()} >= addresses
        assert set(counts_for(server, tenant_id).values()) == {1}
    finally:
        server.stop()


# --- pure parts ------------------------------------------------------------------------------------


def test_retry_delay_doubles_from_five_seconds_to_a_fifteen_minute_cap():
    delays = [notify.retry_delay_seconds(n) for n in range(1, 13)]
    assert delays[:5] == [5, 10, 20, 40, 80]
    assert max(delays) == delays[-1] == 15 * 60
    assert all(a <= b for a, b in zip(delays, delays[1:], strict=False))
    assert notify.retry_delay_seconds(notify.MAX_DELIVERY_ATTEMPTS) == 15 * 60


@pytest.mark.parametrize(
    ("url", "host", "port", "security", "username", "password"),
    [
        ("smtp://mail.example", "mail.example", 25, "plain", None, None),
        ("smtp://127.0.0.1:2525", "127.0.0.1", 2525, "plain", None, None),
        ("smtp://mail.example?starttls=1", "mail.example", 587, "starttls", None, None),
        ("smtp+starttls://mail.example:2587", "mail.example", 2587, "starttls", None, None),
        ("smtps://u%40x:p%3Aw@mail.example", "mail.example", 465, "tls", "u@x", "p:w"),
        (
            "smtp://user:pw@mail.example:25?starttls=true",
            "mail.example",
            25,
            "starttls",
            "user",
            "pw",
        ),
    ],
)
def test_smtp_url_forms(url, host, port, security, username, password):
    target = parse_smtp_url(url)
    assert (target.host, target.port, target.security) == (host, port, security)
    assert (target.username, target.password) == (username, password)
    if password:
        assert password not in repr(target)


@pytest.mark.parametrize("url", ["http://mail.example", "smtp://", "mail.example:25"])
def test_bad_smtp_urls_are_refused(url):
    with pytest.raises(ValueError):
        parse_smtp_url(url)


def test_unreachable_server_is_a_transient_connection_error(sink):
    sink.stop()
    mailer = SmtpMailer(parse_smtp_url(sink.url))
    message = EmailMessage()
    message.set_content("x")
    with pytest.raises(MailError) as raised:
        mailer.send(message, sender=MAIL_FROM, recipient="a@contoso.example")
    assert raised.value.transient and raised.value.connection
