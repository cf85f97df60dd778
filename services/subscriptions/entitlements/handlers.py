"""Entitlements (bus only): the plans a user's subscriptions entitle them to, by category."""

from __future__ import annotations

from contracts import Scope
from contracts.entitlements import ENTITLEMENT_GET, EntitlementQuery, Entitlements
from contracts.ids import now
from contracts.rules import require_user
from services.runtime.service import Context, Router
from services.subscriptions.entitlements import store

router = Router()


@router.handler(ENTITLEMENT_GET)
async def get(ctx: Context, scope: Scope, p: EntitlementQuery) -> Entitlements:
    user = require_user(p.userId, "userId is required", "userId")
    plans: dict[str, list[str]] = {}
    for r in await store.entitling_plans(ctx.pool, scope.org_id, scope.livemode, user, now()):
        plans.setdefault(r["plan_category"], []).append(r["plan_slug"])
    return Entitlements(userId=user, plans=plans)
