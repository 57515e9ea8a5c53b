"""The demo data `commcredits demo` creates: idempotent, so a second run reuses it."""

from __future__ import annotations

from typing import Any

from commcredits.api.auth import store_token
from commcredits.services import directory
from commcredits.store.db import write_transaction

DEMO_TENANT_ID = "demo"

DEMO_USERS: list[dict[str, Any]] = [
    {
        "upn": "alice@demo.example",
        "display_name": "Alice Global",
        "usage_location": "US",
        "roles": ["global_admin"],
        "licenses": ["calling_plan_international", "communications_credits", "audio_conferencing"],
        "phone_number": "+12025550101",
    },
    {
        "upn": "bob@demo.example",
        "display_name": "Bob Billing",
        "usage_location": "US",
        "roles": ["billing_admin"],
        "licenses": ["calling_plan_domestic", "communications_credits"],
        "phone_number": "+12025550102",
    },
    {
        "upn": "carol@demo.example",
        "display_name": "Carol Caller",
        "usage_location": "GB",
        "roles": [],
        "licenses": ["calling_plan_domestic", "communications_credits"],
        "phone_number": "+442079460103",
    },
    {
        "upn": "dave@demo.example",
        "display_name": "Dave PayG",
        "usage_location": "DE",
        "roles": ["reports_reader"],
        "licenses": ["calling_plan_payg", "communications_credits"],
        "phone_number": None,
    },
    {
        "upn": "reception@demo.example",
        "display_name": "Reception (auto attendant)",
        "usage_location": "US",
        "kind": "resource_account",
        "roles": [],
        "licenses": ["communications_credits"],
        "phone_number": "+18005550199",
    },
]

DEMO_SEATS = {
    "calling_plan_domestic": 10,
    "calling_plan_international": 5,
    "calling_plan_payg": 5,
    "audio_conferencing": 10,
}


def seed(ctx: Any) -> dict[str, str]:
    """Create the demo tenant, its seats and users, and mint fresh tokens."""
    from commcredits.services import catalog

    catalog.load_sample_if_empty(ctx)
    with write_transaction(ctx.engine) as connection:
        if directory.get_tenant_row(connection, DEMO_TENANT_ID) is None:
            directory.create_tenant(
                connection,
                directory.NewTenant(
                    id=DEMO_TENANT_ID,
                    name="Demo Corporation",
                    country="US",
                    billing_country="US",
                    agreement="direct",
                    currency="USD",
                    timezone="America/New_York",
                ),
            )
            for sku, quantity in DEMO_SEATS.items():
                directory.add_subscription(connection, DEMO_TENANT_ID, sku, quantity)
            for spec in DEMO_USERS:
                directory.create_user(
                    connection,
                    DEMO_TENANT_ID,
                    directory.UserFields(
                        upn=spec["upn"],
                        display_name=spec["display_name"],
                        usage_location=spec["usage_location"],
                        kind=spec.get("kind", "person"),
                        email=None,
                        phone_number=spec["phone_number"],
                        roles=spec["roles"],
                    ),
                    spec["licenses"],
                )
        alice = directory.require_user(connection, DEMO_TENANT_ID, "alice@demo.example")
        bob = directory.require_user(connection, DEMO_TENANT_ID, "bob@demo.example")
        tokens = {
            "tenant_id": DEMO_TENANT_ID,
            "global_admin_token": store_token(
                connection, kind="user", tenant_id=DEMO_TENANT_ID, user_id=alice.id
            ),
            "billing_admin_token": store_token(
                connection, kind="user", tenant_id=DEMO_TENANT_ID, user_id=bob.id
            ),
            "charging_token": store_token(
                connection, kind="charging", tenant_id=DEMO_TENANT_ID, user_id=None
            ),
        }
    return tokens
