"""Sending mail by SMTP: the one place that speaks to a mail server.

``COMMCREDITS_SMTP_URL`` says where and how (API.md "Running"):

    smtp://host:port                 plain SMTP (port 25 by default)
    smtp://host:port?starttls=1      upgrade with STARTTLS (port 587 by default)
    smtp+starttls://host:port        the same
    smtps://host:port                implicit TLS from the first byte (port 465 by default)
    smtp://user:password@host:port   log in (user and password %-encoded)
    ...?timeout=20                   seconds one socket operation may take (default 10)

The server's certificate is checked against the system's CAs (``SSL_CERT_FILE``
is honoured), or only against ``COMMCREDITS_SMTP_CA_FILE`` when that is set.

A failed send raises ``MailError``. ``connection`` says the fault lies with the
session, not the message: the server could not be reached or refused our TLS,
login or sender address. That is an operator's fix, so the delivery worker
neither counts an attempt nor tries the rest of its batch. Otherwise the
server took a position on this one message, and ``transient`` says whether
trying it again later can help.
"""

from __future__ import annotations

import math
import os
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "SMTP_TIMEOUT_SECONDS",
    "MailError",
    "Mailer",
    "SmtpMailer",
    "SmtpTarget",
    "check_mail_settings",
    "parse_smtp_url",
    "smtp_address",
]

# One socket operation may take this long before the send counts as failed.
# The delivery lease (services/notify.py) is sized from it.
SMTP_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 120.0

_DEFAULT_PORTS = {"plain": 25, "starttls": 587, "tls": 465}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_QUERY_KEYS = {"starttls", "timeout"}
# A 552 to MAIL FROM is the declared SIZE of this message, not our sender.
_MESSAGE_TOO_BIG = 552
# Replies about our session whatever the command: authentication required or
# too weak, encryption required (RFC 4954). Every message would get the same.
_SESSION_CODES = {530, 534, 538}


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
    ca_file: str | None = None

    def __repr__(self) -> str:  # never print the password into a log
        return (
            f"SmtpTarget(host={self.host!r}, port={self.port}, security={self.security!r}, "
            f"username={self.username!r})"
        )

    def tls_context(self) -> ssl.SSLContext:
        # With a CA file, only that CA: a private mail relay's own certificate.
        return ssl.create_default_context(cafile=self.ca_file)


