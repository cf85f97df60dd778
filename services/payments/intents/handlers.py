"""Payment intents (payments.md §3.1–§3.6) and setup intents (§3.7).

Every change commits with its billing event (outbox) and is idempotent under the request's
`Idempotency-Key`. Providers are called outside any transaction: a confirm between a write
that moves the intent to `processing` (a second confirm finds it so: 409) and one that
applies the provider's answer; a capture or a hold's release between a check and the
record of the answer. Every provider call's idempotency key is derived from the intent and
the operation (`provider_key`), so a retry never charges, captures or releases twice at the
provider. A succeeded payment owes the ledger its journal entry (`postings/`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from msgspec import UNSET

from contracts import Reply, Scope
from contracts.common import IdParams
from contracts.errors import Failure, invalid, not_found
from contracts.ids import new_id, now, rfc3339
from contracts.journal import PAYMENT_RECORD, JournalPaymentParams
from contracts.payments import (
    PAYMENT_INTENT_CANCEL,
    PAYMENT_INTENT_CAPTURE,
    PAYMENT_INTENT_CONFIRM,
    PAYMENT_INTENT_CREATE,
    PAYMENT_INTENT_GET,
    PAYMENT_INTENT_LIST,
    PAYMENT_METHOD_UPDATED,
    SETUP_INTENT_CANCEL,
    SETUP_INTENT_CONFIRM,
    SETUP_INTENT_CREATE,
    SETUP_INTENT_GET,
    PaymentIntent,
    PaymentIntentCancelParams,
    PaymentIntentCaptureParams,
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
    PaymentIntentListParams,
    SetupIntent,
    SetupIntentCancelParams,
    SetupIntentConfirmParams,
    SetupIntentCreateParams,
)
from contracts.rules import user_id
from services.payments.common import (
    Announced,
    event,
    events_together,
    issuer,
    new_events,
    nudge_relay,
    page,
    provider_customer,
    provider_failure,
    service_scope,
)
from services.payments.intents import domain, store
from services.payments.intents.domain import Intent
from services.payments.methods import store as methods
from services.payments.methods.domain import METHOD_NOT_FOUND
from services.payments.methods.handlers import method_json
from services.payments.postings import sender
from services.payments.postings.sender import Posting
from services.payments.providers.base import (
    PaymentRequest,
    PaymentResult,
    Provider,
    ProviderError,
    provider_key,
)
from services.runtime.bus import created
from services.runtime.service import Context, Router

log = logging.getLogger(__name__)
router = Router()


# ---- payment intents ---------------------------------------------------------------------


@router.handler(PAYMENT_INTENT_CREATE)
async def create_intent(ctx: Context, scope: Scope, p: PaymentIntentCreateParams) -> Any:
    """One statement; in a transaction only with a key, which keeps the answer with it."""
    if scope.idempotency_key:
        return await ctx.transaction(scope, p, _create_intent)
    return await _create_intent(ctx, scope, p, ctx.pool)


async def _create_intent(ctx: Context, scope: Scope, p: PaymentIntentCreateParams,
                         db: asyncpg.Pool | asyncpg.Connection) -> Reply:
    new = domain.new_intent(p)
    at = now()
    intent = _intent(_new_row(new_id("pi_"), new, at), scope.livemode)
    announced: Announced = ("payment_intent.created", "payment_intent", scope, intent.id,
                            intent.customerId, intent)
    ((event_id, payload),) = new_events([announced])
    await store.create_intent(db, scope.org_id, scope.livemode, intent.id, new, at,
                              (event_id, announced[0], payload))
    nudge_relay()
    return created(intent)


@router.handler(PAYMENT_INTENT_LIST)
async def list_intents(ctx: Context, scope: Scope, p: PaymentIntentListParams,
                       ) -> list[PaymentIntent]:
    rows = await store.intents(ctx.pool, scope.org_id, scope.livemode, user_id(p.customerId),
                               page(p.limit), p.startingAfter.strip())
    return [_intent(r, scope.livemode) for r in rows]


@router.handler(PAYMENT_INTENT_GET)
async def get_intent(ctx: Context, scope: Scope, p: IdParams) -> PaymentIntent:
    return _intent(await _load(ctx.pool, scope, p.id), scope.livemode)


async def _load(db: Any, scope: Scope, intent_id: str, *, lock: bool = False,
                ) -> asyncpg.Record:
    row = await store.intent(db, scope.org_id, scope.livemode, intent_id, lock=lock)
    if row is None:
        raise not_found(domain.INTENT_NOT_FOUND)
    return row


@router.handler(PAYMENT_INTENT_CONFIRM)
async def confirm_intent(ctx: Context, scope: Scope, p: PaymentIntentConfirmParams) -> Any:
    """Charge (or authorize) the intent's method, bracketed as payments.md §10 says: the
    intent goes to `processing` and commits; the provider is called outside any
    transaction, with a key derived from the intent and the attempt (a retry, or the job
    after a crash, replays the same charge); its answer is applied by a second write,
    with the event, the ledger posting a succeeded payment owes and the request's key."""
    async with ctx.pool.acquire() as conn, _holding_key(conn, scope):
        if stored := await ctx.keys.replay(conn, scope):
            return stored
        row, provider, request = await _begin_confirm(ctx, conn, scope, p)
    attempt = row["attempts"]
    try:
        result = await _charge(provider, request, row["capture_method"])
    except ProviderError as e:
        if e.kind == "unavailable":
            # The charge may have been made (a timeout): the intent stays `processing` for
            # the payment janitor, which asks the provider again under the same key.
            raise provider_failure(e) from None
        # A decline is final for this attempt: recorded, announced, answered; the next
        # confirm is a new attempt (a new provider key). §3.4: 400, the intent back to
        # requires_payment_method, the §1.10 text.
        declined = e.message
        failure = invalid(("authorization failed: " if row["capture_method"] == "manual"
                           else "charge failed: ") + declined)
        return await _settle(ctx, scope, row, _processing(attempt),
                             lambda i: domain.payment_failed(i, declined), attempt + 1,
                             Reply(error=failure.error))
    return await _settle(ctx, scope, row, _processing(attempt),
                         lambda i: domain.charged(i, result, provider.name))


