"""The billing cycle's endpoints (metering-invoicing.md §8.1; subscriptions.md §3.1.7) and
its scheduler: every one runs `runner`, so a run by hand and the timer's give the same
results, and any number of them may run at once.

`cycle/run` and `run-user` mint (they collect money on the customers' behalf): the gateway
admits the mint class and the service checks `may_mint` again; `run-all` is the platform's
and runs every organization of the caller's mode that has due subscriptions."""

from __future__ import annotations

import logging

from contracts import Scope
from contracts.common import IdParams
from contracts.cycle import (
    CYCLE_RUN,
    CYCLE_RUN_ALL,
    CYCLE_RUN_USER,
    SUBSCRIPTION_RENEW,
    CycleRun,
    CycleRunAll,
    CycleRunOrg,
    CycleRunParams,
    CycleRunUser,
    CycleRunUserParams,
)
from contracts.errors import Failure, forbidden, invalid
from contracts.ids import now
from contracts.rules import user_id
from services.runtime.config import Settings
from services.runtime.scopes import service_scope
from services.runtime.service import Context, Router
from services.subscriptions.cycle import runner, store

router = Router()
log = logging.getLogger(__name__)


@router.handler(CYCLE_RUN)
async def run(ctx: Context, scope: Scope, p: CycleRunParams) -> CycleRun:
    _require_mint(scope)
    results = await runner.run(ctx, scope, "", now())
    return CycleRun(processed=len(results), results=results)


@router.handler(CYCLE_RUN_USER)
async def run_user(ctx: Context, scope: Scope, p: CycleRunUserParams) -> CycleRunUser:
    user = user_id(p.userId)
    if not user:
        raise invalid("userId is required", "userId")
    _require_mint(scope)
    results = await runner.run(ctx, scope, user, now())
    return CycleRunUser(user=user, processed=len(results), results=results)


@router.handler(CYCLE_RUN_ALL)
async def run_all(ctx: Context, scope: Scope, p: CycleRunParams) -> CycleRunAll:
    """Organizations are found by their due subscriptions (one indexed query), not listed;
    an organization's name is known here for the caller's own only (the gateway keeps the
    names), the others answer their id."""
    if scope.actor.role != "platform":
        raise forbidden()
    at = now()
    orgs = []
    for org_id, livemode in await store.due_scopes(ctx.pool, at):
        if livemode != scope.livemode:
            continue
        name = scope.org_name if org_id == scope.org_id else org_id
        results = await runner.run(ctx, service_scope(org_id, livemode, name), "", at)
        if results:
            orgs.append(CycleRunOrg(org_id, name, len(results), results))
    return CycleRunAll(orgs=len(orgs), totalProcessed=sum(o.processed for o in orgs),
                       results=orgs)


@router.handler(SUBSCRIPTION_RENEW)
async def renew(ctx: Context, scope: Scope, p: IdParams) -> bytes:
    """§3.1.7 with §2.5 OURS: a period not yet due answers 200 with the subscription and a
    failed collection saying so, and no invoice."""
    return await runner.renew(ctx, scope, p.id, now())


async def run_due(ctx: Context) -> None:
    """The scheduler: every organization and mode with due subscriptions or retries."""
    at = now()
    for org_id, livemode in await store.due_scopes(ctx.pool, at):
        try:
            await runner.run(ctx, service_scope(org_id, livemode), "", at, runner.IN_FLIGHT)
        except Failure as failure:
            log.warning("cycle of %s (%s) stopped: %s", org_id,
                        "live" if livemode else "test", failure.error.message)


def interval(settings: Settings) -> float:
    """`BILLING_CYCLE_INTERVAL` seconds between the scheduler's runs (default 60)."""
    return float(settings.env.get("BILLING_CYCLE_INTERVAL", "60"))


def _require_mint(scope: Scope) -> None:
    if not scope.actor.may_mint:
        raise forbidden()
