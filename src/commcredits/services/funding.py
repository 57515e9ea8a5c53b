"""Funding the credits balance: cards, purchases, auto-recharge settings and
operator adjustments.

A purchase touches a payment provider, which may be slow or fail in the
middle, so it is a small state machine rather than one transaction:
1. write the purchase as ``pending`` (and the Idempotency-Key, if any) and commit;
2. charge the provider outside any transaction, with the purchase id as the
   provider's idempotency key, so a repeat can never charge twice;
3. lock the account, and only if the purchase is still ``pending`` post the
   ledger line and mark it ``succeeded`` (or ``failed``): exactly once.
A provider that does not answer leaves the purchase ``pending``; a retry with
the same Idempotency-Key, or the recharge runner, finishes it later.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from commcredits.adapters.payments import (
    CardRejected,
    ChargeResult,
    PaymentProvider,
    ProviderUnavailable,
)
from commcredits.adapters.payments.simulated import card_brand
from commcredits.config import MIN_PURCHASE
from commcredits.core.eligibility import credits_status, eligibility
from commcredits.core.money import format_amount, round_to_minor
from commcredits.errors import (
    AmountBelowMinimum,
    DomainError,
    ExpiredCard,
    IdempotencyConflict,
    InvalidCard,
    NotFound,
    PaymentMethodNotFound,
    PurchaseNotAllowed,
    ValidationFailed,
)
from commcredits.services import accounts, audit, directory
from commcredits.services.clock import as_utc, now, rfc3339
from commcredits.services.ids import new_id
from commcredits.store import tables as t
from commcredits.store.db import is_postgres, read_transaction, write_transaction

log = logging.getLogger(__name__)

PROVIDER_ATTEMPTS_INLINE = 3
CLAIM_SECONDS = 60
MAX_PROVIDER_ATTEMPTS = 50


class ProviderUnavailableError(DomainError):
    code = "payment_provider_unavailable"


# --- eligibility and the account view ------------------------------------------------


def tenant_eligibility(tenant: Any) -> Any:
    return eligibility(
        tenant.agreement, tenant.country, tenant.billing_country, tenant.purchase_override
    )


def credits_view(connection: Connection, tenant_id: str) -> dict[str, Any]:
    tenant = directory.require_tenant(connection, tenant_id)
    account = accounts.read(connection, tenant_id)
    verdict = tenant_eligibility(tenant)
    currency = account.currency

    def money(value: Decimal | None) -> str | None:
        return None if value is None else format_amount(value, currency)

    return {
        "tenant_id": tenant_id,
        "currency": currency,
        "balance": money(account.balance),
        "reserved": money(account.reserved),
        "available": money(account.available),
        "status": credits_status(verdict.can_purchase, account.available),
        "eligibility": {"can_purchase": verdict.can_purchase, "reason": verdict.reason},
        "auto_recharge": auto_recharge_view(account),
    }


def auto_recharge_view(account: accounts.Account) -> dict[str, Any]:
    currency = account.currency
    return {
        "enabled": account.auto_recharge_enabled,
        "threshold": None
        if account.auto_recharge_threshold is None
        else format_amount(account.auto_recharge_threshold, currency),
        "amount": None
        if account.auto_recharge_amount is None
        else format_amount(account.auto_recharge_amount, currency),
        "payment_method_id": account.auto_recharge_payment_method_id,
        "currency": currency,
    }


def require_purchase_allowed(tenant: Any) -> None:
    verdict = tenant_eligibility(tenant)
    if not verdict.can_purchase:
        details = {
            "nce": "tenants on a new-commerce (NCE) agreement pay overage after use "
            "and cannot buy credits",
            "region_mismatch": "the organization's country differs from the billing "
            "country of its Enterprise Agreement; the operator can lift this per tenant",
        }
        raise PurchaseNotAllowed(
            details.get(verdict.reason, "purchase not allowed"), reason=verdict.reason
        )


def check_purchase_amount(amount: Decimal, currency: str, maximum: Decimal) -> None:
    if amount < MIN_PURCHASE:
        raise AmountBelowMinimum(
            f"the minimum purchase is {format_amount(MIN_PURCHASE, currency)} {currency}",
            minimum=format_amount(MIN_PURCHASE, currency),
        )
    if amount > maximum:
        raise ValidationFailed(
            f"amount: at most {format_amount(maximum, currency)} {currency} per purchase"
        )


def check_balance_headroom(
    connection: Connection, account: accounts.Account, amount: Decimal
) -> None:
    """Refuse, before any card is charged, money the balance could not take in:
    with every purchase still pending posted too, it must stay within the
    largest balance this service keeps."""
    pending = connection.execute(
        select(func.coalesce(func.sum(t.purchases.c.amount), 0)).where(
            t.purchases.c.tenant_id == account.tenant_id, t.purchases.c.status == "pending"
        )
    ).scalar_one()
    if account.balance + Decimal(pending) + amount > accounts.MAX_BALANCE:
        currency = account.currency
        raise ValidationFailed(
            f"amount: the balance ({format_amount(account.balance, currency)} {currency}, "
            f"plus {format_amount(Decimal(pending), currency)} {currency} of purchases "
            f"still pending) would pass {accounts.MAX_BALANCE}, the largest balance this "
            "service keeps; nothing was charged"
        )


# --- payment methods --------------------------------------------------------------------


def payment_method_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "brand": row.brand,
        "last4": row.last4,
        "exp_month": row.exp_month,
        "exp_year": row.exp_year,
        "created_at": rfc3339(row.created_at),
    }


def store_card(
    provider: PaymentProvider,
    tenant_id: str,
    card_number: str,
    exp_month: int,
    exp_year: int,
    idempotency_key: str | None = None,
) -> Any:
    """Ask the provider to keep the card; only its token and display fields come back.

    With the client's Idempotency-Key, the provider gets a key of its own
    derived from it, the tenant and the card, so a retry after a lost answer
    makes nothing twice, and a corrected request under a key whose first
    attempt was refused is a new request at the provider too. (This key goes
    only to the provider, which sees the card anyway; nothing of it is stored.)"""
    provider_key = None
    if idempotency_key is not None:
        request = f"{tenant_id}\n{idempotency_key}\n{card_number}\n{exp_month}\n{exp_year}"
        digest = hashlib.sha256(request.encode()).hexdigest()
        provider_key = f"commcredits-card-{digest[:40]}"
    try:
        return provider.store_card(
            card_number,
            exp_month,
            exp_year,
            customer_reference=tenant_id,
            idempotency_key=provider_key,
        )
    except CardRejected as exc:
        if exc.code == "expired_card":
            raise ExpiredCard(f"the card has expired: {exc.detail}") from exc
        if exc.code == "invalid_card":
            raise InvalidCard(f"the card was refused: {exc.detail}") from exc
        raise InvalidCard(f"the card was declined: {exc.detail}", reason=exc.code) from exc
    except ProviderUnavailable as exc:
        raise ProviderUnavailableError(
            "the payment provider did not answer; try again in a moment"
        ) from exc


def insert_payment_method(
    connection: Connection, tenant_id: str, provider_name: str, card: Any
) -> dict[str, Any]:
    directory.require_tenant(connection, tenant_id)
    method_id = new_id("pm")
    connection.execute(
        insert(t.payment_methods).values(
            tenant_id=tenant_id,
            id=method_id,
            provider=provider_name,
            provider_token=card.provider_token,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            created_at=now(),
        )
    )
    return payment_method_dict(require_payment_method(connection, tenant_id, method_id))


def require_payment_method(connection: Connection, tenant_id: str, method_id: str) -> Any:
    row = connection.execute(
        select(t.payment_methods).where(
            t.payment_methods.c.tenant_id == tenant_id,
            t.payment_methods.c.id == method_id,
            t.payment_methods.c.removed_at.is_(None),
        )
    ).first()
    if row is None:
        raise PaymentMethodNotFound(f"payment method '{method_id}' was not found")
    return row


def card_fingerprint(card_number: str, exp_month: int, exp_year: int) -> dict[str, Any]:
    """What a card request is recognised by on a retry: only what is kept of the
    card anyway (brand, last4, expiry). No stored digest may depend on the other
    digits: with the brand's prefix and last4 known, the few left are guessed
    in seconds."""
    digits = "".join(c for c in card_number if c.isascii() and c.isdigit())
    brand = card_brand(digits) if len(digits) >= 4 else "unknown"
    return {"brand": brand, "last4": digits[-4:], "exp_month": exp_month, "exp_year": exp_year}


def payment_methods_page(
    connection: Connection, tenant_id: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Stored cards, oldest first, a page at a time."""
    from commcredits.api import pagination

    directory.require_tenant(connection, tenant_id)
    pagination.check_limit(limit)
    methods = t.payment_methods.c
    query = select(t.payment_methods).where(
        methods.tenant_id == tenant_id, methods.removed_at.is_(None)
    )
    if cursor:
        at_text, after_id = pagination.decode_cursor(cursor, 2)
        after_at = _cursor_instant(at_text)
        query = query.where(
            (methods.created_at > after_at)
            | ((methods.created_at == after_at) & (methods.id > str(after_id)))
        )
    query = query.order_by(methods.created_at, methods.id).limit(limit + 1)
    rows = list(connection.execute(query).all())
    rows, next_cursor = pagination.split(
        rows, limit, lambda r: [as_utc(r.created_at).isoformat(), r.id]
    )
    return {"items": [payment_method_dict(r) for r in rows], "next_cursor": next_cursor}


