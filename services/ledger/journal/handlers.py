"""Journal handlers (the double-entry ledger, ledger.md §2.9): check access, call the rules,
run the SQL, encode. Plus the sweeper that expires holds.

Platform-internal: no HTTP routes. Every write runs in one database transaction (the
runtime's `transaction=True`), so an operation either happens whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg

from contracts import Reply, Scope
from contracts.errors import Failure, conflict, invalid, not_found
from contracts.ids import now, rfc3339
from contracts.journal import (
    ACCOUNT_CREATE,
    ACCOUNT_ENSURE,
    ACCOUNT_GET,
    BALANCE_GET,
    DISPUTE_RECORD,
    ENTRY_GET,
    ENTRY_LIST,
    ENTRY_POST,
    HOLD_CAPTURE,
    HOLD_CREATE,
    HOLD_GET,
    HOLD_VOID,
    PAYMENT_RECORD,
    PAYOUT_RECORD,
    REFUND_RECORD,
    JournalAccount,
    JournalAccountCreateParams,
    JournalAccountEnsureParams,
    JournalAccountGetParams,
    JournalBalance,
    JournalBalanceGetParams,
    JournalEntry,
    JournalEntryGetParams,
    JournalEntryList,
    JournalEntryListParams,
    JournalEntryPostParams,
    JournalHold,
    JournalHoldCaptured,
    JournalHoldCaptureParams,
    JournalHoldCreateParams,
    JournalHoldIdParams,
    JournalPosting,
)
from contracts.rules import currency_of
from services.ledger.journal import domain, store
from services.ledger.journal.domain import Account, Balance, Draft, Entry, Hold, Operation
from services.ledger.journal.recorder import Recording, record_together
from services.runtime.bus import created
from services.runtime.service import Context, Router

router = Router()
SWEEP_BATCH = 500  # holds expired per transaction


# ---- accounts -----------------------------------------------------------------------


@router.handler(ACCOUNT_CREATE, transaction=True)
async def create_account(ctx: Context, scope: Scope, p: JournalAccountCreateParams,
                         conn: asyncpg.Connection):
    domain.require_operator(scope.actor)
    account = domain.new_account(p.name, p.type, p.currency, p.normalBalance,
                                 p.metadata)
    stored = await store.insert_account(conn, scope.org_id, scope.livemode, account,
                                        now())
    if stored is None:
        raise domain.duplicate_account(account.name)
    return created(_account(stored))


@router.handler(ACCOUNT_ENSURE, transaction=True)
async def ensure_account(ctx: Context, scope: Scope, p: JournalAccountEnsureParams,
                         conn: asyncpg.Connection) -> JournalAccount:
    domain.require_operator(scope.actor)
    account = domain.new_account(p.name, p.type, p.currency)
    return _account(await store.ensure_account(conn, scope.org_id, scope.livemode,
                                               account, now()))


@router.handler(ACCOUNT_GET)
async def get_account(ctx: Context, scope: Scope, p: JournalAccountGetParams) -> JournalAccount:
    domain.require_operator(scope.actor)
    if p.id.strip():
        found = await store.account_by_id(ctx.pool, scope.org_id, scope.livemode,
                                          p.id.strip())
    elif p.name.strip():
        found = await store.account_by_name(ctx.pool, scope.org_id, scope.livemode,
                                            p.name.strip())
    else:
        raise invalid("id or name is required", "id")
    if found is None:
        raise domain.account_not_found(p.id.strip() or p.name.strip())
    return _account(found)


@router.handler(BALANCE_GET)
async def get_balance(ctx: Context, scope: Scope, p: JournalBalanceGetParams) -> JournalBalance:
    domain.require_operator(scope.actor)
    currency = currency_of(p.currency)
    account = await store.account_by_id(ctx.pool, scope.org_id, scope.livemode,
                                        p.accountId.strip())
    if account is None:
        raise domain.account_not_found(p.accountId.strip())
    found = await store.balance(ctx.pool, scope.org_id, scope.livemode, account.id,
                                currency)
    return _balance(found or Balance(account.id, currency))  # no activity: zeros


# ---- entries ------------------------------------------------------------------------


@router.handler(ENTRY_POST, transaction=True)
async def post(ctx: Context, scope: Scope, p: JournalEntryPostParams, conn: asyncpg.Connection):
    domain.require_poster(scope.actor)
    draft = domain.draft_entry(p)
    return _entry_reply(*await post_entry(conn, scope.org_id, scope.livemode, draft))


@router.handler(ENTRY_GET)
async def get_entry(ctx: Context, scope: Scope, p: JournalEntryGetParams) -> JournalEntry:
    domain.require_operator(scope.actor)
    found = await store.entry_by_id(ctx.pool, scope.org_id, scope.livemode, p.id.strip())
    if found is None:
        raise not_found("entry not found")
    return _entry(found)


@router.handler(ENTRY_LIST)
async def list_entries(ctx: Context, scope: Scope, p: JournalEntryListParams) -> JournalEntryList:
    domain.require_operator(scope.actor)
    found = await store.entries(ctx.pool, scope.org_id, scope.livemode,
                                domain.entry_filter(p))
    return JournalEntryList([_entry(e) for e in found], len(found))


# ---- high-level operations ----------------------------------------------------------


def recording(operation_of: Callable[[Any], Operation]):
    """A handler that records the operation the domain builds from the params: with those
    that arrive with it (`recorder.py`), or on its own, in the runtime's transaction, when
    the request carries an Idempotency-Key of its own."""
    async def record_operation(ctx: Context, scope: Scope, p: Any) -> Reply | bytes:
        domain.require_poster(scope.actor)
        recording = Recording(scope, operation_of(p))
        if scope.idempotency_key:
            return await ctx.transaction(scope, recording, _record_alone)
        return _entry_reply(*await ctx.state.journal.record(recording))
    return record_operation


async def _record_alone(ctx: Context, scope: Scope, recording: Recording,
                        conn: asyncpg.Connection) -> Reply:
    (outcome,) = await record_together(conn, [recording], look_up=True)
    if isinstance(outcome, Failure):
        raise outcome
    return _entry_reply(*outcome)


for endpoint, operation_of in ((PAYMENT_RECORD, domain.payment), (REFUND_RECORD, domain.refund),
                               (PAYOUT_RECORD, domain.payout), (DISPUTE_RECORD, domain.dispute)):
    router.handler(endpoint)(recording(operation_of))


# ---- holds --------------------------------------------------------------------------


@router.handler(HOLD_CREATE, transaction=True)
async def create_hold(ctx: Context, scope: Scope, p: JournalHoldCreateParams,
                      conn: asyncpg.Connection):
    domain.require_operator(scope.actor)
    at = now()
    hold = domain.new_hold(p, at)
    account = await store.account_by_id(conn, scope.org_id, scope.livemode,
                                        hold.account_id)
    if account is None:
        raise domain.account_not_found(hold.account_id)
    # Reserve first: the increment locks the balance row, so the check below sees
    # every other hold and posting, and a refusal rolls the reservation back.
    posted, held = await store.reserve(conn, scope.org_id, scope.livemode, hold)
    domain.require_funds(account, posted, held - hold.amount, hold.amount)
    return created(_hold(await store.insert_hold(conn, scope.org_id, scope.livemode,
                                                 hold, at)))


@router.handler(HOLD_CAPTURE, transaction=True)
async def capture_hold(ctx: Context, scope: Scope, p: JournalHoldCaptureParams,
                       conn: asyncpg.Connection):
    domain.require_poster(scope.actor)  # a capture posts an entry: it moves money
    org_id, livemode = scope.org_id, scope.livemode
    hold = await store.hold_by_id(conn, org_id, livemode, p.id.strip(), lock=True)
    if hold is None:
        raise domain.hold_not_found()
    at = now()
    amount = domain.capture_amount(hold, p.amount, at)
    # §9.7: every check happens before anything changes.
    cash = await store.account_by_name(conn, org_id, livemode, domain.CASH)
    if cash is None:
        raise domain.account_not_found(domain.CASH)
    account = await store.account_by_id(conn, org_id, livemode, hold.account_id)
    assert account is not None  # a hold's account is a foreign key
    draft = domain.capture_entry(hold, account, cash, amount)
    released: store.Changes = {}
    store.release(released, org_id, livemode, hold)
    entry, replayed = await post_entry(conn, org_id, livemode, draft, released)
    if replayed:  # someone posted under this hold's key by hand: touch nothing
        raise conflict(f"idempotency key {draft.idempotency_key} is already used")
    hold = await store.finish_hold(conn, org_id, livemode, hold, domain.CAPTURED, at,
                                   entry_id=entry.id, captured=amount)
    return created(JournalHoldCaptured(_hold(hold), _entry(entry)))


@router.handler(HOLD_VOID, transaction=True)
async def void_hold(ctx: Context, scope: Scope, p: JournalHoldIdParams,
                    conn: asyncpg.Connection) -> JournalHold:
    domain.require_operator(scope.actor)
    org_id, livemode = scope.org_id, scope.livemode
    hold = await store.hold_by_id(conn, org_id, livemode, p.id.strip(), lock=True)
    if hold is None:
        raise domain.hold_not_found()
    domain.require_transition(hold, domain.VOIDED)
    released: store.Changes = {}
    store.release(released, org_id, livemode, hold)
    await store.apply(conn, released)
    return _hold(await store.finish_hold(conn, org_id, livemode, hold, domain.VOIDED,
                                         now()))


@router.handler(HOLD_GET)
async def get_hold(ctx: Context, scope: Scope, p: JournalHoldIdParams) -> JournalHold:
    domain.require_operator(scope.actor)
    hold = await store.hold_by_id(ctx.pool, scope.org_id, scope.livemode, p.id.strip())
    if hold is None:
        raise domain.hold_not_found()
    return _hold(hold)


# ---- operations shared by handlers (and usable on any connection) --------------------------


async def post_entry(conn: asyncpg.Connection, org_id: str, livemode: bool, draft: Draft,
                     changes: store.Changes | None = None) -> tuple[Entry, bool]:
    """§2.9 post_entry steps 3–5 for a draft that passed steps 1–2. Returns the entry and
    whether it is a replay (the key had already posted this very entry; nothing written).
    `changes` are balance changes to apply with the postings (a capture's release)."""
    known = await store.accounts_by_id(conn, org_id, livemode,
                                       (leg.account_id for leg in draft.postings))
    domain.require_accounts(draft, known)
    if draft.idempotency_key:
        key = (org_id, livemode, draft.idempotency_key)
        await store.lock_keys(conn, [key])
        stored = (await store.entries_by_keys(conn, [key])).get(key)
        if stored is not None:
            domain.require_same_payload(stored, draft)
            return stored, True
    return await store.insert_entry(conn, org_id, livemode, draft, now(), changes), False


async def expire_holds(ctx: Context) -> int:
    """The sweeper (§9.7): pending holds past their expiry become expired and release what
    they held, a batch per transaction. Returns how many expired."""
    assert ctx.pool is not None
    total = 0
    while True:
        async with ctx.pool.acquire() as conn, conn.transaction():
            expired = await store.expire_due_holds(conn, now(), SWEEP_BATCH)
        total += expired
        if expired < SWEEP_BATCH:
            return total


# ---- results ------------------------------------------------------------------------------


def _when(ts: datetime | None) -> str | None:
    return rfc3339(ts) if ts is not None else None


def _account(a: Account) -> JournalAccount:
    return JournalAccount(id=a.id, name=a.name, type=a.type, currency=a.currency,
                          normalBalance=a.normal_balance, createdAt=rfc3339(a.created_at),
                          metadata=a.metadata)


def _entry(e: Entry, replayed: bool = False) -> JournalEntry:
    return JournalEntry(
        id=e.id, description=e.description, createdAt=rfc3339(e.created_at),
        postings=[JournalPosting(id=p.id, entryId=p.entry_id, accountId=p.account_id,
                                 amount=p.amount, currency=p.currency,
                                 createdAt=rfc3339(p.created_at)) for p in e.postings],
        idempotencyKey=e.idempotency_key or None,
        paymentIntentId=e.payment_intent_id or None, refundId=e.refund_id or None,
        payoutId=e.payout_id or None, transferId=e.transfer_id or None,
        disputeId=e.dispute_id or None, metadata=e.metadata, replayed=replayed)


def _entry_reply(entry: Entry, replayed: bool) -> Reply:
    """201 with a new entry; 200 with the stored one when the key replayed it."""
    if replayed:
        return Reply(result=_entry(entry, replayed=True))
    return created(_entry(entry))


def _balance(b: Balance) -> JournalBalance:
    return JournalBalance(accountId=b.account_id, currency=b.currency, postedBalance=b.posted,
                          pendingBalance=b.pending, heldBalance=b.held,
                          availableBalance=b.available, updatedAt=_when(b.updated_at))


def _hold(h: Hold) -> JournalHold:
    return JournalHold(id=h.id, accountId=h.account_id, amount=h.amount, currency=h.currency,
                       status=h.status, expiresAt=rfc3339(h.expires_at),
                       createdAt=rfc3339(h.created_at), updatedAt=rfc3339(h.updated_at),
                       paymentIntentId=h.payment_intent_id or None,
                       capturedEntryId=h.captured_entry_id, capturedAmount=h.captured_amount)
