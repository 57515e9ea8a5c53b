"""License SKUs (SPEC §2)."""

from __future__ import annotations

CALLING_PLAN_DOMESTIC = "calling_plan_domestic"
CALLING_PLAN_INTERNATIONAL = "calling_plan_international"
CALLING_PLAN_PAYG = "calling_plan_payg"
AUDIO_CONFERENCING = "audio_conferencing"
COMMUNICATIONS_CREDITS = "communications_credits"

SKUS: tuple[str, ...] = (
    CALLING_PLAN_DOMESTIC,
    CALLING_PLAN_INTERNATIONAL,
    CALLING_PLAN_PAYG,
    AUDIO_CONFERENCING,
    COMMUNICATIONS_CREDITS,
)

# Unlimited in quantity: assigning it takes no seat (the seed: "will appear as
# unlimited in quantity").
UNLIMITED_SKUS: frozenset[str] = frozenset({COMMUNICATIONS_CREDITS})

USER_KINDS: tuple[str, ...] = ("person", "resource_account")
AGREEMENTS: tuple[str, ...] = ("ea", "mca", "csp", "direct", "nce")
