"""Balances and money movements: balance reads, deposits, withdrawals, refunds, the starter
credit, tiers and status, the transaction list; and the job that lapses expired deposits.
Decode (done by the runtime), call the domain, encode."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec

from contracts import Reply, Scope
from contracts.common import INT64_MAX
from contracts.errors import Failure, forbidden
from contracts.ids import now, rfc3339, rfc3339_seconds
from contracts.ledger import (
    BALANCE_ALL,
    BALANCE_GET,
    DEPOSIT_CREATE,
    REFUND_CREATE,
    STARTER_CREDIT_CLAIM,
    STATUS_GET,
    TIER_CHECK,
    TIER_GET,
    TOPUP_CREDIT,
    TOPUP_REVERSE,
    TRANSACTION_LIST,
    WITHDRAW_AVAILABLE,
    WITHDRAW_CREATE,
    Balance,
    BalanceAll,
    BalanceEntry,
    BalanceQuery,
    BillingStatus,
    DepositParams,
    DepositResult,
    RefundParams,
    RefundResult,
    StarterCreditParams,
    StarterCreditResult,
    StatusQuery,
    TierBalance,
    TierCheckResult,
    TierConfig,
    TierQuery,
    TierResult,
    TierSummary,
    TopupCreditParams,
    TopupReversalParams,
    TopupReversed,
    TransactionItem,
    TransactionList,
    TransactionListParams,
    WithdrawParams,
    WithdrawResult,
)
from contracts.limits import TRANSACTIONS_PAGE
from contracts.payments import PAYMENT_METHOD_EXISTS, PaymentMethodQuery
from contracts.rules import DEFAULT_CURRENCY, currency_of, require_user
from services.ledger.balances import domain, store, tiers
from services.ledger.balances.topups import topup_credit
from services.ledger.balances.withdrawals import withdrawal
from services.runtime.bus import created, paged
from services.runtime.idempotency import derived_key, fingerprint_of
from services.runtime.service import Context, Router

router = Router()
USER_QUERY_REQUIRED = "user query parameter is required"


@router.handler(BALANCE_GET)
async def get_balance(ctx: Context, scope: Scope, p: BalanceQuery) -> Balance:
    user = require_user(p.user, USER_QUERY_REQUIRED)
    currency = currency_of(p.currency)
    bal, holds = await ctx.state.read_balance((scope.org_id, scope.livemode, user, currency))
    return Balance(user, currency, bal, holds, domain.available(bal, holds))


@router.handler(BALANCE_ALL)
async def get_balance_all(ctx: Context, scope: Scope, p: BalanceQuery) -> BalanceAll:
    user = require_user(p.user, USER_QUERY_REQUIRED)
    rows = await store.balances(ctx.pool, scope.org_id, scope.livemode, user)
    return BalanceAll(user, [
        BalanceEntry(r["currency"], r["balance"], r["holds"],
                     domain.available(r["balance"], r["holds"])) for r in rows])


@router.handler(DEPOSIT_CREATE, transaction=True)
async def create_deposit(ctx: Context, scope: Scope, p: DepositParams,
                         conn: asyncpg.Connection):
    movement = domain.deposit(p, now())
    domain.require_mint(scope.actor)
    tx_id, _ = await store.post(conn, scope.org_id, scope.livemode, movement)
    return created(DepositResult(
        transactionId=tx_id, user=movement.user_id, amount=movement.amount,
        currency=movement.currency, type=movement.type, tags=movement.tags,
        expiresAt=rfc3339(movement.expires_at) if movement.expires_at else None))


@router.handler(TOPUP_CREDIT)
async def credit_topup(ctx: Context, scope: Scope, p: TopupCreditParams) -> bytes:
    """Payments' credit for a paid top-up: once per top-up, however often it is sent
    (concurrent ones share a transaction: `topups.py`)."""
    domain.require_platform(scope.actor)
    return await ctx.state.topups.credit(topup_credit(scope, p))


@router.handler(TOPUP_REVERSE)
async def reverse_topup(ctx: Context, scope: Scope, p: TopupReversalParams) -> bytes:
    """A refunded top-up's credit taken back (never more than is available: 402 otherwise),
    or given back; once per refund and direction, however often it is sent."""
    domain.require_platform(scope.actor)
    movement = domain.topup_reversal(p)
    route = "topup.restore" if p.restore else "topup.reverse"
    keyed = msgspec.structs.replace(scope, idempotency_key=derived_key(route, p.refundId.strip()),
                                    fingerprint=fingerprint_of(p))
    return await ctx.transaction(keyed, movement, _reverse_topup)


async def _reverse_topup(ctx: Context, scope: Scope, m: domain.Movement,
                         conn: asyncpg.Connection) -> TopupReversed:
    post = store.post if m.balance_delta > 0 else store.post_funded
    tx_id, balance = await post(conn, scope.org_id, scope.livemode, m)
    return TopupReversed(tx_id, m.user_id, m.amount, m.currency, balance)


@router.handler(WITHDRAW_CREATE, transaction=True)
async def create_withdrawal(ctx: Context, scope: Scope, p: WithdrawParams,
                            conn: asyncpg.Connection):
    movement = domain.withdrawal(p)
    tx_id, _ = await store.post_funded(conn, scope.org_id, scope.livemode, movement)
    return created(WithdrawResult(tx_id, movement.user_id, movement.amount,
                                  movement.currency, movement.type, movement.tags))


@router.handler(WITHDRAW_AVAILABLE)
async def withdraw_available(ctx: Context, scope: Scope, p: WithdrawParams) -> bytes:
    """Invoicing's wallet leg: what is available, up to the amount; once per key, however
    often it is sent (concurrent ones share a transaction: `withdrawals.py`)."""
    domain.require_platform(scope.actor)
    return await ctx.state.withdrawals.withdraw(withdrawal(scope, p))


@router.handler(REFUND_CREATE, transaction=True)
async def create_refund(ctx: Context, scope: Scope, p: RefundParams,
                        conn: asyncpg.Connection):
    _, _, original_id = domain.refund_request(p)
    domain.require_mint(scope.actor)
    original = await store.refundable(conn, scope.org_id, scope.livemode, original_id)
    movement = domain.refund(p, original)
    tx_id, _ = await store.post(conn, scope.org_id, scope.livemode, movement)
    return created(RefundResult(tx_id, movement.user_id, movement.amount, movement.currency,
                                movement.type, movement.tags, original_id))


@router.handler(STARTER_CREDIT_CLAIM, transaction=True)
async def claim_starter_credit(ctx: Context, scope: Scope, p: StarterCreditParams,
                               conn: asyncpg.Connection):
    movement = domain.starter_credit(p.user, now())
    # Asked of payments, not read from the ledger's copy (payment_methods/): that copy trails
    # by milliseconds, and a claim right after the card was saved must see it.
    has_payment_method = await _has_payment_method(ctx, scope, movement.user_id)
    if not has_payment_method:
        # Payments not answering is refused the same way, but not for good: not stored
        # under the key, so a retry once payments answers can succeed.
        raise forbidden("a verified payment method is required before claiming "
                        "starter credit", retryable=has_payment_method is None)
    existing = await store.starter_credit(conn, scope.org_id, scope.livemode, movement.user_id)
    if existing is None:
        try:
            async with conn.transaction():  # a concurrent claim may win the unique index
                tx_id, _ = await store.post(conn, scope.org_id, scope.livemode, movement)
            return created(_starter_result(tx_id, movement.user_id, movement.amount,
                                           movement.expires_at))
        except asyncpg.UniqueViolationError:
            existing = await store.starter_credit(conn, scope.org_id, scope.livemode,
                                                  movement.user_id)
    # Claimed before: the same grant again, not an error (product decision).
    return _starter_result(existing["id"], movement.user_id, existing["amount"],
                           existing["expires_at"])


async def _has_payment_method(ctx: Context, scope: Scope, user: str, *,
                              verified_only: bool = True) -> bool | None:
    """None when payments does not answer (not deployed, down, slow) or fails: unknown,
    which the starter-credit claim treats as "no payment method" for now, and the status
    check as "what the ledger knows"."""
    try:
        found = await ctx.ask(PAYMENT_METHOD_EXISTS, scope, PaymentMethodQuery(
            customerId=user, verifiedOnly=verified_only))
    except Failure:
        return None
    return None if found is None else found.exists


@router.handler(TIER_GET)
async def get_tier(ctx: Context, scope: Scope, p: TierQuery) -> TierResult:
    user = require_user(p.user, USER_QUERY_REQUIRED)
    tier = await _tier_of(ctx, scope, user, p.tier)
    bal, holds = await ctx.state.read_balance((scope.org_id, scope.livemode, user,
                                               DEFAULT_CURRENCY))
    used_today = 0
    if tier.has_daily_credits:
        used_today = await store.usage_since(ctx.pool, scope.org_id, scope.livemode, user,
                                             DEFAULT_CURRENCY, domain.today(now()))
    prepaid = domain.available(bal, holds)
    daily = tiers.daily_remaining(tier, used_today)
    return TierResult(user, _tier_config(tier), TierBalance(
        DEFAULT_CURRENCY, prepaid, daily, min(prepaid + daily, INT64_MAX)))


@router.handler(TIER_CHECK)
async def check_tier(ctx: Context, scope: Scope, p: TierQuery) -> TierCheckResult:
    user = require_user(p.user, USER_QUERY_REQUIRED)
    tier = await _tier_of(ctx, scope, user, p.tier)
    summary = TierSummary(tier.name, tier.display_name, list(tier.allowed_models),
                          tier.max_agents)
    model = p.model.strip()
    if not model:
        return TierCheckResult(user, summary)
    return TierCheckResult(user, summary, model, tier.allows(model))


@router.handler(STATUS_GET)
async def get_status(ctx: Context, scope: Scope, p: StatusQuery) -> BillingStatus:
    """`hasPaymentMethod` from the ledger's own copy of payments' events (payment_methods/),
    read with the balance: no question to payments on this hot path. The copy trails
    payments by a few milliseconds (a check within them still sees the answer from before
    the change). Until it has caught up with the events (just after a start, or while it
    cannot keep up) payments is asked as well, and its answer wins."""
    user = require_user(p.user, USER_QUERY_REQUIRED)
    tier = tiers.resolve(scope.actor.tier, p.tier, scope.actor.may_mint)
    asked = None
    if not ctx.state.payment_methods.current:
        asked = asyncio.ensure_future(_has_payment_method(ctx, scope, user,
                                                          verified_only=False))
    try:
        bal, holds, known = await ctx.state.read_status((scope.org_id, scope.livemode, user))
    except BaseException:  # the question to payments is left unanswered, not unawaited
        if asked is not None:
            asked.cancel()
        raise
    answer = None if asked is None else await asked
    return BillingStatus(user, known if answer is None else answer,
                         domain.available(bal, holds), tier.name)


@router.handler(TRANSACTION_LIST)
async def list_transactions(ctx: Context, scope: Scope, p: TransactionListParams) -> Reply:
    user = require_user(p.user, USER_QUERY_REQUIRED)
    currency = currency_of(p.currency) if p.currency.strip() else ""
    limit, offset = TRANSACTIONS_PAGE.apply(p.limit, p.offset)
    rows, total = await store.transactions(ctx.pool, scope.org_id, scope.livemode, user,
                                           currency, limit, offset)
    items = [TransactionItem(
        id=r["id"], type=r["type"], amount=r["amount"], currency=r["currency"],
        createdAt=rfc3339_seconds(r["created_at"]), tags=r["tags"], notes=r["notes"],
        metadata=r["metadata"] or None,
        expiresAt=rfc3339_seconds(r["expires_at"]) if r["expires_at"] else None,
    ) for r in rows]
    return paged(TransactionList(items, total, user), total, offset, len(items))


async def lapse_expired_deposits(ctx: Context) -> None:
    """The unspent part of expired deposits lapses, one customer account at a time."""
    for account in await store.accounts_with_due_lots(ctx.pool, limit=500):
        key = (account["org_id"], account["livemode"], account["user_id"], account["currency"])
        async with ctx.pool.acquire() as conn, conn.transaction():
            await store.lock_balance(conn, *key)
            await store.lapse_due_lots(conn, *key)


def _starter_result(tx_id: str, user: str, amount: int, expires_at) -> StarterCreditResult:
    return StarterCreditResult(transactionId=tx_id, user=user, amount=amount,
                               currency=DEFAULT_CURRENCY, type="deposit",
                               tags=domain.STARTER_CREDIT_TAG, expiresAt=rfc3339(expires_at))


async def _tier_of(ctx: Context, scope: Scope, user: str, requested: str) -> tiers.Tier:
    """The user's tier: from their subscriptions when the subscriptions service answers
    and one gives a tier (ledger.md §9.10), else as before (claim, a minter's `?tier=`)."""
    entitled = await ctx.state.entitlements.of(ctx, scope, user)
    subscribed = None if entitled is None else tiers.of_plans(
        slug for slugs in entitled.plans.values() for slug in slugs)
    return tiers.resolve(scope.actor.tier, requested, scope.actor.may_mint, subscribed)


def _tier_config(tier: tiers.Tier) -> TierConfig:
    return TierConfig(tier.name, tier.display_name, tier.max_agents, tier.unlimited_agents,
                      tier.daily_credits_cents, list(tier.allowed_models))
