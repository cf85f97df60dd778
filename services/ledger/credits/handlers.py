"""Credit-grant handlers: decode (done by the runtime), call the domain, encode."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from contracts import Scope
from contracts import credit_subjects as subjects
from contracts.credits import (
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
from services.ledger import credits, domain
from services.ledger import credits_store as store
from services.ledger.credits import Grant
from services.runtime.bus import Service, created

USER_QUERY_REQUIRED = "userId query parameter is required"


def register(svc: Service) -> None:
    @svc.handler(subjects.LEDGER_CREDIT_GRANT_CREATE, CreditGrantCreateParams,
                 transaction=True)
    async def create_grant(scope: Scope, p: CreditGrantCreateParams,
                           conn: asyncpg.Connection):
        grant = credits.new_grant(p, now())
        domain.require_mint(scope.actor)  # a grant creates spendable credit: a mint
        grant = await store.insert(conn, scope.org_id, scope.livemode, grant)
        return created(CreditGrant(
            id=grant.id, userId=grant.user_id, name=grant.name, amountCents=grant.amount,
            remainingCents=grant.remaining, currency=grant.currency, priority=grant.priority,
            effectiveAt=rfc3339(grant.effective_at), tags=grant.tags,
            createdAt=rfc3339(grant.created_at), expiresAt=_when(grant.expires_at)))

    @svc.handler(subjects.LEDGER_CREDIT_GRANT_VOID, CreditGrantVoidParams, transaction=True)
    async def void_grant(scope: Scope, p: CreditGrantVoidParams, conn: asyncpg.Connection):
        grant_id = credits.require_grant_id(p.id)
        domain.require_mint(scope.actor)  # voiding takes credit away: same class as granting
        credits.require_voidable(await store.void(conn, scope.org_id, scope.livemode,
                                                  grant_id))
        return CreditGrantVoided(id=grant_id, voided=True)

    @svc.handler(subjects.LEDGER_CREDIT_GRANT_LIST, CreditGrantListParams)
    async def list_grants(scope: Scope, p: CreditGrantListParams) -> CreditGrantList:
        user_id = credits.user_id_of(p.userId, USER_QUERY_REQUIRED)
        limit, offset = CREDIT_GRANTS_PAGE.apply(p.limit, p.offset)
        at = now()
        items = [_item(g, at) for g in await store.grants(
            svc.pool, scope.org_id, scope.livemode, user_id, limit, offset)]
        return CreditGrantList(items, len(items))

    @svc.handler(subjects.LEDGER_CREDIT_BALANCE_GET, CreditBalanceQuery)
    async def credit_balance(scope: Scope, p: CreditBalanceQuery) -> CreditBalance:
        user_id = credits.user_id_of(p.userId, USER_QUERY_REQUIRED)
        at = now()
        grants = await store.active(svc.pool, scope.org_id, scope.livemode, user_id, at)
        return CreditBalance(user_id, [CreditBalanceEntry(currency, available)
                                       for currency, available in credits.balances(grants, at)])

    @svc.handler(subjects.LEDGER_CREDIT_BALANCE_BREAKDOWN, CreditBreakdownQuery)
    async def credit_breakdown(scope: Scope, p: CreditBreakdownQuery) -> CreditBreakdown:
        user_id = credits.user_id_of(p.userId, USER_QUERY_REQUIRED)
        currency = domain.currency_of(p.currency)
        at = now()
        grants = await store.active(svc.pool, scope.org_id, scope.livemode, user_id, at)
        groups = credits.breakdown(grants, currency, at)
        return CreditBreakdown(
            userId=user_id, currency=currency,
            breakdown={tag: CreditBreakdownGroup(g.cents, _when(g.expires_at))
                       for tag, g in groups.items()},
            total=CreditBreakdownTotal(sum(g.cents for g in groups.values())))

    @svc.handler(subjects.LEDGER_CREDIT_GRANT_BURN, CreditBurnParams, transaction=True)
    async def burn(scope: Scope, p: CreditBurnParams, conn: asyncpg.Connection
                   ) -> CreditBurnResult:
        user_id, currency = _burn_target(scope, p)
        if p.amount <= 0:
            return CreditBurnResult(p.amount, [])  # nothing to cover, nothing written
        at = now()
        grants = await store.burnable(conn, scope.org_id, scope.livemode, user_id, currency,
                                      p.meterId, at, lock=True)
        plan = credits.burn_down(grants, p.amount, currency, p.meterId, at)
        await store.burn(conn, scope.org_id, scope.livemode, plan.burned)
        return _burn_result(plan)

    @svc.handler(subjects.LEDGER_CREDIT_GRANT_PREVIEW, CreditBurnParams)
    async def preview(scope: Scope, p: CreditBurnParams) -> CreditBurnResult:
        # The same selection and plan as a burn, without locks or writes (§9.5: previews
        # never consume credits).
        user_id, currency = _burn_target(scope, p)
        if p.amount <= 0:
            return CreditBurnResult(p.amount, [])
        at = now()
        grants = await store.burnable(svc.pool, scope.org_id, scope.livemode, user_id,
                                      currency, p.meterId, at, lock=False)
        return _burn_result(credits.burn_down(grants, p.amount, currency, p.meterId, at))


def _burn_target(scope: Scope, p: CreditBurnParams) -> tuple[str, str]:
    user_id = credits.user_id_of(p.userId)
    currency = domain.currency_of(p.currency)
    credits.require_burner(scope.actor, user_id)
    return user_id, currency


def _burn_result(plan: credits.BurnPlan) -> CreditBurnResult:
    return CreditBurnResult(plan.remaining,
                            [BurnedGrant(grant_id, amount) for grant_id, amount in plan.burned])


def _item(g: Grant, at: datetime) -> CreditGrantItem:
    return CreditGrantItem(
        id=g.id, userId=g.user_id, name=g.name, amountCents=g.amount,
        remainingCents=g.remaining, currency=g.currency, priority=g.priority,
        effectiveAt=rfc3339(g.effective_at), tags=g.tags, voided=g.voided,
        active=credits.is_active(g, at), createdAt=rfc3339(g.created_at),
        expiresAt=_when(g.expires_at))


def _when(ts: datetime | None) -> str | None:
    return rfc3339(ts) if ts is not None else None
