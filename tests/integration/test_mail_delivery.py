"""The mail worker pass against a real SMTP server process (SPEC §4): an
outage, a crash between send and record, parallel workers, refusals, retries
and SMTP login. Time is simulated by passing ``now=`` forward, never by sleeping."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from commcredits.adapters.mail import (
    Mailer,
    MailError,
    SmtpMailer,
    check_mail_settings,
    parse_smtp_url,
    smtp_address,
)
from commcredits.services import notify
from commcredits.services.clock import as_utc
from commcredits.services.clock import now as clock_now
from commcredits.store import tables as t
from tests.conftest import BACKENDS
from tests.support.api import unique
from tests.support.mail import (
    MAIL_FROM,
    counts_for,
    deliveries,
    depleted,
    listing,
    make_app,
    migrated_database,
    park_outbox,
    run_until_idle,
    tenant_with_admins,
)
from tests.support.smtp import SmtpSink, make_certificate

LEASE = timedelta(seconds=notify.SENDING_LEASE_SECONDS)
CAP = timedelta(seconds=notify.BACKOFF_CAP_SECONDS)


class WorkerCrash(Exception):
    """Stands for the process dying: deliver_pending does not catch it."""


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, pg_cluster: Any) -> str:
    return migrated_database(request.param, pg_cluster)


@pytest.fixture()
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def quiet_outbox(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests share a database per backend; a delivery one test leaves due must
    not be sent by the next one. Park them all as failed afterwards."""
    yield
    if "database_url" in request.fixturenames:
        park_outbox(request.getfixturevalue("database_url"))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    cert, key = make_certificate(tmp_path_factory.mktemp("tls"))
    return str(cert), str(key)


def set_rows(engine: Any, tenant_id: str, **values: Any) -> None:
    d = t.deliveries
    with engine.begin() as connection:
        connection.execute(update(d).where(d.c.tenant_id == tenant_id).values(**values))


# --- an SMTP outage ------------------------------------------------------------------------------


def test_a_day_and_a_half_outage_loses_nothing_and_counts_no_attempt(database_url, sink):
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
            assert (row.status, row.attempts) == ("pending", 0)
            assert "cannot reach the SMTP server" in row.last_error
            assert as_utc(row.next_attempt_at) == start + timedelta(seconds=5)
        assert run_until_idle(app, start + timedelta(seconds=1)) == 0  # backing off

        # Every pass finds the server down; the wait grows to the cap and stays there.
        at, waits = start, []
        for _ in range(160):
            at = max(as_utc(row.next_attempt_at) for row in deliveries(engine, tenant_id))
            assert run_until_idle(app, at) >= len(expected)
            rows = deliveries(engine, tenant_id)
            assert {(row.status, row.attempts) for row in rows} == {("pending", 0)}
            waits.append(max(as_utc(row.next_attempt_at) for row in rows) - at)
        assert at - start > timedelta(hours=36)
        assert waits[:3] == [timedelta(seconds=5), timedelta(seconds=10), timedelta(seconds=20)]
        assert waits[-1] == CAP and max(waits) == CAP
        items = listing(client, tenant_id)
        assert {item["status"] for item in items} == {"pending"}
        assert all(r["last_error"] for item in items for r in item["deliveries"])

        sink.start()  # back up, on the same port
        run_until_idle(app, at + CAP)
        assert counts_for(sink, tenant_id) == dict.fromkeys(expected, 1)
        rows = deliveries(engine, tenant_id)
        assert {(row.status, row.attempts, row.last_error) for row in rows} == {("sent", 1, None)}
        assert run_until_idle(app, at + timedelta(hours=1)) == 0
        assert counts_for(sink, tenant_id) == dict.fromkeys(expected, 1)
        items = listing(client, tenant_id)
        assert {item["status"] for item in items} == {"sent"}
        assert all(item["sent_at"] for item in items)


# --- addresses the server may not take -------------------------------------------------------