def _cursor_instant(value: Any) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(str(value)))
    except (ValueError, ValidationFailed) as exc:
        raise ValidationFailed("cursor is not one this service issued") from exc


def remove_payment_method(
    connection: Connection, tenant_id: str, method_id: str, actor: str
) -> None:
    """Forget the card; auto-recharge that used it is disabled (API.md)."""
    before = accounts.lock(connection, tenant_id)
    require_payment_method(connection, tenant_id, method_id)
    connection.execute(
        update(t.payment_methods)
        .where(t.payment_methods.c.tenant_id == tenant_id, t.payment_methods.c.id == method_id)
        .values(removed_at=now())
    )
    if before.auto_recharge_payment_method_id == method_id:
        accounts.save(
            connection,
            before,
            replace(before, auto_recharge_enabled=False, auto_recharge_payment_method_id=None),
        )
    audit.record(connection, tenant_id, actor, "payment_method_removed", {"id": method_id})


# --- auto-recharge settings -----------------------------------------------------------------


@dataclass(frozen=True)
class AutoRechargeSettings:
    enabled: bool
    threshold: Decimal | None
    amount: Decimal | None
    payment_method_id: str | None


def set_auto_recharge(
    connection: Connection, tenant_id: str, wanted: AutoRechargeSettings, actor: str
) -> dict[str, Any]:
    """Change the settings under the account lock. New settings re-arm the
    machine, so a balance already below the new threshold recharges now."""
    tenant = directory.require_tenant(connection, tenant_id)
    before = accounts.lock(connection, tenant_id)
    if wanted.enabled:
        require_purchase_allowed(tenant)
        if wanted.threshold is None or wanted.amount is None or wanted.payment_method_id is None:
            raise ValidationFailed(
                "threshold, amount and payment_method_id are required to enable auto-recharge"
            )
    if wanted.amount is not None:
        if wanted.amount < MIN_PURCHASE:
            raise AmountBelowMinimum(
                f"a recharge buys at least {format_amount(MIN_PURCHASE, before.currency)} "
                f"{before.currency}",
                minimum=format_amount(MIN_PURCHASE, before.currency),
            )
    if (
        wanted.threshold is not None
        and wanted.amount is not None
        and wanted.threshold + wanted.amount > accounts.MAX_BALANCE
    ):
        # A recharge starts below the threshold; it must still fit once posted.
        raise ValidationFailed(
            f"threshold plus amount must stay within {accounts.MAX_BALANCE}, "
            "the largest balance this service keeps"
        )
    if wanted.payment_method_id is not None:
        require_payment_method(connection, tenant_id, wanted.payment_method_id)
    after = replace(
        before,
        auto_recharge_enabled=wanted.enabled,
        auto_recharge_threshold=wanted.threshold,
        auto_recharge_amount=wanted.amount,
        auto_recharge_payment_method_id=wanted.payment_method_id,
        recharge_armed=True,
        low_armed=True,
    )
    after = accounts.save(connection, before, after)
    audit.record(
        connection,
        tenant_id,
        actor,
        "auto_recharge_changed",
        auto_recharge_view(after),
    )
    return auto_recharge_view(after)


