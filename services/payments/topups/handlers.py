"""Top-ups (payments.md §4.3): charge a saved method (`/topup`, admin) or a one-time token
(`/topup/token`, user), then credit the customer's balance.

Exactly once, whatever fails: the top-up row is claimed under the request's key before the
provider is called (`started`); the provider's key is the top-up's, so charging again after
a crash or a timeout replays the same charge; the charge, its payment intent and the ledger
postings it owes (the credit, the journal's payment) commit together (`charged`); the
credit is sent to the ledger, which credits a top-up once, while the payment goes out in the
background; the answer is kept for replays (`completed`). A top-up left unfinished is
taken over by a retry of the same request or by the `finish_unfinished` job. Concurrent
top-ups share each of these writes (`batches.py`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec

from contracts import ErrorCode, Reply, Scope
from contracts.errors import Failure, conflict, not_found, payment_required
from contracts.ids import new_id
from contracts.journal import PAYMENT_RECORD, JournalPaymentParams
from contracts.ledger import TOPUP_CREDIT, TopupCreditParams
from contracts.payments import (
    TOPUP_SAVED_METHOD,
    TOPUP_TOKEN,
    TopupParams,
    TopupResult,
    TopupTokenParams,
)
from services.payments.common import (
    issuer,
    provider_failure,
    provider_for,
    service_scope,
)
from services.payments.methods import store as methods
from services.payments.methods.domain import METHOD_NOT_FOUND
from services.payments.postings import sender
from services.payments.postings.sender import Posting
from services.payments.providers.base import PaymentRequest, Provider, ProviderError, provider_key
from services.payments.selection import NO_PROCESSOR, NoProcessor
from services.payments.topups import domain, store
from services.payments.topups.batches import Charge, Claim, Completion
from services.payments.topups.domain import Topup
from services.runtime.idempotency import fingerprint_of
from services.runtime.service import Context, Router

log = logging.getLogger(__name__)
router = Router()

_encode = msgspec.json.Encoder().encode


def _recovery(ctx: Context) -> timedelta:
    """How long before a top-up's worker is presumed gone."""
    return timedelta(seconds=ctx.settings.payments_recovery_s)


@router.handler(TOPUP_SAVED_METHOD)
async def topup_saved_method(ctx: Context, scope: Scope, p: TopupParams) -> Any:
    topup = domain.saved_method_topup(p, domain.bounds(ctx.settings.env))
    method = await methods.method(ctx.pool, scope.org_id, scope.livemode,
                                  topup.payment_method_id, None)
    if method is None:
        raise not_found(METHOD_NOT_FOUND)
    domain.require_payer(scope, topup.customer_id, method["customer_id"])
    topup = dataclasses.replace(topup, token=method["provider_ref"])  # kept with the claim
    provider = await _chosen(issuer(ctx, scope, method["provider_type"]))
    key = scope.idempotency_key or new_id("tu_")  # no key: every request is a new top-up
    return await _top_up(ctx, scope, topup, provider.name, key, p)


@router.handler(TOPUP_TOKEN)
async def topup_token(ctx: Context, scope: Scope, p: TopupTokenParams) -> Any:
    topup = domain.token_topup(p, scope, domain.bounds(ctx.settings.env))
    provider = await _chosen(provider_for(ctx, scope, topup.token))
    # A token pays once: without a key, the token itself is the key (§4.3 DO 3).
    key = scope.idempotency_key or "nonce:" + topup.token
    return await _top_up(ctx, scope, topup, provider.name, key, p)


async def _chosen(choose: Awaitable[Provider]) -> Provider:
    """The provider; none available is 422 for a top-up (§4.3 step 4)."""
    try:
        return await choose
    except NoProcessor:
        raise Failure(ErrorCode.UNPROCESSABLE, 422, NO_PROCESSOR) from None


async def _top_up(ctx: Context, scope: Scope, topup: Topup, provider: str, key: str,
                  params: Any) -> Any:
    fingerprint = scope.fingerprint or fingerprint_of(params)
    topup_id = new_id("tu_")
    held = await ctx.state.topups.claim(Claim(scope, topup_id, key, fingerprint, topup,
                                              provider))
    if held is None:
        return await _finish(ctx, scope, topup_id, topup, provider)
    if domain.again(held["status"], fingerprint, held["fingerprint"],
                    held["stale"]) == "replay":
        return held["reply"]
    row = await store.resume(ctx.pool, scope.org_id, scope.livemode, held["id"], _recovery(ctx))
    if row is None:
        raise conflict(domain.IN_PROGRESS)
    return await _resume(ctx, scope, row)


