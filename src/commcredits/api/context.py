"""What every request handler needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request
from sqlalchemy import Engine

from commcredits.api.auth import Principal, TokenCache, authenticate
from commcredits.config import Settings
from commcredits.services.catalog import Catalog


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    catalog: Catalog
    token_cache: TokenCache = field(default_factory=TokenCache)
    services: dict[str, Any] = field(default_factory=dict)


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def get_principal(request: Request) -> Principal:
    return authenticate(request)


Ctx = Depends(get_ctx)
Auth = Depends(get_principal)
