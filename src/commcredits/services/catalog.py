"""The catalog: rate decks and plans, stored in the database and served from an
in-process index.

Every server process keeps a RateIndex (longest-prefix dict) and the Plans in
memory. A version counter in ``catalog_state`` tells when another process has
loaded a new deck; the charging path checks it at most once per
CATALOG_CHECK_SECONDS, and a process that loads a deck refreshes at once.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, tuple_, update

from commcredits.core.catalog import (
    Plans,
    PlansError,
    RateDeckError,
    RateIndex,
    RateRow,
    parse_plans,
    parse_rate_deck_csv,
    plans_to_doc,
)
from commcredits.errors import InvalidRateDeck, ValidationFailed
from commcredits.services.clock import now
from commcredits.store import tables as t
from commcredits.store.db import read_transaction, write_transaction

CATALOG_CHECK_SECONDS = 1.0
RATES_KEY = "rates"
PLANS_KEY = "plans"
INSERT_BATCH_ROWS = 5_000

EMPTY_PLANS_DOC: dict[str, Any] = {
    "plans": [],
    "conference_dialout": {"minutes_per_license": 0, "included_zone": []},
}


@dataclass
class _Snapshot:
    rates_version: int
    plans_version: int
    index: RateIndex
    plans: Plans
    checked_at: float


class Catalog:
    """The catalog as one process sees it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None

    def current(self) -> tuple[RateIndex, Plans]:
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() - snapshot.checked_at > CATALOG_CHECK_SECONDS:
            snapshot = self._refresh()
        return snapshot.index, snapshot.plans

    def invalidate(self) -> None:
        with self._lock:
            self._snapshot = None

    def _refresh(self) -> _Snapshot:
        with self._lock:
            with read_transaction(self._engine) as connection:
                versions = _versions(connection)
                old = self._snapshot
                rates_version = versions.get(RATES_KEY, (0, None))[0]
                plans_version, plans_doc = versions.get(PLANS_KEY, (0, None))
                if old is not None and old.rates_version == rates_version:
                    index = old.index
                else:
                    index = RateIndex(_load_rows(connection))
                if old is not None and old.plans_version == plans_version:
                    plans = old.plans
                else:
                    plans = parse_plans(plans_doc or EMPTY_PLANS_DOC)
            self._snapshot = _Snapshot(rates_version, plans_version, index, plans, time.monotonic())
            return self._snapshot


def _versions(connection: Connection) -> dict[str, tuple[int, Any]]:
    rows = connection.execute(select(t.catalog_state)).all()
    return {row.key: (row.version, row.document) for row in rows}


def _load_rows(connection: Connection) -> list[RateRow]:
    rows = connection.execute(select(t.rate_rows)).all()
    return [
        RateRow(
            service=r.service,
            prefix=r.prefix,
            destination=r.destination,
            number_type=r.number_type,
            rate_per_minute=r.rate_per_minute.normalize()
            if r.rate_per_minute
            else r.rate_per_minute,
            connect_fee=r.connect_fee.normalize() if r.connect_fee else r.connect_fee,
            initial_increment_s=r.initial_increment_s,
            subsequent_increment_s=r.subsequent_increment_s,
            currency=r.currency,
        )
        for r in rows
    ]


def _bump(connection: Connection, key: str, document: Any = None) -> None:
    at = now()
    existing = connection.execute(
        select(t.catalog_state.c.version).where(t.catalog_state.c.key == key)
    ).first()
    if existing is None:
        connection.execute(
            insert(t.catalog_state).values(key=key, version=1, document=document, updated_at=at)
        )
    else:
        connection.execute(
            update(t.catalog_state)
            .where(t.catalog_state.c.key == key)
            .values(version=t.catalog_state.c.version + 1, document=document, updated_at=at)
        )


def put_rates(engine: Engine, csv_text: str) -> int:
    """Replace, atomically, the decks in force for each (service, currency) the upload holds.

    One write transaction: a bad row rejects the whole upload before anything changes.
    """
    try:
        rows = parse_rate_deck_csv(csv_text)
    except RateDeckError as exc:
        raise InvalidRateDeck(f"line {exc.line}: {exc.detail}", line=exc.line) from exc
    pairs = sorted({(r.service, r.currency) for r in rows})
    with write_transaction(engine) as connection:
        connection.execute(
            delete(t.rate_rows).where(
                tuple_(t.rate_rows.c.service, t.rate_rows.c.currency).in_(pairs)
            )
        )
        values = [
            {
                "service": r.service,
                "currency": r.currency,
                "prefix": r.prefix,
                "number_type": r.number_type,
                "destination": r.destination,
                "rate_per_minute": r.rate_per_minute,
                "connect_fee": r.connect_fee,
                "initial_increment_s": r.initial_increment_s,
                "subsequent_increment_s": r.subsequent_increment_s,
            }
            for r in rows
        ]
        for start in range(0, len(values), INSERT_BATCH_ROWS):
            connection.execute(insert(t.rate_rows), values[start : start + INSERT_BATCH_ROWS])
        _bump(connection, RATES_KEY)
    return len(rows)


def put_plans(engine: Engine, document: Any) -> dict[str, Any]:
    try:
        plans = parse_plans(document)
    except PlansError as exc:
        raise ValidationFailed(exc.detail) from exc
    doc = plans_to_doc(plans)
    with write_transaction(engine) as connection:
        _bump(connection, PLANS_KEY, json.loads(json.dumps(doc)))
    return doc


def get_plans(catalog: Catalog) -> dict[str, Any]:
    return plans_to_doc(catalog.current()[1])


def rate_row_dict(row: RateRow) -> dict[str, Any]:
    from commcredits.core.money import format_money

    return {
        "service": row.service,
        "prefix": row.prefix,
        "destination": row.destination,
        "number_type": row.number_type,
        "rate_per_minute": format_money(row.rate_per_minute),
        "connect_fee": format_money(row.connect_fee),
        "initial_increment_s": row.initial_increment_s,
        "subsequent_increment_s": row.subsequent_increment_s,
        "currency": row.currency,
    }


def sample_rates_csv() -> str:
    return resources.files("commcredits.data.catalog").joinpath("rates.csv").read_text("utf-8")


def sample_plans() -> Any:
    return json.loads(
        resources.files("commcredits.data.catalog").joinpath("plans.json").read_text("utf-8")
    )


def load_sample_if_empty(ctx: Any) -> None:
    """The demo's catalog: the shipped sample, loaded once into an empty database."""
    with read_transaction(ctx.engine) as connection:
        versions = _versions(connection)
    if RATES_KEY not in versions:
        put_rates(ctx.engine, sample_rates_csv())
    if PLANS_KEY not in versions:
        put_plans(ctx.engine, sample_plans())
    ctx.catalog.invalidate()
