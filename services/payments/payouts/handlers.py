"""Payouts (payments.md §4.6): the platform's cash paid out to a destination, a payment
method of the organization.

A payout is created only within the cash available (`domain.require_funds`): the payouts of
one organization, mode and currency take their turn under a lock, each reading what the
ones before it still owe the journal and then the journal's cash balance, so two payouts
never spend the same money. The payout owes the journal its entry (`payout:<id>`, cash out,
owed to the merchant) from the moment it exists; a cancel, or a failure the bank reports,
owes the reversal (`payout_reversal:<id>`). Both go through the postings outbox: each is
posted once, whatever crashes.

Payouts are records moved by the bank's answers: `settle_from_provider` is how an operator
(the bus endpoint `PAYOUT_SETTLE`) or a provider's webhook reports a payout in transit,
paid or failed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from msgspec import UNSET

from contracts import Reply, Scope
from contracts.common import IdParams
from contracts.errors import Failure, not_found, unavailable
from contracts.ids import new_id, now, rfc3339
from contracts.journal import (
    ACCOUNT_ENSURE,
    ACCOUNT_GET,
    BALANCE_GET,
    ENTRY_POST,
    PAYOUT_RECORD,
    JournalAccountEnsureParams,
    JournalAccountGetParams,
    JournalBalanceGetParams,
    JournalEntryPostParams,
    JournalPayoutParams,
    JournalPostingParams,
)
from contracts.payouts import (
    PAYOUT_CANCEL,
    PAYOUT_CREATE,
    PAYOUT_GET,
    PAYOUT_LIST,
    PAYOUT_SETTLE,
    Payout,
    PayoutCreateParams,
    PayoutListParams,
    PayoutSettleParams,
)
from services.payments.common import event, page, require_mint, service_scope
from services.payments.methods import store as methods
from services.payments.methods.domain import METHOD_NOT_FOUND
from services.payments.payouts import domain, store
from services.payments.postings import sender
from services.payments.postings.sender import Posting
from services.runtime.bus import created
from services.runtime.service import Context, Router

log = logging.getLogger(__name__)
router = Router()


@router.handler(PAYOUT_CREATE)
async def create_payout(ctx: Context, scope: Scope, p: PayoutCreateParams) -> Any:
    require_mint(scope.actor)
    new = domain.new_payout(p)
    async with ctx.pool.acquire() as conn, conn.transaction():
        if stored := await ctx.keys.replay(conn, scope):
            return stored
        destination = await methods.method(conn, scope.org_id, scope.livemode,
                                           new.destination_id, None)
        if destination is None:
            raise not_found(METHOD_NOT_FOUND)
        await store.lock_cash(conn, scope.org_id, scope.livemode, new.currency)
        owed = await store.on_their_way(conn, scope.org_id, scope.livemode, new.currency)
        domain.require_funds(await _cash(ctx, scope, new.currency), owed, new.amount)
        row = await store.create_payout(conn, scope.org_id, scope.livemode, new_id("po_"), new,
                                        destination["customer_id"])
        posting = Posting(f"payout:{row['id']}", PAYOUT_RECORD, JournalPayoutParams(
            payoutId=row["id"], amount=row["amount"], currency=row["currency"],
            merchantId=row["merchant_id"]))
        await sender.owe(conn, scope, posting)
        encoded = await ctx.keys.answer(conn, scope, created(await _announce(conn, scope, row)))
    await _post(ctx, scope, posting, new.currency)
    return encoded


@router.handler(PAYOUT_LIST)
async def list_payouts(ctx: Context, scope: Scope, p: PayoutListParams) -> list[Payout]:
    rows = await store.payouts(ctx.pool, scope.org_id, scope.livemode, p.status.strip(),
                               page(p.limit), p.startingAfter.strip())
    return [_payout(r, scope.livemode) for r in rows]


@router.handler(PAYOUT_GET)
async def get_payout(ctx: Context, scope: Scope, p: IdParams) -> Payout:
    return _payout(await _load(ctx.pool, scope, p.id), scope.livemode)


@router.handler(PAYOUT_CANCEL)
async def cancel_payout(ctx: Context, scope: Scope, p: IdParams) -> Any:
    require_mint(scope.actor)
    async with ctx.pool.acquire() as conn, conn.transaction():
        if stored := await ctx.keys.replay(conn, scope):
            return stored
        payout, reversal = await _change(ctx, conn, scope, p.id, domain.cancel)
        encoded = await ctx.keys.answer(conn, scope, Reply(result=payout))
    if reversal is not None:
        ctx.state.postings.post_soon(scope.org_id, scope.livemode, reversal)
    return encoded


@router.handler(PAYOUT_SETTLE)
async def settle_payout(ctx: Context, scope: Scope, p: PayoutSettleParams) -> Payout:
    require_mint(scope.actor)
    return await settle_from_provider(ctx, scope, p.id, p.status.strip(),
                                      provider_ref=p.providerRef.strip(),
                                      failure_code=p.failureCode.strip(),
                                      failure_message=p.failureMessage)


async def settle_from_provider(ctx: Context, scope: Scope, payout_id: str, status: str, *,
                               provider_ref: str = "", failure_code: str = "",
                               failure_message: str = "") -> Payout:
    """What the bank did with a payout (`in_transit`, `paid`, `failed`), recorded once: a
    report repeated (a webhook delivered twice) changes nothing more. A failed payout's
    money is back: its reversal is owed to the journal."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        payout, reversal = await settle_within(ctx, conn, scope, payout_id, status,
                                               provider_ref=provider_ref,
                                               failure_code=failure_code,
                                               failure_message=failure_message)
    if reversal is not None:
        ctx.state.postings.post_soon(scope.org_id, scope.livemode, reversal)
    return payout


