"""Run `commcredits serve` as a real separate process for tests that need real
parallel clients, several server processes, or a SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx

READY_TIMEOUT_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    database_url: str
    operator_token: str
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.port = self.port or free_port()
        env = dict(os.environ)
        env.update(
            {
                "COMMCREDITS_DATABASE_URL": self.database_url,
                "COMMCREDITS_OPERATOR_TOKEN": self.operator_token,
            }
        )
        env.update(self.extra_env)
        # The server's log goes to a file: a pipe nobody reads would stall a
        # server that logs a lot, and the file is there to show when it fails.
        log_fd, self.log_path = tempfile.mkstemp(prefix="commcredits-serve-", suffix=".log")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commcredits.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
        )
        os.close(log_fd)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become ready")

    def log_tail(self, characters: int = 4000) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()[-characters:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, as in a crash."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
