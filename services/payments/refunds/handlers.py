"""Refunds (payments.md §4.4): a refund of a succeeded payment intent, capped by what is
left of it (§8.1), made by the provider that took the payment.

The provider is called outside any database transaction (§10), in three steps: (1) one
transaction locks the intent, checks the cap and writes the refund `pending`, which reserves
its amount; (2) the provider refunds under a key derived from the refund id
(`provider_key`), so asking again never refunds twice; (3) one transaction records the
answer, the intent's `amountRefunded`, the events and, for a succeeded refund, the ledger
posting it owes, sent right after the commit.

The `Idempotency-Key` is kept on the refund's row (unique per organization and mode), not in
the runtime's key store, whose claim lasts one transaction: a retry finds the refund across
both steps and replays its answer, or asks the provider again when it never answered (502,
a crash). `redrive_unanswered` does that for refunds nobody retries."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg
from msgspec import UNSET

from contracts import Reply, Scope
from contracts.common import IdParams
from contracts.errors import Failure, invalid, not_found
from contracts.ids import new_id, rfc3339
from contracts.invoicing import INVOICE_PAYMENT_GET, InvoicePaymentParams
from contracts.journal import REFUND_RECORD, JournalRefundParams
from contracts.ledger import TOPUP_REVERSE, TopupReversalParams
from contracts.payments import (
    REFUND_CREATE,
    REFUND_GET,
    REFUND_LIST,
    Refund,
    RefundCreateParams,
    RefundListParams,
)
from services.payments.common import event, issuer, page, provider_failure, service_scope
from services.payments.intents import store as intents
from services.payments.intents.domain import INTENT_NOT_FOUND
from services.payments.postings import sender
from services.payments.providers.base import ProviderError, RefundRequest, provider_key
from services.payments.refunds import domain, store
from services.runtime.idempotency import in_progress, mismatch
from services.runtime.service import Context, Router

log = logging.getLogger(__name__)
router = Router()

# Providers keep idempotency keys for a day (Stripe: 24 h): past that, asking again could
# refund twice, so an older unanswered refund keeps its reservation for an operator.
REDRIVE_WINDOW = timedelta(hours=23)
REDRIVE_BATCH = 100


@router.handler(REFUND_CREATE)
async def create_refund(ctx: Context, scope: Scope, p: RefundCreateParams) -> Reply:
    asked = domain.asked(p)
    intent_id = asked.payment_intent_id or await _paying_intent(ctx, scope, asked.invoice_id)
    async with ctx.pool.acquire() as conn, conn.transaction():
        # Refunds of one intent (and retries of one refund) take their turn here.
        intent = await intents.intent(conn, scope.org_id, scope.livemode, intent_id, lock=True)
        if intent is None:
            raise not_found(INTENT_NOT_FOUND)
        row = await _by_key(conn, scope)
        if row is None:
            row = await _reserve(ctx, conn, scope, asked, intent)
        elif row["answered_at"] is not None:
            return _answer(row, scope.livemode, replayed=True)
        elif not await store.claim(conn, scope.org_id, scope.livemode, row["id"],
                                     _stuck(ctx)):
            raise in_progress()
    return _answer(await _drive(ctx, scope, row), scope.livemode)


@router.handler(REFUND_LIST)
async def list_refunds(ctx: Context, scope: Scope, p: RefundListParams) -> list[Refund]:
    rows = await store.refunds(ctx.pool, scope.org_id, scope.livemode,
                               p.paymentIntentId.strip(), p.invoiceId.strip(), page(p.limit),
                               p.startingAfter.strip())
    return [_refund(r, scope.livemode) for r in rows]


@router.handler(REFUND_GET)
async def get_refund(ctx: Context, scope: Scope, p: IdParams) -> Refund:
    row = await store.refund(ctx.pool, scope.org_id, scope.livemode, p.id.strip())
    if row is None:
        raise not_found(domain.REFUND_NOT_FOUND)
    return _refund(row, scope.livemode)


async def redrive_unanswered(ctx: Context) -> None:
    """The payment janitor, for refunds (Kill Bill's janitor): one the provider never
    answered (it was unreachable, or the process died between the reservation and the
    answer) has no reference to retrieve by and is asked again under the same key; one it
    answered `pending` (its webhook may never come) is retrieved by its reference — never
    refunded again — once it has waited the recovery window, and settled to the answer."""
    stuck = await store.take_unanswered(ctx.pool, _stuck(ctx), REDRIVE_WINDOW, REDRIVE_BATCH)
    settling = await store.take_settling(ctx.pool, _stuck(ctx), REDRIVE_BATCH)
    await asyncio.gather(*(_redrive(ctx, row) for row in stuck),
                         *(_retrieve(ctx, row) for row in settling))


async def _redrive(ctx: Context, row: asyncpg.Record) -> None:
    try:
        await _drive(ctx, service_scope(row["org_id"], row["livemode"]), row)
    except Failure as failure:
        log.warning("refund %s still unanswered: %s", row["id"], failure.error.message)


async def _retrieve(ctx: Context, row: asyncpg.Record) -> None:
    scope = service_scope(row["org_id"], row["livemode"])
    try:
        provider = await issuer(ctx, scope, row["provider"])
        result = await provider.retrieve_refund(row["provider_ref"])
    except (Failure, ProviderError) as e:
        log.warning("refund %s still pending: %s", row["id"], e)
        return
    if result.status != domain.PENDING:
        state = domain.answered(store.as_refund(row), result)
        # A top-up's credit, taken back before the refund, comes back if it failed.
        await _record(ctx, scope, row, state,
                      restore_credit=bool(row["topup_id"]) and state.status == domain.FAILED)


def _stuck(ctx: Context) -> timedelta:
    """How long an ask of the provider may take: an older one died with its process."""
    return timedelta(seconds=ctx.settings.payments_recovery_s)


# ---- the steps -----------------------------------------------------------------------------


async def _paying_intent(ctx: Context, scope: Scope, invoice_id: str) -> str:
    """The intent that paid the invoice, as invoicing knows it (§4.4 DO: refund that
    intent). Until invoicing is deployed nobody answers: there is no invoice."""
    paid = await ctx.ask(INVOICE_PAYMENT_GET, scope, InvoicePaymentParams(invoiceId=invoice_id))
    if paid is None:
        raise not_found(domain.INVOICE_NOT_FOUND)
    return paid.paymentIntentId


async def _by_key(conn: asyncpg.Connection, scope: Scope) -> asyncpg.Record | None:
    """The refund an earlier request with this `Idempotency-Key` made."""
    if scope.idempotency_key is None:
        return None
    row = await store.refund_by_key(conn, scope.org_id, scope.livemode, scope.idempotency_key)
    if row is not None and row["fingerprint"] != (scope.fingerprint or ""):
        raise mismatch()
    return row


async def _reserve(ctx: Context, conn: asyncpg.Connection, scope: Scope, asked: domain.Asked,
                   intent: asyncpg.Record) -> asyncpg.Record:
    """Step (1), with the intent locked: the refund, `pending`, holding its amount."""
    state = intents.as_intent(intent)
    domain.refundable(state.status)
    reserved = await store.reserved(conn, scope.org_id, scope.livemode, intent["id"])
    amount = domain.refund_amount(asked.amount, state.amount_received, reserved)
    await issuer(ctx, scope, state.provider_type)  # no provider to refund with: refused now
    row = await store.create_refund(
        conn, scope.org_id, scope.livemode, new_id("re_"), intent, asked.invoice_id,
        domain.Refund(domain.PENDING, amount, state.currency, asked.reason),
        scope.idempotency_key, scope.fingerprint or "")
    if row is None:  # a concurrent request took the key for another intent
        raise mismatch()
    await _announce(conn, scope, row, "refund.created")
    return row


async def _drive(ctx: Context, scope: Scope, row: asyncpg.Record) -> asyncpg.Record:
    """Steps (2) and (3): the provider's refund, then its answer recorded. An unreachable
    provider is 502 and leaves the refund pending, its amount still reserved."""
    state = store.as_refund(row)
    if row["topup_id"]:
        # A top-up's credit leaves the balance first: what was spent is never refunded.
        try:
            await sender.ask(ctx, scope.org_id, scope.livemode,
                             _topup_reversal(row, restore=False))
        except Failure as failure:
            if failure.error.status != 402:  # the ledger did not answer: still pending
                await store.release(ctx.pool, scope.org_id, scope.livemode, row["id"])
                raise
            return await _record(ctx, scope, row, domain.mark_failed(state,
                                                                     failure.error.message))
    provider = await issuer(ctx, scope, row["provider"])
    try:
        result = await provider.refund(RefundRequest(
            transaction_id=row["payment_ref"], amount=state.amount, currency=state.currency,
            reason=state.reason,
            idempotency_key=provider_key(scope.org_id, scope.livemode, "refund", row["id"])))
    except ProviderError as e:
        if e.kind == "unavailable":
            await store.release(ctx.pool, scope.org_id, scope.livemode, row["id"])
            raise provider_failure(e) from None
        # Refused: a top-up's credit taken back above comes back to the balance.
        return await _record(ctx, scope, row, domain.mark_failed(state, e.message),
                             restore_credit=bool(row["topup_id"]))
    return await _record(ctx, scope, row, domain.answered(state, result))


def _topup_reversal(row: asyncpg.Record, restore: bool) -> sender.Posting:
    """A top-up refund's move on the customer's balance, as the ledger takes it (once per
    refund and direction)."""
    return sender.Posting(
        f"topup-{'restore' if restore else 'reverse'}:{row['id']}", TOPUP_REVERSE,
        TopupReversalParams(refundId=row["id"], user=row["customer_id"],
                            currency=row["currency"], amount=row["amount"], restore=restore))


async def _record(ctx: Context, scope: Scope, row: asyncpg.Record, state: domain.Refund, *,
                  restore_credit: bool = False) -> asyncpg.Record:
    """Step (3): the provider's answer, recorded once, with what it changes."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        saved = await store.settle(conn, scope.org_id, scope.livemode, row["id"], state)
        if saved is None:  # another driver recorded the provider's answer first
            return await store.refund(conn, scope.org_id, scope.livemode, row["id"])
        postings = await settled(conn, scope, saved, restore_credit=restore_credit)
    for posting in postings:
        try:
            await sender.send(ctx, scope.org_id, scope.livemode, posting)
        except Failure as failure:  # still owed: `post_due` sends it
            log.warning("refund %s not posted to the ledger yet: %s", saved["id"],
                        failure.error.message)
    return saved


async def settled(conn: asyncpg.Connection, scope: Scope, saved: asyncpg.Record, *,
                  restore_credit: bool = False) -> list[sender.Posting]:
    """What a refund's new status changes, in the caller's transaction: the intent's
    `amountRefunded` and the journal's refund (succeeded), a top-up credit taken back and
    now restored (`restore_credit`), the event. The postings owed, to send after the
    commit. (Also a provider's webhook settling a `pending` refund.)"""
    postings = []
    if restore_credit:
        postings.append(_topup_reversal(saved, restore=True))
    if saved["status"] == domain.SUCCEEDED:
        await store.add_refunded(conn, scope.org_id, scope.livemode,
                                 saved["payment_intent_id"], saved["amount"])
        postings.append(sender.Posting(f"refund:{saved['id']}", REFUND_RECORD,
                                       JournalRefundParams(
            refundId=saved["id"], amount=saved["amount"], currency=saved["currency"],
            customerId=saved["customer_id"])))
    if postings:
        await sender.owe_many(conn, [(scope, posting) for posting in postings])
    if saved["status"] != domain.PENDING:  # a provider's `pending` settles later
        await _announce(conn, scope, saved, f"refund.{saved['status']}")
    return postings


async def _announce(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                    type: str) -> None:
    await event(conn, scope, type, "refund", row["id"], row["customer_id"],
                _refund(row, scope.livemode))


def _answer(row: asyncpg.Record, livemode: bool, *, replayed: bool = False) -> Reply:
    """201 with the refund; a refund the provider refused is a 400 (as a declined charge)."""
    if row["status"] == domain.FAILED:
        raise invalid("refund failed: " + row["failure_reason"])
    return Reply(result=_refund(row, livemode), status=201, replayed=replayed)


def _refund(r: asyncpg.Record, livemode: bool) -> Refund:
    return Refund(
        id=r["id"], amount=r["amount"], currency=r["currency"], status=r["status"],
        created=rfc3339(r["created_at"]), livemode=livemode,
        paymentIntentId=r["payment_intent_id"] or UNSET, invoiceId=r["invoice_id"] or UNSET,
        reason=r["reason"] or UNSET, providerRef=r["provider_ref"] or UNSET,
        failureReason=r["failure_reason"] or UNSET)
