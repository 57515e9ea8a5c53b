"""PSTN usage export: rows per second of the CSV and xlsx exports.

    python bench/reports.py [--rows 100000] [--database-url URL] [--batch-rows 1000]

Writes ``--rows`` synthetic finished calls of one tenant straight into the
``calls`` table of a fresh database (a temporary SQLite file unless a URL is
given; a PostgreSQL database is used as it is, so give an empty one), then
runs each export to the end, as the API streams it, and prints per format:
rows/s, bytes, MB/s and the time to the first byte. The time to the first
byte matters for xlsx: the workbook is finished (in constant memory, on disk)
before its first byte can leave.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, delete, insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from commcredits.services import reports  # noqa: E402
from commcredits.store import tables as t  # noqa: E402
from commcredits.store.db import make_engine  # noqa: E402
from commcredits.store.migrate import upgrade  # noqa: E402

TENANT_ID = "bench-reports"
CURRENCY = "CHF"
INSERT_BATCH_ROWS = 5_000
FIRST_CALL_AT = datetime(2026, 1, 1, tzinfo=UTC)
DESTINATIONS = (
    ("+441212345678", "GB", "United Kingdom", "International"),
    ("+4930123456", "DE", "Germany", "International"),
    ("+41212345678", "CH", "Switzerland", "Domestic"),
)


def synthetic_row(number: int) -> dict[str, object]:
    to_number, region, name, context = DESTINATIONS[number % len(DESTINATIONS)]
    started_at = FIRST_CALL_AT + timedelta(seconds=30 * number)
    duration_seconds = 7 + number % 1200
    pooled = number % 4 == 0
    return {
        "tenant_id": TENANT_ID,
        "call_id": f"bench-{number:09d}",
        "source": "offline",
        "state": "ended",
        "call_type": "user_out",
        "user_id": f"u-{number % 500:04d}",
        "user_upn": f"user{number % 500:04d}@bench.example",
        "user_display_name": f"Bench User {number % 500}",
        "from_number": "+41441234567",
        "to_number": to_number,
        "destination_region": region,
        "destination_name": name,
        "destination_context": context,
        "number_type": "fixed",
        "usage_country": "CH",
        "decision": "allow",
        "funding": "included" if pooled else "credits",
        "started_at": started_at,
        "ended_at": started_at + timedelta(seconds=duration_seconds),
        "duration_seconds": duration_seconds,
        "granted_seconds": duration_seconds,
        "hold_amount": Decimal(0),
        "pool_kind": "domestic" if pooled else None,
        "pool_hold_seconds": 0,
        "currency": CURRENCY,
        "charge": Decimal(0) if pooled else Decimal(duration_seconds) / 500,
        "pool_seconds": duration_seconds if pooled else 0,
        "charged_seconds": 0 if pooled else duration_seconds,
        "credits_allowed": not pooled,
        "overage": False,
        "end_reason": "offline",
        "request_hash": "",
    }


def fill(engine: Engine, rows: int) -> None:
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(delete(t.calls).where(t.calls.c.tenant_id == TENANT_ID))
        connection.execute(delete(t.tenants).where(t.tenants.c.id == TENANT_ID))
        connection.execute(
            insert(t.tenants).values(
                id=TENANT_ID,
                name="Bench",
                country="CH",
                billing_country="CH",
                agreement="direct",
                currency=CURRENCY,
                timezone="Europe/Zurich",
                purchase_override=False,
                created_at=now,
                updated_at=now,
            )
        )
        for first in range(0, rows, INSERT_BATCH_ROWS):
            batch = [synthetic_row(n) for n in range(first, min(first + INSERT_BATCH_ROWS, rows))]
            connection.execute(insert(t.calls), batch)


def measure(name: str, rows: int, chunks: Callable[[], Iterator[bytes]]) -> dict[str, float]:
    started = time.perf_counter()
    first_byte_seconds = None
    produced = 0
    for chunk in chunks():
        if first_byte_seconds is None and chunk:
            first_byte_seconds = time.perf_counter() - started
        produced += len(chunk)
    elapsed = time.perf_counter() - started
    print(
        f"{name:5} {rows:>10,} rows  {rows / elapsed:>10,.0f} rows/s  "
        f"{produced / 1e6:>8.1f} MB  {produced / 1e6 / elapsed:>6.1f} MB/s  "
        f"first byte after {first_byte_seconds or 0:.2f} s"
    )
    return {
        "rows_per_second": rows / elapsed,
        "first_byte_seconds": first_byte_seconds or 0.0,
        "megabytes": produced / 1e6,
    }


def csv_writer_alone(rows: int) -> float:
    """Baseline: the csv module writing the same number of report-shaped rows
    from memory to nowhere (no database, no service code)."""
    import csv
    import io

    values = [list(synthetic_row(n).values()) for n in range(min(rows, 20_000))]
    started = time.perf_counter()
    written = 0
    while written < rows:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in values[: rows - written]:
            writer.writerow(row)
        written += min(len(values), rows - written)
    return rows / (time.perf_counter() - started)


def run(url: str, rows: int, formats: tuple[str, ...] = ("csv", "xlsx")) -> dict[str, object]:
    """For bench/run.py: fill a tenant with ``rows`` calls and time each export."""
    engine = make_engine(url)
    upgrade(engine)
    fill(engine, rows)
    usage = reports.UsageFilter(TENANT_ID)
    results: dict[str, object] = {"rows": rows, "csv_writer_alone": csv_writer_alone(rows)}
    if "csv" in formats:
        results["csv"] = measure("csv", rows, lambda: reports.csv_chunks(engine, usage))
    if "xlsx" in formats:
        results["xlsx"] = measure(
            "xlsx", rows, lambda: reports.xlsx_chunks(engine, usage, CURRENCY)
        )
    engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--batch-rows", type=int, default=reports.EXPORT_BATCH_ROWS)
    parser.add_argument("--formats", default="csv,xlsx")
    arguments = parser.parse_args()
    url = arguments.database_url
    if url is None:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='commcredits-bench-')}/reports.db"
    reports.EXPORT_BATCH_ROWS = arguments.batch_rows
    engine = make_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    fill(engine, arguments.rows)
    print(
        f"{engine.dialect.name}: {arguments.rows:,} rows written in "
        f"{time.perf_counter() - started:.1f} s; batches of {arguments.batch_rows} rows"
    )
    usage = reports.UsageFilter(TENANT_ID)
    formats = arguments.formats.split(",")
    if "csv" in formats:
        measure("csv", arguments.rows, lambda: reports.csv_chunks(engine, usage))
    if "xlsx" in formats:
        measure("xlsx", arguments.rows, lambda: reports.xlsx_chunks(engine, usage, CURRENCY))
    engine.dispose()


if __name__ == "__main__":
    main()
