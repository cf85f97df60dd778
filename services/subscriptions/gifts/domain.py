"""Gift grants, pure (ledger.md §2.10): what a grant asks for, checked, and what it writes.
A gift is an `active` subscription with `providerType = manual_gift`, one per user and plan
(a second grant extends it: its end moves only later), never billed by the cycle, ending
at its period end."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts.catalog import Catalog, Plan
from contracts.envelope import Actor
from contracts.errors import invalid, not_found
from contracts.gifts import DEFAULT_GIFT_DAYS, MAX_GIFT_DAYS, GiftGrantParams
from contracts.ids import rfc3339
from contracts.rules import require_user
from services.subscriptions.subscriptions.domain import PlanTerms

MANUAL_GIFT = "manual_gift"  # the subscriptions' providerType, and the billing reason


@dataclass(frozen=True, slots=True)
class Grant:
    user: str
    plan: Plan
    period_end: datetime
    reason: str
    granted_by: str
    granted_at: datetime

    def first_metadata(self) -> dict[str, str]:
        """A new gift's metadata (the reference's keys)."""
        return {"grant_reason": self.reason, "granted_by": self.granted_by,
                "granted_at": rfc3339(self.granted_at), "billing_reason": MANUAL_GIFT}

    def again_metadata(self) -> dict[str, str]:
        """What a later grant of the same gift adds to its metadata."""
        return {"last_grant_reason": self.reason, "last_grant_by": self.granted_by,
                "last_grant_at": rfc3339(self.granted_at)}


def grant(p: GiftGrantParams, catalog: Catalog, actor: Actor, now: datetime) -> Grant:
    """The grant `p` asks for; 400 for a blank user or plan or an absurd duration, 404 for a
    plan the catalog does not have."""
    user = require_user(p.userId, "userId is required", "userId")
    slug = p.planId.strip()
    if not slug:
        raise invalid("planId is required", "planId")
    plan = catalog.get(slug)
    if plan is None:
        raise not_found("plan not found")
    if p.days > MAX_GIFT_DAYS:
        raise invalid(f"days must be at most {MAX_GIFT_DAYS}", "days")
    days = p.days if p.days > 0 else DEFAULT_GIFT_DAYS
    return Grant(user, plan, now + timedelta(days=days), p.reason.strip(),
                 p.grantedBy.strip() or giver(actor), now)


def giver(actor: Actor) -> str:
    """Who gave a gift when the request does not say: the caller, as precisely as known."""
    return actor.email or actor.user_id or actor.key_id or actor.role


def terms(plan: Plan) -> PlanTerms:
    """The plan a gift is of, as its subscription keeps it: monthly, at price 0 — the gift
    costs its user nothing, so nothing may ever bill it, and it is not the user's paid
    subscription of the category (a user may hold both)."""
    return PlanTerms(id=plan.slug, name=plan.name, price=0, currency=plan.currency,
                     interval="monthly", category=plan.category)
