"""Usage debits and their list. Debits are the write hot path: concurrent ones share one
transaction (`recorder.py`); spend alerts and the copies into api-usage meters
(`backfill.py`) are written for the whole batch inside it."""

from __future__ import annotations

from contracts import Reply, Scope
from contracts.ids import rfc3339
from contracts.ledger import (
    USAGE_LIST,
    USAGE_RECORD,
    UsageItem,
    UsageList,
    UsageListParams,
    UsageRecordParams,
    UsageSkipped,
)
from contracts.limits import USAGE_PAGE
from contracts.rules import currency_of, require_user
from services.ledger.balances import domain, store
from services.ledger.usage.recorder import UsageRecord
from services.runtime.bus import paged
from services.runtime.idempotency import derived_key, fingerprint_of
from services.runtime.service import Context, Router

router = Router()


@router.handler(USAGE_RECORD)
async def record_usage(ctx: Context, scope: Scope, p: UsageRecordParams,
                       ) -> UsageSkipped | bytes:
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
    state = ctx.state
    return await state.usage.record(UsageRecord(scope, movement, key, fingerprint,
                                                copy_to=await state.backfill.meter(scope)))


@router.handler(USAGE_LIST)
async def list_usage(ctx: Context, scope: Scope, p: UsageListParams) -> Reply:
    user = require_user(p.user, "user query parameter is required")
    currency = currency_of(p.currency) if p.currency else ""
    limit, offset = USAGE_PAGE.apply(p.limit, p.offset)
    rows, total = await store.usage(ctx.pool, scope.org_id, scope.livemode, user, currency,
                                    limit, offset)
    items = [UsageItem(r["id"], r["amount"], r["currency"], r["notes"], r["metadata"] or {},
                       rfc3339(r["created_at"])) for r in rows]
    return paged(UsageList(user, len(items), items), total, offset, len(items))
