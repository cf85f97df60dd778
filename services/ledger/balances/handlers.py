"""Ledger request handlers: decode (done by the runtime), call the domain, encode."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import asyncpg
import msgspec

from contracts import Scope, subjects
from contracts.errors import forbidden
from contracts.ids import now, rfc3339, rfc3339_seconds
from contracts.ledger import (
    INT64_MAX,
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
    TransactionItem,
    TransactionList,
    TransactionListParams,
    UsageItem,
    UsageList,
    UsageListParams,
    UsageRecordParams,
    UsageSkipped,
    WithdrawParams,
    WithdrawResult,
)
from contracts.limits import TRANSACTIONS_PAGE, USAGE_PAGE
from contracts.payments import PaymentMethodExists, PaymentMethodQuery
from services.ledger import alert_handlers, credit_handlers, domain, journal_handlers, store, tiers
from services.ledger.backfill import UsageBackfill
from services.ledger.usage import UsageRecord, UsageRecorder
from services.runtime.batching import MicroBatcher
from services.runtime.bus import Service, created
from services.runtime.config import Settings
from services.runtime.idempotency import derived_key, fingerprint_of

_decode_pm = msgspec.json.Decoder(PaymentMethodExists).decode

MIGRATIONS = Path(__file__).parent / "migrations"


def create(settings: Settings) -> Service:
    svc = Service("ledger", settings, migrations=MIGRATIONS)
    # Balance reads gate every metered request: concurrent ones share one query.
    read_balance = MicroBatcher(lambda keys: store.balance_batch(svc.pool, keys))

    @svc.handler(subjects.LEDGER_BALANCE_GET, BalanceQuery)
    async def get_balance(scope: Scope, p: BalanceQuery) -> Balance:
        user = domain.require_user(p.user, "user query parameter is required")
        currency = domain.currency_of(p.currency)
        bal, holds = await read_balance((scope.org_id, scope.livemode, user, currency))
        return Balance(user, currency, bal, holds, domain.available(bal, holds))

    @svc.handler(subjects.LEDGER_BALANCE_ALL, BalanceQuery)
    async def get_balance_all(scope: Scope, p: BalanceQuery) -> BalanceAll:
        user = domain.require_user(p.user, "user query parameter is required")
        rows = await store.balances(svc.pool, scope.org_id, scope.livemode, user)
        return BalanceAll(user, [
            BalanceEntry(r["currency"], r["balance"], r["holds"],
                         domain.available(r["balance"], r["holds"])) for r in rows])

    @svc.handler(subjects.LEDGER_DEPOSIT_CREATE, DepositParams, transaction=True)
    async def create_deposit(scope: Scope, p: DepositParams, conn: asyncpg.Connection):
        movement = domain.deposit(p, now())
        domain.require_mint(scope.actor)
        tx_id, _ = await store.post(conn, scope.org_id, scope.livemode, movement)
        return created(DepositResult(
            transactionId=tx_id, user=movement.user_id, amount=movement.amount,
            currency=movement.currency, type=movement.type, tags=movement.tags,
            expiresAt=rfc3339(movement.expires_at) if movement.expires_at else None))

    # Usage debits are the write hot path: concurrent ones share a transaction. Spend alerts
    # and the copies into api-usage meters are written for the whole batch inside it.
    backfill = UsageBackfill(svc)

    async def after_debits(conn: asyncpg.Connection, records: list[UsageRecord]) -> None:
        await alert_handlers.on_usage_batch(conn, [(r.scope, r.debit) for r in records])
        await backfill.add_copies(conn, records)

    usage = UsageRecorder(lambda: svc.pool, svc.keys, after_debits=after_debits)

    @svc.handler(subjects.LEDGER_USAGE_RECORD, UsageRecordParams)
    async def record_usage(scope: Scope, p: UsageRecordParams) -> UsageSkipped | bytes:
        movement = domain.usage_debit(p)
        if movement is None:
            return UsageSkipped(user=p.user, amount=0, status="skipped")
        if scope.idempotency_key:
            key, fingerprint = scope.idempotency_key, scope.fingerprint or ""
        elif p.requestId:  # the natural key: one debit per user and request id
            key = derived_key("usage", movement.user_id, p.requestId)
            fingerprint = fingerprint_of(p)
        else:
            key, fingerprint = None, ""
        return await usage.record(UsageRecord(scope, movement, key, fingerprint,
                                              copy_to=await backfill.meter(scope)))

    @svc.handler(subjects.LEDGER_WITHDRAW_CREATE, WithdrawParams, transaction=True)
    async def create_withdrawal(scope: Scope, p: WithdrawParams, conn: asyncpg.Connection):
        movement = domain.withdrawal(p)
        tx_id, _ = await store.post_funded(conn, scope.org_id, scope.livemode, movement)
        return created(WithdrawResult(tx_id, movement.user_id, movement.amount,
                                      movement.currency, movement.type, movement.tags))

    @svc.handler(subjects.LEDGER_REFUND_CREATE, RefundParams, transaction=True)
    async def create_refund(scope: Scope, p: RefundParams, conn: asyncpg.Connection):
        _, _, original_id = domain.refund_request(p)
        domain.require_mint(scope.actor)
        original = await store.refundable(conn, scope.org_id, scope.livemode, original_id)
        movement = domain.refund(p, original)
        tx_id, _ = await store.post(conn, scope.org_id, scope.livemode, movement)
        return created(RefundResult(tx_id, movement.user_id, movement.amount,
                                    movement.currency, movement.type, movement.tags,
                                    original_id))

    @svc.handler(subjects.LEDGER_STARTER_CREDIT_CLAIM, StarterCreditParams, transaction=True)
    async def claim_starter_credit(scope: Scope, p: StarterCreditParams,
                                   conn: asyncpg.Connection):
        movement = domain.starter_credit(p.user, now())
        has_payment_method = await _has_payment_method(scope, movement.user_id)
        if not has_payment_method:
            # Payments not answering is refused the same way, but not for good: not stored
            # under the key, so a retry once payments answers can succeed.
            raise forbidden("a verified payment method is required before claiming "
                            "starter credit", retryable=has_payment_method is None)
        existing = await store.starter_credit(conn, scope.org_id, scope.livemode,
                                              movement.user_id)
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

    async def _has_payment_method(scope: Scope, user: str, *, verified_only: bool = True,
                                  ) -> bool | None:
        """None when payments does not answer (not deployed, down, slow): unknown, which
        callers treat as "no payment method" for now."""
        reply = await svc.ask(subjects.PAYMENTS_PAYMENT_METHOD_EXISTS, scope,
                              PaymentMethodQuery(customerId=user, verifiedOnly=verified_only))
        if reply is None or reply.error is not None:
            return None
        return _decode_pm(reply.result).exists

    @svc.handler(subjects.LEDGER_TIER_GET, TierQuery)
    async def get_tier(scope: Scope, p: TierQuery) -> TierResult:
        user = domain.require_user(p.user, "user query parameter is required")
        tier = tiers.resolve(scope.actor.tier, p.tier, scope.actor.may_mint)
        bal, holds = await read_balance((scope.org_id, scope.livemode, user,
                                         domain.DEFAULT_CURRENCY))
        used_today = 0
        if tier.has_daily_credits:
            used_today = await store.usage_since(svc.pool, scope.org_id, scope.livemode, user,
                                                 domain.DEFAULT_CURRENCY, domain.today(now()))
        prepaid = domain.available(bal, holds)
        daily = tiers.daily_remaining(tier, used_today)
        return TierResult(user, _tier_config(tier), TierBalance(
            domain.DEFAULT_CURRENCY, prepaid, daily, min(prepaid + daily, INT64_MAX)))

    @svc.handler(subjects.LEDGER_TIER_CHECK, TierQuery)
    async def check_tier(scope: Scope, p: TierQuery) -> TierCheckResult:
        user = domain.require_user(p.user, "user query parameter is required")
        tier = tiers.resolve(scope.actor.tier, p.tier, scope.actor.may_mint)
        summary = TierSummary(tier.name, tier.display_name, list(tier.allowed_models),
                              tier.max_agents)
        model = p.model.strip()
        if not model:
            return TierCheckResult(user, summary)
        return TierCheckResult(user, summary, model, tier.allows(model))

    @svc.handler(subjects.LEDGER_STATUS_GET, StatusQuery)
    async def get_status(scope: Scope, p: StatusQuery) -> BillingStatus:
        user = domain.require_user(p.user, "user query parameter is required")
        tier = tiers.resolve(scope.actor.tier, p.tier, scope.actor.may_mint)
        has_payment_method = asyncio.ensure_future(
            _has_payment_method(scope, user, verified_only=False))
        bal, holds = await read_balance((scope.org_id, scope.livemode, user,
                                         domain.DEFAULT_CURRENCY))
        return BillingStatus(user, bool(await has_payment_method),
                             domain.available(bal, holds), tier.name)

    svc.every(settings.lapse_interval_s, functools.partial(lapse_expired_deposits, svc))

    @svc.handler(subjects.LEDGER_USAGE_LIST, UsageListParams)
    async def list_usage(scope: Scope, p: UsageListParams) -> UsageList:
        user = domain.require_user(p.user, "user query parameter is required")
        currency = domain.currency_of(p.currency) if p.currency else ""
        limit, offset = USAGE_PAGE.apply(p.limit, p.offset)
        rows = await store.usage(svc.pool, scope.org_id, scope.livemode, user, currency,
                                 limit, offset)
        items = [UsageItem(r["id"], r["amount"], r["currency"], r["notes"],
                           r["metadata"] or {}, rfc3339(r["created_at"])) for r in rows]
        return UsageList(user, len(items), items)

    @svc.handler(subjects.LEDGER_TRANSACTION_LIST, TransactionListParams)
    async def list_transactions(scope: Scope, p: TransactionListParams) -> TransactionList:
        user = domain.require_user(p.user, "user query parameter is required")
        currency = domain.currency_of(p.currency) if p.currency.strip() else ""
        limit, offset = TRANSACTIONS_PAGE.apply(p.limit, p.offset)
        rows, total = await store.transactions(svc.pool, scope.org_id, scope.livemode, user,
                                               currency, limit, offset)
        items = [TransactionItem(
            id=r["id"], type=r["type"], amount=r["amount"], currency=r["currency"],
            createdAt=rfc3339_seconds(r["created_at"]), tags=r["tags"], notes=r["notes"],
            metadata=r["metadata"] or None,
            expiresAt=rfc3339_seconds(r["expires_at"]) if r["expires_at"] else None,
        ) for r in rows]
        return TransactionList(items, total, user)

    credit_handlers.register(svc)
    alert_handlers.register(svc)
    journal_handlers.register(svc)
    return svc


def _starter_result(tx_id: str, user: str, amount: int, expires_at) -> StarterCreditResult:
    return StarterCreditResult(transactionId=tx_id, user=user, amount=amount,
                               currency=domain.DEFAULT_CURRENCY, type="deposit",
                               tags=domain.STARTER_CREDIT_TAG, expiresAt=rfc3339(expires_at))


def _tier_config(tier: tiers.Tier) -> TierConfig:
    return TierConfig(tier.name, tier.display_name, tier.max_agents, tier.unlimited_agents,
                      tier.daily_credits_cents, list(tier.allowed_models))


async def lapse_expired_deposits(svc: Service) -> None:
    """The unspent part of expired deposits lapses, one customer account at a time."""
    for account in await store.accounts_with_due_lots(svc.pool, limit=500):
        key = (account["org_id"], account["livemode"], account["user_id"], account["currency"])
        async with svc.pool.acquire() as conn, conn.transaction():
            await store.lock_balance(conn, *key)
            await store.lapse_due_lots(conn, *key)
