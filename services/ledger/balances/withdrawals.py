"""Withdrawals of what is available, written in batches.

Invoicing's wallet leg takes what is left to pay of an invoice, or what the wallet has
available when that is less, in one request (no balance read first). A billing cycle
collects dozens of invoices at once, so the withdrawals that arrive together share one
transaction: their accounts locked in one statement (in one order: concurrent batches wait
for each other rather than deadlock), each withdrawal takes what its account has left
after the ones before it in the batch, and all are posted in one statement.

Each moves money once however often it is sent: its key (required) is claimed in that
transaction with its answer, the withdrawal or the 402 of an empty wallet. A key used
before answers what it stored; a key claimed meanwhile by another transaction rolls the
batch back, and it is written again (the others as new, that one replayed)."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass

import msgspec

from contracts import Reply, Scope
from contracts.errors import Failure, invalid
from contracts.ids import new_id
from contracts.ledger import WithdrawParams, WithdrawResult
from services.ledger.balances import domain, store
from services.ledger.balances.domain import Movement
from services.runtime.batching import MicroBatcher, each_alone_on_failure
from services.runtime.idempotency import KeyId, first_of_each_key, stored_answer
from services.runtime.service import Context

_encode = msgspec.json.Encoder().encode

@dataclass(frozen=True, slots=True)
class Withdrawal:
    scope: Scope
    asked: WithdrawParams  # the most to take
    account: store.BalanceKey
    key: str
    fingerprint: str

    @property
    def key_id(self) -> KeyId:
        return self.scope.org_id, self.scope.livemode, self.key


def withdrawal(scope: Scope, p: WithdrawParams) -> Withdrawal:
    """The checked request: at most `p.amount` of the customer's money, under the key."""
    if not scope.idempotency_key:
        raise invalid("an idempotency key is required")
    m = domain.withdrawal(p)  # the request as a withdrawal of all it asks for is valid
    return Withdrawal(scope, p, (scope.org_id, scope.livemode, m.user_id, m.currency),
                      scope.idempotency_key, scope.fingerprint or "")


class AvailableWithdrawer:
    def __init__(self, ctx: Context):
        self._ctx = ctx
        # A batch written again item by item after a failure finds what a lost commit did
        # by the keys: those replay.
        self._batch = MicroBatcher(each_alone_on_failure(self._write_together))

    async def withdraw(self, w: Withdrawal) -> bytes:
        """The encoded reply for this withdrawal, once its batch has committed."""
        return await self._batch(w)

    async def _write_together(self, items: list[Withdrawal]) -> list[bytes]:
        first = first_of_each_key(w.key_id for w in items)
        answers: dict[KeyId, tuple[str, bytes]] = {}  # by key: its fingerprint, its replay
        replies: list[bytes | None] = [None] * len(items)
        # Keys are looked up only once one was found taken (rare: a retry, a resumed
        # collection): the batch rolls back, then those replay and the others go again.
        for look_up in (False, True, True):
            if new := [i for key, i in first.items() if key not in answers]:
                with contextlib.suppress(_KeyTaken):
                    await self._withdraw(items, new, answers, replies, look_up)
        if any(key not in answers for key in first):
            raise RuntimeError("a withdrawal's key is taken but not found")
        return [reply if reply is not None else stored_answer(answers[w.key_id], w.fingerprint)
                for reply, w in zip(replies, items, strict=True)]

    async def _withdraw(self, items: list[Withdrawal], new: list[int],
                        answers: dict[KeyId, tuple[str, bytes]],
                        replies: list[bytes | None], look_up: bool) -> None:
        """Withdraw items `new` in one transaction; with `look_up`, first the answers of
        their keys used before (nothing written then: the others go again)."""
        batch = [items[i] for i in new]
        ctx = self._ctx
        async with ctx.pool.acquire() as conn, conn.transaction():
            if look_up and (before := await ctx.keys.find_many(conn, [w.key_id
                                                                       for w in batch])):
                answers.update(before)
                return
            held = await store.lock_balances(conn, sorted({w.account for w in batch}))
            have: dict[store.BalanceKey, int] = {}
            for account, (balance, holds, expiring) in held.items():
                if expiring:  # expired lots lapse before the balance is spent
                    balance -= await store.lapse_due_lots(conn, *account)
                have[account] = domain.available(balance, holds)
            posted: list[tuple[str, Withdrawal, Movement]] = []
            written: list[tuple[int, bytes, bytes]] = []  # index, reply, replay
            for i, w in zip(new, batch, strict=True):
                try:
                    m = domain.withdrawal_of_available(w.asked, have.get(w.account, 0))
                except Failure as refused:  # final: stored under the key, as a 402 is
                    reply = Reply(error=refused.error)
                else:
                    have[w.account] -= m.amount
                    tx_id = new_id("txn_")
                    posted.append((tx_id, w, m))
                    reply = Reply(result=msgspec.Raw(_encode(WithdrawResult(
                        tx_id, m.user_id, m.amount, m.currency, m.type, m.tags))), status=201)
                answer = _encode(reply)
                reply.replayed = True
                written.append((i, answer, _encode(reply)))
            claimed = await ctx.keys.claim_many(conn, [
                (*w.key_id, w.fingerprint, replay)
                for w, (_, _, replay) in zip(batch, written, strict=True)])
            if len(claimed) < len(batch):  # used before (or meanwhile): roll back
                raise _KeyTaken
            if posted:
                after = await store.post_many(conn, [
                    (w.scope.org_id, w.scope.livemode, tx_id, m) for tx_id, w, m in posted])
                spent: dict[store.BalanceKey, int] = defaultdict(int)
                for _, w, m in posted:
                    spent[w.account] += m.amount
                for account, amount in spent.items():
                    if after[account][1] > 0:  # rare: the customer holds expiring money
                        await store.consume_lots(conn, *account, amount)
        for (i, answer, replay), w in zip(written, batch, strict=True):
            replies[i] = answer
            answers[w.key_id] = (w.fingerprint, replay)


class _KeyTaken(Exception):
    """A withdrawal of the batch was sent before: its key is taken."""