def parse_smtp_url(url: str, *, ca_file: str | None = None) -> SmtpTarget:
    """Raises ValueError, naming the variable and what is wrong, for a URL the
    worker could never use."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise ValueError(
            f"COMMCREDITS_SMTP_URL: unknown parameter '{unknown[0]}'; "
            "only starttls and timeout are understood"
        )
    if scheme == "smtps":
        security = "tls"
    elif scheme == "smtp+starttls":
        security = "starttls"
    elif scheme == "smtp":
        flag = query.get("starttls", ["0"])[-1].lower()
        if flag not in _TRUE | _FALSE:
            raise ValueError(f"COMMCREDITS_SMTP_URL: starttls must be 1 or 0, not '{flag}'")
        security = "starttls" if flag in _TRUE else "plain"
    else:
        raise ValueError(
            f"COMMCREDITS_SMTP_URL: unknown scheme '{parts.scheme}'; "
            "use smtp://, smtp+starttls:// or smtps://"
        )
    if not parts.hostname:
        raise ValueError("COMMCREDITS_SMTP_URL: a host is required, e.g. smtp://mail.example:25")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("COMMCREDITS_SMTP_URL: the port is not a number from 1 to 65535") from exc
    if port == 0:
        raise ValueError("COMMCREDITS_SMTP_URL: the port is not a number from 1 to 65535")
    timeout_text = query.get("timeout", [str(SMTP_TIMEOUT_SECONDS)])[-1]
    try:
        timeout_seconds = float(timeout_text)
    except ValueError:
        timeout_seconds = math.nan
    if not 0 < timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise ValueError(
            f"COMMCREDITS_SMTP_URL: timeout must be seconds above 0 and at most "
            f"{MAX_TIMEOUT_SECONDS:g}, not '{timeout_text}'"
        )
    if parts.password and not parts.username:
        raise ValueError("COMMCREDITS_SMTP_URL: a password needs a user, e.g. smtp://user:pw@host")
    return SmtpTarget(
        host=parts.hostname,
        port=port or _DEFAULT_PORTS[security],
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout_seconds=timeout_seconds,
        ca_file=ca_file,
    )


def check_mail_settings(smtp_url: str, mail_from: str, ca_file: str | None) -> SmtpTarget:
    """What ``serve`` and ``mail-worker`` check before they start: a URL, CA
    file or sender address no mail could ever go out with is refused then,
    with a message naming the variable, rather than failing every pass."""
    target = parse_smtp_url(smtp_url, ca_file=ca_file)
    if ca_file is not None:
        if not os.path.isfile(ca_file):
            raise ValueError(f"COMMCREDITS_SMTP_CA_FILE: no such file: {ca_file}")
        try:
            target.tls_context()
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"COMMCREDITS_SMTP_CA_FILE: not a PEM file of CA certificates: {exc}"
            ) from exc
    name, address = parseaddr(mail_from)
    if not address or address != mail_from.strip() or "@" not in address:
        raise ValueError(
            f"COMMCREDITS_MAIL_FROM: '{mail_from}' is not a bare address like credits@example.com"
        )
    try:
        sender = smtp_address(address)
    except ValueError as exc:
        raise ValueError(f"COMMCREDITS_MAIL_FROM: {exc}") from exc
    if not sender.isascii():
        # A non-ASCII sender would need SMTPUTF8 for every mail.
        raise ValueError(f"COMMCREDITS_MAIL_FROM: '{mail_from}' must be ASCII before the @")
    return target


def smtp_address(address: str) -> str:
    """The address as it goes to SMTP: an internationalized domain in its
    ASCII (IDNA) form, so only a non-ASCII local part needs SMTPUTF8. Raises
    ValueError for an address that cannot be written so."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address.strip()):
        raise ValueError(f"'{address}' is not an e-mail address")
    if domain.isascii():
        return f"{local}@{domain}"
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(
            f"the domain of '{address}' is not a valid internationalized name"
        ) from exc
    return f"{local}@{ascii_domain}"


class Mailer(Protocol):
    """What the delivery worker needs: send one message to its envelope recipient."""

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None: ...

    def close(self) -> None: ...


_DROPPED = (smtplib.SMTPServerDisconnected, OSError)


