"""Usage debits copied as meter events into the organization's `api-usage` meter, when it
has one (ledger.md §3.5; product decision Q4: kept for summaries, deduplicated by
`requestId`, never invoiced).

The copies are as durable as the debits: they are written to the ledger's outbox in the
debits' own transaction, as messages for metering's stream (`billing.meter_events.<org>`,
one batch per organization and mode, `Nats-Msg-Id` = batch id), which metering stores like
any batch accepted asynchronously (each batch id once). The message is metering's contract
(`contracts.metering.AcceptedBatch`), its ids and keys made by the shared batch rules
(`contracts.meter_events`): nothing of metering's own code is used. Only debits in the
meter's currency are copied. A copy's key (`usage_copy_key`: user and requestId, in a
namespace clients cannot use) counts a debit once per requestId without touching the
organization's own event keys.

Which meter an organization has is looked up before its debits are batched (cached for a
minute, refreshed in the background), so the transaction never waits for metering; one
without the meter costs nothing per debit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict

import asyncpg
import msgspec

from contracts import Scope
from contracts import meter_events as rules
from contracts.errors import Failure
from contracts.ids import now
from contracts.metering import (
    METER_FIND,
    AcceptedBatch,
    AcceptedEvent,
    Meter,
    MeterFindQuery,
    meter_events_subject,
)
from services.ledger.usage.recorder import UsageRecord
from services.runtime import outbox
from services.runtime.batching import SharedLoads
from services.runtime.service import Context

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

METER_CACHE_S = 60.0
ERROR_CACHE_S = 1.0
LOOKUP_TIMEOUT_S = 1.0
COPY_TYPE = "usage.copied_to_meter"  # the outbox rows' type

Account = tuple[str, bool]  # org_id, livemode


class UsageBackfill:
    def __init__(self, ctx: Context):
        self._ctx = ctx
        self._meters: dict[Account, tuple[float, Meter | None]] = {}
        self._lookups: SharedLoads[Account, Meter | None] = SharedLoads()

    async def meter(self, scope: Scope) -> Meter | None:
        """The organization's `api-usage` meter (None: no copies), from the cache when it
        has one: an expired entry is still used while a fresh one is fetched."""
        account = (scope.org_id, scope.livemode)
        cached = self._meters.get(account)
        if cached is None:
            return await asyncio.shield(self._lookup(scope))
        if cached[0] <= time.monotonic():
            self._lookup(scope)
        return cached[1]

    async def add_copies(self, conn: asyncpg.Connection, records: list[UsageRecord]) -> None:
        """Write the copies of these debits (just posted in `conn`'s transaction) to the
        outbox: one statement, and none when no debit is copied."""
        by_account: dict[Account, list[UsageRecord]] = defaultdict(list)
        for r in records:
            if r.copy_to is not None and r.debit.currency == r.copy_to.currency:
                by_account[(r.scope.org_id, r.scope.livemode)].append(r)
        if not by_account:
            return
        ts_us = rules.to_us(now())
        messages = []
        for (org_id, livemode), group in by_account.items():
            for start in range(0, len(group), rules.MAX_BATCH):
                chunk = group[start:start + rules.MAX_BATCH]
                batch_id = _batch_id(org_id, livemode, [r.tx_id for r in chunk])
                id_base = rules.derived_id_base(batch_id)
                events = [_meter_event(rules.event_id(id_base, i), r, ts_us)
                          for i, r in enumerate(chunk)]
                messages.append((meter_events_subject(org_id), batch_id, org_id, livemode,
                                 _encode(AcceptedBatch(batch_id, org_id, livemode, events))))
        await outbox.add_messages(conn, self._ctx.name, type=COPY_TYPE, messages=messages)

    def _lookup(self, scope: Scope) -> asyncio.Future[Meter | None]:
        """One lookup per organization and mode at a time, whoever asks."""
        return self._lookups.start((scope.org_id, scope.livemode), lambda: self._find(scope))

    async def _find(self, scope: Scope) -> Meter | None:
        # The organization's question, not the request's (its deadline may be near).
        scope = msgspec.structs.replace(scope, idempotency_key=None, fingerprint=None,
                                        deadline_ms=0)
        meter, ttl = None, METER_CACHE_S
        try:
            # No answer (metering not deployed) or no such meter: nothing to copy into.
            meter = await self._ctx.ask(
                METER_FIND, scope, MeterFindQuery(eventName=rules.API_USAGE_EVENT_NAME),
                timeout=LOOKUP_TIMEOUT_S)
        except Failure as failure:
            if failure.error.status != 404:
                ttl = ERROR_CACHE_S  # metering failed to answer: ask again soon
        except Exception:
            log.exception("usage back-fill: looking up the api-usage meter of %s failed",
                          scope.org_id)
            ttl = ERROR_CACHE_S
        if len(self._meters) > 100_000:
            self._meters.clear()
        self._meters[(scope.org_id, scope.livemode)] = (time.monotonic() + ttl, meter)
        return meter


def _meter_event(event_id: str, record: UsageRecord, ts_us: int) -> AcceptedEvent:
    """The reference's copy: the debit's amount (minor units) now, with its model and
    provider; keyed by user and requestId when it has one."""
    metadata = record.debit.metadata or {}
    dimensions = {k: metadata[k] for k in ("model", "provider") if metadata.get(k)}
    request_id = metadata.get("requestId") or ""
    user = record.debit.user_id  # canonical already (contracts.rules.user_id)
    key = rules.usage_copy_key(user, request_id) if request_id else ""
    return AcceptedEvent(event_id, record.copy_to.id, user, record.debit.amount, ts_us, key,
                         dimensions or None)


def _batch_id(org_id: str, livemode: bool, tx_ids: list[str]) -> str:
    """Derived from the debits' transactions (hex, as metering's batch ids)."""
    h = hashlib.sha256(f"usage-backfill|{org_id}|{int(livemode)}".encode())
    for tx_id in tx_ids:
        h.update(b"|" + tx_id.encode())
    return h.hexdigest()