def _holding_key(conn: asyncpg.Connection, scope: Scope) -> AbstractAsyncContextManager:
    """A transaction for a request with a key, which it holds until its answer is stored;
    without one, each write is a statement of its own, conditional on the version of the
    intent it read."""
    return conn.transaction() if scope.idempotency_key else nullcontext()


async def _begin_confirm(ctx: Context, conn: asyncpg.Connection, scope: Scope,
                         p: PaymentIntentConfirmParams,
                         ) -> tuple[asyncpg.Record, Provider, PaymentRequest]:
    """The intent moved to `processing` (as written, with its version), and the provider
    and request that charge it. Read once and written once: in a transaction the row is
    locked (a second confirm waits); outside one, a confirm that lost the race to write
    reads the intent again (and finds it `processing`: 409)."""
    while True:
        row = await store.confirming(conn, scope.org_id, scope.livemode, p.id,
                                     p.paymentMethodId.strip(),
                                     lock=conn.is_in_transaction())
        if row is None:
            raise not_found(domain.INTENT_NOT_FOUND)
        state = domain.begin_confirm(store.as_intent(row), p.paymentMethodId)
        provider, request = await _confirmation(ctx, scope, row, state)
        written = await store.save_intent(conn, scope.org_id, scope.livemode, row["id"], state,
                                          row["attempts"], version=row["version"])
        if written is not None:
            return written, provider, request


def _processing(attempt: int) -> Callable[[asyncpg.Record], bool]:
    """Still the confirm of `attempt`, waiting for its provider's answer."""
    return lambda row: row["status"] == domain.PROCESSING and row["attempts"] == attempt


def _held(row: asyncpg.Record) -> bool:
    """Still authorized, waiting to be captured or released."""
    return row["status"] == domain.REQUIRES_CAPTURE


async def _confirmation(ctx: Context, scope: Scope, row: asyncpg.Record, state: Intent,
                        ) -> tuple[Provider, PaymentRequest]:
    """The provider and the request that confirm `state` (its method, the provider's
    customer, the attempt's key), from the intent as `store.confirming` reads it."""
    if row["method_customer_id"] != row["customer_id"]:  # (None: no such method)
        raise invalid(METHOD_NOT_FOUND, "paymentMethodId")
    provider = await issuer(ctx, scope, row["method_provider_type"])
    return provider, PaymentRequest(
        amount=state.amount, currency=state.currency, token=row["method_provider_ref"],
        customer_id=row["provider_customers"].get(provider.name, ""),
        description=row["description"], metadata={"paymentIntentId": row["id"]},
        idempotency_key=provider_key(scope.org_id, scope.livemode, "confirm", row["id"],
                                     row["attempts"]))


