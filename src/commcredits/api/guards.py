"""What every request must pass before a route reads it, checked once here:

1. /v1 needs a known bearer token: 401 before the body is read or validated,
   so a client without a token learns nothing from the shape of its body.
2. No NUL character in the path, the query, or the body (raw, or as a JSON
   ``\\u0000`` escape): PostgreSQL cannot store one in text, so it would fail in
   the driver as a 500; refused as 422 whatever the route or field.
3. A body at most MAX_BODY_BYTES (rate decks: MAX_DECK_BYTES): 413 from the
   Content-Length alone, or as soon as a streamed body passes the limit,
   never after reading all of it.

A plain ASGI middleware, like the metrics one: no task group or body copy per
request on the charging path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commcredits.api import auth
from commcredits.api.errors import problem
from commcredits.api.routes_catalog import MAX_DECK_BYTES
from commcredits.errors import Unauthenticated

MEBIBYTE = 1024 * 1024
# A batch of 10,000 CDRs (the most one request may carry) is about 2.5 MB, and
# under 7 MB with every field at its longest: 16 MiB leaves it room.
MAX_BODY_BYTES = 16 * MEBIBYTE
BODY_LIMITS: dict[tuple[str, str], int] = {("PUT", "/v1/catalog/rates"): MAX_DECK_BYTES}
API_PREFIX = "/v1"

NUL_DETAIL = "{where} holds a NUL character (\\u0000), which no field may hold; remove it"
_JSON_NUL_ESCAPE = b"\\u0000"
_BACKSLASH = 0x5C


class RequestRefused(StarletteHTTPException):
    """A refusal raised while the route reads the body (413, or 422 for NUL);
    FastAPI passes HTTPExceptions from the body read on to the handlers."""

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(status_code=status_code, detail=detail)
        self.code = code


def too_large(limit_bytes: int) -> RequestRefused:
    return RequestRefused(
        413,
        "payload_too_large",
        f"the request body is larger than {limit_bytes // MEBIBYTE} MiB; "
        "send less (e.g. CDRs in batches of at most 10,000 records)",
    )


def nul_in(where: str) -> RequestRefused:
    return RequestRefused(422, "validation_error", NUL_DETAIL.format(where=where))


class RequestGuard:
    def __init__(self, app: ASGIApp, api: Any) -> None:
        self.app = app
        self.api = api  # the FastAPI application: its routes name refused requests in metrics
        self._routes: list[APIRoute] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        try:
            if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
                await self._authenticate(scope)
            if "\x00" in path:
                raise nul_in("the path")
            query: bytes = scope.get("query_string", b"")
            if b"%00" in query or b"\x00" in query:
                raise nul_in("the query string")
            limit = BODY_LIMITS.get((scope["method"], path), MAX_BODY_BYTES)
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                raise too_large(limit)
        except RequestRefused as refused:
            await self._refuse(scope, receive, send, refused)
            return
        except Unauthenticated as exc:
            self._name_route(scope)
            await problem(401, exc.code, exc.detail)(scope, receive, send)
            return
        await self.app(scope, _BodyCheck(receive, limit, _body_kind(scope)).receive, send)

    async def _authenticate(self, scope: Scope) -> None:
        request = Request(scope)
        principal = auth.authenticate_without_database(request)
        if principal is None:  # a user token, or a charging token not cached yet
            principal = await run_in_threadpool(auth.authenticate_from_database, request)
        scope[auth.PRINCIPAL_SCOPE_KEY] = principal

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, refused: RequestRefused
    ) -> None:
        self._name_route(scope)
        response = problem(refused.status_code, refused.code, str(refused.detail))
        await response(scope, receive, send)

    def _name_route(self, scope: Scope) -> None:
        """The route template a refused request was for, so metrics count it there."""
        partial = None
        for route in self._api_routes():
            match, _ = route.matches(scope)
            if match == Match.FULL:
                scope["route"] = route
                return
            if match == Match.PARTIAL and partial is None:
                partial = route
        if partial is not None:
            scope["route"] = partial

    def _api_routes(self) -> list[APIRoute]:
        if self._routes is None:
            self._routes = list(_walk(self.api.router.routes))
        return self._routes


def _walk(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router
            yield from _walk(route.original_router.routes)
        elif hasattr(route, "routes"):
            yield from _walk(route.routes)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we see it
    return None


def _body_kind(scope: Scope) -> str:
    """How a NUL may be spelled in the body: 'json' (also the raw NUL byte),
    'form' (%00) or 'raw' (only the byte itself, e.g. a CSV deck)."""
    content_type = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.lower()
            break
    # FastAPI parses a body without a content type as JSON too.
    if not content_type or b"json" in content_type:
        return "json"
    if content_type.startswith(b"application/x-www-form-urlencoded"):
        return "form"
    return "raw"


class _BodyCheck:
    """Counts and scans the body as the route receives it, chunk by chunk."""

    def __init__(self, receive: Receive, limit: int, kind: str) -> None:
        self._receive = receive
        self._limit = limit
        self._kind = kind
        self._received = 0
        self._chunks: list[bytes] = []
        self._tail = b""
        self._escape_seen = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        chunk: bytes = message.get("body", b"")
        self._received += len(chunk)
        if self._received > self._limit:
            raise too_large(self._limit)
        if b"\x00" in chunk:
            raise nul_in("the request body")
        if self._kind != "raw":
            self._scan(chunk, more=bool(message.get("more_body", False)))
        return message

    def _scan(self, chunk: bytes, *, more: bool) -> None:
        marker = _JSON_NUL_ESCAPE if self._kind == "json" else b"%00"
        # The tail: a marker may straddle two chunks.
        window = self._tail + chunk
        self._tail = window[-(len(marker) - 1) :]
        if marker in window:
            if self._kind == "form":
                raise nul_in("the request body")
            self._escape_seen = True
        if self._kind == "json":
            self._chunks.append(chunk)
        if not more and self._escape_seen and _has_json_nul(b"".join(self._chunks)):
            raise nul_in("a string of the request body")


def _has_json_nul(body: bytes) -> bool:
    """A \\u0000 escape, and not the text "\\\\u0000" (an escaped backslash and
    "u0000"): the backslashes before it are an even number."""
    at = body.find(_JSON_NUL_ESCAPE)
    while at != -1:
        start = at
        while start > 0 and body[start - 1] == _BACKSLASH:
            start -= 1
        if (at - start) % 2 == 0:
            return True
        at = body.find(_JSON_NUL_ESCAPE, at + 1)
    return False
