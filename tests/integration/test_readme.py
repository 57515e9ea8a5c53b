"""`commcredits demo` serves and prints working tokens, and the README's curl
examples work as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_SECONDS = 90


def _readme_examples() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return next(block for block in blocks if "curl" in block)


def test_demo_prints_tokens_and_readme_examples_work():
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="commcredits-demo-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMCREDITS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "commcredits.cli", "demo", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        exports: dict[str, str] = {}
        deadline = time.monotonic() + DEMO_TIMEOUT_SECONDS
        assert process.stdout is not None
        while len(exports) < 5 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            match = re.match(r"export (\w+)=(\S+)", line.strip())
            if match:
                exports[match.group(1)] = match.group(2)
        assert set(exports) == {"CC", "OP", "BILLING", "ADMIN", "CHARGING"}, exports
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{exports['CC']}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        tenant = httpx.get(
            f"{exports['CC']}/v1/tenants/demo",
            headers={"Authorization": f"Bearer {exports['OP']}"},
        )
        assert tenant.status_code == 200 and tenant.json()["id"] == "demo"
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _readme_examples()],
            env={**env, **exports},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert '"status":"succeeded"' in out.replace(" ", "")
        assert '"decision":"allow"' in out.replace(" ", "")
        assert '"kind":"call_charge"' in out.replace(" ", "")
        assert '"code"' not in out, out  # no problem documents
    finally:
        process.terminate()
        process.wait(timeout=15)
