"""The plan catalog (subscriptions.md §1.2, §3.4): the same for every organization, answered
from the catalog loaded at boot (the replies encoded once). Only catalog slugs are found by
`plan.get`; the gateway adds the public cache headers to successes."""

from __future__ import annotations

from contracts import Scope
from contracts.common import IdParams
from contracts.errors import not_found
from contracts.subscriptions import PLAN_GET, PLAN_LIST, PlanListQuery
from services.runtime.service import Context, Router

router = Router()


@router.handler(PLAN_LIST)
async def list_plans(ctx: Context, scope: Scope, p: PlanListQuery) -> bytes:
    return ctx.state.plans.listed(p.category)


@router.handler(PLAN_GET)
async def get_plan(ctx: Context, scope: Scope, p: IdParams) -> bytes:
    reply = ctx.state.plans.one(p.id)
    if reply is None:
        raise not_found("plan not found")
    return reply