async def _resume(ctx: Context, scope: Scope, row: asyncpg.Record) -> Any:
    topup = Topup(row["customer_id"], row["amount"], row["currency"],
                  row["payment_method_id"], row["source_token"])
    charged = None
    if row["status"] == domain.CHARGED:
        charged = _postings(row["id"], topup, row["payment_intent_id"], row["provider"],
                            row["provider_ref"])
    return await _finish(ctx, scope, row["id"], topup, row["provider"], charged)


async def _finish(ctx: Context, scope: Scope, topup_id: str, topup: Topup, provider_name: str,
                  charged: tuple[Posting, Posting] | None = None) -> bytes:
    """Charge (unless it was), credit, answer. The answer does not wait for the journal:
    the payment's entry, owed with the charge, goes out in the background."""
    credit, payment = charged or await _charge(ctx, scope, topup_id, topup, provider_name)
    ctx.state.postings.post_soon(scope.org_id, scope.livemode, payment)
    try:
        credited = await sender.ask(ctx, scope.org_id, scope.livemode, credit)
    except Failure:
        # Charged and owed: the posting job credits it; a retry of this request answers.
        log.warning("top-up %s charged, credit pending", topup_id)
        await store.release(ctx.pool, scope.org_id, scope.livemode, topup_id)
        raise Failure(ErrorCode.INTERNAL, 500, domain.CREDIT_FAILED, retryable=True) from None
    reply = Reply(result=TopupResult(credited.transactionId, credited.balance), replayed=True)
    await ctx.state.topups.complete(Completion(
        scope, topup_id, topup.customer_id, _encode(reply), credit.id, {
            "userId": topup.customer_id, "amountCents": topup.amount,
            "currency": topup.currency, "paymentIntentId": payment.params.paymentIntentId,
            "transactionId": credited.transactionId}))
    reply.replayed = False
    return _encode(reply)


async def _charge(ctx: Context, scope: Scope, topup_id: str, topup: Topup,
                  provider_name: str) -> tuple[Posting, Posting]:
    """The provider call, outside any transaction; then the charge, its payment intent and
    the ledger postings it owes, in one (`batches.py`). Returns those postings."""
    provider = await issuer(ctx, scope, provider_name)
    customer_ref = ""
    if topup.payment_method_id:  # a saved card is charged on its provider customer
        customer_ref = await methods.provider_customer(
            ctx.pool, scope.org_id, scope.livemode, topup.customer_id, provider.name) or ""
    description = f"Top-up {topup.amount} {topup.currency} for user {topup.customer_id}"
    try:
        result = await provider.charge(PaymentRequest(
            amount=topup.amount, currency=topup.currency, token=topup.token,
            customer_id=customer_ref, description=description,
            metadata={"topupId": topup_id},
            idempotency_key=provider_key(scope.org_id, scope.livemode, "topup", topup_id)))
    except ProviderError as e:
        if e.kind == "unavailable":  # maybe charged: `started`, for a retry or the job
            await store.release(ctx.pool, scope.org_id, scope.livemode, topup_id)
        else:  # declined: nothing was taken, the key is free again
            await store.failed(ctx.pool, scope.org_id, scope.livemode, topup_id)
        raise provider_failure(e) from None
    if result.status != "succeeded":  # 3-D Secure and the like: not money yet (§11 item 15)
        await store.failed(ctx.pool, scope.org_id, scope.livemode, topup_id)
        raise payment_required("charge declined")
    intent_id = new_id("pi_")
    postings = _postings(topup_id, topup, intent_id, provider.name, result.transaction_id)
    if not await ctx.state.topups.charge(Charge(scope, topup_id, topup, provider.name,
                                                result.transaction_id, intent_id,
                                                description, postings)):
        raise conflict(domain.IN_PROGRESS)  # another worker charged it
    return postings


def _postings(topup_id: str, topup: Topup, intent_id: str, provider: str,
              provider_ref: str) -> tuple[Posting, Posting]:
    """What a charged top-up owes the ledger: the customer's credit, and the payment in the
    journal (cash in, owed to the customer)."""
    return (Posting(f"topup:{topup_id}", TOPUP_CREDIT, TopupCreditParams(
                topupId=topup_id, user=topup.customer_id, currency=topup.currency,
                amount=topup.amount, provider=provider, providerRef=provider_ref,
                paymentIntentId=intent_id)),
            Posting(f"payment:{intent_id}", PAYMENT_RECORD, JournalPaymentParams(
                paymentIntentId=intent_id, amount=topup.amount, currency=topup.currency,
                customerId=topup.customer_id)))


async def finish_unfinished(ctx: Context) -> None:
    """The job: top-ups whose worker went quiet (a crash, a provider timeout) are finished —
    charged with the same provider key, credited, answered for the client's retry."""
    for row in await store.unfinished(ctx.pool, _recovery(ctx), 50):
        try:
            await _resume(ctx, service_scope(row["org_id"], row["livemode"]), row)
        except Failure as failure:
            log.warning("top-up %s not finished: %s", row["id"], failure.error.message)
