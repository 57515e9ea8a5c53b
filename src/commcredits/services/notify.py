"""Notification mails (SPEC §4): rendering an outbox event, the delivery
worker pass, and the tenant's notification listing.

Delivery is at-least-once with a stable ``Message-ID`` per recipient:
1. claim due deliveries in one transaction (``SELECT ... FOR UPDATE SKIP
   LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite): status ``sending``,
   ``attempts + 1``, and ``next_attempt_at`` becomes the lease's expiry; commit;
2. send each message by SMTP, outside any transaction;
3. record the outcome of each message in its own small transaction: ``sent``,
   or back to ``pending`` after a back-off, or ``failed``.
A process that dies between 2 and 3 leaves the row ``sending``; once its lease
has expired another pass sends it again, with the same ``Message-ID``, so a
mail server or client that drops duplicate Message-IDs shows it once. Nothing
is lost; the only possible duplicate is the one message in flight at a crash.

Only failures of the message count against ``MAX_DELIVERY_ATTEMPTS``. When the
session fails (server down, TLS, login, our sender refused) the pass hands its
claims back uncounted, after a back-off that grows with the event's age, and
retries for as long as it takes: an outage or a wrong setting delays mail,
never loses it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import Connection, Engine, and_, or_, select, update

from commcredits.adapters.mail import (
    Mailer,
    MailError,
    SmtpMailer,
    SmtpTarget,
    parse_smtp_url,
    smtp_address,
)
from commcredits.api import pagination
from commcredits.config import Settings
from commcredits.errors import ValidationFailed
from commcredits.services import directory
from commcredits.services.clock import as_utc, rfc3339
from commcredits.services.clock import now as clock_now
from commcredits.services.outbox import EVENTS
from commcredits.store import tables as t
from commcredits.store.db import is_postgres, read_transaction, write_transaction

__all__ = [
    "BACKOFF_BASE_SECONDS",
    "BACKOFF_CAP_SECONDS",
    "MAX_BATCH",
    "MAX_DELIVERY_ATTEMPTS",
    "SENDING_LEASE_SECONDS",
    "RenderedMail",
    "admin_center_url",
    "build_message",
    "deliver_pending",
    "event_status",
    "notifications_page",
    "render",
    "retry_delay_seconds",
    "session_retry_delay_seconds",
    "smtp_target",
]

MAX_BATCH = 50
# Attempts the server answered about the message itself (4xx, a dropped DATA):
# 5 s doubling to a 15-minute cap, about a day. Outages do not count (see above).
MAX_DELIVERY_ATTEMPTS = 100
BACKOFF_BASE_SECONDS = 5
BACKOFF_CAP_SECONDS = 15 * 60
# How long a claimed delivery belongs to the pass that claimed it. A pass stops
# sending LEASE_MARGIN_SECONDS before its lease ends and hands the rest back,
# so two processes never send one message at the same time.
SENDING_LEASE_SECONDS = 10 * 60
LEASE_MARGIN_SECONDS = 2 * 60
LAST_ERROR_MAX_CHARS = 1000

TEMPLATE_DIRECTORY = Path(__file__).resolve().parent.parent / "mail_templates"

_templates = Environment(
    loader=FileSystemLoader(TEMPLATE_DIRECTORY),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)

OUTBOX_ONLY_NOTE = (
    "No SMTP server is configured (COMMCREDITS_SMTP_URL), so mails stay in the outbox: "
    "they are listed here and sent once a server is configured."
)


# --- rendering -----------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


def admin_center_url(settings: Settings) -> str:
    return settings.public_url.rstrip("/") + "/"


def render(
    event: str,
    payload: dict[str, Any],
    *,
    tenant_id: str,
    tenant_name: str,
    admin_url: str,
    occurred_at: datetime,
) -> RenderedMail:
    """The subject, plain text and HTML of one event. Pure: no I/O beyond
    reading the templates."""
    assert event in EVENTS, event
    context = _context(event, payload, tenant_id, tenant_name, admin_url, occurred_at)
    # A subject is one header line: a tenant name with a line break must not
    # add headers (and EmailMessage would refuse it).
    subject = " ".join(_templates.get_template(f"{event}.subject.txt").render(context).split())
    context["subject"] = subject
    text = _templates.get_template(f"{event}.txt").render(context)
    html = _templates.get_template(f"{event}.html").render(context)
    return RenderedMail(subject=subject, text=text, html=html)


def _context(
    event: str,
    payload: dict[str, Any],
    tenant_id: str,
    tenant_name: str,
    admin_url: str,
    occurred_at: datetime,
) -> dict[str, Any]:
    currency = str(payload.get("currency") or "")

    def money(key: str) -> str | None:
        value = payload.get(key)
        return None if value is None else f"{value} {currency}".strip()

    when = as_utc(occurred_at).strftime("%Y-%m-%d %H:%M UTC")
    amount, balance, threshold = money("amount"), money("balance"), money("threshold")
    reason = payload.get("reason") or "the payment failed"
    purchase_id = payload.get("purchase_id")
    figures: list[tuple[str, str | None]] = {
        "recharge_succeeded": [
            ("Amount charged", amount),
            ("New balance", balance),
            ("Purchase", purchase_id),
        ],
        "recharge_failed": [
            ("Amount", amount),
            ("Reason", reason),
            ("Balance", balance),
            ("Purchase", purchase_id),
        ],
        "balance_depleted": [("Balance", balance)],
        "balance_low": [("Balance", balance), ("Threshold", threshold)],
    }[event]
    shown = [(label, value) for label, value in [*figures, ("When", when)] if value is not None]
    return {
        "event": event,
        "tenant_id": tenant_id,
        "tenant_name": tenant_name,
        "admin_url": admin_url,
        "occurred_at": when,
        "currency": currency,
        "amount": amount,
        "balance": balance,
        "threshold": threshold,
        "reason": reason,
        "failure_code": payload.get("failure_code"),
        "purchase_id": purchase_id,
        "figures": shown,
        "width": max(len(label) for label, _ in shown) + 1,
    }


def build_message(
    mail: RenderedMail,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    occurred_at: datetime,
    tenant_id: str,
    event: str,
) -> EmailMessage:
    """multipart/alternative (text, then HTML). The Message-ID and Date are
    those of the delivery, the same on every retry, so a duplicate is
    recognisable as one. Raises ValueError for an address no header can hold."""
    message = EmailMessage()
    message["Subject"] = mail.subject
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = format_datetime(as_utc(occurred_at))
    message["Message-ID"] = message_id
    # RFC 3834: a notification, so vacation responders stay quiet.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Commcredits-Tenant"] = tenant_id
    message["X-Commcredits-Event"] = event
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


# --- delivery --------------------------------------------------------------------------


def retry_delay_seconds(attempts: int) -> int:
    """Back-off after the ``attempts``-th failed attempt: 5 s, 10 s, 20 s, ... 15 min."""
    assert attempts >= 1, attempts
    return int(min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(attempts - 1, 20)))


def session_retry_delay_seconds(waited: timedelta) -> int:
    """Back-off after a session failure, for a delivery whose event happened
    ``waited`` ago: as long again, from 5 s to the 15-minute cap. It needs no
    counter, so a session failure leaves the attempt count alone."""
    seconds = int(waited.total_seconds())
    return max(BACKOFF_BASE_SECONDS, min(BACKOFF_CAP_SECONDS, seconds))


def smtp_target(settings: Settings) -> SmtpTarget:
    assert settings.smtp_url
    return parse_smtp_url(settings.smtp_url, ca_file=settings.smtp_ca_file)


@dataclass(frozen=True)
class _Claim:
    tenant_id: str
    event_id: str
    recipient: str
    message_id: str
    attempts: int  # including this one


def deliver_pending(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    batch: int = MAX_BATCH,
    mailer: Mailer | None = None,
) -> int:
    """One pass of the mail worker: claim up to ``batch`` due deliveries, send
    them, record each outcome. Returns how many deliveries it worked on.

    Transactions: one to claim (rows locked with SKIP LOCKED on PostgreSQL),
    committed before any mail leaves; then one per message to record it.
    ``now`` fixes the clock (tests move it forward instead of sleeping);
    ``mailer`` replaces the SMTP client. Without SMTP configured and no
    ``mailer``, nothing is claimed and the mails stay pending in the outbox."""
    assert 1 <= batch <= MAX_BATCH, batch
    if mailer is None:
        if not settings.smtp_url:
            return 0
        mailer = SmtpMailer(smtp_target(settings))

    def clock() -> datetime:
        return now if now is not None else clock_now()

    claims = _claim(engine, clock(), batch)
    if not claims:
        mailer.close()
        return 0
    stop_sending_at = time.monotonic() + SENDING_LEASE_SECONDS - LEASE_MARGIN_SECONDS
    session_failure: MailError | None = None
    try:
        rendered = _render_claims(engine, settings, claims)
        for claim in claims:
            if time.monotonic() > stop_sending_at:
                _release(engine, claim, clock())
                continue
            if session_failure is not None:
                # No session to the server: the rest of the batch waits, uncounted.
                _postpone(engine, claim, session_failure, clock(), rendered.created_at(claim))
                continue
            try:
                message, sender, recipient = rendered.build(claim)
            except ValueError as exc:
                _record_failure(
                    engine,
                    claim,
                    MailError(f"cannot build the mail: {exc}", transient=False),
                    clock(),
                )
                continue
            try:
                mailer.send(message, sender=sender, recipient=recipient)
            except MailError as exc:
                if exc.connection:
                    session_failure = exc
                    _postpone(engine, claim, exc, clock(), rendered.created_at(claim))
                else:
                    _record_failure(engine, claim, exc, clock())
                continue
            _record_sent(engine, claim, clock())
    finally:
        mailer.close()
    return len(claims)


def _claim(engine: Engine, at: datetime, batch: int) -> list[_Claim]:
    d = t.deliveries
    # ``sending`` rows are due once their lease (next_attempt_at) has passed:
    # the pass that claimed them died before recording the outcome.
    due = d.c.status.in_(("pending", "sending")), d.c.next_attempt_at <= at
    # An idle worker polls every second: look first with a plain read, so it
    # does not take SQLite's write lock for nothing.
    with read_transaction(engine) as connection:
        if connection.execute(select(d.c.event_id).where(*due).limit(1)).first() is None:
            return []
    with write_transaction(engine) as connection:
        query = (
            select(d.c.tenant_id, d.c.event_id, d.c.recipient, d.c.message_id, d.c.attempts)
            .where(*due)
            .order_by(d.c.next_attempt_at)
            .limit(batch)
        )
        if is_postgres(connection):
            query = query.with_for_update(skip_locked=True)
        claims: list[_Claim] = []
        for row in connection.execute(query).all():
            key = _key(row.tenant_id, row.event_id, row.recipient)
            if row.attempts >= MAX_DELIVERY_ATTEMPTS:
                # Only a stale ``sending`` row gets here: its last attempt never
                # reported back. Give up as for any other last attempt.
                connection.execute(
                    update(d)
                    .where(*key)
                    .values(status="failed", last_error="the last attempt did not finish")
                )
                continue
            connection.execute(
                update(d)
                .where(*key)
                .values(
                    status="sending",
                    attempts=row.attempts + 1,
                    next_attempt_at=at + timedelta(seconds=SENDING_LEASE_SECONDS),
                )
            )
            claims.append(
                _Claim(row.tenant_id, row.event_id, row.recipient, row.message_id, row.attempts + 1)
            )
        return claims


class _Batch:
    """The events and tenant names of a batch, read once; builds each message."""

    def __init__(
        self, settings: Settings, events: dict[tuple[str, str], Any], names: dict[str, str]
    ):
        self.settings = settings
        self.events = events
        self.names = names
        self.admin_url = admin_center_url(settings)
        self.mails: dict[tuple[str, str], RenderedMail] = {}

    def created_at(self, claim: _Claim) -> datetime:
        return as_utc(self.events[(claim.tenant_id, claim.event_id)].created_at)

    def build(self, claim: _Claim) -> tuple[EmailMessage, str, str]:
        """The message, its envelope sender and recipient. Raises ValueError
        for an address SMTP cannot carry."""
        key = (claim.tenant_id, claim.event_id)
        event = self.events[key]
        if key not in self.mails:
            self.mails[key] = render(
                event.event,
                event.payload,
                tenant_id=claim.tenant_id,
                # A deleted tenant's mails still go out under its id.
                tenant_name=self.names.get(claim.tenant_id, claim.tenant_id),
                admin_url=self.admin_url,
                occurred_at=event.created_at,
            )
        sender = smtp_address(self.settings.mail_from)
        recipient = smtp_address(claim.recipient)
        message = build_message(
            self.mails[key],
            sender=sender,
            recipient=recipient,
            message_id=claim.message_id,
            occurred_at=event.created_at,
            tenant_id=claim.tenant_id,
            event=event.event,
        )
        return message, sender, recipient


def _render_claims(engine: Engine, settings: Settings, claims: list[_Claim]) -> _Batch:
    e = t.outbox_events
    by_tenant: dict[str, set[str]] = defaultdict(set)
    for claim in claims:
        by_tenant[claim.tenant_id].add(claim.event_id)
    events: dict[tuple[str, str], Any] = {}
    with engine.connect() as connection:
        for tenant_id, event_ids in by_tenant.items():
            rows = connection.execute(
                select(e).where(e.c.tenant_id == tenant_id, e.c.id.in_(sorted(event_ids)))
            ).all()
            events.update({(row.tenant_id, row.id): row for row in rows})
        tenants = connection.execute(
            select(t.tenants.c.id, t.tenants.c.name).where(t.tenants.c.id.in_(sorted(by_tenant)))
        ).all()
    return _Batch(settings, events, {row.id: row.name for row in tenants})


def _key(tenant_id: str, event_id: str, recipient: str) -> list[Any]:
    d = t.deliveries
    return [d.c.tenant_id == tenant_id, d.c.event_id == event_id, d.c.recipient == recipient]


def _record_sent(engine: Engine, claim: _Claim, at: datetime) -> None:
    d = t.deliveries
    with write_transaction(engine) as connection:
        # Sent is the truth even if the lease ran out and another pass claimed
        # the row meanwhile: no guard on attempts here.
        connection.execute(
            update(d)
            .where(*_key(claim.tenant_id, claim.event_id, claim.recipient), d.c.status != "sent")
            .values(status="sent", sent_at=at, last_error=None)
        )


def _record_failure(engine: Engine, claim: _Claim, error: MailError, at: datetime) -> None:
    d = t.deliveries
    give_up = not error.transient or claim.attempts >= MAX_DELIVERY_ATTEMPTS
    values: dict[str, Any] = {"last_error": error.detail[:LAST_ERROR_MAX_CHARS]}
    if give_up:
        values["status"] = "failed"
    else:
        values["status"] = "pending"
        values["next_attempt_at"] = at + timedelta(seconds=retry_delay_seconds(claim.attempts))
    with write_transaction(engine) as connection:
        # Only our own claim: if the lease ran out and another pass took the
        # row, its outcome is the one that counts.
        connection.execute(
            update(d)
            .where(
                *_key(claim.tenant_id, claim.event_id, claim.recipient),
                d.c.status == "sending",
                d.c.attempts == claim.attempts,
            )
            .values(**values)
        )


def _postpone(
    engine: Engine, claim: _Claim, error: MailError, at: datetime, created_at: datetime
) -> None:
    """Hand back a claim the session failed for: the attempt is not counted."""
    d = t.deliveries
    delay = session_retry_delay_seconds(at - created_at)
    with write_transaction(engine) as connection:
        connection.execute(
            update(d)
            .where(
                *_key(claim.tenant_id, claim.event_id, claim.recipient),
                d.c.status == "sending",
                d.c.attempts == claim.attempts,
            )
            .values(
                status="pending",
                attempts=claim.attempts - 1,
                next_attempt_at=at + timedelta(seconds=delay),
                last_error=error.detail[:LAST_ERROR_MAX_CHARS],
            )
        )


def _release(engine: Engine, claim: _Claim, at: datetime) -> None:
    """Hand back a claimed delivery that was never tried: no attempt is counted."""
    d = t.deliveries
    with write_transaction(engine) as connection:
        connection.execute(
            update(d)
            .where(
                *_key(claim.tenant_id, claim.event_id, claim.recipient),
                d.c.status == "sending",
                d.c.attempts == claim.attempts,
            )
            .values(status="pending", attempts=claim.attempts - 1, next_attempt_at=at)
        )


# --- the listing ------------------------------------------------------------------------


def notifications_page(
    connection: Connection,
    tenant_id: str,
    settings: Settings,
    *,
    limit: int = pagination.DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The tenant's events, newest first, with each recipient's delivery and
    the rendered subject and text (what the admin center shows when no SMTP
    server is configured)."""
    tenant = directory.require_tenant(connection, tenant_id)
    pagination.check_limit(limit)
    e = t.outbox_events
    query = select(e).where(e.c.tenant_id == tenant_id)
    if cursor:
        created_text, last_id = pagination.decode_cursor(cursor, 2)
        try:
            created_at = as_utc(datetime.fromisoformat(str(created_text)))
        except ValueError as exc:
            raise ValidationFailed("cursor is not one this service issued") from exc
        query = query.where(
            or_(e.c.created_at < created_at, and_(e.c.created_at == created_at, e.c.id < last_id))
        )
    rows = list(
        connection.execute(
            query.order_by(e.c.created_at.desc(), e.c.id.desc()).limit(limit + 1)
        ).all()
    )
    rows, next_cursor = pagination.split(
        rows, limit, lambda row: [as_utc(row.created_at).isoformat(), row.id]
    )
    recipients = _recipients_of(connection, tenant_id, [row.id for row in rows])
    admin_url = admin_center_url(settings)
    items = [_item(row, recipients.get(row.id, []), tenant.name, admin_url) for row in rows]
    page: dict[str, Any] = {
        "items": items,
        "next_cursor": next_cursor,
        "smtp_configured": bool(settings.smtp_url),
    }
    if not settings.smtp_url:
        page["note"] = OUTBOX_ONLY_NOTE
    return page


