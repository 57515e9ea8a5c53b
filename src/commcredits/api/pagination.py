"""Keyset pagination: ``?limit=`` (default 100, max 1000) and an opaque ``cursor``."""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy import ColumnElement, Select, tuple_

from commcredits.errors import ValidationFailed

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def check_limit(limit: int) -> int:
    if limit < 1 or limit > MAX_PAGE_SIZE:
        raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    return limit


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("cursor is not one this service issued") from exc
    if not isinstance(values, list) or len(values) != width:
        raise ValidationFailed("cursor is not one this service issued")
    return values


def page(
    query: Select[Any], keys: list[ColumnElement[Any]], limit: int, cursor: str | None
) -> Select[Any]:
    """Order by ``keys`` and start after the cursor; fetch one extra row to know
    whether there is a next page."""
    check_limit(limit)
    if cursor:
        values = decode_cursor(cursor, len(keys))
        if len(keys) == 1:
            query = query.where(keys[0] > values[0])
        else:
            query = query.where(tuple_(*keys) > tuple_(*values))
    return query.order_by(*keys).limit(limit + 1)


def split(rows: list[Any], limit: int, key_of: Any) -> tuple[list[Any], str | None]:
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(key_of(rows[-1]))
    return rows, None
