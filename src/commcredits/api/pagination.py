"""Keyset pagination: ``?limit=`` (default 100, max 1000) and an opaque ``cursor``.

A cursor is the JSON list of the last row's keys, base64url encoded and signed
with an HMAC. The values of a cursor end up in SQL, so one a client made up
(a dict, a null, a number too big for BIGINT, a number where the key is text)
would reach the database and fail there; the signature refuses every cursor
this server did not give, and the checks on the decoded values refuse a cursor
of one list handed to another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any

from sqlalchemy import ColumnElement, Select, tuple_

from commcredits.errors import ValidationFailed

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_CURSOR_TEXT_LENGTH = 512
# Keys are at most BIGINT; a larger number would overflow the database's integer.
MAX_CURSOR_INTEGER = 2**63 - 1
SIGNATURE_BYTES = 16

BAD_CURSOR = "cursor: not a cursor this server gave; start again without it"

# Every process serving one database must sign alike (serve --workers), so the
# application sets the key from a secret they share; until then, a random one.
_signing_key: bytes = secrets.token_bytes(32)


def configure_signing(secret: str) -> None:
    """Sign cursors with a key derived from ``secret`` (never the secret itself)."""
    global _signing_key
    _signing_key = hashlib.sha256(b"commcredits cursor signing\x00" + secret.encode()).digest()


def check_limit(limit: int) -> int:
    if limit < 1 or limit > MAX_PAGE_SIZE:
        raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    return limit


def encode_cursor(values: list[Any]) -> str:
    payload = json.dumps(values, separators=(",", ":"), default=str).encode()
    return f"{_b64(payload)}.{_b64(_signature(payload))}"


def decode_cursor(cursor: str, width: int) -> list[Any]:
    """The key values of a cursor this server gave: ``width`` strings or integers."""
    payload_text, dot, signature_text = cursor.partition(".")
    if not dot:
        raise ValidationFailed(BAD_CURSOR)
    try:
        payload = _unb64(payload_text)
        signature = _unb64(signature_text)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValidationFailed(BAD_CURSOR) from exc
    if not hmac.compare_digest(signature, _signature(payload)):
        raise ValidationFailed(BAD_CURSOR)
    try:
        values = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed(BAD_CURSOR) from exc
    if not isinstance(values, list) or len(values) != width:
        raise ValidationFailed(BAD_CURSOR)
    if not all(_is_key_value(value) for value in values):
        raise ValidationFailed(BAD_CURSOR)
    return values


def page(
    query: Select[Any], keys: list[ColumnElement[Any]], limit: int, cursor: str | None
) -> Select[Any]:
    """Order by ``keys`` and start after the cursor; fetch one extra row to know
    whether there is a next page."""
    check_limit(limit)
    if cursor:
        values = decode_cursor(cursor, len(keys))
        # A signed cursor of another list may hold a string where this key is a
        # number: PostgreSQL would refuse to compare them.
        for key, value in zip(keys, values, strict=True):
            if not isinstance(value, _python_type(key)):
                raise ValidationFailed(BAD_CURSOR)
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


def _signature(payload: bytes) -> bytes:
    return hmac.new(_signing_key, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def _is_key_value(value: Any) -> bool:
    if isinstance(value, bool):  # a bool is an int to isinstance, never a key
        return False
    if isinstance(value, int):
        return -MAX_CURSOR_INTEGER <= value <= MAX_CURSOR_INTEGER
    if isinstance(value, str):
        return len(value) <= MAX_CURSOR_TEXT_LENGTH and "\x00" not in value
    return False


def _python_type(key: ColumnElement[Any]) -> type:
    try:
        python_type: type = key.type.python_type
    except NotImplementedError:
        return object
    return python_type