# --- adjustments -----------------------------------------------------------------------------


def adjust(
    connection: Connection, tenant_id: str, amount: Decimal, reason: str, actor: str
) -> dict[str, Any]:
    """An operator's refund, goodwill credit or correction: a ledger line and an audit record."""
    directory.require_tenant(connection, tenant_id)
    before = accounts.lock(connection, tenant_id)
    if amount > 0:
        # Pending purchases may already be charged: leave them room to post.
        check_balance_headroom(connection, before, amount)
    after, line = accounts.post(connection, before, "adjustment", amount, f"adjustment: {reason}")
    accounts.save(connection, before, after)
    audit.record(
        connection,
        tenant_id,
        actor,
        "adjustment_posted",
        {"amount": format_amount(amount, before.currency), "reason": reason, "ledger_id": line.id},
    )
    return line_dict(line, before.currency)


def line_dict(line: accounts.LedgerLine, currency: str) -> dict[str, Any]:
    return {
        "id": line.id,
        "at": rfc3339(line.at),
        "kind": line.kind,
        "amount": format_amount(line.amount, currency),
        "balance_after": format_amount(line.balance_after, currency),
        "currency": currency,
        "reference": line.reference,
    }


# --- purchases -------------------------------------------------------------------------------


def purchase_dict(row: Any, balance: Decimal | None) -> dict[str, Any]:
    currency = row.currency
    body: dict[str, Any] = {
        "id": row.id,
        "kind": row.kind,
        "amount": format_amount(row.amount, currency),
        "currency": currency,
        "status": row.status,
        "payment_method_id": row.payment_method_id,
        "created_at": rfc3339(row.created_at),
    }
    if row.failure_code:
        body["failure_code"] = row.failure_code
    if balance is not None:
        body["balance"] = format_amount(balance, currency)
    return body