async def settle_interrupted_confirms(ctx: Context) -> None:
    """The payment janitor, for intents left `processing` past the recovery window (Kill
    Bill's janitor): one the provider answered `processing` (its webhook may never come) is
    retrieved by the provider's reference — never charged again; one whose provider never
    answered (a timeout, a crash between the two transactions) has no reference to retrieve
    by and is asked again under the same key, which replays the provider's first answer
    instead of charging twice. Either answer is applied as the confirm's would have been:
    its event, its ledger posting."""
    after = timedelta(seconds=ctx.settings.payments_recovery_s)  # its call has ended by then
    for row in await store.interrupted_confirms(ctx.pool, after, 50):
        scope = service_scope(row["org_id"], row["livemode"])
        try:
            answer = await _provider_answer(ctx, scope, row)
        except (Failure, ProviderError) as e:
            log.warning("payment intent %s still processing: %s", row["id"], e)
            continue
        if answer is not None:
            outcome, attempts = answer
            await _settle(ctx, scope, row, _processing(row["attempts"]), outcome, attempts)


async def _provider_answer(ctx: Context, scope: Scope, row: asyncpg.Record,
                           ) -> tuple[Callable[[Intent], Intent], int | None] | None:
    """What the provider says of the intent's charge now: the change it makes and the
    confirm attempts to record (a decline ends an attempt), or None while it is still
    processing there. A provider that does not answer is raised."""
    state = store.as_intent(row)
    try:
        if row["provider_ref"]:
            provider = await issuer(ctx, scope, row["provider_type"])
            result = await provider.retrieve_payment(row["provider_ref"])
        else:
            confirming = await store.confirming(ctx.pool, scope.org_id, scope.livemode,
                                                row["id"], state.payment_method_id, lock=False)
            provider, request = await _confirmation(ctx, scope, confirming, state)
            result = await _charge(provider, request, state.capture_method)
    except ProviderError as e:
        if e.kind != "declined":
            raise
        declined = e.message
        return (lambda i: domain.payment_failed(i, declined)), row["attempts"] + 1
    if result.status == domain.PROCESSING and row["provider_ref"]:
        return None
    return (lambda i: domain.charged(i, result, provider.name)), None


async def _charge(provider: Provider, request: PaymentRequest, capture_method: str,
                  ) -> PaymentResult:
    return await (provider.authorize(request) if capture_method == "manual"
                  else provider.charge(request))


async def _settle(ctx: Context, scope: Scope, seen: asyncpg.Record,
                  still: Callable[[asyncpg.Record], bool], outcome: Callable[[Intent], Intent],
                  attempts: int | None = None, reply: Reply | None = None) -> bytes:
    """Apply a provider's answer once: in one statement if the intent is as this request
    last read or wrote it before the call (`seen`, with its version); otherwise under its
    lock, if it is `still` as the call left it — one changed meanwhile (by the job, or a
    concurrent request under the same provider key) is answered as it stands. `attempts`:
    the confirm attempts to record (default: unchanged)."""
    settled = await _settle_seen(ctx, scope, seen, outcome, attempts, reply)
    if settled is not None:
        return settled
    intent_id = seen["id"]
    posting = None
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _load(conn, scope, intent_id, lock=True)
        if still(row):
            row = await store.save_intent(
                conn, scope.org_id, scope.livemode, intent_id, outcome(store.as_intent(row)),
                row["attempts"] if attempts is None else attempts)
            intent = await announce(conn, scope, row)
            posting = await owe_payment(conn, scope, intent)
        else:
            intent = _intent(row, scope.livemode)
        reply = reply or Reply(result=intent)
        encoded = await ctx.keys.answer(conn, scope, reply)
    if posting is not None:  # the answer does not wait for the journal
        ctx.state.postings.post_soon(scope.org_id, scope.livemode, posting)
    return encoded


