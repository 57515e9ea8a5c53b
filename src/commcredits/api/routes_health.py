"""Liveness, readiness and metrics: no token needed."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from commcredits.api.context import AppContext, Ctx
from commcredits.api.metrics import REGISTRY
from commcredits.store.db import database_reachable

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    # No work, no thread hop: the bare cost of the server stack (the
    # benchmarks' baseline a).
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database is reachable")
def readyz(ctx: AppContext = Ctx) -> JSONResponse:
    if database_reachable(ctx.engine):
        return JSONResponse({"status": "ready", "database": "reachable"})
    return JSONResponse({"status": "not_ready", "database": "unreachable"}, status_code=503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