def _purchase_row(
    connection: Connection, tenant_id: str, purchase_id: str, lock: bool = False
) -> Any:
    query = select(t.purchases).where(
        t.purchases.c.tenant_id == tenant_id, t.purchases.c.id == purchase_id
    )
    if lock and is_postgres(connection):
        query = query.with_for_update()
    return connection.execute(query).first()


def _request_fingerprint(amount: Decimal, payment_method_id: str) -> str:
    import hashlib

    return hashlib.sha256(f"purchase\n{amount}\n{payment_method_id}".encode()).hexdigest()


def begin_purchase(
    engine: Engine,
    tenant_id: str,
    amount_text_value: Decimal,
    payment_method_id: str,
    idempotency_key: str | None,
    actor: str,
    maximum: Decimal,
) -> tuple[str, dict[str, Any] | None]:
    """Step 1: validate, then write the pending purchase. Returns the purchase id,
    or a stored response when this Idempotency-Key already finished."""
    amount = amount_text_value
    fingerprint = _request_fingerprint(amount, payment_method_id)
    for _ in range(2):
        try:
            with write_transaction(engine) as connection:
                tenant = directory.require_tenant(connection, tenant_id)
                if idempotency_key is not None:
                    stored = connection.execute(
                        select(t.idempotency_keys).where(
                            t.idempotency_keys.c.tenant_id == tenant_id,
                            t.idempotency_keys.c.key == idempotency_key,
                        )
                    ).first()
                    if stored is not None:
                        if stored.request_hash != fingerprint:
                            raise IdempotencyConflict(
                                "this Idempotency-Key was already used with a different "
                                "request; use a new key for a new request"
                            )
                        body = json.loads(stored.response_body)
                        if stored.status_code:
                            return body["id"], body
                        return body["purchase_id"], None
                require_purchase_allowed(tenant)
                currency = tenant.currency
                check_purchase_amount(amount, currency, maximum)
                require_payment_method(connection, tenant_id, payment_method_id)
                # Checked here, before the card is charged: a charge whose
                # money cannot be posted would be taken and never credited.
                check_balance_headroom(connection, accounts.lock(connection, tenant_id), amount)
                purchase_id = new_id("pur")
                connection.execute(
                    insert(t.purchases).values(
                        tenant_id=tenant_id,
                        id=purchase_id,
                        kind="purchase",
                        amount=amount,
                        currency=currency,
                        payment_method_id=payment_method_id,
                        status="pending",
                        attempts=0,
                        actor=actor,
                        created_at=now(),
                    )
                )
                if idempotency_key is not None:
                    connection.execute(
                        insert(t.idempotency_keys).values(
                            tenant_id=tenant_id,
                            key=idempotency_key,
                            scope=f"POST /v1/tenants/{tenant_id}/credits/purchases",
                            request_hash=fingerprint,
                            status_code=0,
                            response_body=json.dumps({"purchase_id": purchase_id}),
                            created_at=now(),
                        )
                    )
                return purchase_id, None
        except IntegrityError:
            continue  # a concurrent retry with this key committed first: read its record
    raise IdempotencyConflict("this Idempotency-Key is being used by a concurrent request")


