"""Who may buy credits, and the credits status (SPEC §2 "Eligibility", "Credits status")."""

from __future__ import annotations

from decimal import Decimal

import pytest

from commcredits.core.eligibility import (
    AGREEMENTS,
    Eligibility,
    credits_status,
    eligibility,
)


@pytest.mark.parametrize(
    ("agreement", "country", "billing_country", "override", "expected"),
    [
        ("ea", "US", "US", False, Eligibility(True, None)),
        ("ea", "US", "GB", False, Eligibility(False, "region_mismatch")),
        ("ea", "US", "GB", True, Eligibility(True, None)),  # the operator's mitigation
        ("ea", "us", "US", False, Eligibility(True, None)),
        # Only EA tenants are held to their billing address.
        ("mca", "US", "GB", False, Eligibility(True, None)),
        ("csp", "US", "GB", False, Eligibility(True, None)),
        ("direct", "DE", "FR", False, Eligibility(True, None)),
        ("mca", "US", "US", False, Eligibility(True, None)),
        # NCE tenants pay overage instead; the override does not change that.
        ("nce", "US", "US", False, Eligibility(False, "nce")),
        ("nce", "US", "US", True, Eligibility(False, "nce")),
        ("nce", "US", "GB", False, Eligibility(False, "nce")),
        ("nce", "US", "GB", True, Eligibility(False, "nce")),
    ],
)
def test_eligibility(
    agreement: str, country: str, billing_country: str, override: bool, expected: Eligibility
) -> None:
    assert eligibility(agreement, country, billing_country, override) == expected


def test_every_agreement_is_known() -> None:
    assert set(AGREEMENTS) == {"ea", "mca", "csp", "direct", "nce"}
    for agreement in AGREEMENTS:
        eligibility(agreement, "US", "US", False)


def test_unknown_agreement_is_refused() -> None:
    with pytest.raises(ValueError, match="agreement"):
        eligibility("enterprise", "US", "US", False)


def test_reason_is_set_exactly_when_refused() -> None:
    with pytest.raises(AssertionError):
        Eligibility(True, "nce")
    with pytest.raises(AssertionError):
        Eligibility(False, None)


@pytest.mark.parametrize(
    ("can_purchase", "available", "status"),
    [
        (True, Decimal("10.00"), "active"),
        (True, Decimal("0.0001"), "active"),
        (True, Decimal("0"), "depleted"),
        (True, Decimal("0.00"), "depleted"),
        (True, Decimal("-3.50"), "depleted"),
        # not_available wins over everything
        (False, Decimal("10.00"), "not_available"),
        (False, Decimal("0"), "not_available"),
        (False, Decimal("-1"), "not_available"),
    ],
)
def test_credits_status(can_purchase: bool, available: Decimal, status: str) -> None:
    assert credits_status(can_purchase, available) == status
