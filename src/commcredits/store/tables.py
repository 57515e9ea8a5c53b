"""The schema.

Every tenant-owned table has ``tenant_id`` as the first column of its primary
key and every query on it filters by tenant, so the schema can be distributed
by tenant (Citus) later. Catalog and token tables are global.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from commcredits.store.types import Money

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = 64  # length of every id column
TS = DateTime(timezone=True)

# --- tenants, users, licenses -------------------------------------------------

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("country", String(2), nullable=False),
    Column("billing_country", String(2), nullable=False),
    Column("agreement", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("purchase_override", Boolean, nullable=False, default=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    PrimaryKeyConstraint("tenant_id", "sku"),
)

users = Table(
    "users",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("upn", String(256), nullable=False),
    # UPNs compare case-insensitively, like the e-mail addresses they look like.
    Column("upn_key", String(256), nullable=False),
    Column("display_name", String(256), nullable=False),
    Column("usage_location", String(2), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("email", String(256)),
    Column("phone_number", String(20)),
    Column("roles", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    UniqueConstraint("tenant_id", "upn_key", name="uq_users_tenant_upn"),
    Index("ix_users_tenant_phone", "tenant_id", "phone_number"),
)

user_licenses = Table(
    "user_licenses",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("assigned_at", TS, nullable=False),
    PrimaryKeyConstraint("tenant_id", "user_id", "sku"),
    Index("ix_user_licenses_tenant_sku", "tenant_id", "sku"),
)

# Global: looked up by the hash of the presented token, before any tenant is known.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # user | charging
    Column("tenant_id", String(ID)),  # null: a charging token for every tenant
    Column("user_id", String(ID)),
    Column("created_at", TS, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # "" for operator requests that belong to no tenant yet (POST /v1/tenants).
    Column("tenant_id", String(ID), nullable=False),
    Column("key", String(255), nullable=False),
    Column("scope", String(300), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("created_at", TS, nullable=False),
    PrimaryKeyConstraint("tenant_id", "key"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("at", TS, nullable=False),
    Column("actor", String(300), nullable=False),
    Column("action", String(64), nullable=False),
    Column("detail", JSON, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
)

# --- catalog (global) ----------------------------------------------------------

rate_rows = Table(
    "rate_rows",
    metadata,
    Column("service", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("prefix", String(15), nullable=False),
    Column("number_type", String(16), nullable=False),
    Column("destination", String(200), nullable=False),
    Column("rate_per_minute", Money, nullable=False),
    Column("connect_fee", Money, nullable=False),
    Column("initial_increment_s", Integer, nullable=False),
    Column("subsequent_increment_s", Integer, nullable=False),
    PrimaryKeyConstraint("service", "currency", "prefix", "number_type"),
)

# Small documents (the plans) and version counters that let every server
# process notice a new catalog without re-reading it on each call.
catalog_state = Table(
    "catalog_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("document", JSON),
    Column("updated_at", TS, nullable=False),
)

# --- credits -----------------------------------------------------------------

credits_accounts = Table(
    "credits_accounts",
    metadata,
    Column("tenant_id", String(ID), primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("balance", Money, nullable=False),
    Column("reserved", Money, nullable=False),
    Column("ledger_seq", BigInteger, nullable=False),  # last ledger line of this tenant
    Column("auto_recharge_enabled", Boolean, nullable=False),
    Column("auto_recharge_threshold", Money),
    Column("auto_recharge_amount", Money),
    Column("auto_recharge_payment_method_id", String(ID)),
    # The recharge state machine: armed -> (available < threshold) -> pending
    # (a purchase row exists) -> resolved; re-armed once available is back
    # at or above the threshold, or when the settings change.
    Column("recharge_armed", Boolean, nullable=False),
    Column("recharge_purchase_id", String(ID)),
    # Notification lines follow the posted balance (SPEC §4): fire once, re-arm above.
    Column("depleted_armed", Boolean, nullable=False),
    Column("low_armed", Boolean, nullable=False),
    Column("updated_at", TS, nullable=False),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("id", String(ID), nullable=False),
    Column("at", TS, nullable=False),
    Column("kind", String(32), nullable=False),
    # Signed from the tenant's side: money in positive, charges negative.
    Column("amount", Money, nullable=False),
    Column("balance_after", Money, nullable=False),
    Column("reference", String(300)),
    PrimaryKeyConstraint("tenant_id", "seq"),
    Index("ix_ledger_transactions_tenant_at", "tenant_id", "at"),
)

# Double entry: every transaction has entries summing to zero. The tenant's
# credits account is one side; "funding", "usage" or "adjustments" the other.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("account", String(32), nullable=False),
    Column("amount", Money, nullable=False),
    PrimaryKeyConstraint("tenant_id", "seq", "account"),
)

payment_methods = Table(
    "payment_methods",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("provider_token", String(300), nullable=False),
    Column("brand", String(32), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("exp_month", Integer, nullable=False),
    Column("exp_year", Integer, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("removed_at", TS),
    PrimaryKeyConstraint("tenant_id", "id"),
)

purchases = Table(
    "purchases",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("kind", String(32), nullable=False),  # purchase | auto_recharge
    Column("amount", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_method_id", String(ID), nullable=False),
    Column("status", String(16), nullable=False),  # pending | succeeded | failed
    Column("failure_code", String(32)),
    Column("provider_reference", String(300)),
    Column("ledger_seq", BigInteger),
    Column("attempts", Integer, nullable=False),
    # A lease: the process resolving a pending purchase holds it until then.
    Column("claim_expires_at", TS),
    Column("actor", String(300), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("completed_at", TS),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index("ix_purchases_status", "status", "kind"),
)

# --- charging -------------------------------------------------------------------

calls = Table(
    "calls",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("call_id", String(128), nullable=False),
    Column("source", String(8), nullable=False),  # online | offline
    Column("state", String(8), nullable=False),  # active | ended | denied
    Column("call_type", String(16), nullable=False),
    Column("user_id", String(ID)),
    Column("user_upn", String(256)),
    Column("user_display_name", String(256)),
    Column("from_number", String(32)),
    Column("to_number", String(32), nullable=False),
    Column("destination_region", String(2)),
    Column("destination_name", String(200)),
    Column("destination_context", String(16)),
    Column("number_type", String(16)),
    Column("usage_country", String(2)),
    Column("decision", String(8), nullable=False),
    Column("reason", String(32)),
    Column("funding", String(16)),
    Column("started_at", TS, nullable=False),
    Column("ended_at", TS),
    Column("duration_seconds", Integer),
    Column("granted_seconds", Integer, nullable=False),
    Column("grant_expires_at", TS),
    Column("hold_amount", Money, nullable=False),
    Column("pool_kind", String(24)),
    Column("pool_country", String(2)),
    Column("pool_month", String(7)),
    Column("pool_hold_seconds", Integer, nullable=False),
    Column("rate_per_minute", Money),
    Column("connect_fee", Money),
    Column("initial_increment_s", Integer),
    Column("subsequent_increment_s", Integer),
    Column("currency", String(3)),
    Column("charge", Money),
    Column("pool_seconds", Integer),
    Column("charged_seconds", Integer),
    # Who pays past the pool: credits_allowed (credits), overage (nce), or
    # neither (the pool alone); fixed at the start of the call.
    Column("credits_allowed", Boolean, nullable=False),
    Column("overage", Boolean, nullable=False),
    Column("rate_service", String(24)),
    Column("end_reason", String(16)),  # platform | swept
    Column("ledger_seq", BigInteger),
    Column("request_hash", String(64), nullable=False),
    Column("start_response", JSON),
    Column("end_response", JSON),
    PrimaryKeyConstraint("tenant_id", "call_id"),
    Index("ix_calls_call_id", "call_id"),
    Index("ix_calls_state_expiry", "state", "grant_expires_at"),
    Index("ix_calls_tenant_started", "tenant_id", "started_at"),
)

pool_usage = Table(
    "pool_usage",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("month", String(7), nullable=False),
    Column("pool_kind", String(24), nullable=False),
    Column("country", String(2), nullable=False),  # "" for the conferencing pool
    Column("used_seconds", BigInteger, nullable=False),
    Column("held_seconds", BigInteger, nullable=False),
    # Set when the month has ended: its size no longer follows license changes.
    Column("frozen_size_seconds", BigInteger),
    PrimaryKeyConstraint("tenant_id", "month", "pool_kind", "country"),
)

# --- notifications --------------------------------------------------------------

outbox_events = Table(
    "outbox_events",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("event", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index("ix_outbox_events_tenant_created", "tenant_id", "created_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("tenant_id", String(ID), nullable=False),
    Column("event_id", String(ID), nullable=False),
    Column("recipient", String(256), nullable=False),
    Column("status", String(16), nullable=False),  # pending | sending | sent | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", TS, nullable=False),
    Column("message_id", String(300), nullable=False),
    Column("last_error", Text),
    Column("sent_at", TS),
    PrimaryKeyConstraint("tenant_id", "event_id", "recipient"),
    Index("ix_deliveries_status_next", "status", "next_attempt_at"),
)