class SmtpMailer:
    """One SMTP session, opened on the first send and reused for the rest of a
    worker pass. A session the server dropped between two messages is opened
    again once before the message is blamed."""

    def __init__(self, target: SmtpTarget) -> None:
        self.target = target
        self._session: smtplib.SMTP | None = None

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        reused = self._session is not None
        session = self._session or self._open()
        self._session = session
        try:
            self._transact(session, message, sender, recipient)
        except _DROPPED as exc:
            self.close()
            if not reused:
                raise self._dropped(exc) from exc
            self._session = self._open()
            try:
                self._transact(self._session, message, sender, recipient)
            except _DROPPED as again:
                self.close()
                raise self._dropped(again) from again

    def _dropped(self, exc: BaseException) -> MailError:
        # The session was up and took our sender: counted against this message,
        # so one the server always drops cannot hold up the others for ever.
        return MailError(
            f"the SMTP server {self.target.host}:{self.target.port} dropped the connection "
            f"while taking the message: {exc or type(exc).__name__}",
            transient=True,
        )

    def _transact(
        self, session: smtplib.SMTP, message: EmailMessage, sender: str, recipient: str
    ) -> None:
        try:
            session.send_message(message, from_addr=sender, to_addrs=[recipient])
        except smtplib.SMTPNotSupportedError as exc:
            # smtplib refuses before MAIL FROM: the session is still good.
            if not sender.isascii():
                raise MailError(
                    f"the SMTP server does not offer SMTPUTF8, which the sender {sender} needs",
                    transient=True,
                    connection=True,
                ) from exc
            raise MailError(
                f"the SMTP server does not offer SMTPUTF8, which the address {recipient} "
                "needs (non-ASCII before the @)",
                transient=False,
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()), (0, b""))
            if code in _SESSION_CODES:
                self.close()
                raise MailError(
                    f"the SMTP server wants a login or TLS first: {code} {_text(reply)}",
                    transient=True,
                    connection=True,
                ) from exc
            raise MailError(
                f"the server refused {recipient}: {code} {_text(reply)}",
                transient=not 500 <= code < 600,
            ) from exc
        except smtplib.SMTPSenderRefused as exc:
            if exc.smtp_code == _MESSAGE_TOO_BIG:
                raise MailError(
                    f"the server refused the message's size: {exc.smtp_code} "
                    f"{_text(exc.smtp_error)}",
                    transient=False,
                ) from exc
            self.close()
            # Our own sender address: every message would fail alike.
            raise MailError(
                f"the SMTP server refused the sender {sender}: {exc.smtp_code} "
                f"{_text(exc.smtp_error)}",
                transient=True,
                connection=True,
            ) from exc
        except smtplib.SMTPHeloError as exc:
            self.close()
            raise MailError(
                f"the SMTP server refused the session: {exc.smtp_code} {_text(exc.smtp_error)}",
                transient=True,
                connection=True,
            ) from exc
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code in _SESSION_CODES:
                self.close()
                raise MailError(
                    f"the SMTP server wants a login or TLS first: {exc.smtp_code} "
                    f"{_text(exc.smtp_error)}",
                    transient=True,
                    connection=True,
                ) from exc
            # DATA refused (smtplib has already reset the transaction).
            raise MailError(
                f"the server answered {exc.smtp_code} {_text(exc.smtp_error)}",
                transient=not 500 <= exc.smtp_code < 600,
            ) from exc
        except _DROPPED:
            raise
        except smtplib.SMTPException as exc:
            self.close()
            raise MailError(f"the SMTP exchange failed: {exc}", transient=True) from exc

    def close(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            session.quit()
        except (smtplib.SMTPException, OSError):
            session.close()

    def _open(self) -> smtplib.SMTP:
        """A session ready for MAIL FROM, or a connection-level MailError."""
        target = self.target
        where = f"{target.host}:{target.port}"
        session: smtplib.SMTP | None = None
        try:
            if target.security == "tls":
                session = smtplib.SMTP_SSL(
                    target.host,
                    target.port,
                    timeout=target.timeout_seconds,
                    context=target.tls_context(),
                )
            else:
                session = smtplib.SMTP(target.host, target.port, timeout=target.timeout_seconds)
            session.ehlo()
            if target.security == "starttls":
                session.starttls(context=target.tls_context())
                session.ehlo()
            if target.username is not None:
                session.login(target.username, target.password or "")
            return session
        except BaseException as exc:
            if session is not None:
                session.close()
            if not isinstance(exc, (smtplib.SMTPException, OSError)):
                raise
            raise MailError(_session_failure(exc, where), transient=True, connection=True) from exc


def _session_failure(exc: BaseException, where: str) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS with the SMTP server {where} failed: its certificate is not trusted "
            f"({exc.verify_message or exc}); see COMMCREDITS_SMTP_CA_FILE"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS with the SMTP server {where} failed: {exc}"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"SMTP login failed: {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"the SMTP server {where} lacks what the URL asks for: {exc}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the SMTP server {where} refused the session: {exc.smtp_code} " + _text(
            exc.smtp_error
        )
    return f"cannot reach the SMTP server {where}: {exc or type(exc).__name__}"


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return reply
