"""Journal operations (payments, refunds, payouts, disputes), recorded in batches.

Every payment posts to its organization's cash account: one operation per transaction, they
queue on that balance row for a commit each. Operations that arrive together share one
transaction instead — a handful of statements and one increment per balance for the batch —
and each keeps its own outcome: its new entry, the entry its key posted before (a replay),
or its refusal. Batches run one at a time; they would queue on that row anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from contracts import Scope
from contracts.errors import Failure, conflict
from contracts.ids import now
from services.ledger.journal import domain, store
from services.ledger.journal.domain import Account, Entry, Operation
from services.runtime.batching import MicroBatcher, each_alone_on_failure
from services.runtime.idempotency import KeyId
from services.runtime.service import Context

Outcome = tuple[Entry, bool]  # the entry, and whether it was posted before (a replay)


@dataclass(frozen=True, slots=True)
class Recording:
    scope: Scope
    operation: Operation

    @property
    def key(self) -> KeyId:
        return self.scope.org_id, self.scope.livemode, self.operation.idempotency_key


class KnownAccounts:
    """Journal accounts by name, as committed. An account is never renamed or deleted, so
    its id stays: a batch looks up only the accounts it has not seen (every payment posts to
    its organization's cash account and its customer's). What a transaction found or created
    is known once it commits (`learn`); past `limit` accounts the oldest are forgotten."""

    def __init__(self, limit: int = 100_000):
        self._limit = limit
        self._known: dict[store.Name, Account] = {}

    def view(self) -> Mapping[store.Name, Account]:
        return self._known

    def learn(self, accounts: Mapping[store.Name, Account]) -> None:
        for name, account in accounts.items():
            self._known.pop(name, None)  # latest last: the oldest go first
            self._known[name] = account
        while len(self._known) > self._limit:
            del self._known[next(iter(self._known))]


class JournalRecorder:
    def __init__(self, ctx: Context, accounts: KnownAccounts | None = None):
        self._ctx = ctx
        self._accounts = accounts or KnownAccounts()
        # A batch written again alone after a failure finds what a lost commit did by the
        # operations' keys: those replay. It holds a lock per key, so not too many at once.
        self._batch = MicroBatcher(each_alone_on_failure(self._write_together), serial=True,
                                   max_batch=200)

    async def record(self, recording: Recording) -> Outcome:
        """The operation's outcome once its batch has committed; its refusal raised."""
        return await self._batch(recording)

    async def _write_together(self, recordings: list[Recording]) -> list[Outcome | Failure]:
        try:
            return await self._in_transaction(recordings, look_up=False)
        except asyncpg.UniqueViolationError:  # one was posted before (sent again)
            return await self._in_transaction(recordings, look_up=True)

    async def _in_transaction(self, recordings: list[Recording], *, look_up: bool,
                              ) -> list[Outcome | Failure]:
        learned: dict[store.Name, Account] = {}
        async with self._ctx.pool.acquire() as conn, conn.transaction():
            outcomes = await record_together(conn, recordings, look_up=look_up,
                                             known=self._accounts.view(), learned=learned)
        self._accounts.learn(learned)
        return outcomes


async def record_together(conn: asyncpg.Connection, recordings: list[Recording], *,
                          look_up: bool, known: Mapping[store.Name, Account] | None = None,
                          learned: dict[store.Name, Account] | None = None,
                          ) -> list[Outcome | Failure]:
    """Record the operations in the caller's transaction: `prepare_together`, then post
    their new entries. A refusal is its operation's outcome; it changes nothing."""
    outcomes, new = await prepare_together(conn, recordings, look_up=look_up, known=known,
                                            learned=learned)
    if new:
        await store.insert_entries(conn, new)
    return outcomes


async def prepare_together(db: asyncpg.Pool | asyncpg.Connection, recordings: list[Recording],
                           *, look_up: bool, known: Mapping[store.Name, Account] | None = None,
                           learned: dict[store.Name, Account] | None = None,
                           ) -> tuple[list[Outcome | Failure], list[tuple[str, bool, Entry]]]:
    """Each operation's outcome, and the new entries to post for them (the caller posts them,
    on its own or within a longer statement: `store.entries_and_postings`). Ensures the
    accounts of those not posted before (in name order, so concurrent batches creating the
    same accounts do not deadlock).

    Without `look_up`, every operation is taken for new (the keys of a batch rarely were
    used): one posted before, or being posted, raises `UniqueViolationError` when its entry
    is posted (its key is unique), and the caller looks again. With it, the keys are locked
    first (a concurrent post under one commits before this looks) and looked up: `db` is then
    the caller's transaction's connection.

    Accounts in `known` (committed ones) are not looked up; those this looks up or creates
    are added to `learned`, for the caller to know once its transaction commits."""
    at = now()
    posted = {}
    if look_up:
        await store.lock_keys(db, (r.key for r in recordings))
        posted = await store.entries_by_keys(db, (r.key for r in recordings))
    known = known or {}
    names = {(*r.key[:2], leg.name) for r in recordings for leg in r.operation.legs}
    accounts = {name: known[name] for name in names if name in known}
    if unknown := names - accounts.keys():
        found = await store.accounts_by_names(db, unknown)
        accounts.update(found)
        if learned is not None:
            learned.update(found)
    missing: dict[store.Name, Account] = {}
    for r in recordings:
        if r.key not in posted:  # a replay creates nothing, refused or not
            for leg in r.operation.legs:
                name = (*r.key[:2], leg.name)
                if name not in accounts and name not in missing:
                    missing[name] = domain.new_account(leg.name, leg.type,
                                                       r.operation.currency)
    if missing:
        created = await store.ensure_accounts(db, missing, at)
        accounts.update(created)
        if learned is not None:
            learned.update(created)
    outcomes: list[Outcome | Failure] = []
    new: list[tuple[str, bool, Entry]] = []
    for r in recordings:
        ids = {leg.name: accounts[name].id for leg in r.operation.legs
               if (name := (*r.key[:2], leg.name)) in accounts}
        before = posted.get(r.key)
        if before is None:
            entry = store.new_entry(r.operation.draft(ids), at)
            posted[r.key] = entry  # the same key again in this batch replays it
            new.append((*r.key[:2], entry))
            outcomes.append((entry, False))
        elif len(ids) < len({leg.name for leg in r.operation.legs}):
            # An account the entry posted to would exist: another payload.
            outcomes.append(conflict(domain.KEY_REUSED))
        else:
            try:
                domain.require_same_payload(before, r.operation.draft(ids))
                outcomes.append((before, True))
            except Failure as refusal:
                outcomes.append(refusal)
    return outcomes, new
