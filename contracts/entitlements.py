"""What a user's subscriptions entitle them to, for the services that limit by plan: the
ledger's tiers (model access, agents) and metering's DNS limits. The subscriptions service
answers from its own table; askers cache the answer briefly (`services.runtime.entitlements`)
and keep their own defaults when nobody answers."""

from __future__ import annotations

import msgspec

from contracts.common import Params
from contracts.endpoint import Endpoint
from contracts.limits import UserId

# The statuses that entitle: a gift, a trial, a paid period, and a period being dunned.
ENTITLING_STATUSES = ("trialing", "active", "past_due")


class EntitlementQuery(Params):
    userId: UserId = ""


class Entitlements(msgspec.Struct, kw_only=True):
    userId: str
    # Plan slugs of the user's entitling subscriptions, by plan category (`personal`,
    # `team`, `world`, `dns`, ...), most recently started first.
    plans: dict[str, list[str]] = {}

    def plan_in(self, category: str) -> str | None:
        found = self.plans.get(category)
        return found[0] if found else None


ENTITLEMENT_GET = Endpoint("billing.subscriptions.entitlement.get", EntitlementQuery,
                           Entitlements)
