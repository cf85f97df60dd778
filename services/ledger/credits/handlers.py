"""Credit-grant handlers: decode (done by the runtime), call the domain, encode."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from contracts import Reply, Scope
from contracts.credits import (
    CREDIT_BALANCE_BREAKDOWN,
    CREDIT_BALANCE_GET,
    CREDIT_GRANT_BURN,
    CREDIT_GRANT_CREATE,
    CREDIT_GRANT_LIST,
    CREDIT_GRANT_PREVIEW,
    CREDIT_GRANT_VOID,
    BurnedGrant,
    CreditBalance,
    CreditBalanceEntry,
    CreditBalanceQuery,
    CreditBreakdown,
    CreditBreakdownGroup,
    CreditBreakdownQuery,
    CreditBreakdownTotal,
    CreditBurnParams,
    CreditBurnResult,
    CreditGrant,
    CreditGrantCreateParams,
    CreditGrantItem,
    CreditGrantList,
    CreditGrantListParams,
    CreditGrantVoided,
    CreditGrantVoidParams,
)
from contracts.ids import now, rfc3339
from contracts.limits import CREDIT_GRANTS_PAGE
from contracts.rules import currency_of, require_user
from services.ledger.balances.domain import require_mint
from services.ledger.credits import domain, store
from services.ledger.credits.domain import Grant
from services.runtime.bus import created, paged
from services.runtime.service import Context, Router

router = Router()
USER_QUERY_REQUIRED = "userId query parameter is required"


@router.handler(CREDIT_GRANT_CREATE, transaction=True)
async def create_grant(ctx: Context, scope: Scope, p: CreditGrantCreateParams,
                       conn: asyncpg.Connection):
    grant = domain.new_grant(p, now())
    require_mint(scope.actor)  # a grant creates spendable credit: a mint
    grant = await store.insert(conn, scope.org_id, scope.livemode, grant)
    return created(CreditGrant(
        id=grant.id, userId=grant.user_id, name=grant.name, amountCents=grant.amount,
        remainingCents=grant.remaining, currency=grant.currency, priority=grant.priority,
        effectiveAt=rfc3339(grant.effective_at), tags=grant.tags,
        createdAt=rfc3339(grant.created_at), expiresAt=_when(grant.expires_at)))


@router.handler(CREDIT_GRANT_VOID, transaction=True)
async def void_grant(ctx: Context, scope: Scope, p: CreditGrantVoidParams,
                     conn: asyncpg.Connection):
    grant_id = domain.require_grant_id(p.id)
    require_mint(scope.actor)  # voiding takes credit away: same class as granting
    domain.require_voidable(await store.void(conn, scope.org_id, scope.livemode,
                                             grant_id))
    return CreditGrantVoided(id=grant_id, voided=True)


@router.handler(CREDIT_GRANT_LIST)
async def list_grants(ctx: Context, scope: Scope, p: CreditGrantListParams) -> Reply:
    user_id = require_user(p.userId, USER_QUERY_REQUIRED, "userId")
    limit, offset = CREDIT_GRANTS_PAGE.apply(p.limit, p.offset)
    at = now()
    grants, total = await store.grants(ctx.pool, scope.org_id, scope.livemode, user_id,
                                       limit, offset)
    items = [_item(g, at) for g in grants]
    return paged(CreditGrantList(items, len(items)), total, offset, len(items))


@router.handler(CREDIT_BALANCE_GET)
async def credit_balance(ctx: Context, scope: Scope, p: CreditBalanceQuery) -> CreditBalance:
    user_id = require_user(p.userId, USER_QUERY_REQUIRED, "userId")
    at = now()
    grants = await store.active(ctx.pool, scope.org_id, scope.livemode, user_id, at)
    return CreditBalance(user_id, [CreditBalanceEntry(currency, available)
                                   for currency, available in domain.balances(grants, at)])


@router.handler(CREDIT_BALANCE_BREAKDOWN)
async def credit_breakdown(ctx: Context, scope: Scope, p: CreditBreakdownQuery) -> CreditBreakdown:
    user_id = require_user(p.userId, USER_QUERY_REQUIRED, "userId")
    currency = currency_of(p.currency)
    at = now()
    grants = await store.active(ctx.pool, scope.org_id, scope.livemode, user_id, at)
    groups = domain.breakdown(grants, currency, at)
    return CreditBreakdown(
        userId=user_id, currency=currency,
        breakdown={tag: CreditBreakdownGroup(g.cents, _when(g.expires_at))
                   for tag, g in groups.items()},
        total=CreditBreakdownTotal(sum(g.cents for g in groups.values())))


@router.handler(CREDIT_GRANT_BURN, transaction=True)
async def burn(ctx: Context, scope: Scope, p: CreditBurnParams, conn: asyncpg.Connection
               ) -> CreditBurnResult:
    user_id, currency = _burn_target(scope, p)
    if p.amount <= 0:
        return CreditBurnResult(p.amount, [])  # nothing to cover, nothing written
    at = now()
    grants = await store.burnable(conn, scope.org_id, scope.livemode, user_id, currency,
                                  p.meterId, at, lock=True)
    plan = domain.burn_down(grants, p.amount, currency, p.meterId, at)
    await store.burn(conn, scope.org_id, scope.livemode, plan.burned)
    return _burn_result(plan)


@router.handler(CREDIT_GRANT_PREVIEW)
async def preview(ctx: Context, scope: Scope, p: CreditBurnParams) -> CreditBurnResult:
    # The same selection and plan as a burn, without locks or writes (§9.5: previews
    # never consume credits).
    user_id, currency = _burn_target(scope, p)
    if p.amount <= 0:
        return CreditBurnResult(p.amount, [])
    # Concurrent previews (a billing cycle's collections) share one query.
    grants, at = await ctx.state.previewed_grants((scope.org_id, scope.livemode, user_id,
                                                   currency, p.meterId))
    return _burn_result(domain.burn_down(grants, p.amount, currency, p.meterId, at))


def _burn_target(scope: Scope, p: CreditBurnParams) -> tuple[str, str]:
    user_id = require_user(p.userId, "userId is required", "userId")
    currency = currency_of(p.currency)
    domain.require_burner(scope.actor, user_id)
    return user_id, currency


def _burn_result(plan: domain.BurnPlan) -> CreditBurnResult:
    return CreditBurnResult(plan.remaining,
                            [BurnedGrant(grant_id, amount) for grant_id, amount in plan.burned])


def _item(g: Grant, at: datetime) -> CreditGrantItem:
    return CreditGrantItem(
        id=g.id, userId=g.user_id, name=g.name, amountCents=g.amount,
        remainingCents=g.remaining, currency=g.currency, priority=g.priority,
        effectiveAt=rfc3339(g.effective_at), tags=g.tags, voided=g.voided,
        active=domain.is_active(g, at), createdAt=rfc3339(g.created_at),
        expiresAt=_when(g.expires_at))


def _when(ts: datetime | None) -> str | None:
    return rfc3339(ts) if ts is not None else None
