"""Bulk inserts through the driver's own executemany.

SQLAlchemy's `insert(table)` with a list of rows renders multi-row VALUES
batches and processes every parameter of every row through its compiled
statement; for a batch of 10,000 offline records of 46 columns that was
most of the batch's database time. Here the statement is compiled once per
table and dialect, each value goes through the very bind processor
SQLAlchemy would apply (so what is stored is the same), and the rows go to
the driver's `executemany` as tuples: sqlite3 steps one prepared statement,
psycopg 3 sends them in a pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect

# Rows per executemany call: bounds the memory of one call's parameters.
MAX_ROWS_PER_CALL = 10_000


@dataclass(frozen=True)
class _InsertPlan:
    sql: str
    columns: tuple[tuple[str, Callable[[Any], Any] | None], ...]


_plans: dict[tuple[str, str], _InsertPlan] = {}


def insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (each naming every column of `table`) in one executemany."""
    if not rows:
        return
    plan = _plan(connection.dialect, table)
    columns = plan.columns
    for start in range(0, len(rows), MAX_ROWS_PER_CALL):
        parameters = [
            tuple(row[name] if process is None else process(row[name]) for name, process in columns)
            for row in rows[start : start + MAX_ROWS_PER_CALL]
        ]
        connection.exec_driver_sql(plan.sql, parameters)


def _plan(dialect: Dialect, table: Table) -> _InsertPlan:
    key = (dialect.name, table.name)
    plan = _plans.get(key)
    if plan is None:
        placeholder = "?" if dialect.paramstyle == "qmark" else "%s"
        preparer = dialect.identifier_preparer
        names = [column.name for column in table.columns]
        sql = (
            f"INSERT INTO {preparer.format_table(table)} "
            f"({', '.join(preparer.quote(name) for name in names)}) "
            f"VALUES ({', '.join([placeholder] * len(names))})"
        )
        processors = tuple(
            (column.name, column.type._cached_bind_processor(dialect)) for column in table.columns
        )
        plan = _InsertPlan(sql, processors)
        _plans[key] = plan
    return plan