async def _settle_seen(ctx: Context, scope: Scope, seen: asyncpg.Record,
                       outcome: Callable[[Intent], Intent], attempts: int | None,
                       reply: Reply | None) -> bytes | None:
    """`_settle` in one statement — the intent's change, its event, the posting it owes —
    made beforehand from the intent as seen; None if it changed since (nothing done)."""
    state = outcome(store.as_intent(seen))
    attempts = seen["attempts"] if attempts is None else attempts
    intent = _intent(store.as_saved(seen, state, attempts), scope.livemode)
    announced = _announced(scope, intent)
    ((event_id, payload),) = new_events([announced])
    posting = _payment_posting(intent)
    async with ctx.pool.acquire() as conn, _holding_key(conn, scope):
        if await store.settle(
                conn, scope.org_id, scope.livemode, intent.id, state, attempts,
                seen["version"], (event_id, announced[0], payload),
                posting and sender.recorded(posting), sender.LEASE) is None:
            return None
        encoded = await ctx.keys.answer(conn, scope, reply or Reply(result=intent))
    nudge_relay()
    if posting is not None:
        ctx.state.postings.post_soon(scope.org_id, scope.livemode, posting)
    return encoded


async def owe_payment(conn: asyncpg.Connection, scope: Scope, intent: PaymentIntent,
                      ) -> Posting | None:
    """The posting a succeeded intent owes, recorded in the caller's transaction."""
    posting = _payment_posting(intent)
    if posting is not None:
        await sender.owe(conn, scope, posting)
    return posting


def _payment_posting(intent: PaymentIntent) -> Posting | None:
    """What a succeeded intent owes the ledger: its payment (the journal: cash in, owed to
    the customer), posted once under `payment:<intent>`."""
    if intent.status != domain.SUCCEEDED:
        return None
    return Posting(f"payment:{intent.id}", PAYMENT_RECORD, JournalPaymentParams(
        paymentIntentId=intent.id, amount=intent.amountReceived, currency=intent.currency,
        customerId=intent.customerId))


