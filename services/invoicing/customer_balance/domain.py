"""Customer balances, pure (metering-invoicing.md §2.7, §7): what an adjustment is, how
much of a balance an invoice may take. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.errors import invalid
from contracts.invoicing import BalanceAdjustmentParams
from contracts.rules import currency_of, require_user

# S2: one adjustment moves at most this much (a mistyped amount is refused, not minted).
ADJUSTMENT_MAX = 100_000_000_00  # 100 million in major units


@dataclass(frozen=True, slots=True)
class Change:
    """One move of a customer's balance, and the transaction that records it."""

    customer_id: str
    currency: str
    amount: int  # positive credit, negative debit
    type: str
    description: str = ""
    invoice_id: str = ""
    credit_note_id: str = ""
    source_ref: str = ""  # set: this change happens once (collection, voids, credit notes)


def customer(raw: str) -> str:
    return require_user(raw, "customerId is required", "customerId")


def adjustment(p: BalanceAdjustmentParams) -> Change:
    """§7.2, in the reference's order of checks; currency lower-cased (Δ)."""
    who = customer(p.customerId)
    if p.amount == 0:
        raise invalid("amount must be non-zero", "amount")
    if abs(p.amount) > ADJUSTMENT_MAX:
        raise invalid("amount exceeds the allowed maximum", "amount")
    return Change(who, currency_of(p.currency), p.amount, "adjustment", p.description.strip())


def payable(balance: int, left: int) -> int:
    """What a balance pays of `left` (§9.5 leg 2): only credit held, never below 0."""
    return max(0, min(left, balance))
