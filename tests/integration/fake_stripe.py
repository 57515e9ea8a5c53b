"""A local stand-in for the few Stripe API v1 endpoints the Stripe adapter calls.

For tests only. It answers with Stripe's documented JSON shapes and error
bodies, honours the Idempotency-Key header the way Stripe does (same key and
same request -> the stored response is replayed; same key, other request ->
400 idempotency_error; same key while the first is still running -> 409),
decides outcomes by the public test-card numbers, and records every request.

Knobs a test can turn:
- `slow_seconds`: answer this late, AFTER the request has been carried out
  and its result stored, like a charge whose answer is lost on the way back.
- `fail_next_with_status`: answer the next request with this 5xx status
  without carrying it out (nothing stored, nothing created).
- `force_intent_status`: give a PaymentIntent that would succeed this status
  instead (e.g. "requires_action").
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["FakeStripe", "RecordedRequest"]

DEFAULT_API_KEY = "sk_test_fake_commcredits"
MAX_BODY_BYTES = 64 * 1024

CARD_SUCCEEDS = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_EXPIRED = "4000000000000069"
CARD_PROCESSING_ERROR = "4000000000000119"
CARD_AUTHENTICATION_REQUIRED = "4000002760003184"
# Stripe's "always blocked" card: refused as soon as it is attached.
CARD_BLOCKED_AT_ATTACH = "4100000000000019"

_CHARGE_ERRORS: dict[str, tuple[str, str, str]] = {
    # number: (code, decline_code, message)
    CARD_DECLINED: ("card_declined", "generic_decline", "Your card was declined."),
    CARD_EXPIRED: ("expired_card", "expired_card", "Your card has expired."),
    CARD_PROCESSING_ERROR: (
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
    CARD_AUTHENTICATION_REQUIRED: (
        "authentication_required",
        "authentication_required",
        "Your card was declined. This transaction requires authentication.",
    ),
}

_KEY_PART = re.compile(r"\[([^\]]*)\]")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    form: dict[str, Any]  # bracket notation unfolded: card[number] -> {"card": {"number": ...}}

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class _Response:
    status: int
    body: dict[str, Any]


@dataclass
class _State:
    api_key: str
    requests: list[RecordedRequest] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    card_numbers: dict[str, str] = field(default_factory=dict)  # pm id -> number (fake only)
    stored_by_key: dict[str, tuple[tuple[str, str, str], _Response]] = field(default_factory=dict)
    keys_in_flight: set[str] = field(default_factory=set)
    slow_seconds: float = 0.0
    fail_next_with_status: int | None = None
    force_intent_status: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


class FakeStripe:
    """Start with `with FakeStripe() as fake:`; point the adapter at `fake.url`."""

    def __init__(self, api_key: str = DEFAULT_API_KEY) -> None:
        self._state = _State(api_key=api_key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        # A slow answer still sleeping must not hold up the end of a test.
        self._server.daemon_threads = True
        self._server.state = self._state  # type: ignore[attr-defined]
        # A short poll keeps stop() (which waits for the next poll) out of test timings.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def api_key(self) -> str:
        return self._state.api_key

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path == path]

    @property
    def customers(self) -> dict[str, dict[str, Any]]:
        return self._state.customers

    @property
    def payment_methods(self) -> dict[str, dict[str, Any]]:
        return self._state.payment_methods

    @property
    def payment_intents(self) -> dict[str, dict[str, Any]]:
        return self._state.payment_intents

    @property
    def slow_seconds(self) -> float:
        return self._state.slow_seconds

    @slow_seconds.setter
    def slow_seconds(self, seconds: float) -> None:
        self._state.slow_seconds = seconds

    @property
    def fail_next_with_status(self) -> int | None:
        return self._state.fail_next_with_status

    @fail_next_with_status.setter
    def fail_next_with_status(self, status: int | None) -> None:
        self._state.fail_next_with_status = status

    @property
    def force_intent_status(self) -> str | None:
        return self._state.force_intent_status

    @force_intent_status.setter
    def force_intent_status(self, status: str | None) -> None:
        self._state.force_intent_status = status

    def start(self) -> FakeStripe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, a keep-alive
    # client waits ~40 ms on each answer for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # quiet test output

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY_BYTES)
        raw_body = self.rfile.read(length).decode("utf-8") if length else ""
        form = _unfold(parse_qsl(raw_body, keep_blank_values=True))
        headers = {name.lower(): value for name, value in self.headers.items()}
        path = self.path.split("?", 1)[0]
        with state.lock:
            state.requests.append(RecordedRequest(method, path, headers, form))
            forced_status, state.fail_next_with_status = state.fail_next_with_status, None
        if forced_status is not None:
            self._send(_error(forced_status, "api_error", None, "Simulated server error."))
            return
        if headers.get("authorization") != f"Bearer {state.api_key}":
            self._send(_error(401, "invalid_request_error", None, "Invalid API Key provided."))
            return

        key = headers.get("idempotency-key") if method == "POST" else None
        fingerprint = (method, path, json.dumps(form, sort_keys=True))
        if key is None:
            response = _route(state, method, path, form)
        else:
            with state.lock:
                stored = state.stored_by_key.get(key)
                in_flight = key in state.keys_in_flight
                if stored is None and not in_flight:
                    state.keys_in_flight.add(key)
            if stored is not None:
                first_fingerprint, first_response = stored
                if first_fingerprint != fingerprint:
                    self._send(
                        _idempotency_error(
                            400,
                            "Keys for idempotent requests can only "
                            "be used with the same parameters they were "
                            "first used with.",
                        )
                    )
                else:
                    self._send(first_response, replayed=True)
                return
            if in_flight:
                self._send(
                    _idempotency_error(
                        409,
                        "There is currently another in-progress request using this Idempotent Key.",
                    )
                )
                return
            try:
                response = _route(state, method, path, form)
            finally:
                with state.lock:
                    state.keys_in_flight.discard(key)
            with state.lock:
                state.stored_by_key[key] = (fingerprint, response)
        if state.slow_seconds > 0:
            # The work is done and stored; only the answer is late.
            state.stopping.wait(state.slow_seconds)
        self._send(response)

    def _send(self, response: _Response, *, replayed: bool = False) -> None:
        payload = json.dumps(response.body).encode("utf-8")
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Request-Id", _new_id("req"))
            if replayed:
                self.send_header("Idempotent-Replayed", "true")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting: that is the point of slow mode


def _route(state: _State, method: str, path: str, form: dict[str, Any]) -> _Response:
    parts = path.strip("/").split("/")
    with state.lock:
        if method == "POST" and parts == ["v1", "customers"]:
            return _create_customer(state, form)
        if method == "DELETE" and len(parts) == 3 and parts[:2] == ["v1", "customers"]:
            return _delete_customer(state, parts[2])
        if method == "POST" and parts == ["v1", "payment_methods"]:
            return _create_payment_method(state, form)
        if (
            method == "POST"
            and len(parts) == 4
            and parts[:2] == ["v1", "payment_methods"]
            and parts[3] == "attach"
        ):
            return _attach_payment_method(state, parts[2], form)
        if method == "POST" and parts == ["v1", "payment_intents"]:
            return _create_payment_intent(state, form)
    return _error(
        404, "invalid_request_error", None, f"Unrecognized request URL ({method}: {path})."
    )


def _create_customer(state: _State, form: dict[str, Any]) -> _Response:
    customer = {
        "id": _new_id("cus"),
        "object": "customer",
        "created": int(time.time()),
        "livemode": False,
        "metadata": form.get("metadata", {}),
        "email": form.get("email"),
        "description": form.get("description"),
    }
    state.customers[customer["id"]] = customer
    return _Response(200, customer)


def _delete_customer(state: _State, customer_id: str) -> _Response:
    if state.customers.pop(customer_id, None) is None:
        return _missing("customer", customer_id)
    return _Response(200, {"id": customer_id, "object": "customer", "deleted": True})


def _create_payment_method(state: _State, form: dict[str, Any]) -> _Response:
    if form.get("type") != "card":
        return _error(400, "invalid_request_error", "parameter_invalid_empty", "Invalid type.")
    card = form.get("card") or {}
    number = str(card.get("number", ""))
    if not (number.isdigit() and 12 <= len(number) <= 19 and _passes_luhn(number)):
        return _card_error(
            "incorrect_number", None, "Your card number is incorrect.", param="card[number]"
        )
    try:
        exp_month, exp_year = int(card.get("exp_month", "")), int(card.get("exp_year", ""))
    except ValueError:
        return _card_error(
            "invalid_expiry_month",
            None,
            "Your card's expiration month is invalid.",
            param="card[exp_month]",
        )
    if not 1 <= exp_month <= 12:
        return _card_error(
            "invalid_expiry_month",
            None,
            "Your card's expiration month is invalid.",
            param="card[exp_month]",
        )
    if _has_expired(exp_month, exp_year):
        return _card_error(
            "invalid_expiry_year",
            None,
            "Your card's expiration year is invalid.",
            param="card[exp_year]",
        )
    pm_id = _new_id("pm")
    payment_method: dict[str, Any] = {
        "id": pm_id,
        "object": "payment_method",
        "type": "card",
        "created": int(time.time()),
        "livemode": False,
        "customer": None,
        "metadata": {},
        "billing_details": {"address": None, "email": None, "name": None, "phone": None},
        "card": {
            "brand": _brand(number),
            "last4": number[-4:],
            "exp_month": exp_month,
            "exp_year": exp_year,
            "funding": "credit",
            "country": "US",
        },
    }
    state.payment_methods[pm_id] = payment_method
    state.card_numbers[pm_id] = number
    return _Response(200, payment_method)


def _attach_payment_method(state: _State, pm_id: str, form: dict[str, Any]) -> _Response:
    payment_method = state.payment_methods.get(pm_id)
    if payment_method is None:
        return _missing("payment_method", pm_id)
    customer_id = str(form.get("customer"))
    if customer_id not in state.customers:
        return _missing("customer", customer_id)
    if state.card_numbers[pm_id] == CARD_BLOCKED_AT_ATTACH:
        return _card_error("card_declined", "fraudulent", "Your card was declined.")
    payment_method["customer"] = customer_id
    return _Response(200, payment_method)


def _create_payment_intent(state: _State, form: dict[str, Any]) -> _Response:
    amount_text = str(form.get("amount", ""))
    if not amount_text.isdigit() or int(amount_text) < 1:
        return _error(
            400,
            "invalid_request_error",
            "parameter_invalid_integer",
            "Invalid integer: amount",
            param="amount",
        )
    currency = str(form.get("currency", ""))
    if not re.fullmatch(r"[a-z]{3}", currency):
        return _error(
            400,
            "invalid_request_error",
            "parameter_invalid_empty",
            "Invalid currency.",
            param="currency",
        )
    customer_id = str(form.get("customer"))
    pm_id = str(form.get("payment_method"))
    if customer_id not in state.customers:
        return _missing("customer", customer_id)
    payment_method = state.payment_methods.get(pm_id)
    if payment_method is None:
        return _missing("payment_method", pm_id)
    if payment_method["customer"] != customer_id:
        return _error(
            400,
            "invalid_request_error",
            None,
            "The provided PaymentMethod does not belong to the Customer.",
            param="payment_method",
        )
    intent = {
        "id": _new_id("pi"),
        "object": "payment_intent",
        "amount": int(amount_text),
        "currency": currency,
        "customer": customer_id,
        "payment_method": pm_id,
        "description": form.get("description"),
        "confirmation_method": "automatic",
        "created": int(time.time()),
        "livemode": False,
        "metadata": form.get("metadata", {}),
        "latest_charge": None,
        "last_payment_error": None,
        "status": "requires_confirmation",
    }
    state.payment_intents[intent["id"]] = intent
    if form.get("confirm") != "true":
        return _Response(200, intent)
    number = state.card_numbers[pm_id]
    card = payment_method["card"]
    failure = _CHARGE_ERRORS.get(number)
    if failure is None and _has_expired(card["exp_month"], card["exp_year"]):
        failure = _CHARGE_ERRORS[CARD_EXPIRED]
    if failure is not None:
        code, decline_code, message = failure
        intent["status"] = "requires_payment_method"
        intent["last_payment_error"] = {
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": message,
        }
        return _card_error(code, decline_code, message, payment_intent=dict(intent))
    intent["status"] = state.force_intent_status or "succeeded"
    if intent["status"] == "succeeded":
        intent["latest_charge"] = _new_id("ch")
    return _Response(200, intent)


def _error(
    status: int, error_type: str, code: str | None, message: str, *, param: str | None = None
) -> _Response:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
    if param is not None:
        error["param"] = param
    return _Response(status, {"error": error})


def _card_error(
    code: str,
    decline_code: str | None,
    message: str,
    *,
    param: str | None = None,
    payment_intent: dict[str, Any] | None = None,
) -> _Response:
    response = _error(402, "card_error", code, message, param=param)
    if decline_code is not None:
        response.body["error"]["decline_code"] = decline_code
    if payment_intent is not None:
        response.body["error"]["payment_intent"] = payment_intent
    return response


def _missing(kind: str, object_id: str) -> _Response:
    return _error(
        404,
        "invalid_request_error",
        "resource_missing",
        f"No such {kind}: '{object_id}'",
        param=kind,
    )


def _idempotency_error(status: int, message: str) -> _Response:
    return _Response(status, {"error": {"type": "idempotency_error", "message": message}})


def _unfold(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """card[number]=4242 -> {"card": {"number": "4242"}} (Stripe's bracket notation)."""
    unfolded: dict[str, Any] = {}
    for key, value in pairs:
        head = key.split("[", 1)[0]
        names = [head, *_KEY_PART.findall(key[len(head) :])]
        target = unfolded
        for name in names[:-1]:
            target = target.setdefault(name, {})
        target[names[-1]] = value
    return unfolded


def _passes_luhn(digits: str) -> bool:
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = int(character) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if 51 <= int(number[:2]) <= 55 or 2221 <= int(number[:4]) <= 2720:
        return "mastercard"
    if number[:2] in ("34", "37"):
        return "amex"
    return "unknown"


def _has_expired(exp_month: int, exp_year: int) -> bool:
    today = datetime.now(UTC).date()
    return (today.year, today.month) > (exp_year, exp_month)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"