@pytest.mark.parametrize("smtputf8", [False, True], ids=["ascii-server", "smtputf8-server"])
def test_a_non_ascii_address_never_holds_up_the_others(database_url, smtputf8):
    local = f"jos\u00e9.{unique('x')}@mail.contoso.example"  # needs SMTPUTF8
    idn = f"{unique('ops')}@b\u00fccher.example"  # an IDNA domain: plain ASCII on the wire
    server = SmtpSink(smtputf8=smtputf8).start()
    try:
        app = make_app(database_url, server.url)
        engine = app.state.ctx.engine
        with TestClient(app, raise_server_exceptions=False) as client:
            tenant_id, addresses = tenant_with_admins(client, 3, local=local, idn=idn)
            depleted(client, tenant_id, times=2)
            start = clock_now()
            # The internationalized address leads every batch.
            d = t.deliveries
            with engine.begin() as connection:
                connection.execute(
                    update(d)
                    .where(d.c.tenant_id == tenant_id, d.c.recipient == local)
                    .values(next_attempt_at=start - timedelta(minutes=1))
                )
            run_until_idle(app, start, batch=3)
            rows = deliveries(engine, tenant_id)
            items = listing(client, tenant_id)
        ascii_idn = idn.replace("b\u00fccher.example", "xn--bcher-kva.example")
        received = [
            item for item in server.received() if item.message["X-Commcredits-Tenant"] == tenant_id
        ]
        by_address: dict[str, int] = {}
        for item in received:
            by_address[item.recipient] = by_address.get(item.recipient, 0) + 1
        others = sorted(addresses - {local, idn})
        assert {(row.recipient, row.status) for row in rows if row.recipient != local} == {
            (address, "sent") for address in [*others, idn]
        }
        assert {a: by_address.get(a) for a in [*others, ascii_idn]} == dict.fromkeys(
            [*others, ascii_idn], 2
        )
        local_rows = [row for row in rows if row.recipient == local]
        if smtputf8:
            assert {(row.status, row.attempts) for row in local_rows} == {("sent", 1)}
            assert by_address.get(local) == 2
            assert all(item.smtputf8 for item in received if item.recipient == local)
        else:
            assert {(row.status, row.attempts) for row in local_rows} == {("failed", 1)}
            assert all("SMTPUTF8" in row.last_error for row in local_rows)
            assert local not in by_address
            assert {item["status"] for item in items} == {"failed"}
    finally:
        server.stop()


def test_an_address_no_smtp_can_carry_fails_alone(database_url, sink):
    broken = f"{unique('x')}@bad..\u00e9xample"  # an empty label: no IDNA form
    app = make_app(database_url, sink.url)
    engine = app.state.ctx.engine
    with TestClient(app, raise_server_exceptions=False) as client:
        tenant_id, addresses = tenant_with_admins(client, 2, broken=broken)
        depleted(client, tenant_id)
    run_until_idle(app, clock_now())
    rows = {row.recipient: row for row in deliveries(engine, tenant_id)}
    assert rows[broken].status == "failed" and "cannot build the mail" in rows[broken].last_error
    assert {rows[a].status for a in addresses - {broken}} == {"sent"}
    assert len(counts_for(sink, tenant_id)) == 2


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
        assert {(row.status, row.attempts) for row in rows} == {("pending", 0)}
        assert all("login failed" in row.last_error for row in rows)

        right_app = make_app(database_url, good)
        run_until_idle(right_app, start + timedelta(minutes=1))
        rows = deliveries(right_app.state.ctx.engine, tenant_id)
        assert {row.status for row in rows} == {"sent"}
        assert {item.recipient for item in server.received()} >= addresses
        assert set(counts_for(server, tenant_id).values()) == {1}
    finally:
        server.stop()


