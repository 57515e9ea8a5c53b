"""Double-entry postings (pure).

The tenant's ``credits`` account is one side of every posting; the other is the
counter account of the posting's kind. Amounts are signed from the tenant's
side: money in is positive on ``credits`` and negative on the counter account,
so every posting sums to zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

CREDITS_ACCOUNT = "credits"

LEDGER_KINDS: tuple[str, ...] = ("purchase", "auto_recharge", "call_charge", "adjustment")

COUNTER_ACCOUNT: dict[str, str] = {
    "purchase": "funding",
    "auto_recharge": "funding",
    "call_charge": "usage",
    "adjustment": "adjustments",
}


@dataclass(frozen=True, slots=True)
class Entry:
    account: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Posting:
    kind: str
    amount: Decimal  # signed, tenant side
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        assert self.kind in COUNTER_ACCOUNT, f"unknown ledger kind {self.kind}"
        total = sum((e.amount for e in self.entries), Decimal(0))
        assert total == 0, f"posting does not balance: {self.entries}"
        assert len({e.account for e in self.entries}) == len(self.entries), "one entry per account"


def posting(kind: str, amount: Decimal) -> Posting:
    """The posting of ``amount`` (already rounded to the minor unit) of ``kind``."""
    if kind in ("purchase", "auto_recharge"):
        assert amount > 0, "money in is positive"
    if kind == "call_charge":
        assert amount <= 0, "a charge takes money out"
    return Posting(
        kind=kind,
        amount=amount,
        entries=(Entry(CREDITS_ACCOUNT, amount), Entry(COUNTER_ACCOUNT[kind], -amount)),
    )
