"""Usage debits, written in batches.

API nodes record usage by the thousand per second. Records that arrive together are written
in one transaction — one commit and a handful of statements for the whole batch — and each
keeps its own outcome: its transaction, its idempotent replay, or its refusal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import msgspec

from contracts import Reply, Scope
from contracts.ids import new_id
from contracts.ledger import UsageResult
from contracts.metering import Meter
from services.ledger.balances import store
from services.ledger.balances.domain import Movement
from services.runtime.batching import MicroBatcher, isolating_failures
from services.runtime.idempotency import IdempotencyKeys, stored_answer

_encode = msgspec.json.Encoder().encode

# Called with the batch's new debits inside its transaction (spend alerts, api-usage copies).
AfterDebits = Callable[[asyncpg.Connection, list["UsageRecord"]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    scope: Scope
    debit: Movement
    key: str | None  # the Idempotency-Key, else one derived from user and requestId
    fingerprint: str
    # Chosen once, before the first write: a batch written again after a failure finds the
    # debits its first attempt committed by these ids (`isolating_failures`).
    tx_id: str = field(default_factory=lambda: new_id("txn_"))
    copy_to: Meter | None = None  # the organization's api-usage meter (`backfill`)

    @property
    def account(self) -> tuple[str, bool, str, str]:
        return (self.scope.org_id, self.scope.livemode, self.debit.user_id,
                self.debit.currency)


class UsageRecorder:
    def __init__(self, pool: Callable[[], asyncpg.Pool], keys: IdempotencyKeys,
                 after_debits: AfterDebits | None = None):
        self._pool = pool
        self._keys = keys
        self._after_debits = after_debits
        self._batch = MicroBatcher(isolating_failures(
            self._write_together, what="usage record", request_id=lambda r: r.scope.request_id,
            committed=self._committed))

    async def record(self, record: UsageRecord) -> bytes:
        """The encoded reply for this record, once its batch has committed."""
        return await self._batch(record)

    async def _write_together(self, records: list[UsageRecord]) -> list[bytes]:
        tx_ids = [r.tx_id for r in records]
        # Each result is encoded once; its reply and its stored replay both embed the bytes.
        results = [_result(r) for r in records]
        replies: list[bytes | None] = [None] * len(records)
        async with self._pool().acquire() as conn, conn.transaction():
            keyed = [i for i, r in enumerate(records) if r.key]
            if keyed:
                await self._replay_known_keys(conn, records, keyed, results, replies)
            writes = sorted((i for i, reply in enumerate(replies) if reply is None),
                            key=lambda i: records[i].account)
            if writes:
                await store.post_usage_batch(conn, [
                    (records[i].scope.org_id, records[i].scope.livemode, tx_ids[i],
                     records[i].debit) for i in writes])
                if self._after_debits is not None:
                    await self._after_debits(conn, [records[i] for i in writes])
        return [reply if reply is not None else _encode(Reply(result=result, status=201))
                for reply, result in zip(replies, results, strict=True)]

    async def _committed(self, records: list[UsageRecord]) -> list[bytes | None]:
        """The replies of the records whose debit a failed batch committed anyway."""
        stored = await store.stored_transactions(self._pool(), [
            (r.scope.org_id, r.scope.livemode, r.tx_id) for r in records])
        return [_encode(Reply(result=_result(r), status=201))
                if (r.scope.org_id, r.scope.livemode, r.tx_id) in stored else None
                for r in records]

    async def _replay_known_keys(self, conn: asyncpg.Connection, records: list[UsageRecord],
                                 keyed: list[int], results: list[msgspec.Raw],
                                 replies: list[bytes | None]) -> None:
        """Claim every key of the batch with the reply it will have; a key that was already
        used gets the stored reply (or 422 when the body differs)."""
        def key_of(i: int) -> tuple[str, bool, str]:
            return records[i].scope.org_id, records[i].scope.livemode, records[i].key

        claimed = await self._keys.claim_many(conn, [
            (*key_of(i), records[i].fingerprint,
             _encode(Reply(result=results[i], status=201, replayed=True))) for i in keyed])
        first_use: set[tuple[str, bool, str]] = set()
        seen_before = []
        for i in keyed:
            key = key_of(i)
            if key in claimed and key not in first_use:
                first_use.add(key)
            else:  # used by an earlier request, or earlier in this very batch
                seen_before.append(i)
        if not seen_before:
            return
        stored = await self._keys.find_many(conn, [key_of(i) for i in seen_before])
        for i in seen_before:
            replies[i] = stored_answer(stored[key_of(i)], records[i].fingerprint)


def _result(record: UsageRecord) -> msgspec.Raw:
    return msgspec.Raw(_encode(UsageResult(record.tx_id, record.debit.user_id,
                                           record.debit.amount, record.debit.currency,
                                           record.debit.type)))
