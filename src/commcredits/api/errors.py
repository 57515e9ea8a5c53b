"""problem+json (RFC 9457) for every error, mapped from domain errors in one table."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from commcredits.errors import DomainError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS_BY_CODE: dict[str, int] = {
    "validation_error": 422,
    "malformed_json": 400,
    "not_found": 404,
    "conflict": 409,
    "upn_conflict": 409,
    "no_seats_available": 409,
    "idempotency_conflict": 409,
    "unauthenticated": 401,
    "insufficient_permission": 403,
    "purchase_not_allowed": 403,
    "amount_below_minimum": 422,
    "amount_above_maximum": 422,
    "expired_card": 422,
    "invalid_card": 422,
    "payment_method_not_found": 404,
    "call_conflict": 409,
    "invalid_rate_deck": 422,
    "payment_provider_unavailable": 503,
    "payload_too_large": 413,
}

TITLES: dict[int, str] = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
}


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://commcredits.dev/problems/{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_request: Request, exc: DomainError) -> JSONResponse:
        status = STATUS_BY_CODE.get(exc.code, 400)
        return problem(status, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            first = next(e for e in errors if e.get("type") == "json_invalid")
            ctx = first.get("ctx") or {}
            return problem(
                400,
                "validation_error",
                f"the request body is not valid JSON ({ctx.get('error', 'parse error')})",
            )
        messages = [
            f"{_location(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:10]
        ]
        invalid = [
            {"field": _location(e.get("loc", ())), "message": e.get("msg", "invalid")}
            for e in errors[:10]
        ]
        return problem(422, "validation_error", "; ".join(messages), errors=invalid)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            400: "validation_error",
            404: "not_found",
            405: "method_not_allowed",
            415: "unsupported_media_type",
        }
        # The request guard's refusals carry their own code (api/guards.py).
        code = getattr(exc, "code", None) or codes.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400 and detail.startswith("There was an error parsing"):
            detail = "the request body could not be read: send UTF-8 encoded JSON"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such resource"
        return problem(exc.status_code, code, detail)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal_error", "an unexpected error occurred; it has been logged")