async def settle_within(ctx: Context, conn: asyncpg.Connection, scope: Scope, payout_id: str,
                        status: str, *, provider_ref: str = "", failure_code: str = "",
                        failure_message: str = "") -> tuple[Payout, Posting | None]:
    """`settle_from_provider` in the caller's transaction (a provider's webhook); the
    reversal it owes, if any, for the caller to send after the commit."""
    def settled(before: domain.Payout) -> domain.Payout:
        if before.status == status:
            return before
        return domain.settled(before, status, now(), provider_ref, failure_code,
                              failure_message)

    return await _change(ctx, conn, scope, payout_id, settled)


# ---- the steps -----------------------------------------------------------------------------


async def _load(db: Any, scope: Scope, payout_id: str, *, lock: bool = False,
                ) -> asyncpg.Record:
    row = await store.payout(db, scope.org_id, scope.livemode, payout_id.strip(), lock=lock)
    if row is None:
        raise not_found(domain.PAYOUT_NOT_FOUND)
    return row


async def _post(ctx: Context, scope: Scope, posting: Posting, currency: str) -> None:
    """A payout's entry, sent under the cash lock and marked posted before the lock is let
    go: a payout deciding meanwhile never sees it both in the journal's cash and on its way
    (it would count it twice). Unanswered, it stays owed: the job sends it."""
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            await store.lock_cash(conn, scope.org_id, scope.livemode, currency)
            await sender.send_within(ctx, conn, scope.org_id, scope.livemode, posting)
    except Failure as failure:
        log.warning("payout %s not posted to the journal yet: %s", posting.params.payoutId,
                    failure.error.message)


async def _cash(ctx: Context, scope: Scope, currency: str) -> int:
    """The journal's available cash in `currency` (none before the first payment)."""
    ledger = service_scope(scope.org_id, scope.livemode)
    try:
        account = await ctx.ask(ACCOUNT_GET, ledger, JournalAccountGetParams(name=domain.CASH))
    except Failure as failure:
        if failure.error.status == 404:
            return 0
        raise
    if account is None:
        raise unavailable()
    balance = await ctx.ask(BALANCE_GET, ledger, JournalBalanceGetParams(
        accountId=account.id, currency=currency))
    if balance is None:
        raise unavailable()
    return balance.availableBalance


async def _change(ctx: Context, conn: asyncpg.Connection, scope: Scope, payout_id: str,
                  change: Callable[[domain.Payout], domain.Payout],
                  ) -> tuple[Payout, Posting | None]:
    """Apply `change` to the locked payout, with its event and, when its money comes back,
    the reversal it owes (returned, to be sent after the commit)."""
    row = await _load(conn, scope, payout_id, lock=True)
    before = store.as_payout(row)
    after = change(before)
    if after == before:
        return _payout(row, scope.livemode), None
    reversal = None
    if domain.reversed_by(before.status, after.status):
        reversal = await _reversal(ctx, scope, row)
        await sender.owe(conn, scope, reversal)
    saved = await store.save_payout(conn, scope.org_id, scope.livemode, row["id"], after)
    return await _announce(conn, scope, saved), reversal


async def _reversal(ctx: Context, scope: Scope, row: asyncpg.Record) -> Posting:
    """The payout's entry undone: cash back, owed to the merchant again. The journal has no
    operation for it, so it is an entry on the two accounts (found or created now, as the
    payout's own entry does), under its own key."""
    ledger = service_scope(scope.org_id, scope.livemode)
    merchant = f"merchant_settlement:{row['merchant_id']}"
    amount, currency = row["amount"], row["currency"]
    accounts = await asyncio.gather(*(
        ctx.ask(ACCOUNT_ENSURE, ledger, JournalAccountEnsureParams(name=name, type=kind,
                                                                   currency=currency))
        for name, kind in ((domain.CASH, "asset"), (merchant, "liability"))))
    if None in accounts:
        raise unavailable()
    cash, owed = accounts
    return Posting(f"payout_reversal:{row['id']}", ENTRY_POST, JournalEntryPostParams(
        idempotencyKey=f"payout_reversal:{row['id']}", payoutId=row["id"],
        description=f"Payout {row['id']} reversed: {amount} {currency} back from merchant "
                    f"{row['merchant_id']}",
        postings=[JournalPostingParams(accountId=cash.id, amount=amount, currency=currency),
                  JournalPostingParams(accountId=owed.id, amount=-amount, currency=currency)]))


async def _announce(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record) -> Payout:
    payout = _payout(row, scope.livemode)
    await event(conn, scope, domain.event_type(payout.status), "payout", payout.id,
                row["merchant_id"], payout)
    return payout


def _payout(r: asyncpg.Record, livemode: bool) -> Payout:
    failed = bool(r["failure_code"])  # §2.6: the code and the message, both or neither
    return Payout(
        id=r["id"], amount=r["amount"], currency=r["currency"], status=r["status"],
        destinationType=r["destination_type"], destinationId=r["destination_id"],
        created=rfc3339(r["created_at"]), livemode=livemode,
        description=r["description"] or UNSET,
        arrivalDate=rfc3339(r["arrival_date"]) if r["arrival_date"] else UNSET,
        providerRef=r["provider_ref"] or UNSET,
        failureCode=r["failure_code"] if failed else UNSET,
        failureMessage=r["failure_message"] if failed else UNSET,
        metadata=r["metadata"] if r["metadata"] is not None else UNSET)
