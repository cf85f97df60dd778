"""Spend alert rules, free of I/O: validation, who may reach an alert, and when one fires."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from contracts import Actor
from contracts.alerts import SpendAlertCreateParams, SpendAlertUpdateParams
from contracts.errors import forbidden, invalid
from contracts.rules import currency_of, require_user

NOT_FOUND = "spend alert not found"
OTHER_USER = "cannot access another user's account"


@dataclass(frozen=True, slots=True)
class NewAlert:
    user_id: str
    title: str
    threshold: int
    currency: str


def owner_filter(actor: Actor) -> str | None:
    """The user whose alerts this caller may reach by id: end users only their own (someone
    else's alert is simply not found: no existence oracle); admins and the platform any
    alert of their organization (None = no filter)."""
    return (actor.user_id or "") if actor.role == "user" else None


def require_own(actor: Actor, user_id: str) -> None:
    """An end user names only themselves (the gateway pins them; checked again here)."""
    owner = owner_filter(actor)
    if owner is not None and user_id != owner:
        raise forbidden(OTHER_USER)


def new_alert(p: SpendAlertCreateParams, actor: Actor) -> NewAlert:
    user = require_user(p.userId, "userId is required", "userId")
    if p.threshold <= 0:
        raise invalid("threshold must be positive", "threshold")
    currency = currency_of(p.currency)
    require_own(actor, user)
    return NewAlert(user, p.title, p.threshold, currency)


def check_update(p: SpendAlertUpdateParams) -> None:
    """An empty title keeps the old one; a threshold, when given, must be positive
    (the reference silently ignored non-positive ones, ledger.md §9.12)."""
    if p.threshold is not None and p.threshold <= 0:
        raise invalid("threshold must be positive", "threshold")


def crossed(threshold: int, spend_before: int, spend_after: int) -> bool:
    """A debit fires an alert when it carries the month's spend from below the threshold to
    at or above it; later debits in the same month are already past it."""
    return spend_before < threshold <= spend_after


def crossings(amounts: list[int], spend_after: int, candidates: list[tuple[str, int]]
              ) -> list[tuple[int, str, int]]:
    """Which debits of one account fire which alerts. `amounts` are the account's debits in
    order, `spend_after` the month's spend once they are all counted, `candidates` the
    (id, threshold) of its alerts not fired yet this month. Returns (debit index, alert id,
    the spend right after that debit) for each alert a debit crosses."""
    spend = spend_after - sum(amounts)
    out = []
    for i, amount in enumerate(amounts):
        before, spend = spend, spend + amount
        out.extend((i, alert_id, spend) for alert_id, threshold in candidates
                   if crossed(threshold, before, spend))
    return out


def period_label(period: date) -> str:
    """A UTC calendar month as it appears in events: YYYY-MM."""
    return f"{period.year:04d}-{period.month:02d}"
