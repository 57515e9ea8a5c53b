"""Liveness, readiness and metrics: no token needed."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from commcredits.api import docs_models as docs
from commcredits.api.context import AppContext, Ctx
from commcredits.api.metrics import REGISTRY
from commcredits.store.db import database_reachable

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="Liveness: the process answers",
    responses=docs.body(docs.Liveness, "The process answers"),
)
async def healthz() -> dict[str, str]:
    # No work, no thread hop: the bare cost of the server stack (the
    # benchmarks' baseline a).
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database is reachable",
    responses={
        200: {"model": docs.Readiness, "description": "The database is reachable"},
        503: {"model": docs.Readiness, "description": "The database is not reachable"},
    },
)
def readyz(ctx: AppContext = Ctx) -> JSONResponse:
    if database_reachable(ctx.engine):
        return JSONResponse({"status": "ready", "database": "reachable"})
    return JSONResponse({"status": "not_ready", "database": "unreachable"}, status_code=503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