@dataclass
class ChargeProgress:
    """How far one attempt got: decides whether a purchase whose resolution keeps
    failing may be given up (only when no money can have been taken)."""

    stage: str = "not_asked"  # not_asked | asking | declined | charged


def charge_provider(
    engine: Engine,
    provider: PaymentProvider,
    tenant_id: str,
    purchase_id: str,
    progress: ChargeProgress | None = None,
) -> ChargeResult | None:
    """Step 2: outside any transaction. None when the provider did not answer."""
    progress = progress or ChargeProgress()
    with read_transaction(engine) as connection:
        purchase = _purchase_row(connection, tenant_id, purchase_id)
        if purchase is None or purchase.status != "pending":
            return None
        method = connection.execute(
            select(t.payment_methods).where(
                t.payment_methods.c.tenant_id == tenant_id,
                t.payment_methods.c.id == purchase.payment_method_id,
            )
        ).first()
    if method is None or method.removed_at is not None:
        progress.stage = "declined"
        return ChargeResult(succeeded=False, failure_code="card_declined", provider_reference=None)
    amount = purchase.amount.quantize(Decimal(1).scaleb(-_digits(purchase.currency)))
    progress.stage = "asking"
    try:
        result = provider.charge(
            method.provider_token,
            amount,
            purchase.currency,
            idempotency_key=purchase.id,
            description=f"commcredits {purchase.kind} {purchase.id}",
        )
    except ProviderUnavailable:
        return None
    progress.stage = "charged" if result.succeeded else "declined"
    return result


def _digits(currency: str) -> int:
    from commcredits.core.money import minor_unit_digits

    return minor_unit_digits(currency)