@router.handler(PAYMENT_INTENT_CAPTURE)
async def capture_intent(ctx: Context, scope: Scope, p: PaymentIntentCaptureParams) -> Any:
    """Captured at the provider outside any transaction (its key is the intent's: a retry,
    or a concurrent capture, captures once), then recorded with the payment the ledger is
    owed."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        if stored := await ctx.keys.replay(conn, scope):
            return stored
        row = await _load(conn, scope, p.id)
        state = store.as_intent(row)
        amount = domain.capture_amount(state, p.amountToCapture)  # checked before the provider
    provider = await issuer(ctx, scope, state.provider_type)
    try:
        result = await provider.capture(
            state.provider_ref, amount,
            provider_key(scope.org_id, scope.livemode, "capture", p.id))
    except ProviderError as e:
        raise provider_failure(e, "capture failed: ") from None
    return await _settle(ctx, scope, row, _held,
                         lambda i: domain.captured(i, result.amount or amount))


@router.handler(PAYMENT_INTENT_CANCEL)
async def cancel_intent(ctx: Context, scope: Scope, p: PaymentIntentCancelParams) -> Any:
    """A held payment is released at the provider (outside any transaction, under the
    intent's key) before the intent says so; any other cancel is one transaction."""
    reason = p.cancellationReason.strip()
    async with ctx.pool.acquire() as conn, conn.transaction():
        if stored := await ctx.keys.replay(conn, scope):
            return stored
        row = await _load(conn, scope, p.id, lock=True)
        before = store.as_intent(row)
        state = domain.cancel(before, reason, now())
        if before.status != domain.REQUIRES_CAPTURE:
            saved = await store.save_intent(conn, scope.org_id, scope.livemode, row["id"],
                                            state, row["attempts"])
            reply = Reply(result=await announce(conn, scope, saved))
            return await ctx.keys.answer(conn, scope, reply)
    provider = await issuer(ctx, scope, before.provider_type)
    try:
        await provider.cancel(before.provider_ref,
                              provider_key(scope.org_id, scope.livemode, "cancel", p.id))
    except ProviderError as e:
        raise provider_failure(e, "cancel failed: ") from None
    return await _settle(ctx, scope, row, _held, lambda i: domain.cancel(i, reason, now()))


async def announce(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                    ) -> PaymentIntent:
    return (await announce_many(conn, [(scope, row)]))[0]


async def announce_many(conn: asyncpg.Connection, changed: list[tuple[Scope, asyncpg.Record]],
                        also: list[Announced] | None = None) -> list[PaymentIntent]:
    """The events of changed intents (a batch of top-ups' charges), with the batch's other
    events (`also`), in one statement."""
    intents = [_intent(row, scope.livemode) for scope, row in changed]
    await events_together(conn, [
        _announced(scope, intent) for (scope, _), intent in zip(changed, intents, strict=True)
    ] + (also or []))
    return intents


def paid_events(paid: list[tuple[Scope, store.Paid]], created_at: datetime,
                ) -> list[Announced]:
    """The events of payments `store.insert_paid` records created at `created_at`, made
    before the statement that inserts them (and their events) runs: each intent as its row
    will read."""
    return [_announced(scope, _intent(_paid_row(x, created_at), scope.livemode))
            for scope, x in paid]


# What a new intent's row holds in the columns an insert leaves at their defaults.
_DEFAULTS: dict[str, Any] = {
    "amount_capturable": 0, "amount_received": 0, "amount_refunded": 0,
    "payment_method_id": "", "invoice_id": "", "description": "", "provider_ref": "",
    "last_error": "", "metadata": None, "canceled_at": None, "cancellation_reason": "",
    "client_secret": ""}


def _new_row(intent_id: str, n: domain.NewIntent, created_at: datetime) -> dict[str, Any]:
    """The row `store.create_intent` writes."""
    i = n.intent
    return {**_DEFAULTS, "id": intent_id, "customer_id": n.customer_id, "amount": i.amount,
            "currency": i.currency, "status": i.status, "capture_method": i.capture_method,
            "confirmation_method": n.confirmation_method, "created_at": created_at,
            "payment_method_id": i.payment_method_id, "invoice_id": n.invoice_id,
            "description": n.description, "metadata": n.metadata}


def _paid_row(x: store.Paid, created_at: datetime) -> dict[str, Any]:
    """The row `store.insert_paid` writes for `x`."""
    return {**_DEFAULTS, "id": x.intent_id, "customer_id": x.customer_id, "amount": x.amount,
            "currency": x.currency, "status": domain.SUCCEEDED, "capture_method": "automatic",
            "confirmation_method": "automatic", "amount_received": x.amount,
            "created_at": created_at, "payment_method_id": x.payment_method_id,
            "description": x.description, "provider_ref": x.provider_ref,
            "metadata": x.metadata}


def _announced(scope: Scope, intent: PaymentIntent) -> Announced:
    return (domain.event_type(intent.status), "payment_intent", scope, intent.id,
            intent.customerId, intent)


def _intent(r: asyncpg.Record, livemode: bool) -> PaymentIntent:
    return PaymentIntent(
        id=r["id"], customerId=r["customer_id"], amount=r["amount"], currency=r["currency"],
        status=r["status"], captureMethod=r["capture_method"],
        confirmationMethod=r["confirmation_method"], amountCapturable=r["amount_capturable"],
        amountReceived=r["amount_received"], amountRefunded=r["amount_refunded"],
        created=rfc3339(r["created_at"]), livemode=livemode,
        paymentMethodId=r["payment_method_id"] or UNSET, invoiceId=r["invoice_id"] or UNSET,
        description=r["description"] or UNSET, providerRef=r["provider_ref"] or UNSET,
        lastError=r["last_error"] or UNSET,
        metadata=r["metadata"] if r["metadata"] is not None else UNSET,
        canceledAt=rfc3339(r["canceled_at"]) if r["canceled_at"] else UNSET,
        cancellationReason=r["cancellation_reason"] or UNSET,
        clientSecret=r["client_secret"] or UNSET)


# ---- setup intents -----------------------------------------------------------------------


@router.handler(SETUP_INTENT_CREATE, transaction=True)
async def create_setup(ctx: Context, scope: Scope, p: SetupIntentCreateParams,
                       conn: asyncpg.Connection) -> Reply:
    customer, state, usage = domain.new_setup(p.customerId, p.paymentMethodId, p.usage)
    row = await store.create_setup(conn, scope.org_id, scope.livemode, new_id("seti_"),
                                   customer, state, usage)
    return created(await _announce_setup(conn, scope, row, "setup_intent.created"))


@router.handler(SETUP_INTENT_GET)
async def get_setup(ctx: Context, scope: Scope, p: IdParams) -> SetupIntent:
    return _setup(await _load_setup(ctx.pool, scope, p.id), scope.livemode)


async def _load_setup(db: Any, scope: Scope, setup_id: str, *, lock: bool = False,
                      ) -> asyncpg.Record:
    row = await store.setup(db, scope.org_id, scope.livemode, setup_id, lock=lock)
    if row is None:
        raise not_found(domain.SETUP_NOT_FOUND)
    return row


@router.handler(SETUP_INTENT_CONFIRM, transaction=True)
async def confirm_setup(ctx: Context, scope: Scope, p: SetupIntentConfirmParams,
                        conn: asyncpg.Connection) -> Any:
    """The provider saves the method for later payments; the method is then verified
    (§3.7 DO). A method saved without a provider reference has nothing to verify: the
    offline provider lets it through unverified (the reference's internal path)."""
    row = await _load_setup(conn, scope, p.id, lock=True)
    state = domain.begin_setup(store.as_setup(row), p.paymentMethodId)
    method = await methods.method(conn, scope.org_id, scope.livemode, state.payment_method_id,
                                None, lock=True)
    if method is None or method["customer_id"] != row["customer_id"]:
        raise invalid(METHOD_NOT_FOUND, "paymentMethodId")
    provider = await issuer(ctx, scope, method["provider_type"])
    if not method["provider_ref"]:
        if provider.name != "offline":
            raise invalid("payment method has no provider reference", "paymentMethodId")
        state = domain.set_up(state, "internal", provider.name)
    else:
        try:
            customer_ref = await provider_customer(conn, scope, provider, row["customer_id"])
            result = await provider.setup(
                customer_ref, method["provider_ref"],
                provider_key(scope.org_id, scope.livemode, "setup", row["id"]))
        except ProviderError as e:
            if e.kind == "unavailable":
                raise provider_failure(e) from None
            saved = await store.save_setup(conn, scope.org_id, scope.livemode, row["id"],
                                           domain.setup_failed(state, e.message))
            await _announce_setup(conn, scope, saved)
            return Reply(error=invalid("setup failed: " + e.message).error)
        ref = result.method.provider_ref if result.method else method["provider_ref"]
        verified = method_json(await methods.mark_verified(
            conn, scope.org_id, scope.livemode, method["id"], ref, provider.name),
            scope.livemode)
        # Announced like any change of the method: the ledger learns of it from this.
        await event(conn, scope, PAYMENT_METHOD_UPDATED, "payment_method", verified.id,
                    verified.customerId, verified)
        state = domain.set_up(state, result.setup_id, provider.name)
    saved = await store.save_setup(conn, scope.org_id, scope.livemode, row["id"], state)
    return await _announce_setup(conn, scope, saved)


@router.handler(SETUP_INTENT_CANCEL, transaction=True)
async def cancel_setup(ctx: Context, scope: Scope, p: SetupIntentCancelParams,
                       conn: asyncpg.Connection) -> SetupIntent:
    row = await _load_setup(conn, scope, p.id, lock=True)
    state = domain.cancel_setup(store.as_setup(row), p.cancellationReason.strip(), now())
    saved = await store.save_setup(conn, scope.org_id, scope.livemode, row["id"], state)
    return await _announce_setup(conn, scope, saved)


async def _announce_setup(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                          type: str = "") -> SetupIntent:
    """`type`: the change's event type; by default the one of the status it reached."""
    setup = _setup(row, scope.livemode)
    type = type or domain.setup_event_type(setup.status)
    await event(conn, scope, type, "setup_intent", setup.id, setup.customerId, setup)
    return setup


def _setup(r: asyncpg.Record, livemode: bool) -> SetupIntent:
    return SetupIntent(
        id=r["id"], customerId=r["customer_id"], status=r["status"], usage=r["usage"],
        created=rfc3339(r["created_at"]), livemode=livemode,
        paymentMethodId=r["payment_method_id"] or UNSET,
        providerRef=r["provider_ref"] or UNSET, lastError=r["last_error"] or UNSET,
        metadata=r["metadata"] if r["metadata"] is not None else UNSET,
        canceledAt=rfc3339(r["canceled_at"]) if r["canceled_at"] else UNSET,
        cancellationReason=r["cancellation_reason"] or UNSET)
