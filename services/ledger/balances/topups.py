"""Top-up credits, written in batches.

A top-up credit is one operation on the books: the journal records the payment that paid
for it (cash in, owed to the customer) and the customer's balance is credited, in one
transaction, so the books never show the one without the other.

Payments sends a paid top-up's credit while the customer waits for the answer, so credits
that arrive together share one statement, its own transaction: one round trip and one commit
for the whole batch. Each is credited once however often it is sent: its key (the top-up's,
or the request's Idempotency-Key) is claimed in that statement with its answer (the balance
after the credit, which only the statement knows); a key claimed before fails the batch, and
it replays the answer stored under it while the others are written again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
import msgspec

from contracts import Reply, Scope
from contracts.errors import Failure
from contracts.ids import new_id
from contracts.journal import JournalPaymentParams
from contracts.ledger import TopupCredited, TopupCreditParams
from services.ledger.balances import domain, store
from services.ledger.balances.domain import Movement
from services.ledger.journal import domain as journal
from services.ledger.journal.domain import Account, Operation
from services.ledger.journal.recorder import KnownAccounts, Recording, prepare_together
from services.ledger.journal.store import Name
from services.runtime.batching import MicroBatcher, each_alone_on_failure
from services.runtime.idempotency import (
    KeyId,
    derived_key,
    fingerprint_of,
    first_of_each_key,
    stored_answer,
)
from services.runtime.service import Context

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

@dataclass(frozen=True, slots=True)
class TopupCredit:
    scope: Scope
    credit: Movement
    payment: Operation | None  # the journal's payment for it (None: recorded elsewhere)
    key: str
    fingerprint: str

    @property
    def key_id(self) -> KeyId:
        return self.scope.org_id, self.scope.livemode, self.key


def topup_credit(scope: Scope, p: TopupCreditParams) -> TopupCredit:
    """The credit and the journal's payment a top-up's params ask for, under the request's
    key or else the top-up's (its natural key)."""
    payment = journal.payment(JournalPaymentParams(
        paymentIntentId=p.paymentIntentId, amount=p.amount, currency=p.currency,
        customerId=p.user)) if p.paymentIntentId.strip() else None
    if scope.idempotency_key:
        key, fingerprint = scope.idempotency_key, scope.fingerprint or ""
    else:
        key, fingerprint = derived_key("topup", p.topupId.strip()), fingerprint_of(p)
    return TopupCredit(scope, domain.topup_credit(p), payment, key, fingerprint)


class TopupCreditor:
    def __init__(self, ctx: Context, accounts: KnownAccounts | None = None):
        self._ctx = ctx
        self._accounts = accounts or KnownAccounts()  # the journal's, known by name
        # A batch written again alone after a failure finds what a lost commit did by the
        # keys: those credits replay. One batch at a time: every batch posts to the
        # organization's cash account, and would queue on its row anyway.
        self._batch = MicroBatcher(each_alone_on_failure(self._write_together), serial=True)

    async def credit(self, credit: TopupCredit) -> bytes:
        """The encoded reply for this credit, once its batch has committed."""
        return await self._batch(credit)

    async def _write_together(self, credits: list[TopupCredit]) -> list[bytes]:
        first = first_of_each_key(c.key_id for c in credits)
        answers: dict[KeyId, tuple[str, bytes]] = {}  # by key: its fingerprint, its replay
        replies: list[bytes | None] = [None] * len(credits)
        journaled_before = False
        while new := [i for key, i in first.items() if key not in answers]:
            try:
                await self._credit(new, credits, replies, answers, journaled_before)
            except asyncpg.UniqueViolationError:  # a payment journaled on its own before
                if journaled_before:
                    raise
                journaled_before = True
            except _SentBefore:  # nothing written: those replay, the others go again
                before = await self._ctx.keys.find_many(
                    self._ctx.pool, [credits[i].key_id for i in new])
                if not before:
                    raise RuntimeError("a top-up's key is taken but not found") from None
                answers.update(before)
        return [reply if reply is not None else stored_answer(answers[c.key_id], c.fingerprint)
                for reply, c in zip(replies, credits, strict=True)]

    async def _credit(self, new: list[int], credits: list[TopupCredit],
                      replies: list[bytes | None], answers: dict[KeyId, tuple[str, bytes]],
                      journaled_before: bool) -> None:
        """Credit `new`, claim their keys with their answers (the balance after each
        credit) and record their payments: one statement, its own transaction (once a
        payment was found journaled before, within one that looks those up first).
        `_SentBefore` if a key was taken: nothing written."""
        ctx = self._ctx
        tx_ids = [new_id("txn_") for _ in new]
        payments = [Recording(credits[i].scope, credits[i].payment)
                    for i in new if credits[i].payment]
        learned: dict[Name, Account] = {}  # the journal's, found or created: known once
        #                                  committed
        rows = [(credits[i].scope.org_id, credits[i].scope.livemode, tx_id, credits[i].credit)
                for i, tx_id in zip(new, tx_ids, strict=True)]
        keys = [(credits[i].key, credits[i].fingerprint, *_replay_around_balance(tx_id, m))
                for i, (_, _, tx_id, m) in zip(new, rows, strict=True)]

        async def write(db: asyncpg.Pool | asyncpg.Connection) -> list[int]:
            outcomes, entries = await prepare_together(
                db, payments, look_up=journaled_before, known=self._accounts.view(),
                learned=learned)
            for recording, outcome in zip(payments, outcomes, strict=True):
                if isinstance(outcome, Failure):  # the customer paid: credited regardless
                    log.error("top-up payment %s not journaled: %s",
                              recording.operation.payment_intent_id, outcome.error.message)
            try:
                return await store.credit_together(db, rows, keys, entries)
            except asyncpg.UniqueViolationError as e:
                if e.constraint_name == "idempotency_keys_pkey":
                    raise _SentBefore from None
                raise

        if journaled_before:
            async with ctx.pool.acquire() as conn, conn.transaction():
                balances = await write(conn)
        else:
            balances = await write(ctx.pool)
        self._accounts.learn(learned)
        for i, (_, _, tx_id, m), balance, (_, fingerprint, head, tail) in zip(
                new, rows, balances, keys, strict=True):
            replies[i] = _encode(Reply(result=_credited(tx_id, m, balance)))
            answers[credits[i].key_id] = (fingerprint, head + b"%d" % balance + tail)


_NO_BALANCE = -(2 ** 63)  # stands for the balance in a replay made before it is known


def _credited(tx_id: str, m: Movement, balance: int) -> msgspec.Raw:
    return msgspec.Raw(_encode(TopupCredited(tx_id, m.user_id, m.amount, m.currency, balance)))


def _replay_around_balance(tx_id: str, m: Movement) -> tuple[bytes, bytes]:
    """The credit's answer as replays send it, without its balance (only the credit's
    statement knows it): the bytes before it and after it."""
    replay = _encode(Reply(result=_credited(tx_id, m, _NO_BALANCE), replayed=True))
    head, _, tail = replay.rpartition(b"%d" % _NO_BALANCE)
    return head, tail


class _SentBefore(Exception):
    """A credit of the batch was credited before: its key is taken."""
