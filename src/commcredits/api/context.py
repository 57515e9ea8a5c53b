"""What every request handler needs, built once per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from fastapi import Depends, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from commcredits.api.auth import PRINCIPAL_SCOPE_KEY, Principal, TokenCache, authenticate
from commcredits.config import Settings
from commcredits.services.catalog import Catalog
from commcredits.store.db import sqlite_writer_busy


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    catalog: Catalog
    token_cache: TokenCache = field(default_factory=TokenCache)
    services: dict[str, Any] = field(default_factory=dict)


# `async def`: FastAPI runs a plain `def` dependency in its thread pool, a
# thread hop per request for what is an attribute read.
async def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def get_principal(request: Request) -> Principal:
    known = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if isinstance(known, Principal):  # the request guard authenticated /v1 already
        return known
    # A token read from the database on a cache miss: placed like any other
    # database work (see on_database below).
    return await on_database(request.app.state.ctx, authenticate, request)


Ctx = Depends(get_ctx)
Auth = Depends(get_principal)


P = ParamSpec("P")
R = TypeVar("R")


async def on_database(
    ctx: AppContext, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs
) -> R:
    """Run a handler's database work where it costs least.

    On SQLite it runs inline on the event loop: the database is a local file
    with one writer, a transaction takes well under a millisecond of CPU, and
    the process has one core of Python anyway, so a hop to the thread pool
    (and sixteen threads taking turns at the GIL and the writer lock) only
    adds work. On PostgreSQL each statement waits on a round trip, so the
    work goes to the thread pool and the loop keeps serving others meanwhile.
    """
    if ctx.engine.dialect.name == "sqlite" and not sqlite_writer_busy(ctx.engine):
        return work(*args, **kwargs)
    # PostgreSQL, or SQLite while another thread writes (a CDR batch can hold
    # the writer for a second): waiting there must not stall the event loop.
    return await run_in_threadpool(work, *args, **kwargs)