@pytest.mark.parametrize("refusal", ["sender", "recipient"])
def test_a_session_refusal_of_any_command_waits_uncounted(database_url, refusal):
    """An "authentication required" is about the session even when it answers a
    RCPT: every recipient would get it, so none may be failed for it."""
    admin = f"{unique('admin')}@mail.contoso.example"
    if refusal == "sender":
        server = SmtpSink(auth="mailer:s3cret").start()  # and the URL does not log in
    else:
        server = SmtpSink(rejects={admin: 530}).start()
    try:
        app = make_app(database_url, server.url)
        with TestClient(app, raise_server_exceptions=False) as client:
            tenant_id, _ = tenant_with_admins(client, 0, admin=admin)
            depleted(client, tenant_id, times=2)
        run_until_idle(app, clock_now())
        rows = deliveries(app.state.ctx.engine, tenant_id)
        assert {(row.status, row.attempts) for row in rows} == {("pending", 0)}
        assert all("530" in row.last_error for row in rows)
        assert server.received() == []
    finally:
        server.stop()


# --- TLS -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_tls_with_login_delivers_and_a_wrong_password_waits(database_url, certificate, tls):
    cert, key = certificate
    server = SmtpSink(tls=tls, cert_file=cert, key_file=key, auth="mailer:s3cret").start()
    try:
        scheme = "smtp+starttls" if tls == "starttls" else "smtps"
        base = f"127.0.0.1:{server.port}"
        ca = {"COMMCREDITS_SMTP_CA_FILE": cert}
        wrong_app = make_app(database_url, f"{scheme}://mailer:nope@{base}", **ca)
        with TestClient(wrong_app, raise_server_exceptions=False) as client:
            tenant_id, addresses = tenant_with_admins(client, 2)
            depleted(client, tenant_id)
        start = clock_now()
        run_until_idle(wrong_app, start)
        engine = wrong_app.state.ctx.engine
        rows = deliveries(engine, tenant_id)
        assert {(row.status, row.attempts) for row in rows} == {("pending", 0)}
        assert all("login failed" in row.last_error for row in rows)

        right_app = make_app(database_url, f"{scheme}://mailer:s3cret@{base}", **ca)
        run_until_idle(right_app, start + timedelta(minutes=1))
        rows = deliveries(engine, tenant_id)
        assert {(row.status, row.attempts) for row in rows} == {("sent", 1)}
        mails = [m for m in server.received() if m.message["X-Commcredits-Tenant"] == tenant_id]
        assert sorted(m.recipient for m in mails) == sorted(addresses)
        assert all(m.tls for m in mails)
    finally:
        server.stop()


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_an_untrusted_certificate_is_a_session_failure_retried(
    database_url, certificate, tmp_path, tls
):
    cert, key = certificate
    other_ca, _ = make_certificate(tmp_path)  # trusts some other server, not this one
    server = SmtpSink(tls=tls, cert_file=cert, key_file=key).start()
    try:
        untrusting = make_app(database_url, server.url, COMMCREDITS_SMTP_CA_FILE=str(other_ca))
        with TestClient(untrusting, raise_server_exceptions=False) as client:
            tenant_id, _ = tenant_with_admins(client, 2)
            depleted(client, tenant_id)
        start = clock_now()
        run_until_idle(untrusting, start)
        engine = untrusting.state.ctx.engine
        rows = deliveries(engine, tenant_id)
        assert {(row.status, row.attempts) for row in rows} == {("pending", 0)}
        assert all("certificate is not trusted" in row.last_error for row in rows), rows
        assert server.received() == []

        # The operator points the service at the right CA: nothing was lost.
        trusting = make_app(database_url, server.url, COMMCREDITS_SMTP_CA_FILE=cert)
        run_until_idle(trusting, start + timedelta(minutes=1))
        assert {row.status for row in deliveries(engine, tenant_id)} == {"sent"}
        assert set(counts_for(server, tenant_id).values()) == {1}
    finally:
        server.stop()


