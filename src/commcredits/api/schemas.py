"""Request bodies. Strict: no silent coercion of "12" into 12; unknown enum
values, wrong types and over-long strings are a 422 validation_error."""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from commcredits.core import geo
from commcredits.core.roles import ALL_ROLES

ROLE = Literal[
    "global_admin",
    "billing_admin",
    "user_admin",
    "helpdesk_admin",
    "service_support_admin",
    "application_admin",
    "license_admin",
    "cloud_device_admin",
    "authentication_admin",
    "privileged_authentication_admin",
    "teams_admin",
    "teams_communications_admin",
    "teams_communications_support_engineer",
    "teams_communications_support_specialist",
    "skype_for_business_admin",
    "device_admin",
    "azure_ad_joined_device_local_admin",
    "reports_reader",
]
# The wire's enum and the permission matrix name the same roles.
assert frozenset(get_args(ROLE)) == ALL_ROLES

SKU = Literal[
    "calling_plan_domestic",
    "calling_plan_international",
    "calling_plan_payg",
    "audio_conferencing",
    "communications_credits",
]
AGREEMENT = Literal["ea", "mca", "csp", "direct", "nce"]
USER_KIND = Literal["person", "resource_account"]

MAX_QUANTITY = 1_000_000
# Used with fullmatch: with match, "$" would let a trailing newline through.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", re.ASCII)
_E164 = re.compile(r"\+[1-9][0-9]{1,14}", re.ASCII)
_UPN = re.compile(r"[^@\s]+@[^@\s]+")


def _country(value: str) -> str:
    if not geo.is_country(value):
        raise ValueError(f"'{value}' is not an ISO 3166 alpha-2 country code (e.g. 'US', 'GB')")
    return value


def _currency(value: str) -> str:
    if not geo.is_currency(value):
        raise ValueError(f"'{value}' is not an ISO 4217 currency code (e.g. 'USD', 'EUR')")
    return value


def _timezone(value: str) -> str:
    if not geo.is_timezone(value):
        raise ValueError(f"'{value}' is not an IANA time zone (e.g. 'Europe/London')")
    return value


def _identifier(value: str) -> str:
    if not _ID_PATTERN.fullmatch(value):
        raise ValueError(
            "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


def _e164(value: str) -> str:
    if not _E164.fullmatch(value):
        raise ValueError("must be an E.164 number: '+' then up to 15 digits, nothing else")
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"'{value}' is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"'{value}' is not a valid phone number")
    return value


def _upn(value: str) -> str:
    if not _UPN.fullmatch(value):
        raise ValueError("must look like 'name@domain'")
    return value


Country = Annotated[str, Field(min_length=2, max_length=2), AfterValidator(_country)]
Currency = Annotated[str, Field(min_length=3, max_length=3), AfterValidator(_currency)]
Timezone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_timezone)]
Identifier = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_identifier)]
E164 = Annotated[str, Field(min_length=3, max_length=16), AfterValidator(_e164)]
Upn = Annotated[str, Field(min_length=3, max_length=256), AfterValidator(_upn)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
DisplayName = Annotated[str, Field(min_length=1, max_length=256)]
Email = Annotated[str, Field(min_length=3, max_length=256), AfterValidator(_upn)]


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TenantCreate(Body):
    id: Identifier | None = None
    name: Name
    country: Country
    billing_country: Country
    agreement: AGREEMENT
    currency: Currency
    timezone: Timezone = "UTC"


class TenantPatch(Body):
    name: Name | None = None
    # Present only to refuse it clearly: a balance and its ledger stay in one currency.
    currency: object | None = None
    country: Country | None = None
    billing_country: Country | None = None
    agreement: AGREEMENT | None = None
    timezone: Timezone | None = None
    purchase_override: bool | None = None


class SubscriptionCreate(Body):
    sku: SKU
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY)]


class UserCreate(Body):
    upn: Upn
    display_name: DisplayName
    usage_location: Country
    kind: USER_KIND = "person"
    email: Email | None = None
    phone_number: E164 | None = None
    roles: Annotated[list[ROLE], Field(max_length=32)] = []
    licenses: Annotated[list[SKU], Field(max_length=16)] = []


class UserPatch(Body):
    upn: Upn | None = None
    display_name: DisplayName | None = None
    usage_location: Country | None = None
    kind: USER_KIND | None = None
    email: Email | None = None
    phone_number: E164 | None = None
    roles: Annotated[list[ROLE], Field(max_length=32)] | None = None
    licenses: Annotated[list[SKU], Field(max_length=16)] | None = None


class ChargingTokenCreate(Body):
    tenant_id: Identifier | None = None
