"""Who is calling, and may they? The permission matrix itself is core/roles.py;
this module is the one place that applies it to a request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request
from sqlalchemy import Engine, insert, select

from commcredits.core.roles import Permission, may
from commcredits.errors import InsufficientPermission, NotFound, Unauthenticated
from commcredits.store import tables as t
from commcredits.store.db import read_transaction

TOKEN_PREFIX = "cc_"
TOKEN_CACHE_SECONDS = 30.0
TOKEN_CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Principal:
    kind: str  # operator | user | charging
    tenant_id: str | None = None  # None: the operator, or a charging token for all tenants
    user_id: str | None = None
    roles: frozenset[str] = frozenset()

    @property
    def actor(self) -> str:
        if self.kind == "operator":
            return "operator"
        if self.kind == "user":
            return f"user:{self.tenant_id}/{self.user_id}"
        return f"charging:{self.tenant_id or '*'}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def store_token(
    connection: object, *, kind: str, tenant_id: str | None, user_id: str | None
) -> str:
    """Mint a token; only its hash is stored."""
    token = new_token()
    connection.execute(  # type: ignore[attr-defined]
        insert(t.api_tokens).values(
            token_hash=hash_token(token),
            kind=kind,
            tenant_id=tenant_id,
            user_id=user_id,
            created_at=datetime.now(UTC),
        )
    )
    return token


class TokenCache:
    """A short-lived cache of token hash -> principal, so the charging path does
    not pay a database round trip per request for authentication. Roles of
    user tokens are read fresh (they change), so only charging tokens are cached."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: str) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, token_hash: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= TOKEN_CACHE_MAX_ENTRIES:
                self._entries.clear()
            self._entries[token_hash] = (time.monotonic() + TOKEN_CACHE_SECONDS, principal)


# The request guard (api/guards.py) authenticates every /v1 request before its
# body is read, and leaves the principal here for the route's dependency.
PRINCIPAL_SCOPE_KEY = "commcredits.principal"


def authenticate(request: Request) -> Principal:
    known = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if isinstance(known, Principal):
        return known
    principal = authenticate_without_database(request)
    if principal is not None:
        return principal
    return authenticate_from_database(request)


def authenticate_without_database(request: Request) -> Principal | None:
    """The operator or a cached charging token; None when the database must be
    asked. Raises Unauthenticated when no bearer token is sent."""
    token = _bearer_token(request)
    ctx = request.app.state.ctx
    if hmac.compare_digest(token.encode(), ctx.settings.operator_token.encode()):
        return Principal(kind="operator")
    cached: Principal | None = ctx.token_cache.get(hash_token(token))
    return cached


def authenticate_from_database(request: Request) -> Principal:
    token = _bearer_token(request)
    ctx = request.app.state.ctx
    token_hash = hash_token(token)
    principal = _load_principal(ctx.engine, token_hash)
    if principal is None:
        raise Unauthenticated("the token is not valid")
    if principal.kind == "charging":
        ctx.token_cache.put(token_hash, principal)
    return principal


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send 'Authorization: Bearer <token>'")
    return token


def _load_principal(engine: Engine, token_hash: str) -> Principal | None:
    with read_transaction(engine) as connection:
        row = connection.execute(
            select(t.api_tokens).where(t.api_tokens.c.token_hash == token_hash)
        ).first()
        if row is None:
            return None
        if row.kind == "charging":
            return Principal(kind="charging", tenant_id=row.tenant_id)
        user = connection.execute(
            select(t.users.c.roles).where(
                t.users.c.tenant_id == row.tenant_id, t.users.c.id == row.user_id
            )
        ).first()
        if user is None:  # the user was deleted: the token died with it
            return None
        return Principal(
            kind="user", tenant_id=row.tenant_id, user_id=row.user_id, roles=frozenset(user.roles)
        )


def require_operator(principal: Principal) -> None:
    if principal.kind != "operator":
        raise InsufficientPermission("only the operator may do this")


def require_permission(principal: Principal, tenant_id: str, permission: Permission) -> None:
    """Tenant data: the operator, or a user of that tenant whose roles grant ``permission``."""
    if principal.kind == "operator":
        return
    if principal.kind != "user" or principal.tenant_id != tenant_id:
        raise InsufficientPermission("this token may not act on this tenant")
    if not may(principal.roles, permission):
        raise InsufficientPermission(
            f"the user's roles do not grant the '{permission.value}' permission"
        )


def require_any_tenant_permission(principal: Principal, tenant_id: str) -> None:
    if principal.kind == "operator":
        return
    if principal.kind != "user" or principal.tenant_id != tenant_id:
        raise InsufficientPermission("this token may not act on this tenant")
    if not any(may(principal.roles, p) for p in Permission):
        raise InsufficientPermission("the user's roles grant no access to this tenant")


def require_charging(principal: Principal, tenant_id: str | None = None) -> None:
    """The voice platform: the operator or a charging token (for this tenant, or all)."""
    if principal.kind == "operator":
        return
    if principal.kind != "charging":
        raise InsufficientPermission("charging endpoints need a charging token")
    if tenant_id is not None and principal.tenant_id not in (None, tenant_id):
        raise InsufficientPermission("this charging token is for another tenant")


def charging_may_see(principal: Principal, tenant_id: str) -> bool:
    return principal.kind == "operator" or principal.tenant_id in (None, tenant_id)


def not_found(what: str) -> NotFound:
    return NotFound(f"{what} was not found")
