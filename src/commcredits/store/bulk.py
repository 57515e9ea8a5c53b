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
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect

# Rows per executemany call: bounds the memory of one call's parameters.
MAX_ROWS_PER_CALL = 10_000


@dataclass(frozen=True)
class _InsertPlan:
    sql: str
    values_of: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # a row's values, in column order
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (column index, bind processor)


_plans: dict[tuple[str, str], _InsertPlan] = {}


def insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (each naming every column of `table`) in one executemany."""
    if not rows:
        return
    plan = _plan(connection.dialect, table)
    values_of, processors = plan.values_of, plan.processors
    for start in range(0, len(rows), MAX_ROWS_PER_CALL):
        parameters = []
        for row in rows[start : start + MAX_ROWS_PER_CALL]:
            values = list(values_of(row))
            for index, process in processors:
                values[index] = process(values[index])
            parameters.append(tuple(values))
        connection.exec_driver_sql(plan.sql, parameters)


def _plan(dialect: Dialect, table: Table) -> _InsertPlan:
    key = (dialect.name, table.name)
    plan = _plans.get(key)
    if plan is None:
        placeholder = "?" if dialect.paramstyle == "qmark" else "%s"
        preparer = dialect.identifier_preparer
        names = [column.name for column in table.columns]
        assert len(names) > 1, table.name  # itemgetter of one name gives a bare value
        sql = (
            f"INSERT INTO {preparer.format_table(table)} "
            f"({', '.join(preparer.quote(name) for name in names)}) "
            f"VALUES ({', '.join([placeholder] * len(names))})"
        )
        processors = tuple(
            (index, process)
            for index, column in enumerate(table.columns)
            if (process := column.type._cached_bind_processor(dialect)) is not None
        )
        plan = _InsertPlan(sql, itemgetter(*names), processors)
        _plans[key] = plan
    return plan