def finish_purchase(
    engine: Engine,
    tenant_id: str,
    purchase_id: str,
    result: ChargeResult | None,
    idempotency_key: str | None = None,
    give_up: bool = False,
) -> dict[str, Any] | None:
    """Step 3: post exactly once. Returns the purchase as the API shows it, or
    None while it stays pending (no answer from the provider)."""
    with write_transaction(engine) as connection:
        before = accounts.lock(connection, tenant_id)
        purchase = _purchase_row(connection, tenant_id, purchase_id, lock=True)
        assert purchase is not None, purchase_id
        after = before
        if purchase.status == "pending":
            if result is None and not give_up:
                connection.execute(
                    update(t.purchases)
                    .where(t.purchases.c.tenant_id == tenant_id, t.purchases.c.id == purchase_id)
                    .values(attempts=t.purchases.c.attempts + 1, claim_expires_at=None)
                )
                return None
            if result is None:
                result = ChargeResult(False, "processing_error", None)
            values: dict[str, Any] = {
                "status": "succeeded" if result.succeeded else "failed",
                "failure_code": result.failure_code,
                "provider_reference": result.provider_reference,
                "attempts": purchase.attempts + 1,
                "completed_at": now(),
                "claim_expires_at": None,
            }
            amount = round_to_minor(purchase.amount, purchase.currency)
            if result.succeeded:
                after, line = accounts.post(
                    connection, before, purchase.kind, amount, f"{purchase.kind} {purchase.id}"
                )
                values["ledger_seq"] = line.seq
            if purchase.kind == "auto_recharge":
                after = _after_recharge(connection, after, purchase, result)
            connection.execute(
                update(t.purchases)
                .where(t.purchases.c.tenant_id == tenant_id, t.purchases.c.id == purchase_id)
                .values(**values)
            )
            after = accounts.save(connection, before, after)
            purchase = _purchase_row(connection, tenant_id, purchase_id)
        body = purchase_dict(purchase, after.balance)
        if idempotency_key is not None:
            connection.execute(
                update(t.idempotency_keys)
                .where(
                    t.idempotency_keys.c.tenant_id == tenant_id,
                    t.idempotency_keys.c.key == idempotency_key,
                )
                .values(status_code=201, response_body=json.dumps(body))
            )
        return body


FAILURE_WORDS = {
    "card_declined": "the card was declined",
    "expired_card": "the card has expired",
    "processing_error": "the payment provider could not process the payment",
}


def _after_recharge(
    connection: Connection, account: accounts.Account, purchase: Any, result: ChargeResult
) -> accounts.Account:
    from commcredits.api.metrics import RECHARGES
    from commcredits.services import outbox

    currency = purchase.currency
    if result.succeeded:
        outbox.emit(
            connection,
            account.tenant_id,
            "recharge_succeeded",
            {
                "purchase_id": purchase.id,
                "amount": format_amount(purchase.amount, currency),
                "balance": format_amount(account.balance, currency),
                "currency": currency,
            },
        )
        RECHARGES.labels("succeeded").inc()
    else:
        outbox.emit(
            connection,
            account.tenant_id,
            "recharge_failed",
            {
                "purchase_id": purchase.id,
                "amount": format_amount(purchase.amount, currency),
                "balance": format_amount(account.balance, currency),
                "currency": currency,
                "failure_code": result.failure_code,
                "reason": FAILURE_WORDS.get(result.failure_code or "", "the payment failed"),
            },
        )
        RECHARGES.labels("failed").inc()
    # The crossing is spent: the machine re-arms when available is back above
    # the threshold (accounts.save -> account_events).
    return replace(account, recharge_purchase_id=None)


def purchase(
    engine: Engine,
    provider: PaymentProvider,
    tenant_id: str,
    amount: Decimal,
    payment_method_id: str,
    idempotency_key: str | None,
    actor: str,
    maximum: Decimal,
) -> dict[str, Any]:
    """A one-time purchase, all three steps; a few quick provider retries inline."""
    purchase_id, stored = begin_purchase(
        engine, tenant_id, amount, payment_method_id, idempotency_key, actor, maximum
    )
    if stored is not None:
        return stored
    for _ in range(PROVIDER_ATTEMPTS_INLINE):
        result = charge_provider(engine, provider, tenant_id, purchase_id)
        body = finish_purchase(engine, tenant_id, purchase_id, result, idempotency_key)
        if body is not None:
            return body
    if idempotency_key is None:
        # Without a key a retry is a second purchase, charged once this one
        # completes: point at this one instead.
        raise ProviderUnavailableError(
            f"the payment provider did not answer; purchase {purchase_id} is pending and "
            "no money has been posted. Do not buy again: it completes or fails on its own; "
            f"look it up with GET /v1/tenants/{tenant_id}/credits/purchases/{purchase_id}",
            purchase_id=purchase_id,
        )
    raise ProviderUnavailableError(
        f"the payment provider did not answer; purchase {purchase_id} is pending and no "
        "money has been posted. Retry with the same Idempotency-Key to finish it",
        purchase_id=purchase_id,
    )