def test_ssl_cert_file_is_honoured_without_a_ca_setting(certificate, monkeypatch):
    cert, key = certificate
    server = SmtpSink(tls="starttls", cert_file=cert, key_file=key).start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", cert)
        mailer = SmtpMailer(parse_smtp_url(server.url))
        message = EmailMessage()
        message["Message-ID"] = "<ssl-cert-file@commcredits>"
        message.set_content("x")
        mailer.send(message, sender=MAIL_FROM, recipient="a@contoso.example")
        mailer.close()
        assert [(m.recipient, m.tls) for m in server.received()] == [("a@contoso.example", True)]
    finally:
        server.stop()


# --- what the listing shows ------------------------------------------------------------------------


def test_a_delivery_being_sent_is_listed_as_pending(database_url, sink):
    app = make_app(database_url, sink.url)
    engine = app.state.ctx.engine
    with TestClient(app, raise_server_exceptions=False) as client:
        tenant_id, _ = tenant_with_admins(client, 2)
        depleted(client, tenant_id)
        crashing = CrashingMailer(SmtpMailer(parse_smtp_url(sink.url)), 1, after_send=True)
        with pytest.raises(WorkerCrash):
            notify.deliver_pending(engine, app.state.ctx.settings, mailer=crashing)
        assert {row.status for row in deliveries(engine, tenant_id)} == {"sending"}
        (item,) = listing(client, tenant_id)
    assert item["status"] == "pending"
    assert [r["status"] for r in item["deliveries"]] == ["pending", "pending"]
    assert [r["next_attempt_at"] for r in item["deliveries"]] == [None, None]


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


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://mail.example", "unknown scheme"),
        ("smtp://", "a host is required"),
        ("mail.example:25", "unknown scheme"),
        ("smtp://mail.example:port", "the port"),
        ("smtp://mail.example:70000", "the port"),
        ("smtp://mail.example?timeout=soon", "timeout"),
        ("smtp://mail.example?timeout=0", "timeout"),
        ("smtp://mail.example?starttls=maybe", "starttls"),
        ("smtp://mail.example?tls=1", "unknown parameter"),
    ],
)
def test_bad_smtp_urls_are_refused(url, says):
    with pytest.raises(ValueError, match=says) as raised:
        parse_smtp_url(url)
    assert "COMMCREDITS_SMTP_URL" in str(raised.value)


def test_mail_settings_checked_at_start(tmp_path, certificate):
    cert, _ = certificate
    assert check_mail_settings("smtp://mail.example", "a@b.example", cert).ca_file == cert
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    for ca, says in [(str(tmp_path / "none.pem"), "no such file"), (str(not_pem), "PEM")]:
        with pytest.raises(ValueError, match=says):
            check_mail_settings("smtp://mail.example", "a@b.example", ca)
    for sender in ["Credits <a@b.example>", "nobody", "jos\u00e9@b.example", "a@b..\u00e9"]:
        with pytest.raises(ValueError, match="COMMCREDITS_MAIL_FROM"):
            check_mail_settings("smtp://mail.example", sender, None)


def test_smtp_address_takes_internationalized_domains_to_ascii():
    assert smtp_address("ops@b\u00fccher.example") == "ops@xn--bcher-kva.example"
    assert smtp_address("jos\u00e9@b\u00fccher.example") == "jos\u00e9@xn--bcher-kva.example"
    assert smtp_address("plain@contoso.example") == "plain@contoso.example"
    for bad in ["nobody", "@x.example", "a b@x.example", "a@x..\u00e9"]:
        with pytest.raises(ValueError):
            smtp_address(bad)


def test_unreachable_server_is_a_transient_connection_error(sink):
    sink.stop()
    mailer = SmtpMailer(parse_smtp_url(sink.url))
    message = EmailMessage()
    message.set_content("x")
    with pytest.raises(MailError) as raised:
        mailer.send(message, sender=MAIL_FROM, recipient="a@contoso.example")
    assert raised.value.transient and raised.value.connection
