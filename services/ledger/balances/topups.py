"""Top-up credits, written in batches.

Payments sends a paid top-up's credit while the customer waits for the answer, so credits
that arrive together share one transaction: one commit and a handful of statements for the
whole batch. Each is credited once however often it is sent: its key (the top-up's, or the
request's Idempotency-Key) is claimed in that transaction with its answer (the balance after
the credit, so after the credits are written); a key claimed before rolls the batch back,
and it replays the answer stored under it while the others are written again.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from contracts import Reply, Scope
from contracts.ids import new_id
from contracts.ledger import TopupCredited
from services.ledger.balances import store
from services.ledger.balances.domain import Movement
from services.runtime.batching import MicroBatcher, each_alone_on_failure
from services.runtime.idempotency import mismatch
from services.runtime.service import Context

_encode = msgspec.json.Encoder().encode

Key = tuple[str, bool, str]  # org_id, livemode, key


@dataclass(frozen=True, slots=True)
class TopupCredit:
    scope: Scope
    credit: Movement
    key: str
    fingerprint: str

    @property
    def key_id(self) -> Key:
        return self.scope.org_id, self.scope.livemode, self.key


class TopupCreditor:
    def __init__(self, ctx: Context):
        self._ctx = ctx
        # A batch written again alone after a failure finds what a lost commit did by the
        # keys: those credits replay.
        self._batch = MicroBatcher(each_alone_on_failure(self._write_together))

    async def credit(self, credit: TopupCredit) -> bytes:
        """The encoded reply for this credit, once its batch has committed."""
        return await self._batch(credit)

    async def _write_together(self, credits: list[TopupCredit]) -> list[bytes]:
        first: dict[Key, int] = {}  # a key sent twice in one batch is credited once
        for i, c in enumerate(credits):
            first.setdefault(c.key_id, i)
        answers: dict[Key, tuple[str, bytes]] = {}  # by key: its fingerprint, its replay
        replies: list[bytes | None] = [None] * len(credits)
        while new := [i for key, i in first.items() if key not in answers]:
            try:
                await self._credit(new, credits, replies, answers)
            except _SentBefore:  # nothing written: those replay, the others go again
                before = await self._ctx.keys.find_many(
                    self._ctx.pool, [credits[i].key_id for i in new])
                if not before:
                    raise RuntimeError("a top-up's key is taken but not found") from None
                answers.update(before)
        for i, c in enumerate(credits):
            if replies[i] is None:
                fingerprint, reply = answers[c.key_id]
                replies[i] = (reply if fingerprint == c.fingerprint
                              else _encode(Reply(error=mismatch().error)))
        return replies

    async def _credit(self, new: list[int], credits: list[TopupCredit],
                      replies: list[bytes | None], answers: dict[Key, tuple[str, bytes]],
                      ) -> None:
        """Credit `new` in one transaction, claiming their keys with their answers (the
        balance after each credit); `_SentBefore` rolls it back if a key was taken."""
        ctx = self._ctx
        tx_ids = [new_id("txn_") for _ in new]
        written: list[tuple[int, bytes, bytes]] = []  # index, reply, replay
        async with ctx.pool.acquire() as conn, conn.transaction():
            balances = await store.post_credits(conn, [
                (credits[i].scope.org_id, credits[i].scope.livemode, tx_id, credits[i].credit)
                for i, tx_id in zip(new, tx_ids, strict=True)])
            for i, tx_id, balance in zip(new, tx_ids, balances, strict=True):
                m = credits[i].credit
                result = msgspec.Raw(_encode(TopupCredited(tx_id, m.user_id, m.amount,
                                                           m.currency, balance)))
                written.append((i, _encode(Reply(result=result)),
                                _encode(Reply(result=result, replayed=True))))
            claimed = await ctx.keys.claim_many(conn, [
                (*credits[i].key_id, credits[i].fingerprint, replay)
                for i, _, replay in written])
            if len(claimed) < len(new):
                raise _SentBefore
        for i, reply, replay in written:
            replies[i] = reply
            answers[credits[i].key_id] = (credits[i].fingerprint, replay)


class _SentBefore(Exception):
    """A credit of the batch was credited before: its key is taken."""