# --- the recharge runner ---------------------------------------------------------------------


def claim_pending(engine: Engine, limit: int = 20) -> list[tuple[str, str]]:
    """Claim pending purchases no other process is working on (a lease). On
    PostgreSQL the candidate rows are locked with SKIP LOCKED so two processes
    never claim the same one. The least-tried come first, so purchases that keep
    failing queue behind fresh ones instead of taking every pass's places."""
    at = now()
    purchases = t.purchases.c
    with write_transaction(engine) as connection:
        query = (
            select(purchases.tenant_id, purchases.id, purchases.claim_expires_at)
            .where(
                purchases.status == "pending",
                or_(purchases.claim_expires_at.is_(None), purchases.claim_expires_at <= at),
            )
            .order_by(purchases.attempts, purchases.created_at, purchases.id)
            .limit(limit)
        )
        if is_postgres(connection):
            query = query.with_for_update(skip_locked=True)
        claimed = []
        for row in connection.execute(query).all():
            expires = row.claim_expires_at
            if expires is not None and _aware(expires) > at:
                continue
            connection.execute(
                update(t.purchases)
                .where(t.purchases.c.tenant_id == row.tenant_id, t.purchases.c.id == row.id)
                .values(claim_expires_at=at + timedelta(seconds=CLAIM_SECONDS))
            )
            claimed.append((row.tenant_id, row.id))
        return claimed


def _aware(value: Any) -> Any:
    return as_utc(value)


def resolve_pending(engine: Engine, provider: PaymentProvider) -> int:
    """One pass of the runner: resolve every claimable pending purchase. Each one
    on its own: an error resolving one is logged and counted against it, and the
    pass goes on with the others (other tenants' recharges among them)."""
    done = 0
    for tenant_id, purchase_id in claim_pending(engine):
        progress = ChargeProgress()
        try:
            if _resolve_one(engine, provider, tenant_id, purchase_id, progress):
                done += 1
        except Exception:
            log.exception(
                "resolving purchase %s of tenant %s failed (provider: %s)",
                purchase_id,
                tenant_id,
                progress.stage,
            )
            try:
                if record_failed_attempt(engine, tenant_id, purchase_id, progress):
                    done += 1
            except Exception:
                log.exception("counting the failed attempt of purchase %s failed", purchase_id)
    return done


def _resolve_one(
    engine: Engine,
    provider: PaymentProvider,
    tenant_id: str,
    purchase_id: str,
    progress: ChargeProgress,
) -> bool:
    result = charge_provider(engine, provider, tenant_id, purchase_id, progress)
    with read_transaction(engine) as connection:
        row = _purchase_row(connection, tenant_id, purchase_id)
    give_up = row is not None and row.attempts + 1 >= MAX_PROVIDER_ATTEMPTS
    return finish_purchase(engine, tenant_id, purchase_id, result, give_up=give_up) is not None


