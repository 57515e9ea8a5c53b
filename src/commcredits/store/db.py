"""Engines and transactions.

How writes are serialised (docs/architecture.md says more):
- SQLite: one writer at a time. Every write transaction starts with
  ``BEGIN IMMEDIATE``, so it takes the database's write lock before its first
  read and two writers never interleave read-then-write; reads use a plain
  deferred ``BEGIN`` and, under WAL, never wait for writers.
- PostgreSQL: READ COMMITTED, with row locks (``SELECT ... FOR UPDATE``) on the
  row a write depends on (the tenant's credits account, the call, the
  subscription) and unique constraints for creations (idempotency keys, call ids).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import QueuePool

SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_POOL_SIZE = 10
POSTGRES_MAX_OVERFLOW = 20


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(
        url,
        poolclass=QueuePool,
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=POSTGRES_MAX_OVERFLOW,
        pool_pre_ping=True,
        connect_args={"prepare_threshold": 5},
    )


def _sqlite_engine(url: str) -> Engine:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        poolclass=QueuePool,
        pool_size=8,
        max_overflow=32,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so that we can say
        # BEGIN IMMEDIATE ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get("write", False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


# SQLite has one writer. Threads of one process that all say BEGIN IMMEDIATE
# would wait in SQLite's busy handler, which sleeps and polls (up to 100 ms a
# turn): they queue on a lock of ours instead, in order and without sleeping.
# Other processes on the same file still meet at BEGIN IMMEDIATE.
_sqlite_writers: dict[int, threading.Lock] = {}


def _writer_lock(engine: Engine) -> threading.Lock | None:
    if engine.dialect.name != "sqlite":
        return None
    return _sqlite_writers.setdefault(id(engine), threading.Lock())


def sqlite_writer_busy(engine: Engine) -> bool:
    """True while a thread of this process holds the SQLite writer lock (a CDR
    batch, a background job): work started now would wait for it."""
    lock = _writer_lock(engine)
    return lock is not None and lock.locked()


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction: BEGIN IMMEDIATE on SQLite, READ COMMITTED on PostgreSQL."""
    lock = _writer_lock(engine)
    with lock or nullcontext(), engine.connect() as connection:
        connection = connection.execution_options(write=True)
        # info belongs to the pooled DBAPI connection: start and end clean.
        connection.info.pop(AFTER_COMMIT, None)
        try:
            with connection.begin():
                yield connection
        finally:
            callbacks = connection.info.pop(AFTER_COMMIT, [])
    for callback in callbacks:
        callback()


AFTER_COMMIT = "commcredits_after_commit"


def after_commit(connection: Connection, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the write transaction of ``connection`` has
    committed (e.g. wake a worker for the job it just wrote); never on rollback."""
    callbacks = connection.info.setdefault(AFTER_COMMIT, [])
    if callback not in callbacks:
        callbacks.append(callback)


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        with connection.begin():
            yield connection


def database_reachable(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - readiness reports any failure as "not ready"
        return False


def is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"
