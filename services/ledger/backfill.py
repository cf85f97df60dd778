"""Usage debits copied as meter events into the organization's `api-usage` meter, when it
has one (ledger.md §3.5; product decision Q4: kept for summaries, deduplicated by
`requestId`, never invoiced).

Best effort, as in the reference: after the debits commit, the copies go to metering's
JetStream stream (`billing.meter_events.<org>`) in one batch per organization and mode, and
a failure is logged, never the debit's. Metering stores them with the usual dedup, so a
debit copied twice is counted once. Which organizations have the meter is cached for a
minute; one without it costs nothing per debit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict

import msgspec
import nats

from contracts import Scope
from contracts.metering import AcceptedBatch, Meter, MeterEventInput, MeterFindQuery
from contracts.metering_subjects import METERING_METER_FIND, meter_events_subject
from services.ledger.usage import UsageRecord
from services.metering import domain as metering
from services.runtime.bus import Service
from services.runtime.ids import now

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_decode_meter = msgspec.json.Decoder(Meter).decode

METER_CACHE_S = 60.0
PUBLISH_TIMEOUT_S = 5.0


class UsageBackfill:
    def __init__(self, svc: Service):
        self._svc = svc
        self._meters: dict[tuple[str, bool], tuple[float, str | None]] = {}
        self._tasks: set[asyncio.Task] = set()

    def after_commit(self, debits: list[tuple[UsageRecord, str]]) -> None:
        """Copy the committed debits (each with its transaction id), in the background."""
        task = asyncio.create_task(self._copy(debits))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _copy(self, debits: list[tuple[UsageRecord, str]]) -> None:
        by_account: dict[tuple[str, bool], list[tuple[UsageRecord, str]]] = defaultdict(list)
        for record, tx_id in debits:
            by_account[(record.scope.org_id, record.scope.livemode)].append((record, tx_id))
        for (org_id, livemode), group in by_account.items():
            try:
                meter_id = await self._meter_id(group[0][0].scope)
                if meter_id is None:
                    continue
                for start in range(0, len(group), metering.MAX_BATCH):
                    await self._publish(org_id, livemode, meter_id,
                                        group[start:start + metering.MAX_BATCH])
            except Exception:  # the debits stand; only their copies are missing
                log.exception("usage back-fill failed for %s (%d debits)", org_id, len(group))

    async def _meter_id(self, scope: Scope) -> str | None:
        account = (scope.org_id, scope.livemode)
        cached = self._meters.get(account)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        reply = await self._svc.ask(METERING_METER_FIND, scope,
                                    MeterFindQuery(eventName=metering.API_USAGE_EVENT_NAME))
        # No answer (metering not deployed) or no such meter: nothing to copy into.
        meter_id = (_decode_meter(reply.result).id
                    if reply is not None and reply.error is None else None)
        if len(self._meters) > 100_000:
            self._meters.clear()
        self._meters[account] = (time.monotonic() + METER_CACHE_S, meter_id)
        return meter_id

    async def _publish(self, org_id: str, livemode: bool, meter_id: str,
                       debits: list[tuple[UsageRecord, str]]) -> None:
        events = [_meter_event(meter_id, record) for record, _ in debits]
        batch_id = _batch_id(org_id, livemode, [tx_id for _, tx_id in debits])
        accepted = metering.accept_batch(events, now(), metering.derived_id_base(batch_id))
        js = self._svc.broker.connection.jetstream(timeout=PUBLISH_TIMEOUT_S)
        try:
            await js.publish(meter_events_subject(org_id),
                             _encode(AcceptedBatch(batch_id, org_id, livemode, accepted)),
                             headers={"Nats-Msg-Id": batch_id})
        except nats.js.errors.NoStreamResponseError:
            log.warning("usage back-fill: metering's stream does not exist yet")


def _meter_event(meter_id: str, record: UsageRecord) -> MeterEventInput:
    """The reference's copy: the debit's amount (minor units) now, keyed by `requestId`."""
    metadata = record.debit.metadata or {}
    dimensions = {k: metadata[k] for k in ("model", "provider") if metadata.get(k)}
    return MeterEventInput(meterId=meter_id, userId=record.debit.user_id,
                           value=record.debit.amount,
                           idempotency=metadata.get("requestId") or None,
                           dimensions=dimensions or None)


def _batch_id(org_id: str, livemode: bool, tx_ids: list[str]) -> str:
    """Derived from the debits' transactions: the same copy has the same message id."""
    h = hashlib.sha256(f"usage-backfill|{org_id}|{int(livemode)}".encode())
    for tx_id in tx_ids:
        h.update(b"|" + tx_id.encode())
    return h.hexdigest()