def _recipients_of(
    connection: Connection, tenant_id: str, event_ids: Iterable[str]
) -> dict[str, list[Any]]:
    ids = list(event_ids)
    if not ids:
        return {}
    d = t.deliveries
    rows = connection.execute(
        select(d)
        .where(d.c.tenant_id == tenant_id, d.c.event_id.in_(ids))
        .order_by(d.c.event_id, d.c.recipient)
    ).all()
    grouped: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row.event_id].append(row)
    return grouped


def _item(event: Any, deliveries: list[Any], tenant_name: str, admin_url: str) -> dict[str, Any]:
    mail = render(
        event.event,
        event.payload,
        tenant_id=event.tenant_id,
        tenant_name=tenant_name,
        admin_url=admin_url,
        occurred_at=event.created_at,
    )
    statuses = [row.status for row in deliveries]
    status = event_status(statuses)
    sent_at = None
    if status == "sent" and deliveries:
        sent_at = rfc3339(max(as_utc(row.sent_at) for row in deliveries))
    return {
        "id": event.id,
        "event": event.event,
        "status": status,
        "created_at": rfc3339(event.created_at),
        "sent_at": sent_at,
        # API.md's `recipients` is the list of addresses; what became of each
        # (status, attempts, Message-ID) is in `deliveries`, in the same order.
        "recipients": [row.recipient for row in deliveries],
        "deliveries": [
            {
                "address": row.recipient,
                # API.md knows pending|sent|failed: one being sent is still pending.
                "status": "pending" if row.status == "sending" else row.status,
                "attempts": row.attempts,
                "sent_at": rfc3339(row.sent_at),
                "next_attempt_at": (
                    rfc3339(row.next_attempt_at) if row.status == "pending" else None
                ),
                "last_error": row.last_error,
                "message_id": row.message_id,
            }
            for row in deliveries
        ],
        "subject": mail.subject,
        "text": mail.text,
        "payload": event.payload,
    }


def event_status(recipient_statuses: list[str]) -> str:
    """``sent`` when every recipient is sent (an event nobody was to receive
    has nothing left to do), ``failed`` when one failed and none is still on
    its way, else ``pending``."""
    if all(status == "sent" for status in recipient_statuses):
        return "sent"
    if any(status in ("pending", "sending") for status in recipient_statuses):
        return "pending"
    return "failed"
