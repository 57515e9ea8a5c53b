"""The load generator: one asyncio process driving a running server over HTTP.

    python bench/load.py --url http://127.0.0.1:PORT --scenario calls --clients 16 \
        --tenants 100 --token TOKEN --duration 10 --warmup 1 [--watch-pid PID ...]

Scenarios:
- ``healthz``: ``GET /healthz`` in a loop: the bare server stack, no database.
- ``calls``: each client starts a call (``POST /v1/calls``) and ends it
  (``POST /v1/calls/{id}/end``), over and over; the tenant of each call is
  chosen round-robin over ``--tenants`` bench tenants.
- ``cdrs``: each client posts batches of ``--batch`` finished calls to
  ``POST /v1/cdrs``.

Requests completed during the warm-up are not counted. The result is one JSON
object on stdout: completed operations, errors, operations per second,
p50/p99 latencies in milliseconds, and the CPU seconds used during the timed
window by this process and by each watched process (with its children: the
PostgreSQL postmaster and its backends), so the runner can say how many cores
each side used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx

# bench/cdr.py, beside this file: the bench tenants, their caller and the numbers called.
from cdr import CALLING_NUMBER, called_numbers, caller_upn_of, cdr_records, tenant_id_of

CALL_DURATION_SECONDS = 65
MAX_CLIENTS = 256
MAX_DURATION_SECONDS = 600
REQUEST_TIMEOUT_SECONDS = 30.0
# A client that meets errors keeps going, but a run that is mostly errors is
# broken: stop early rather than hammer a dead server for the whole window.
MAX_ERRORS = 1000
MIN_TIMED_BATCHES = 2


@dataclass
class Tally:
    """What the clients measured; latencies are (completed_at, seconds) pairs."""

    operations: int = 0
    items: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    batches: list[tuple[float, float]] = field(default_factory=list)  # (begun_at, done_at)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text[:300])

    def latency(self, name: str, seconds: float) -> None:
        self.latencies.setdefault(name, []).append(seconds)


@dataclass(frozen=True)
class Window:
    measure_from: float
    measure_until: float

    def counts(self, begun_at: float, done_at: float) -> bool:
        return begun_at >= self.measure_from and done_at <= self.measure_until


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--scenario", choices=("healthz", "calls", "cdrs"), required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--token", default="")
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds first")
    parser.add_argument("--batch", type=int, default=1000, help="records per CDR batch")
    parser.add_argument("--run-id", default=uuid.uuid4().hex[:8], help="prefix of call ids")
    parser.add_argument("--watch-pid", type=int, action="append", default=[])
    arguments = parser.parse_args()
    if not 1 <= arguments.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be 1 to {MAX_CLIENTS}")
    if not 0 < arguments.duration <= MAX_DURATION_SECONDS:
        parser.error(f"--duration must be above 0 and at most {MAX_DURATION_SECONDS}")
    result = asyncio.run(run(arguments))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


async def run(arguments: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {arguments.token}"} if arguments.token else {}
    tally = Tally()
    # One client object, holding one keep-alive connection, per simulated
    # client: a single httpx pool shared by many concurrent requests costs
    # the load generator more CPU per request than the server spends.
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=arguments.url,
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                    headers=headers,
                    timeout=REQUEST_TIMEOUT_SECONDS,
                )
            )
            for _ in range(arguments.clients)
        ]
        # One request per connection before the clock starts: connection set-up
        # is not what is measured.
        await asyncio.gather(*(client.get("/healthz") for client in clients))
        started = time.perf_counter()
        window = Window(started + arguments.warmup, started + arguments.warmup + arguments.duration)
        cpu_at_start: dict[str, float] = {}
        cpu_at_end: dict[str, float] = {}
        watcher = asyncio.create_task(
            watch_cpu(window, arguments.watch_pid, cpu_at_start, cpu_at_end)
        )
        await asyncio.gather(
            *(
                client_loop(client, arguments, number, window, tally)
                for number, client in enumerate(clients)
            )
        )
        await watcher
    timed_seconds = window.measure_until - window.measure_from
    if tally.batches:
        # Records: from the first timed batch's start to the last one's end.
        timed_seconds = max(done for _, done in tally.batches) - min(
            begun for begun, _ in tally.batches
        )
    return {
        "scenario": arguments.scenario,
        "clients": arguments.clients,
        "tenants": arguments.tenants,
        "batch": arguments.batch if arguments.scenario == "cdrs" else None,
        "seconds": timed_seconds,
        "operations": tally.operations,
        "operations_per_second": tally.operations / timed_seconds,
        "items_per_second": tally.items / timed_seconds,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "latency_ms": {
            name: percentiles_ms(samples) for name, samples in sorted(tally.latencies.items())
        },
        "cores": {
            name: (cpu_at_end[name] - cpu_at_start[name])
            / (window.measure_until - window.measure_from)
            for name in cpu_at_end
            if name in cpu_at_start
        },
    }


async def client_loop(
    client: httpx.AsyncClient,
    arguments: argparse.Namespace,
    number: int,
    window: Window,
    tally: Tally,
) -> None:
    numbers = called_numbers()
    sequence = 0
    while keep_going(arguments.scenario, window, tally):
        sequence += 1
        try:
            if arguments.scenario == "healthz":
                await one_healthz(client, window, tally)
            elif arguments.scenario == "calls":
                tenant_index = (number + sequence * arguments.clients) % arguments.tenants
                tenant_id = tenant_id_of(tenant_index)
                call_id = f"{arguments.run_id}-{number}-{sequence}"
                called = numbers[(number * 7919 + sequence) % len(numbers)]
                await one_call(client, tenant_id, call_id, called, window, tally)
            else:
                records = cdr_batch(arguments, number, sequence)
                await one_batch(client, records, window, tally)
        except httpx.HTTPError as exc:
            # A dropped connection or a timeout is an error of the run, not of this process.
            tally.error(f"{type(exc).__name__}: {exc}")


def keep_going(scenario: str, window: Window, tally: Tally) -> bool:
    if tally.errors >= MAX_ERRORS:
        return False
    now = time.perf_counter()
    if now < window.measure_until:
        return True
    # A batch of records can take seconds: go on (within a bound) until at
    # least MIN_TIMED_BATCHES began inside the window.
    overtime_limit = window.measure_until + (window.measure_until - window.measure_from) * 3
    return scenario == "cdrs" and len(tally.batches) < MIN_TIMED_BATCHES and now < overtime_limit


async def one_healthz(client: httpx.AsyncClient, window: Window, tally: Tally) -> None:
    begun_at = time.perf_counter()
    response = await client.get("/healthz")
    done_at = time.perf_counter()
    if response.status_code != 200:
        tally.error(f"healthz {response.status_code}: {response.text}")
        return
    if window.counts(begun_at, done_at):
        tally.operations += 1
        tally.items += 1
        tally.latency("healthz", done_at - begun_at)


async def one_call(
    client: httpx.AsyncClient,
    tenant_id: str,
    call_id: str,
    called: str,
    window: Window,
    tally: Tally,
) -> None:
    begun_at = time.perf_counter()
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
    started_at = time.perf_counter()
    if start.status_code != 201 or start.json().get("decision") != "allow":
        tally.error(f"start {start.status_code}: {start.text}")
        return
    end = await client.post(
        f"/v1/calls/{call_id}/end",
        json={"duration_seconds": CALL_DURATION_SECONDS, "tenant_id": tenant_id},
    )
    ended_at = time.perf_counter()
    if end.status_code != 200:
        tally.error(f"end {end.status_code}: {end.text}")
        return
    if window.counts(begun_at, ended_at):
        tally.operations += 1
        tally.items += 1
        tally.latency("start", started_at - begun_at)
        tally.latency("end", ended_at - started_at)


def cdr_batch(arguments: argparse.Namespace, number: int, sequence: int) -> list[dict[str, Any]]:
    prefix = f"{arguments.run_id}-{number}-{sequence}"
    return cdr_records(arguments.batch, arguments.tenants, prefix)


async def one_batch(
    client: httpx.AsyncClient, records: list[dict[str, Any]], window: Window, tally: Tally
) -> None:
    begun_at = time.perf_counter()
    response = await client.post("/v1/cdrs", json={"records": records})
    done_at = time.perf_counter()
    if response.status_code != 200:
        tally.error(f"cdrs {response.status_code}: {response.text}")
        return
    results = response.json()["results"]
    rated = sum(1 for result in results if result["status"] == "rated")
    if rated != len(records):
        rejected = [result for result in results if result["status"] != "rated"][:2]
        tally.error(f"cdrs: {len(records) - rated} of {len(records)} not rated: {rejected}")
    # Batches are counted by when they began: a batch in flight at the end
    # of the window is waited for, and the time it took is counted too.
    if window.measure_from <= begun_at < window.measure_until:
        tally.operations += 1
        tally.items += rated
        tally.latency("batch", done_at - begun_at)
        tally.batches.append((begun_at, done_at))


async def watch_cpu(
    window: Window, pids: list[int], at_start: dict[str, float], at_end: dict[str, float]
) -> None:
    """CPU seconds of this process and of the watched process trees, read at
    the edges of the timed window."""
    await asyncio.sleep(max(0.0, window.measure_from - time.perf_counter()))
    at_start.update(cpu_snapshot(pids))
    await asyncio.sleep(max(0.0, window.measure_until - time.perf_counter()))
    at_end.update(cpu_snapshot(pids))


def cpu_snapshot(pids: list[int]) -> dict[str, float]:
    snapshot = {"load generator": time.process_time()}
    for pid in pids:
        seconds = tree_cpu_seconds(pid)
        if seconds is not None:
            snapshot[str(pid)] = seconds
    return snapshot


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its live children (Linux /proc)."""
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    total_ticks = 0
    found = False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields after the command name: state, ppid, ..., utime (12th), stime (13th).
        parent = int(fields[1])
        if int(entry) == pid or parent == pid:
            total_ticks += int(fields[11]) + int(fields[12])
            found = found or int(entry) == pid
    return total_ticks / ticks_per_second if found else None


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    return {"p50": at(0.50), "p99": at(0.99), "max": ordered[-1] * 1000, "count": len(ordered)}


if __name__ == "__main__":
    sys.exit(main())
