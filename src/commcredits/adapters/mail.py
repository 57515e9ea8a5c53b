"""Sending mail by SMTP: the one place that speaks to a mail server.

``COMMCREDITS_SMTP_URL`` says where and how (API.md "Running"):

    smtp://host:port                 plain SMTP (port 25 by default)
    smtp://host:port?starttls=1      upgrade with STARTTLS (port 587 by default)
    smtp+starttls://host:port        the same
    smtps://host:port                implicit TLS from the first byte (port 465 by default)
    smtp://user:password@host:port   log in (user and password %-encoded)

A failed send raises ``MailError``, which says whether trying again later can
help (``transient``) and whether the server could not be reached at all
(``connection``: then the rest of a batch would fail the same way).
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "SMTP_TIMEOUT_SECONDS",
    "MailError",
    "Mailer",
    "SmtpMailer",
    "SmtpTarget",
    "parse_smtp_url",
]

# One socket operation may take this long before the send counts as failed.
# The delivery lease (services/notify.py) is sized from it.
SMTP_TIMEOUT_SECONDS = 10.0

_DEFAULT_PORTS = {"plain": 25, "starttls": 587, "tls": 465}
_TRUE = {"1", "true", "yes", "on"}


class MailError(Exception):
    def __init__(self, detail: str, *, transient: bool, connection: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.transient = transient
        self.connection = connection


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    security: str  # plain | starttls | tls
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = SMTP_TIMEOUT_SECONDS

    def __repr__(self) -> str:  # never print the password into a log
        return (
            f"SmtpTarget(host={self.host!r}, port={self.port}, security={self.security!r}, "
            f"username={self.username!r})"
        )


def parse_smtp_url(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = parse_qs(parts.query)
    if scheme == "smtps":
        security = "tls"
    elif scheme == "smtp+starttls":
        security = "starttls"
    elif scheme == "smtp":
        wants_starttls = query.get("starttls", ["0"])[-1].lower() in _TRUE
        security = "starttls" if wants_starttls else "plain"
    else:
        raise ValueError(
            f"COMMCREDITS_SMTP_URL: unknown scheme '{parts.scheme}'; "
            "use smtp://, smtp+starttls:// or smtps://"
        )
    if not parts.hostname:
        raise ValueError("COMMCREDITS_SMTP_URL: a host is required, e.g. smtp://mail.example:25")
    timeout_seconds = float(query.get("timeout", [str(SMTP_TIMEOUT_SECONDS)])[-1])
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or _DEFAULT_PORTS[security],
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout_seconds=timeout_seconds,
    )


class Mailer(Protocol):
    """What the delivery worker needs: send one message to its envelope recipient."""

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None: ...

    def close(self) -> None: ...


class SmtpMailer:
    """One SMTP session, opened on the first send and reused for the rest of a
    worker pass; any error drops it, so the next send starts a fresh one."""

    def __init__(self, target: SmtpTarget) -> None:
        self.target = target
        self._session: smtplib.SMTP | None = None

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        try:
            session = self._session or self._connect()
            self._session = session
            session.send_message(message, from_addr=sender, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            self.close()
            code, reply = next(iter(exc.recipients.values()), (0, b""))
            raise MailError(
                f"the server refused {recipient}: {code} {_text(reply)}",
                transient=not 500 <= code < 600,
            ) from exc
        except smtplib.SMTPAuthenticationError as exc:
            self.close()
            # Wrong credentials are an operator's fix, not the recipient's:
            # keep the mail and retry, as for an outage.
            raise MailError(
                f"SMTP login failed: {exc.smtp_code} {_text(exc.smtp_error)}",
                transient=True,
                connection=True,
            ) from exc
        except (
            smtplib.SMTPConnectError,
            smtplib.SMTPHeloError,
            smtplib.SMTPSenderRefused,
        ) as exc:
            self.close()
            # The server or our own sender address, not this recipient: the
            # whole batch would fail alike, and an operator can fix it.
            raise MailError(
                f"the SMTP server refused the session: {exc.smtp_code} {_text(exc.smtp_error)}",
                transient=True,
                connection=True,
            ) from exc
        except smtplib.SMTPResponseException as exc:
            self.close()
            raise MailError(
                f"the server answered {exc.smtp_code} {_text(exc.smtp_error)}",
                transient=not 500 <= exc.smtp_code < 600,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise MailError(
                f"cannot reach the SMTP server {self.target.host}:{self.target.port}: {exc}",
                transient=True,
                connection=True,
            ) from exc

    def close(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            session.quit()
        except (smtplib.SMTPException, OSError):
            session.close()

    def _connect(self) -> smtplib.SMTP:
        target = self.target
        session: smtplib.SMTP
        if target.security == "tls":
            session = smtplib.SMTP_SSL(
                target.host,
                target.port,
                timeout=target.timeout_seconds,
                context=ssl.create_default_context(),
            )
        else:
            session = smtplib.SMTP(target.host, target.port, timeout=target.timeout_seconds)
        try:
            if target.security == "starttls":
                session.starttls(context=ssl.create_default_context())
            if target.username is not None:
                session.login(target.username, target.password or "")
        except BaseException:
            session.close()
            raise
        return session


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return reply
