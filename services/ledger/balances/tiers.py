"""Billing tiers: model access, agent limits and the free tier's daily credit (static)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    display_name: str
    max_agents: int  # 0 = unlimited
    daily_credits_cents: int
    allowed_models: tuple[str, ...]  # prefixes; "*" allows every model

    @property
    def unlimited_agents(self) -> bool:
        return self.max_agents == 0

    @property
    def has_daily_credits(self) -> bool:
        return self.daily_credits_cents > 0

    def allows(self, model: str) -> bool:
        return any(m == "*" or model.startswith(m) for m in self.allowed_models)


TIERS: dict[str, Tier] = {t.name: t for t in (
    Tier("free", "Free", 1, 100, ("claude-sonnet", "zen3")),
    Tier("starter", "Starter", 3, 0, ("claude-sonnet", "claude-haiku", "zen3", "zen4")),
    Tier("pro", "Pro", 10, 0, ("*",)),
    Tier("enterprise", "Enterprise", 0, 0, ("*",)),
)}
FREE = TIERS["free"]

# The tier each paid plan of the catalog gives (a plan slug is not a tier name: four sold
# plans would read as free). The free plan and the other categories' plans (world, dns)
# give none: the tier is then found as without a subscription.
PLAN_TIERS: dict[str, str] = {
    "pro": "pro", "team": "pro", "max": "enterprise", "team-max": "enterprise",
    "enterprise": "enterprise"}
_RANK = {name: rank for rank, name in enumerate(TIERS)}


def parse(name: str) -> Tier:
    """Exact, case-sensitive; anything unknown (including "") is the free tier."""
    return TIERS.get(name, FREE)


def of_plans(slugs: Iterable[str]) -> Tier | None:
    """The best tier the user's subscribed plans give; None when none gives one."""
    given = [TIERS[PLAN_TIERS[s]] for s in slugs if s in PLAN_TIERS]
    return max(given, key=lambda t: _RANK[t.name]) if given else None


def resolve(claim: str | None, requested: str, may_name_tier: bool,
            subscribed: Tier | None = None) -> Tier:
    """The caller's tier: the one their subscriptions give, when they give one; else the
    IAM claim when present; a requested `?tier=` only from callers allowed to mint (naming
    your own tier is naming your own price); else free."""
    if subscribed is not None:
        return subscribed
    if claim:
        return parse(claim)
    if requested and may_name_tier:
        return parse(requested)
    return FREE


def daily_remaining(tier: Tier, used_today: int) -> int:
    if not tier.has_daily_credits:
        return 0
    return max(tier.daily_credits_cents - used_today, 0)
