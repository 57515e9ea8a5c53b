"""The FastAPI application: routers, error handling, metrics and background workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from commcredits.adapters.payments import get_provider
from commcredits.api import (
    docs_models,
    errors,
    guards,
    metrics,
    pagination,
    routes_calls,
    routes_catalog,
    routes_credits,
    routes_directory,
    routes_health,
    routes_home,
    routes_notifications,
    routes_reports,
)
from commcredits.api.context import AppContext
from commcredits.config import Settings
from commcredits.services.catalog import Catalog
from commcredits.services.workers import Worker, Workers
from commcredits.store.db import make_engine
from commcredits.store.migrate import upgrade


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    settings = settings or Settings.from_env()
    engine = make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    ctx = AppContext(settings=settings, engine=engine, catalog=Catalog(engine))
    # Every process of one deployment shares the operator token, so a cursor
    # one worker gave is good at the next.
    pagination.configure_signing(settings.operator_token)
    ctx.services["payments"] = payment_provider(settings)

    workers = background_workers(ctx)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.background_workers:
            workers.start()
        yield
        workers.stop()
        engine.dispose()

    app = FastAPI(
        title="commcredits",
        version="0.1.0",
        summary="Prepaid credits and online charging for PSTN minutes",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    errors.install(app)
    # Starlette runs the last added outermost: metrics see the guard's refusals too.
    app.add_middleware(guards.RequestGuard, api=app)
    app.add_middleware(metrics.MetricsMiddleware)
    # Routes are matched in order, one by one: the charging path (most of the
    # traffic) first, so a call start does not test every other route before.
    app.include_router(routes_calls.router)
    app.include_router(routes_health.router)
    app.include_router(routes_home.router)
    app.include_router(routes_directory.router)
    app.include_router(routes_catalog.router)
    app.include_router(routes_credits.router)
    app.include_router(routes_notifications.router)
    app.include_router(routes_reports.router)
    docs_models.install(app)
    return app


def payment_provider(settings: Settings) -> Any:
    if settings.payment_provider == "stripe":
        return get_provider(
            "stripe",
            api_key=settings.stripe_api_key or "",
            api_base=settings.stripe_api_base,
            timeout_seconds=settings.stripe_timeout_seconds,
        )
    return get_provider(settings.payment_provider)


def background_workers(ctx: AppContext) -> Workers:
    from commcredits.services import calls, funding, notify, outbox
    from commcredits.services.account_events import recharge_wakeup

    provider = ctx.services["payments"]
    return Workers(
        [
            Worker("sweeper", lambda: calls.sweep_expired(ctx.engine), poll_seconds=1.0),
            Worker(
                "recharge",
                lambda: funding.resolve_pending(ctx.engine, provider),
                wakeup=recharge_wakeup,
                poll_seconds=0.5,
            ),
            *(
                [
                    Worker(
                        "mail",
                        lambda: notify.deliver_pending(ctx.engine, ctx.settings),
                        wakeup=outbox.mail_wakeup,
                        poll_seconds=1.0,
                    )
                ]
                if ctx.settings.smtp_url
                else []
            ),
        ]
    )
