"""Top-ups (payments.md §4.3): charge a saved method (`/topup`, admin) or a one-time token
(`/topup/token`, user), then credit the customer's balance.

Exactly once, whatever fails: the top-up row is claimed under the request's key before the
provider is called (`started`); the provider's key is the top-up's, so charging again after
a crash or a timeout replays the same charge, and the payment intent's id is the top-up's
too; the credit is sent to the ledger, which credits a top-up once and records its payment
in the journal in the same transaction; the customer has the answer; then the charge, its
payment intent and the answer for replays commit together (`completed`; a retry meanwhile
waits for it). A charge the ledger did not credit is recorded (`charged`, with its intent)
for the job to credit. A top-up left unfinished is taken over by a retry of the same
request or by the `finish_unfinished` job. Concurrent top-ups share each of these writes
(`batches.py`)."""

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
    action = domain.again(held["status"], fingerprint, held["fingerprint"], held["stale"])
    if action == "replay":
        return held["reply"]
    if action == "wait":
        reply = await ctx.state.topups.answer((scope.org_id, scope.livemode, held["id"]))
        if reply is None:
            raise conflict(domain.IN_PROGRESS)
        return reply
    row = await store.resume(ctx.pool, scope.org_id, scope.livemode, held["id"], _recovery(ctx))
    if row is None:
        raise conflict(domain.IN_PROGRESS)
    return await _resume(ctx, scope, row)


async def _resume(ctx: Context, scope: Scope, row: asyncpg.Record) -> Any:
    topup = Topup(row["customer_id"], row["amount"], row["currency"],
                  row["payment_method_id"], row["source_token"])
    charged = None
    if row["status"] == domain.CHARGED:  # its intent is recorded: not charged again
        charged = Charge(scope, row["id"], topup, row["provider"], row["provider_ref"],
                         row["payment_intent_id"])
    return await _finish(ctx, scope, row["id"], topup, row["provider"], charged)


async def _finish(ctx: Context, scope: Scope, topup_id: str, topup: Topup, provider_name: str,
                  charged: Charge | None = None) -> bytes:
    """Charge (unless it was recorded), credit, answer. The answer does not wait for the
    completion's commit: the customer was credited, and the top-up's row (claimed, not yet
    completed) is finished by the job should this process die before it commits — charged
    again under its key (the same charge), credited again (the same credit)."""
    charge = charged or await _charge(ctx, scope, topup_id, topup, provider_name)
    credit = _credit(charge)
    try:
        credited = await sender.ask(ctx, scope.org_id, scope.livemode, credit)
    except Failure:
        # Charged and owed: recorded, for the job to credit; a retry of this request answers.
        log.warning("top-up %s charged, credit pending", topup_id)
        if charged:
            await store.release(ctx.pool, scope.org_id, scope.livemode, topup_id)
        else:
            await ctx.state.topups.charge(charge)
        raise Failure(ErrorCode.INTERNAL, 500, domain.CREDIT_FAILED, retryable=True) from None
    reply = Reply(result=TopupResult(credited.transactionId, credited.balance), replayed=True)
    ctx.state.topups.complete_soon(Completion(charge, _encode(reply), {
        "userId": topup.customer_id, "amountCents": topup.amount, "currency": topup.currency,
        "paymentIntentId": charge.intent_id, "transactionId": credited.transactionId}))
    reply.replayed = False
    return _encode(reply)


async def _charge(ctx: Context, scope: Scope, topup_id: str, topup: Topup,
                  provider_name: str) -> Charge:
    """The provider call, outside any transaction. Nothing is written when it succeeds:
    the top-up stays `started` until it is credited, and a worker that takes it over
    charges again with the same provider key, which answers with the same charge."""
    provider = await issuer(ctx, scope, provider_name)
    customer_ref = ""
    if topup.payment_method_id:  # a saved card is charged on its provider customer
        customer_ref = await methods.provider_customer(
            ctx.pool, scope.org_id, scope.livemode, topup.customer_id, provider.name) or ""
    try:
        result = await provider.charge(PaymentRequest(
            amount=topup.amount, currency=topup.currency, token=topup.token,
            customer_id=customer_ref, description=domain.description(topup),
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
    return Charge(scope, topup_id, topup, provider.name, result.transaction_id,
                  domain.intent_id(topup_id))


def _credit(charge: Charge) -> Posting:
    """What a charged top-up owes the ledger: the customer's credit (with it, the ledger
    records the payment in the journal: cash in, owed to the customer)."""
    topup = charge.topup
    return Posting(f"topup:{charge.topup_id}", TOPUP_CREDIT, TopupCreditParams(
        topupId=charge.topup_id, user=topup.customer_id, currency=topup.currency,
        amount=topup.amount, provider=charge.provider, providerRef=charge.provider_ref,
        paymentIntentId=charge.intent_id))


async def finish_unfinished(ctx: Context) -> None:
    """The job: top-ups whose worker went quiet (a crash, a provider timeout, a ledger that
    did not answer) are finished — charged with the same provider key, credited, answered
    for the client's retry."""
    for row in await store.unfinished(ctx.pool, _recovery(ctx), 50):
        try:
            await _resume(ctx, service_scope(row["org_id"], row["livemode"]), row)
            await ctx.state.topups.answer((row["org_id"], row["livemode"], row["id"]))
        except Failure as failure:
            log.warning("top-up %s not finished: %s", row["id"], failure.error.message)
