"""Baseline (b) for online charging: the raw database limit, without HTTP.

    python bench/raw_db.py --url sqlite:///tmp/x/raw.db --duration 10 [--connections 1]

One Python process, on the service's own schema (migrated the same way) and
the same driver settings, doing per transaction what a call start or end does
to the database at its core, and nothing else: lock and read the tenant's
credits account row, update it, insert one ledger line, commit. No HTTP, no
SQLAlchemy, no business rules: the figure is what the database and the
driver allow one process to commit.

A call (start + end) is two such write transactions, so the runner compares
call pairs per second with half of this figure.

With ``--connections N`` above 1, N threads of the same process each run the
loop on their own connection, on their own tenant (PostgreSQL commits in
parallel and shares WAL flushes; SQLite has one writer, so more connections
only queue).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

MAX_CONNECTIONS = 64
MAX_DURATION_SECONDS = 600
SQLITE_BUSY_TIMEOUT_MS = 30_000
RAW_TENANT_FORMAT = "raw-{index:03d}"
# Money on SQLite is stored as integer millionths (store/types.py).
MILLIONTHS_PER_UNIT = 1_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", required=True, help="an empty database: sqlite:///... or postgresql://..."
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=1)
    arguments = parser.parse_args()
    prepare(arguments.url, arguments.connections)
    print(json.dumps(measure(arguments.url, arguments.duration, arguments.connections)))
    return 0


def prepare(url: str, tenants: int) -> None:
    """Migrate an empty database and create the tenants (through the service
    itself, so that every row is as the service would write it)."""
    from commcredits.config import sqlalchemy_url
    from commcredits.services import directory
    from commcredits.store.db import make_engine, write_transaction
    from commcredits.store.migrate import upgrade

    engine = make_engine(sqlalchemy_url(url))
    try:
        upgrade(engine)
        with write_transaction(engine) as connection:
            for index in range(tenants):
                tenant_id = RAW_TENANT_FORMAT.format(index=index)
                if directory.get_tenant_row(connection, tenant_id) is None:
                    directory.create_tenant(
                        connection,
                        directory.NewTenant(
                            id=tenant_id,
                            name="Raw baseline",
                            country="US",
                            billing_country="US",
                            agreement="direct",
                            currency="USD",
                            timezone="UTC",
                        ),
                    )
    finally:
        engine.dispose()


def measure(url: str, duration_seconds: float, connections: int = 1) -> dict[str, Any]:
    """Committed transactions per second over ``duration_seconds``."""
    if not 1 <= connections <= MAX_CONNECTIONS:
        raise ValueError(f"connections must be 1 to {MAX_CONNECTIONS}")
    if not 0 < duration_seconds <= MAX_DURATION_SECONDS:
        raise ValueError(f"duration must be above 0 and at most {MAX_DURATION_SECONDS} s")
    counts = [0] * connections
    failures: list[str] = []
    deadline = time.perf_counter() + duration_seconds
    cpu_started = time.process_time()
    started = time.perf_counter()

    def worker(number: int) -> None:
        tenant_id = RAW_TENANT_FORMAT.format(index=number)
        try:
            if url.startswith("sqlite"):
                counts[number] = _sqlite_loop(url.split(":///", 1)[1], tenant_id, deadline)
            else:
                counts[number] = _postgres_loop(url, tenant_id, deadline)
        except Exception as exc:  # noqa: BLE001 - reported in the result, not lost in a thread
            failures.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"raw baseline failed: {failures[0]}")
    return {
        "connections": connections,
        "seconds": elapsed,
        "transactions": sum(counts),
        "transactions_per_second": sum(counts) / elapsed,
        "cores": (time.process_time() - cpu_started) / elapsed,
    }


def _sqlite_loop(path: str, tenant_id: str, deadline: float) -> int:
    # The same settings as the service's engine (store/db.py).
    connection = sqlite3.connect(path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA foreign_keys=ON")
    committed = 0
    try:
        while time.perf_counter() < deadline:
            connection.execute("BEGIN IMMEDIATE")
            balance, reserved, seq = connection.execute(
                "SELECT balance, reserved, ledger_seq FROM credits_accounts WHERE tenant_id = ?",
                (tenant_id,),
            ).fetchone()
            at = datetime.now(UTC).isoformat()
            connection.execute(
                "UPDATE credits_accounts SET reserved = ?, ledger_seq = ?, updated_at = ? "
                "WHERE tenant_id = ?",
                (reserved, seq + 1, at, tenant_id),
            )
            connection.execute(
                "INSERT INTO ledger_transactions "
                "(tenant_id, seq, id, at, kind, amount, balance_after, reference) "
                "VALUES (?, ?, ?, ?, 'call_charge', 0, ?, ?)",
                (tenant_id, seq + 1, f"txn_raw_{seq + 1}", at, balance, f"raw {seq + 1}"),
            )
            connection.execute("COMMIT")
            committed += 1
    finally:
        connection.close()
    return committed


def _postgres_loop(url: str, tenant_id: str, deadline: float) -> int:
    import psycopg

    plain_url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    committed = 0
    # prepare_threshold as in the service's engine: statements become
    # server-side prepared after a few uses.
    with psycopg.connect(plain_url, prepare_threshold=5) as connection:
        while time.perf_counter() < deadline:
            with connection.transaction():
                balance, reserved, seq = connection.execute(
                    "SELECT balance, reserved, ledger_seq FROM credits_accounts "
                    "WHERE tenant_id = %s FOR UPDATE",
                    (tenant_id,),
                ).fetchone()
                at = datetime.now(UTC)
                connection.execute(
                    "UPDATE credits_accounts SET reserved = %s, ledger_seq = %s, updated_at = %s "
                    "WHERE tenant_id = %s",
                    (reserved, seq + 1, at, tenant_id),
                )
                connection.execute(
                    "INSERT INTO ledger_transactions "
                    "(tenant_id, seq, id, at, kind, amount, balance_after, reference) "
                    "VALUES (%s, %s, %s, %s, 'call_charge', 0, %s, %s)",
                    (tenant_id, seq + 1, f"txn_raw_{seq + 1}", at, balance, f"raw {seq + 1}"),
                )
            committed += 1
    return committed


if __name__ == "__main__":
    sys.exit(main())
