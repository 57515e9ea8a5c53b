"""The FastAPI application: routers, error handling, metrics and background workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from commcredits.api import errors, metrics, routes_catalog, routes_directory, routes_health
from commcredits.api.context import AppContext
from commcredits.config import Settings
from commcredits.services.catalog import Catalog
from commcredits.store.db import make_engine
from commcredits.store.migrate import upgrade


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    settings = settings or Settings.from_env()
    engine = make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    ctx = AppContext(settings=settings, engine=engine, catalog=Catalog(engine))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="commcredits",
        version="0.1.0",
        summary="Prepaid credits and online charging for PSTN minutes",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    errors.install(app)
    app.middleware("http")(metrics.middleware)
    app.include_router(routes_health.router)
    app.include_router(routes_directory.router)
    app.include_router(routes_catalog.router)
    return app