def record_failed_attempt(
    engine: Engine, tenant_id: str, purchase_id: str, progress: ChargeProgress
) -> bool:
    """After an error resolving a purchase, in a transaction of its own: count the
    attempt and hold the purchase back for a lease period. At the attempt limit
    the purchase ends ``failed`` with ``processing_error``, but only when this
    attempt shows no money was taken: the error came before the provider was
    asked, or the provider declined. One the provider charged (or may have,
    its call having raised) stays pending for an operator: failing it would
    keep money the tenant paid. Returns True when the purchase ended."""
    at = now()
    with write_transaction(engine) as connection:
        accounts.lock(connection, tenant_id)  # the order finish_purchase locks in
        row = _purchase_row(connection, tenant_id, purchase_id, lock=True)
        if row is None or row.status != "pending":
            return False
        attempts = row.attempts + 1
        where = (t.purchases.c.tenant_id == tenant_id, t.purchases.c.id == purchase_id)
        no_money_taken = progress.stage in ("not_asked", "declined")
        if attempts < MAX_PROVIDER_ATTEMPTS or not no_money_taken:
            if attempts >= MAX_PROVIDER_ATTEMPTS:
                log.error(
                    "purchase %s of tenant %s: %d attempts, provider stage %s; it stays "
                    "pending until an operator looks at it",
                    purchase_id,
                    tenant_id,
                    attempts,
                    progress.stage,
                )
            connection.execute(
                update(t.purchases)
                .where(*where)
                .values(attempts=attempts, claim_expires_at=at + timedelta(seconds=CLAIM_SECONDS))
            )
            return False
        connection.execute(
            update(t.purchases)
            .where(*where)
            .values(
                status="failed",
                failure_code="processing_error",
                attempts=attempts,
                completed_at=at,
                claim_expires_at=None,
            )
        )
        if row.kind == "auto_recharge":
            # The crossing is spent, as after any failed recharge.
            connection.execute(
                update(t.credits_accounts)
                .where(
                    t.credits_accounts.c.tenant_id == tenant_id,
                    t.credits_accounts.c.recharge_purchase_id == purchase_id,
                )
                .values(recharge_purchase_id=None, updated_at=at)
            )
        log.error(
            "purchase %s of tenant %s given up after %d attempts", purchase_id, tenant_id, attempts
        )
        return True


# --- transactions -----------------------------------------------------------------------------


def transactions_page(
    connection: Connection, tenant_id: str, start: Any, end: Any, limit: int, cursor: str | None
) -> dict[str, Any]:
    from commcredits.api import pagination

    account = accounts.read(connection, tenant_id)
    query = select(t.ledger_transactions).where(t.ledger_transactions.c.tenant_id == tenant_id)
    if start is not None:
        query = query.where(t.ledger_transactions.c.at >= start)
    if end is not None:
        query = query.where(t.ledger_transactions.c.at < end)
    rows = connection.execute(
        pagination.page(query, [t.ledger_transactions.c.seq], limit, cursor)
    ).all()
    rows, next_cursor = pagination.split(rows, limit, lambda r: [r.seq])
    items = [
        line_dict(
            accounts.LedgerLine(r.id, r.seq, r.at, r.kind, r.amount, r.balance_after, r.reference),
            account.currency,
        )
        for r in rows
    ]
    return {"items": items, "next_cursor": next_cursor}


def purchases_page(
    connection: Connection, tenant_id: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    """One-time purchases and auto-recharges, failed ones included, newest last."""
    from commcredits.api import pagination

    directory.require_tenant(connection, tenant_id)
    pagination.check_limit(limit)
    query = select(t.purchases).where(t.purchases.c.tenant_id == tenant_id)
    if cursor:
        at_text, after_id = pagination.decode_cursor(cursor, 2)
        after_at = _cursor_instant(at_text)
        query = query.where(
            (t.purchases.c.created_at > after_at)
            | ((t.purchases.c.created_at == after_at) & (t.purchases.c.id > str(after_id)))
        )
    query = query.order_by(t.purchases.c.created_at, t.purchases.c.id).limit(limit + 1)
    rows = connection.execute(query).all()
    rows, next_cursor = pagination.split(
        rows, limit, lambda r: [as_utc(r.created_at).isoformat(), r.id]
    )
    return {"items": [purchase_dict(r, None) for r in rows], "next_cursor": next_cursor}


def get_purchase(connection: Connection, tenant_id: str, purchase_id: str) -> dict[str, Any]:
    row = _purchase_row(connection, tenant_id, purchase_id)
    if row is None:
        raise not_found_purchase(purchase_id)
    return purchase_dict(row, None)


def not_found_purchase(purchase_id: str) -> NotFound:
    return NotFound(f"purchase '{purchase_id}' was not found")
