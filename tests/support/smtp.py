"""A real SMTP server (aiosmtpd) in a separate process on 127.0.0.1, for mail tests.

Every accepted message is appended to a JSON-lines file, one record per
message and envelope recipient, flushed before the server answers 250, so
what the file holds is what the server acknowledged (the page cache outlives
the process, even a killed one). The process can be
stopped and started again on the same port to simulate an outage.

It can speak STARTTLS (required before anything else) or implicit TLS with a
self-signed certificate made by ``make_certificate``, require a login, offer
SMTPUTF8, and take its time before answering DATA (to kill a client mid-send).

Run as a script it is the server itself:

    python smtp.py --port 2525 --out messages.jsonl [--auth user:secret]
                   [--reject address=550] ... [--smtputf8] [--delay 0.2]
                   [--tls starttls|implicit --cert cert.pem --key key.pem]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

START_TIMEOUT_SECONDS = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificate(directory: str | Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (its own CA): (cert.pem, key.pem)."""
    directory = Path(directory)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=commcredits test SMTP",
            "-addext",
            f"subjectAltName=IP:{host},DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@dataclass
class Received:
    mail_from: str
    recipient: str
    message: EmailMessage
    tls: bool = False
    smtputf8: bool = False

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class SmtpSink:
    """The parent's handle on the server process."""

    port: int = 0
    directory: str = ""
    auth: str | None = None  # "user:password": require AUTH LOGIN/PLAIN
    rejects: dict[str, int] = field(default_factory=dict)  # address -> SMTP reply code
    smtputf8: bool = False  # offer SMTPUTF8 (aiosmtpd does not by default)
    delay: float = 0.0  # seconds between storing a message and answering 250
    tls: str | None = None  # "starttls" (required) | "implicit"
    cert_file: str | None = None
    key_file: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls == "implicit":
            return f"smtps://127.0.0.1:{self.port}"
        if self.tls == "starttls":
            return f"smtp+starttls://127.0.0.1:{self.port}"
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def path(self) -> Path:
        return Path(self.directory) / "messages.jsonl"

    def start(self) -> SmtpSink:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.port = self.port or free_port()
        self.directory = self.directory or tempfile.mkdtemp(prefix="commcredits-smtp-")
        command = [sys.executable, __file__, "--port", str(self.port), "--out", str(self.path)]
        if self.auth:
            command += ["--auth", self.auth]
        for address, code in self.rejects.items():
            command += ["--reject", f"{address}={code}"]
        if self.smtputf8:
            command += ["--smtputf8"]
        if self.delay:
            command += ["--delay", str(self.delay)]
        if self.tls:
            assert self.cert_file and self.key_file, "TLS needs make_certificate()"
            command += ["--tls", self.tls, "--cert", self.cert_file, "--key", self.key_file]
        # stderr to a file: a pipe nobody reads could fill up and stall the server.
        with open(Path(self.directory) / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, start_new_session=True
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.strip() == b"ready":
                return self
            if not line and self.process.poll() is not None:
                break
        self.stop()
        stderr = (Path(self.directory) / "server.log").read_text(errors="replace")
        raise RuntimeError(f"the SMTP server did not start: {stderr[-2000:]}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def received(self) -> list[Received]:
        """Every message the server acknowledged, in order, duplicates included."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            record = json.loads(line)
            message = email.message_from_bytes(
                record["data"].encode("latin-1"), policy=email.policy.default
            )
            assert isinstance(message, EmailMessage)
            out.append(
                Received(
                    record["mail_from"],
                    record["recipient"],
                    message,
                    tls=record.get("tls", False),
                    smtputf8=record.get("smtputf8", False),
                )
            )
        return out

    def message_id_counts(self) -> Counter[str]:
        return Counter(item.message_id for item in self.received())


# --- the server process -----------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    port: int
    out: str
    auth: str | None
    rejects: dict[str, int]
    smtputf8: bool
    delay: float
    tls: str | None
    cert: str | None
    key: str | None


def _serve(options: _Options) -> None:
    import asyncio
    import ssl

    out, auth, rejects = options.out, options.auth, options.rejects
    context: ssl.SSLContext | None = None
    if options.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(options.cert), str(options.key))

    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    class Handler:
        async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
            self, server: Any, session: Any, envelope: Any, address: str, options: Any
        ) -> str:
            code = rejects.get(address.lower())
            if code is not None:
                return f"{code} {'mailbox unavailable' if code >= 500 else 'try again later'}"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: Any, session: Any, envelope: Any
        ) -> str:
            data = envelope.original_content or envelope.content
            tls = server.transport.get_extra_info("ssl_object") is not None
            with open(out, "a", encoding="utf-8") as handle:
                for recipient in envelope.rcpt_tos:
                    record = {
                        "mail_from": envelope.mail_from,
                        "recipient": recipient,
                        "data": data.decode("latin-1"),
                        "tls": tls,
                        "smtputf8": envelope.smtp_utf8,
                    }
                    handle.write(json.dumps(record) + "\n")
                handle.flush()
            if options.delay:
                # Stored, not yet acknowledged: a client killed now has sent a
                # message it never learns was taken.
                await asyncio.sleep(options.delay)
            return "250 Message accepted for delivery"

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert auth is not None
        user, _, password = auth.partition(":")
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)

    def factory() -> SMTP:
        settings: dict[str, Any] = {"hostname": "sink.test", "enable_SMTPUTF8": options.smtputf8}
        if options.tls == "starttls":
            settings.update(tls_context=context, require_starttls=True)
        if auth:
            settings.update(
                authenticator=authenticator,
                auth_required=True,
                # Over STARTTLS, as a real relay would: no password in clear.
                auth_require_tls=options.tls == "starttls",
            )
        return SMTP(Handler(), **settings)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            factory,
            host="127.0.0.1",
            port=options.port,
            reuse_address=True,
            ssl=context if options.tls == "implicit" else None,
        )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        server.close()  # open sessions die with the process

    asyncio.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--auth")
    parser.add_argument("--reject", action="append", default=[])
    parser.add_argument("--smtputf8", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--tls", choices=["starttls", "implicit"])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    arguments = parser.parse_args()
    rejects = {}
    for item in arguments.reject:
        address, _, code = item.rpartition("=")
        rejects[address.lower()] = int(code)
    _serve(
        _Options(
            port=arguments.port,
            out=arguments.out,
            auth=arguments.auth,
            rejects=rejects,
            smtputf8=arguments.smtputf8,
            delay=arguments.delay,
            tls=arguments.tls,
            cert=arguments.cert,
            key=arguments.key,
        )
    )
