"""A profile of the charging path: where the time of a call start and end goes.

    python bench/profile_charging.py --database-url sqlite:///.../commcredits.db \
        [--seconds 10] [--profiler auto|pyinstrument|py-spy|cprofile] [--json out.json]

The database must hold the bench tenants (bench/run.py seeds them). The app
runs in this process with the whole request path (middleware, routing,
validation, authentication, the services, SQLAlchemy, the driver) driven by
an in-process ASGI client, one call at a time. FastAPI runs sync endpoints in
a thread pool; here they run inline, so that a profiler that sees one thread
sees all of the work. What this leaves out: uvicorn's HTTP parsing and the
socket (``GET /healthz`` measures those), and waiting on other requests.

Profilers, best first: pyinstrument (statistical, low overhead), py-spy
(samples this process from outside), else the standard library's cProfile
(exact counts, but its overhead inflates small functions). Neither of the
first two is a dependency of the project; `make bench` works without them.

Output: the largest costs grouped by layer (self time, summed by package),
the largest functions by inclusive time, and time per call (start + end).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cdr import CALLING_NUMBER, called_numbers, caller_upn_of, tenant_id_of  # noqa: E402

OPERATOR_TOKEN = "bench-operator-token"
MAX_SECONDS = 120.0
PROFILED_TENANTS = 100
TOP_LAYERS = 14
TOP_FUNCTIONS = 30
PY_SPY_RATE_HZ = 250

# Layers, by where a function's file lives; the first match wins.
LAYERS: tuple[tuple[str, str], ...] = (
    ("commcredits/core/", "commcredits core (pure rules)"),
    ("commcredits/services/calls.py", "commcredits services: calls"),
    ("commcredits/services/accounts.py", "commcredits services: accounts"),
    ("commcredits/services/", "commcredits services: other"),
    ("commcredits/api/metrics.py", "commcredits api: metrics middleware"),
    ("commcredits/api/idempotency.py", "commcredits api: idempotency"),
    ("commcredits/api/", "commcredits api: routes, auth"),
    ("commcredits/store/", "commcredits store"),
    ("sqlalchemy/", "SQLAlchemy (compile, execute, result rows)"),
    ("sqlite3/", "sqlite3 driver"),
    ("<built-in method _sqlite3", "sqlite3 driver"),
    ("_sqlite3", "sqlite3 driver"),
    ("psycopg", "psycopg driver"),
    ("pydantic", "pydantic (validation, serialisation)"),
    ("fastapi/", "FastAPI (routing, dependencies, encoders)"),
    ("starlette/", "Starlette (routing, middleware, responses)"),
    ("anyio/", "anyio"),
    ("httpx/", "in-process client (httpx; not server cost)"),
    ("h11/", "in-process client (httpx; not server cost)"),
    ("httpcore/", "in-process client (httpx; not server cost)"),
    ("phonenumbers/", "phonenumbers"),
    ("prometheus_client/", "prometheus_client"),
    ("json/", "json"),
    ("decimal", "decimal"),
    ("asyncio/", "asyncio event loop"),
    ("typing", "typing"),
    ("dataclasses", "dataclasses"),
)


def layer_of(frame: str) -> str:
    for needle, layer in LAYERS:
        if needle in frame:
            return layer
    if "<built-in" in frame or "<method" in frame:
        return "built-ins (C functions called from Python)"
    return "other Python"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--profiler", choices=("auto", "pyinstrument", "py-spy", "cprofile"), default="auto"
    )
    parser.add_argument("--json", type=Path, help="write the summary here as JSON")
    parser.add_argument("--driver-only", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    seconds = min(max(arguments.seconds, 1.0), MAX_SECONDS)
    if arguments.driver_only:
        pairs = drive(arguments.database_url, seconds)
        print(json.dumps({"pairs": pairs}))
        return 0
    profiler = choose_profiler(arguments.profiler)
    print(f"profiling {seconds:g} s of call start + end with {profiler} ...", file=sys.stderr)
    if profiler == "pyinstrument":
        summary = with_pyinstrument(arguments.database_url, seconds)
    elif profiler == "py-spy":
        summary = with_py_spy(arguments.database_url, seconds)
    else:
        summary = with_cprofile(arguments.database_url, seconds)
    summary["profiler"] = profiler
    summary["text"] = render(summary)
    print(summary["text"])
    if arguments.json:
        arguments.json.write_text(json.dumps(summary, indent=2))
    return 0


def choose_profiler(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    if importlib.util.find_spec("pyinstrument") is not None:
        return "pyinstrument"
    if py_spy_path() is not None:
        return "py-spy"
    return "cprofile"


def py_spy_path() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


# --- the workload ------------------------------------------------------------------------------


def drive(database_url: str, seconds: float, on_ready: Callable[[], None] | None = None) -> int:
    """Start and end calls, one at a time, for ``seconds``; the number of pairs done."""
    os.environ.update(
        {
            "COMMCREDITS_DATABASE_URL": database_url,
            "COMMCREDITS_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "COMMCREDITS_BACKGROUND_WORKERS": "0",
        }
    )
    import httpx
    import starlette.concurrency
    from fastapi import routing
    from fastapi.dependencies import utils

    from commcredits.api import context
    from commcredits.api.app import create_app
    from commcredits.config import Settings

    async def inline(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    # Sync endpoints and dependencies run in the calling thread (see the docstring).
    for module in (routing, utils, starlette.concurrency, context):
        module.run_in_threadpool = inline  # type: ignore[attr-defined]
    application = create_app(Settings.from_env(), migrate=False)
    numbers = called_numbers()

    async def run() -> int:
        transport = httpx.ASGITransport(app=application)
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as client:
            await one_pair(client, 0, "warm-up", numbers[0])
            if on_ready is not None:
                on_ready()
            deadline = time.perf_counter() + seconds
            pairs = 0
            run_id = f"profile-{os.getpid()}-{time.time_ns()}"
            while time.perf_counter() < deadline:
                pairs += 1
                await one_pair(
                    client,
                    pairs % PROFILED_TENANTS,
                    f"{run_id}-{pairs}",
                    numbers[pairs % len(numbers)],
                )
            return pairs

    return asyncio.run(run())


async def one_pair(client: Any, tenant_index: int, call_id: str, called: str) -> None:
    tenant_id = tenant_id_of(tenant_index)
    start = await client.post(
        "/v1/calls",
        json={
            "call_id": call_id,
            "tenant_id": tenant_id,
            "call_type": "user_out",
            "user_id": caller_upn_of(tenant_id),
            "from": CALLING_NUMBER,
            "to": called,
        },
    )
    if start.status_code != 201:
        raise RuntimeError(f"start: {start.status_code} {start.text[:300]}")
    end = await client.post(
        f"/v1/calls/{call_id}/end", json={"duration_seconds": 65, "tenant_id": tenant_id}
    )
    if end.status_code != 200:
        raise RuntimeError(f"end: {end.status_code} {end.text[:300]}")


# --- profilers -----------------------------------------------------------------------------------

Stacks = list[tuple[tuple[str, ...], float]]  # (frames root first, seconds)


def with_pyinstrument(database_url: str, seconds: float) -> dict[str, Any]:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    state: dict[str, float] = {}

    def ready() -> None:
        state["started"] = time.perf_counter()
        profiler.start()

    pairs = drive(database_url, seconds, on_ready=ready)
    session = profiler.stop()
    elapsed = time.perf_counter() - state["started"]
    stacks: Stacks = []

    def walk(frame: Any, path: tuple[str, ...]) -> None:
        here = path + (
            f"{frame.function} ({frame.file_path_short or frame.file_path}:{frame.line_no})",
        )
        if frame.total_self_time > 0:
            stacks.append((here, frame.total_self_time))
        for child in frame.children:
            walk(child, here)

    root = session.root_frame()
    if root is not None:
        walk(root, ())
    return summarise_stacks(stacks, pairs, elapsed)


def with_py_spy(database_url: str, seconds: float) -> dict[str, Any]:
    spy = py_spy_path()
    assert spy is not None
    with tempfile.TemporaryDirectory() as directory:
        raw = Path(directory) / "stacks.txt"
        started = time.perf_counter()
        completed = subprocess.run(
            [
                spy,
                "record",
                "--rate",
                str(PY_SPY_RATE_HZ),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--",
                sys.executable,
                __file__,
                "--database-url",
                database_url,
                "--seconds",
                str(seconds),
                "--driver-only",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if completed.returncode != 0:
            raise RuntimeError(f"py-spy failed: {completed.stderr[-1500:]}")
        pairs = json.loads(completed.stdout.strip().splitlines()[-1])["pairs"]
        stacks: Stacks = []
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack:
                stacks.append((tuple(stack.split(";")), int(count) / PY_SPY_RATE_HZ))
    summary = summarise_stacks(stacks, pairs, elapsed)
    summary["note"] = "py-spy samples include start-up and imports; read shares, not totals"
    return summary


def with_cprofile(database_url: str, seconds: float) -> dict[str, Any]:
    profiler = cProfile.Profile()
    state: dict[str, float] = {}

    def ready() -> None:
        state["started"] = time.perf_counter()
        profiler.enable()

    pairs = drive(database_url, seconds, on_ready=ready)
    profiler.disable()
    elapsed = time.perf_counter() - state["started"]
    stats = pstats.Stats(profiler)
    self_seconds: Counter[str] = Counter()
    inclusive_seconds: Counter[str] = Counter()
    for (file, line, function), entry in stats.stats.items():  # type: ignore[attr-defined]
        _calls, _primitive, own, cumulative, _callers = entry
        name = f"{function} ({file}:{line})"
        self_seconds[name] += own
        inclusive_seconds[name] += cumulative
    return summarise(self_seconds, inclusive_seconds, pairs, elapsed)


# --- summary -----------------------------------------------------------------------------------


def summarise_stacks(stacks: Stacks, pairs: int, elapsed: float) -> dict[str, Any]:
    self_seconds: Counter[str] = Counter()
    inclusive_seconds: Counter[str] = Counter()
    # Where the app's own code enters SQLAlchemy: building a statement
    # (select(), .where(), .values(), ==: sqlalchemy/sql/) or executing one,
    # beginning or ending a transaction (sqlalchemy/engine/, sqlalchemy/pool/).
    entries: Counter[str] = Counter()
    for frames, weight in stacks:
        self_seconds[frames[-1]] += weight
        for frame in set(frames):  # a recursive frame counts once per sample
            inclusive_seconds[frame] += weight
        app_depth = max(
            (depth for depth, frame in enumerate(frames) if "commcredits/" in frame), default=None
        )
        if app_depth is not None and app_depth + 1 < len(frames):
            entered = frames[app_depth + 1]
            if "sqlalchemy" in entered:
                executing = "sqlalchemy/engine/" in entered or "sqlalchemy/pool/" in entered
                kind = "executing" if executing else "building"
                entries[f"{kind}: {frames[app_depth]} -> {entered}"] += weight
    summary = summarise(self_seconds, inclusive_seconds, pairs, elapsed)
    total = summary["sampled_seconds"]
    summary["sqlalchemy_building_share"] = (
        sum(w for key, w in entries.items() if key.startswith("building")) / total
    )
    summary["sqlalchemy_executing_share"] = (
        sum(w for key, w in entries.items() if key.startswith("executing")) / total
    )
    summary["sqlalchemy_entries"] = [
        {"entry": key, "share": weight / total} for key, weight in entries.most_common(12)
    ]
    return summary


def summarise(
    self_seconds: Counter[str], inclusive_seconds: Counter[str], pairs: int, elapsed: float
) -> dict[str, Any]:
    total = sum(self_seconds.values()) or 1.0
    layers: Counter[str] = Counter()
    for frame, seconds in self_seconds.items():
        layers[layer_of(frame)] += seconds
    interesting = [
        (frame, seconds)
        for frame, seconds in inclusive_seconds.most_common()
        if any(key in frame for key in ("commcredits/", "sqlalchemy/", "fastapi/", "starlette/"))
        and seconds < total * 0.98
    ][:TOP_FUNCTIONS]
    return {
        "pairs": pairs,
        "seconds": elapsed,
        "ms_per_pair": elapsed / pairs * 1000 if pairs else None,
        "sampled_seconds": total,
        "layers": [
            {"layer": layer, "seconds": seconds, "share": seconds / total}
            for layer, seconds in layers.most_common(TOP_LAYERS)
        ],
        "functions": [
            {"function": frame, "seconds": seconds, "share": seconds / total}
            for frame, seconds in interesting
        ],
    }


def render(summary: dict[str, Any]) -> str:
    lines = [
        f"{summary['pairs']:,} call pairs (start + end) in {summary['seconds']:.1f} s, "
        f"one at a time, in process: {summary['ms_per_pair'] or 0:.2f} ms per pair "
        f"(profiler: {summary.get('profiler', '?')}; its overhead included)",
        "",
        "self time by layer:",
    ]
    for layer in summary["layers"]:
        lines.append(f"  {layer['share']:6.1%}  {layer['layer']}")
    lines += ["", "inclusive time, largest functions of the app and its frameworks:"]
    for function in summary["functions"]:
        lines.append(f"  {function['share']:6.1%}  {function['function']}")
    if "sqlalchemy_building_share" in summary:
        lines += [
            "",
            "the app's calls into SQLAlchemy (inclusive): "
            f"building statements {summary['sqlalchemy_building_share']:.1%}, "
            f"executing them {summary['sqlalchemy_executing_share']:.1%}; largest:",
        ]
        for entry in summary["sqlalchemy_entries"]:
            lines.append(f"  {entry['share']:6.1%}  {entry['entry']}")
    if summary.get("note"):
        lines += ["", summary["note"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
