"""Run every benchmark on SQLite and on PostgreSQL and print one table.

    python bench/run.py [--quick] [--only sqlite|postgres] [--duration 10] [--warmup 2]
                        [--no-profile]

What runs (bench/README.md says more):
1. Online charging: call start -> end pairs per second (bench/load.py, a
   separate asyncio process) for 1 and 100 tenants and 1, 16 and 64 clients,
   with p50/p99 latency of start and of end. Baselines measured in the same
   run: (a) ``GET /healthz`` of the same server, (b) the raw database limit
   (bench/raw_db.py). A pair is two requests and two write transactions, so
   each baseline is halved to be compared with pairs.
2. Offline rating: records per second through ``POST /v1/cdrs`` in batches of
   1,000 and 10,000, beside the rating core alone (bench/cdr.py).
3. Rate lookup on a 50,000-row deck (bench/rate_lookup.py), beside a plain
   dict lookup per number.
4. A profile of the charging path (bench/profile_charging.py), SQLite only.

Everything listens on 127.0.0.1 only. The PostgreSQL server is a throwaway
cluster with the durable defaults (fsync and synchronous_commit on), stopped
by its PID at the end; SQLite is a file in a temporary directory. The table
is also written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(BENCH_DIR))

import cdr  # noqa: E402 - bench/ modules, found through the path above
import load  # noqa: E402
import rate_lookup  # noqa: E402
from raw_db import measure as measure_raw_db  # noqa: E402
from raw_db import prepare as prepare_raw_db  # noqa: E402

OPERATOR_TOKEN = "bench-operator-token"
CLIENT_COUNTS = (1, 16, 64)
TENANT_COUNTS = (1, 100)
CDR_BATCH_SIZES = (1_000, 10_000)
CDR_TENANTS = 10
RATE_DECK_ROWS = 50_000
RATE_LOOKUPS = 200_000
QUICK_RATE_LOOKUPS = 50_000
CORE_CDR_RECORDS = 20_000
TENANT_BALANCE = "1000000.00"
SERVER_READY_SECONDS = 60
PG_START_SECONDS = 60
LOAD_TIMEOUT_MARGIN_SECONDS = 120
FULL_DURATION_SECONDS = 10.0
QUICK_DURATION_SECONDS = 3.0
FULL_WARMUP_SECONDS = 2.0
QUICK_WARMUP_SECONDS = 1.0

# Targets of the issue (on a 2-core machine).
TARGET_CHARGING_RATIO = 0.5
TARGET_START_P99_MS = 25.0
TARGET_START_P99_CLIENTS = 16
TARGET_CDRS_PER_SECOND = 50_000
TARGET_CDR_BATCH = 10_000
TARGET_LOOKUPS_PER_SECOND = 500_000


@dataclass
class Row:
    backend: str
    benchmark: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    target: str = ""
    met: bool | None = None
    detail: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.baseline_value:
            return None
        return self.value / self.baseline_value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per cell instead of 10")
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="one backend only")
    parser.add_argument("--duration", type=float, help="timed seconds per cell")
    parser.add_argument("--warmup", type=float, help="untimed seconds before each cell")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile")
    arguments = parser.parse_args()
    duration = arguments.duration or (
        QUICK_DURATION_SECONDS if arguments.quick else FULL_DURATION_SECONDS
    )
    warmup = (
        arguments.warmup
        if arguments.warmup is not None
        else (QUICK_WARMUP_SECONDS if arguments.quick else FULL_WARMUP_SECONDS)
    )
    if not 0 < duration <= load.MAX_DURATION_SECONDS:
        parser.error(f"--duration must be above 0 and at most {load.MAX_DURATION_SECONDS}")
    backends = [arguments.only] if arguments.only else ["sqlite", "postgres"]
    machine = machine_description()
    print(f"machine: {machine['summary']}", flush=True)
    print(f"{duration:g} s per cell after {warmup:g} s of warm-up; backends: {', '.join(backends)}")

    rows: list[Row] = []
    raw: dict[str, Any] = {"machine": machine, "duration_seconds": duration, "cells": []}
    rows += bench_rate_lookup(QUICK_RATE_LOOKUPS if arguments.quick else RATE_LOOKUPS, raw)
    core = cdr.rate_core_alone(cdr.cdr_records(CORE_CDR_RECORDS, CDR_TENANTS, "core"))
    raw["cdr_core"] = core
    rows.append(
        Row(
            "-",
            "offline rating: rating core alone, no I/O",
            core["records_per_second"],
            "CDR/s",
            detail=f"{core['rated']:,} of {core['records']:,} rated; best of 3 rounds",
        )
    )
    profile_summary = None
    with tempfile.TemporaryDirectory(prefix="commcredits-bench-") as scratch:
        for backend in backends:
            with database(backend, Path(scratch)) as (url, db_pid):
                rows += bench_backend(
                    backend, url, db_pid, Path(scratch), duration, warmup, core, raw
                )
                rows += bench_reports(
                    backend, url, QUICK_REPORT_ROWS if arguments.quick else REPORT_ROWS, raw
                )
                if backend == "sqlite" and not arguments.no_profile:
                    profile_summary = run_profile(url, Path(scratch), duration)
                    raw["profile"] = profile_summary
    print_table(rows, machine)
    if profile_summary:
        print("\nprofile of the charging path (SQLite):")
        print(profile_summary.get("text", ""))
    raw["rows"] = [asdict(row) | {"ratio": row.ratio} for row in rows]
    written = write_results(raw)
    print(f"\nresults written to {written}")
    return 0


# --- the machine -------------------------------------------------------------------------------


def machine_description() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        pass
    postgres = pg_bin_dir()
    pg_version = None
    if postgres:
        pg_version = subprocess.run(
            [f"{postgres}/postgres", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    cores = os.cpu_count()
    summary = (
        f"{cores} CPUs ({model}), {memory_gb:.0f} GB, {platform.system()} {platform.release()}, "
        f"{platform.python_implementation()} {platform.python_version()}"
        + (f", {pg_version}" if pg_version else "")
    )
    return {"cpus": cores, "cpu_model": model, "memory_gb": memory_gb, "summary": summary}


# --- databases ---------------------------------------------------------------------------------


def pg_bin_dir() -> str | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if candidates:
        return os.path.dirname(candidates[-1])
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def database(backend: str, scratch: Path) -> Iterator[tuple[str, int | None]]:
    """A fresh database URL for the backend, and the PID of its server (None for SQLite)."""
    if backend == "sqlite":
        yield f"sqlite:///{scratch}/commcredits.db", None
        return
    with postgres_cluster() as (url, pid):
        yield url, pid


@contextmanager
def postgres_cluster() -> Iterator[tuple[str, int]]:
    """A throwaway cluster with PostgreSQL's durable defaults: fsync,
    synchronous_commit and full_page_writes stay on, so commits are real."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed: `make test-deps` installs it")
    directory = tempfile.mkdtemp(prefix="commcredits-bench-pg-")
    data = os.path.join(directory, "data")
    run_as: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root: the cluster belongs to the postgres user.
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(
        [*run_as, f"{bin_dir}/initdb", "-D", data, "-U", "postgres", "-A", "trust"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c max_connections=200"
    subprocess.run(
        [
            *run_as,
            f"{bin_dir}/pg_ctl",
            "-D",
            data,
            "-o",
            options,
            "-l",
            f"{directory}/log",
            "-w",
            "-t",
            str(PG_START_SECONDS),
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with open(os.path.join(data, "postmaster.pid")) as handle:
        pid = int(handle.readline().strip())
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", pid
    finally:
        stop_by_pid(pid)
        shutil.rmtree(directory, ignore_errors=True)


def stop_by_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def create_pg_database(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"


# --- the server under test ---------------------------------------------------------------------


@contextmanager
def server(database_url: str) -> Iterator[tuple[str, int]]:
    """`commcredits serve` as its own process: one uvicorn worker, as shipped."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "COMMCREDITS_DATABASE_URL": database_url,
            "COMMCREDITS_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "COMMCREDITS_BACKGROUND_WORKERS": "1",
        }
    )
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "commcredits.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        # A file, not a pipe: nobody reads a pipe while the load runs, and a
        # server that fills one would stall mid-measurement.
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_READY_SECONDS
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the server exited early: {log.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()


def load_catalog(database_url: str) -> None:
    """Migrate and load the shipped sample catalog (as `commcredits demo` does)."""
    from commcredits.api.app import create_app
    from commcredits.config import Settings
    from commcredits.services import catalog

    settings = Settings.from_env(
        {
            "COMMCREDITS_DATABASE_URL": database_url,
            "COMMCREDITS_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "COMMCREDITS_BACKGROUND_WORKERS": "0",
        }
    )
    application = create_app(settings)
    catalog.load_sample_if_empty(application.state.ctx)
    application.state.ctx.engine.dispose()


def seed_tenants(url: str, count: int) -> str:
    """Bench tenants through the API, each with a funded pay-as-you-go caller;
    returns a charging token valid for every tenant."""
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    with httpx.Client(base_url=url, headers=operator, timeout=30) as client:
        for index in range(count):
            tenant_id = load.tenant_id_of(index)
            expect(
                client.post(
                    "/v1/tenants",
                    json={
                        "id": tenant_id,
                        "name": f"Bench {index}",
                        "country": "DE",
                        "billing_country": "DE",
                        "agreement": "direct",
                        "currency": "USD",
                        "timezone": "UTC",
                    },
                ),
                201,
            )
            expect(
                client.post(
                    f"/v1/tenants/{tenant_id}/subscriptions",
                    json={"sku": "calling_plan_payg", "quantity": 1},
                ),
                201,
            )
            expect(
                client.post(
                    f"/v1/tenants/{tenant_id}/users",
                    json={
                        "upn": load.caller_upn_of(tenant_id),
                        "display_name": "Bench caller",
                        "usage_location": cdr.CALLER_USAGE_LOCATION,
                        "licenses": sorted(cdr.CALLER_LICENSES),
                    },
                ),
                201,
            )
            expect(
                client.post(
                    f"/v1/tenants/{tenant_id}/credits/adjustments",
                    json={"amount": TENANT_BALANCE, "reason": "benchmark funding"},
                ),
                201,
            )
        response = expect(client.post("/v1/charging-tokens", json={}), 201)
    return str(response.json()["token"])


def expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:500]}"
        )
    return response


# --- one backend -------------------------------------------------------------------------------


def run_load(
    url: str,
    token: str,
    scenario: str,
    *,
    clients: int,
    tenants: int,
    duration: float,
    warmup: float,
    watch: list[int],
    batch: int | None = None,
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(BENCH_DIR / "load.py"),
        "--url",
        url,
        "--scenario",
        scenario,
        "--clients",
        str(clients),
        "--tenants",
        str(tenants),
        "--token",
        token,
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--run-id",
        f"{scenario}-{clients}-{tenants}-{batch or 0}-{random.randrange(16**8):08x}",
    ]
    for pid in watch:
        command += ["--watch-pid", str(pid)]
    if batch is not None:
        command += ["--batch", str(batch)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=duration + warmup + LOAD_TIMEOUT_MARGIN_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed: {completed.stderr[-2000:]}")
    if not completed.stdout.strip():
        raise RuntimeError("load generator printed no result")
    result: dict[str, Any] = json.loads(completed.stdout)
    # Other work on the machine shows in every figure: say how busy it was.
    result["load_average_1min"] = os.getloadavg()[0]
    return result


def cores_text(result: dict[str, Any], server_pid: int, db_pid: int | None) -> str:
    cores = result.get("cores", {})
    parts = [f"server {cores.get(str(server_pid), float('nan')):.2f}"]
    if db_pid is not None:
        parts.append(f"postgres {cores.get(str(db_pid), float('nan')):.2f}")
    parts.append(f"load generator {cores.get('load generator', float('nan')):.2f}")
    return "cores: " + ", ".join(parts) + f"; load average {result['load_average_1min']:.1f}"


def bench_backend(
    backend: str,
    database_url: str,
    db_pid: int | None,
    scratch: Path,
    duration: float,
    warmup: float,
    core: dict[str, Any],
    raw: dict[str, Any],
) -> list[Row]:
    rows: list[Row] = []
    if backend == "postgres":
        service_url = create_pg_database(database_url, "bench")
        raw_url = create_pg_database(database_url, "raw")
    else:
        service_url = database_url
        raw_url = f"sqlite:///{scratch}/raw.db"

    print(f"[{backend}] raw database baseline ...", flush=True)
    prepare_raw_db(raw_url, 1)
    raw_result = measure_raw_db(raw_url, duration, 1)
    raw["cells"].append({"backend": backend, "scenario": "raw_db", **raw_result})
    raw_pairs = raw_result["transactions_per_second"] / 2
    rows.append(
        Row(
            backend,
            "baseline b: raw DB, lock+update account, insert ledger line",
            raw_result["transactions_per_second"],
            "tx/s",
            detail=f"1 connection, no HTTP; {raw_result['cores']:.2f} cores",
        )
    )

    load_catalog(service_url)
    with server(service_url) as (url, server_pid):
        print(f"[{backend}] seeding {max(TENANT_COUNTS)} tenants ...", flush=True)
        token = seed_tenants(url, max(TENANT_COUNTS))
        watch = [server_pid] + ([db_pid] if db_pid is not None else [])

        healthz: dict[int, float] = {}
        for clients in CLIENT_COUNTS:
            print(f"[{backend}] GET /healthz, {clients} clients ...", flush=True)
            result = run_load(
                url,
                token,
                "healthz",
                clients=clients,
                tenants=1,
                duration=duration,
                warmup=warmup,
                watch=watch,
            )
            raw["cells"].append({"backend": backend, **result})
            healthz[clients] = result["operations_per_second"]
            latency = result["latency_ms"].get("healthz", {})
            rows.append(
                Row(
                    backend,
                    f"baseline a: GET /healthz, {clients} clients",
                    result["operations_per_second"],
                    "req/s",
                    detail=f"p50 {latency.get('p50', 0):.1f} / p99 {latency.get('p99', 0):.1f} ms; "
                    + cores_text(result, server_pid, db_pid),
                )
            )

        for tenants in TENANT_COUNTS:
            for clients in CLIENT_COUNTS:
                print(f"[{backend}] calls, {tenants} tenants, {clients} clients ...", flush=True)
                result = run_load(
                    url,
                    token,
                    "calls",
                    clients=clients,
                    tenants=tenants,
                    duration=duration,
                    warmup=warmup,
                    watch=watch,
                )
                raw["cells"].append({"backend": backend, **result})
                rows += charging_rows(
                    backend,
                    tenants,
                    clients,
                    result,
                    healthz[clients] / 2,
                    raw_pairs,
                    server_pid,
                    db_pid,
                )

        for batch in CDR_BATCH_SIZES:
            print(f"[{backend}] POST /v1/cdrs, batches of {batch:,} ...", flush=True)
            result = run_load(
                url,
                token,
                "cdrs",
                clients=1,
                tenants=CDR_TENANTS,
                batch=batch,
                duration=duration,
                warmup=warmup,
                watch=watch,
            )
            raw["cells"].append({"backend": backend, **result})
            latency = result["latency_ms"].get("batch", {})
            met = None
            target = ""
            if batch == TARGET_CDR_BATCH:
                target = f">= {TARGET_CDRS_PER_SECOND:,} CDR/s"
                met = result["items_per_second"] >= TARGET_CDRS_PER_SECOND
            rows.append(
                Row(
                    backend,
                    f"offline rating: POST /v1/cdrs, batches of {batch:,}",
                    result["items_per_second"],
                    "CDR/s",
                    baseline="rating core alone",
                    baseline_value=core["records_per_second"],
                    target=target,
                    met=met,
                    detail=f"{latency.get('count', 0)} batches, p50 {latency.get('p50', 0):.0f} ms "
                    f"per batch; {result['errors']} errors; "
                    + cores_text(result, server_pid, db_pid),
                )
            )
    return rows


def charging_rows(
    backend: str,
    tenants: int,
    clients: int,
    result: dict[str, Any],
    healthz_pairs: float,
    raw_pairs: float,
    server_pid: int,
    db_pid: int | None,
) -> list[Row]:
    pairs = result["operations_per_second"]
    smaller_name, smaller = min(
        (("a: /healthz ÷ 2", healthz_pairs), ("b: raw DB ÷ 2", raw_pairs)), key=lambda p: p[1]
    )
    start = result["latency_ms"].get("start", {})
    end = result["latency_ms"].get("end", {})
    label = f"{tenants} tenant{'s' if tenants > 1 else ''}, {clients} clients"
    rows = [
        Row(
            backend,
            f"online charging: start->end pairs, {label}",
            pairs,
            "pairs/s",
            baseline=f"smaller of a, b ({smaller_name})",
            baseline_value=smaller,
            target=f">= {TARGET_CHARGING_RATIO:.0%} of baseline",
            met=pairs >= TARGET_CHARGING_RATIO * smaller,
            detail=f"start p50 {start.get('p50', 0):.1f} / p99 {start.get('p99', 0):.1f} ms; "
            f"end p50 {end.get('p50', 0):.1f} / p99 {end.get('p99', 0):.1f} ms; "
            f"vs a {pairs / healthz_pairs:.0%}, vs b {pairs / raw_pairs:.0%}; "
            f"{result['errors']} errors; " + cores_text(result, server_pid, db_pid),
        )
    ]
    if backend == "sqlite" and clients == TARGET_START_P99_CLIENTS:
        rows.append(
            Row(
                backend,
                f"online charging: p99 of a call start, {label}",
                start.get("p99", float("nan")),
                "ms",
                target=f"<= {TARGET_START_P99_MS:g} ms",
                met=start.get("p99", float("inf")) <= TARGET_START_P99_MS,
                detail=f"p50 {start.get('p50', 0):.1f} ms, max {start.get('max', 0):.1f} ms, "
                f"{start.get('count', 0)} starts",
            )
        )
    return rows


# --- reports -------------------------------------------------------------------------------

REPORT_ROWS = 50_000
QUICK_REPORT_ROWS = 10_000


def bench_reports(backend: str, url: str, rows: int, raw: dict[str, Any]) -> list[Row]:
    """PSTN usage export (CSV and xlsx, streamed) beside the csv module alone."""
    import reports as report_bench

    print(f"[{backend}] PSTN usage export of {rows:,} calls ...", flush=True)
    results = report_bench.run(url, rows)
    raw.setdefault("reports", {})[backend] = results
    baseline = float(results["csv_writer_alone"])  # type: ignore[arg-type]
    table = []
    for name in ("csv", "xlsx"):
        figures = results.get(name)
        if not isinstance(figures, dict):
            continue
        table.append(
            Row(
                backend,
                f"report export, {name}, {rows:,} calls (streamed)",
                figures["rows_per_second"],
                "rows/s",
                baseline="csv module alone, rows in memory",
                baseline_value=baseline,
                detail=f"first byte after {figures['first_byte_seconds']:.2f} s; "
                f"{figures['megabytes']:.1f} MB",
            )
        )
    return table


# --- rate lookup -------------------------------------------------------------------------------


def bench_rate_lookup(lookups: int, raw: dict[str, Any]) -> list[Row]:
    from commcredits.core.catalog import RateIndex, parse_rate_deck_csv

    print(
        f"rate lookup: {RATE_DECK_ROWS:,}-row deck, {lookups:,} lookups per round ...", flush=True
    )
    randomness = random.Random(1)
    rows = parse_rate_deck_csv(
        rate_lookup.generate_deck_csv(RATE_DECK_ROWS, randomness), max_rows=RATE_DECK_ROWS
    )
    index = RateIndex(rows)
    prefixes = sorted({(row.service, row.currency, row.prefix) for row in rows})
    query_sets = {
        "in ranges": rate_lookup.in_range_queries(lookups, prefixes, randomness),
        "random": rate_lookup.random_queries(lookups, randomness),
    }
    results = []
    for name, queries in query_sets.items():
        seconds, matched = rate_lookup.time_lookups(index, queries)
        floor_seconds = time_dict_lookups(queries)
        per_second = len(queries) / seconds
        floor_per_second = len(queries) / floor_seconds
        raw.setdefault("rate_lookup", {})[name] = {
            "lookups_per_second": per_second,
            "dict_lookups_per_second": floor_per_second,
            "matched": matched / len(queries),
        }
        results.append(
            Row(
                "-",
                f"rate lookup, 50,000-row deck, numbers {name}",
                per_second,
                "lookups/s",
                baseline="one dict lookup per number",
                baseline_value=floor_per_second,
                target=f">= {TARGET_LOOKUPS_PER_SECOND:,}/s",
                met=per_second >= TARGET_LOOKUPS_PER_SECOND,
                detail=f"{matched / len(queries):.0%} matched; best of "
                f"{rate_lookup.TIMED_LOOKUP_ROUNDS} rounds of {len(queries):,}",
            )
        )
    return results


def time_dict_lookups(queries: list[tuple[str, str, str, str]]) -> float:
    """The floor of any lookup written in Python: the same loop, one dict hit per number."""
    table = {digits: number_type for _service, _currency, digits, number_type in queries}
    lookup = table.get
    best_seconds = float("inf")
    for _round in range(rate_lookup.TIMED_LOOKUP_ROUNDS):
        started = time.perf_counter()
        for _service, _currency, digits, _number_type in queries:
            lookup(digits)
        best_seconds = min(best_seconds, time.perf_counter() - started)
    return best_seconds


# --- profile -----------------------------------------------------------------------------------


def run_profile(database_url: str, scratch: Path, duration: float) -> dict[str, Any] | None:
    print("[sqlite] profiling the charging path ...", flush=True)
    output = scratch / "profile.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCH_DIR / "profile_charging.py"),
            "--database-url",
            database_url,
            "--seconds",
            str(duration),
            "--json",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=duration * 4 + LOAD_TIMEOUT_MARGIN_SECONDS,
        check=False,
    )
    if completed.returncode != 0 or not output.exists():
        print(f"profile failed: {completed.stderr[-2000:]}")
        return None
    summary: dict[str, Any] = json.loads(output.read_text())
    return summary


# --- output ------------------------------------------------------------------------------------


def format_value(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:,.0f}"


def print_table(rows: list[Row], machine: dict[str, Any]) -> None:
    header = (
        "backend",
        "benchmark",
        "value",
        "unit",
        "baseline",
        "base value",
        "ratio",
        "target",
        "met",
    )
    lines = []
    for row in rows:
        ratio = row.ratio
        met = "" if row.met is None else ("yes" if row.met else "NO")
        lines.append(
            (
                row.backend,
                row.benchmark,
                format_value(row.value, row.unit),
                row.unit,
                row.baseline,
                format_value(row.baseline_value),
                "" if ratio is None else f"{ratio:.0%}",
                row.target,
                met,
            )
        )
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) for i in range(len(header))]
    right = {2, 5, 6}

    def render(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        )

    print(f"\nmachine: {machine['summary']}")
    print(render(header))
    print(render(tuple("-" * width for width in widths)))
    for line, row in zip(lines, rows, strict=True):
        print(render(line))
        if row.detail:
            print(" " * (widths[0] + 2) + "  " + row.detail)


def write_results(raw: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    ignore = RESULTS_DIR / ".gitignore"
    if not ignore.exists():
        # Results are measurements of one machine: never committed.
        ignore.write_text("*\n")
    path = RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(raw, indent=2, default=str))
    return path


if __name__ == "__main__":
    sys.exit(main())
