"""May a tenant buy Communications Credits, and what state is its balance in (SPEC §2)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

__all__ = [
    "AGREEMENTS",
    "CREDITS_STATUSES",
    "Agreement",
    "CreditsStatus",
    "Eligibility",
    "IneligibleReason",
    "credits_status",
    "eligibility",
]

Agreement = Literal["ea", "mca", "csp", "direct", "nce"]
AGREEMENTS: Final[tuple[Agreement, ...]] = ("ea", "mca", "csp", "direct", "nce")

IneligibleReason = Literal["nce", "region_mismatch"]

CreditsStatus = Literal["not_available", "depleted", "active"]
CREDITS_STATUSES: Final[tuple[CreditsStatus, ...]] = ("not_available", "depleted", "active")


@dataclass(frozen=True, slots=True)
class Eligibility:
    can_purchase: bool
    reason: IneligibleReason | None  # None exactly when can_purchase

    def __post_init__(self) -> None:
        assert self.can_purchase == (self.reason is None), self


def eligibility(
    agreement: str, country: str, billing_country: str, purchase_override: bool
) -> Eligibility:
    """Whether the tenant may buy credits, with the reason when it may not."""
    if agreement not in AGREEMENTS:
        raise ValueError(f"agreement {agreement!r} is not one of {', '.join(AGREEMENTS)}")
    if agreement == "nce":
        # NCE tenants are billed after use (overage), so a prepaid balance has
        # no place in their billing at all; the operator override is meant for
        # the EA address conflict only and does not lift this.
        return Eligibility(can_purchase=False, reason="nce")
    if agreement == "ea" and country.upper() != billing_country.upper():
        # EA tenants billed in another region than their own cannot buy credits;
        # the operator may lift it per tenant, the seed's "mitigation until a
        # permanent solution is in place".
        if not purchase_override:
            return Eligibility(can_purchase=False, reason="region_mismatch")
    return Eligibility(can_purchase=True, reason=None)


def credits_status(can_purchase: bool, available: Decimal) -> CreditsStatus:
    """`not_available` wins; then `depleted` when available <= 0; else `active`."""
    assert isinstance(available, Decimal) and available.is_finite(), available
    if not can_purchase:
        return "not_available"
    if available <= 0:
        return "depleted"
    return "active"
