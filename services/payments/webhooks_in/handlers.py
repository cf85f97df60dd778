"""Inbound provider webhooks (payments.md §5): `POST /billing/webhooks/{provider}[/{org}]`,
handed over by the gateway with the raw body and the signature headers.

Whose delivery it is (§5.5): the organization the URL names; else, in each mode, the one
whose provider settings name the event's account in that mode (Stripe's Connect `account`,
Square's `merchant_id`); else the platform's. A delivery is verified with that
organization's webhook secrets (each mode's, from its provider settings; the platform's
from the environment for a mode it stored none for, except a mode it holds the event's
account in: a claim never captures platform-signed events): the secret that verifies
decides the mode. It is then stored once per provider event id, organization and mode,
with its raw body and what became of it (`webhook_events_in`); a redelivery is answered
200 `duplicate` and changes nothing. Concurrent deliveries share their insert (`intake`):
one transaction per batch, which also logs each new event's billing event (payments keeps
the event log: its own events need no round trip through the stream back to itself).

What the event changes (§5.4) is applied right after, in a transaction of its own that
claims the stored event, so it happens once: intents, refunds and payment methods take the
provider's word, disputes are created and moved (with the ledger postings they owe, sent
after the commit), and the subscriptions and invoices a provider reports are forwarded as
`billing.events.provider.<type>` (the outbox) in the insert's own transaction. An event
about an object we do not have in that organization and mode changes nothing (`ignored`,
with the reason).
An effect that fails leaves the event `failed` for `redrive_unfinished`; the provider has
its 200 once the event is stored."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Set
from datetime import timedelta

import asyncpg
import msgspec

from contracts import Reply, Scope
from contracts.errors import Failure, internal
from contracts.payments import PAYMENT_METHOD_DETACHED, PAYMENT_METHOD_UPDATED
from contracts.webhooks_in import (
    WEBHOOK_INGEST,
    WEBHOOK_INGEST_BATCH,
    WebhookIngestBatch,
    WebhookIngestParams,
    WebhookReceived,
)
from services.payments.common import event as announce_event
from services.payments.common import service_scope
from services.payments.disputes import handlers as disputes
from services.payments.events import domain as log_rules
from services.payments.intents import domain as intent_rules
from services.payments.intents import handlers as intents
from services.payments.intents import store as intents_store
from services.payments.methods import store as methods_store
from services.payments.methods.handlers import method_json
from services.payments.payouts import handlers as payouts
from services.payments.postings.sender import Posting
from services.payments.provider_settings import store as settings_store
from services.payments.providers import square, stripe
from services.payments.providers.base import PaymentResult, WebhookEvent
from services.payments.refunds import domain as refund_rules
from services.payments.refunds import handlers as refunds
from services.payments.refunds import store as refunds_store
from services.payments.webhooks_in import domain, store
from services.payments.webhooks_in.domain import Secret
from services.runtime.batching import MicroBatcher, each_alone_on_failure
from services.runtime.config import Settings
from services.runtime.outbox import nudge
from services.runtime.service import Context, Router

log = logging.getLogger(__name__)
router = Router()

MAX_ATTEMPTS = 10  # a failing effect is retried this often, then left for an operator
REDRIVE_BATCH = 100


@router.handler(WEBHOOK_INGEST)
async def ingest(ctx: Context, scope: Scope, p: WebhookIngestParams) -> WebhookReceived:
    delivery, event = await _received(ctx, scope, p, await _claimants(ctx, [p]))
    stored = await ctx.state.webhook_intake(delivery)
    if stored == domain.RECEIVED:
        await apply(ctx, delivery.key, event)
    return _receipt(event, stored)


@router.handler(WEBHOOK_INGEST_BATCH)
async def ingest_batch(ctx: Context, scope: Scope, p: WebhookIngestBatch) -> list[Reply]:
    """Deliveries the gateway received together: each answered as `ingest` answers it.
    They are verified one after the other (their secrets are cached: nothing waits) and
    handed to the intake together, without a task each; the provider accounts they claim
    are looked up by one read."""
    claimants = await _claimants(ctx, [d.params for d in p.deliveries])
    replies: list[Reply | None] = []
    received: list[tuple[int, store.Delivery, WebhookEvent]] = []
    for d in p.deliveries:
        try:
            delivery, event = await _received(ctx, d.scope, d.params, claimants)
        except Exception as error:
            replies.append(_refusal(error, d.scope))
            continue
        received.append((len(replies), delivery, event))
        replies.append(None)
    outcomes = await asyncio.gather(*ctx.state.webhook_intake.submit(
        [delivery for _, delivery, _ in received]), return_exceptions=True)
    effects: list[tuple[int, Awaitable[None]]] = []
    for (i, delivery, event), stored in zip(received, outcomes, strict=True):
        if isinstance(stored, BaseException):
            replies[i] = _refusal(stored, p.deliveries[i].scope)
            continue
        replies[i] = Reply(result=_receipt(event, stored))
        if stored == domain.RECEIVED:
            effects.append((i, apply(ctx, delivery.key, event)))
    if effects:  # the few whose effect reads our records (an intent we hold)
        failed = await asyncio.gather(*(effect for _, effect in effects),
                                      return_exceptions=True)
        for (i, _), error in zip(effects, failed, strict=True):
            if error is not None:
                replies[i] = _refusal(error, p.deliveries[i].scope)
    return replies


async def _claimants(ctx: Context, deliveries: list[WebhookIngestParams],
                     ) -> dict[tuple[str, str], dict[bool, str]]:
    """The organizations that named in their settings the provider accounts these
    deliveries claim to come from (those whose URL names no organization), by mode."""
    accounts = {(provider, account) for p in deliveries if not p.orgNamed
                for provider in (p.provider.strip().lower(),) if provider in domain.PROVIDERS
                for account in (domain.account_in(provider, p.body),) if account}
    return await settings_store.account_owners(ctx.pool, list(accounts)) if accounts else {}


async def _received(ctx: Context, scope: Scope, p: WebhookIngestParams,
                    claimants: dict[tuple[str, str], dict[bool, str]],
                    ) -> tuple[store.Delivery, WebhookEvent]:
    """The verified delivery to store, with the status it is stored with, and its event."""
    provider = domain.provider_of(p.provider)
    domain.require_signature(p.headers)
    org_id, livemode, event = await _verified(ctx, scope, p, provider, claimants)
    effect = domain.effect_of(event)
    status, reason, announced = _first_outcome(event, effect)
    news = domain.payment_news(event) if (status, effect) == (domain.RECEIVED,
                                                               domain.PAYMENT) else None
    return store.Delivery(org_id, livemode, provider, event.id, event.type,
                          event.provider_type, p.body, status, reason, announced,
                          forwarded=effect == domain.FORWARD,
                          payment_ref=news.ref if news else ""), event


def _receipt(event: WebhookEvent, stored: str | None) -> WebhookReceived:
    """The answer to a stored delivery (None: stored before)."""
    return WebhookReceived(received=True, type=event.type, id=event.id,
                           duplicate=stored is None)


def _refusal(error: BaseException, scope: Scope) -> Reply:
    if isinstance(error, Failure):
        return Reply(error=error.error)
    log.error("%s failed (request %s)", WEBHOOK_INGEST.subject, scope.request_id,
              exc_info=error)
    return Reply(error=internal().error)


async def _verified(ctx: Context, scope: Scope, p: WebhookIngestParams, provider: str,
                    claimants: dict[tuple[str, str], dict[bool, str]],
                    ) -> tuple[str, bool, WebhookEvent]:
    """(organization, mode, event). A mode's delivery is the organization's whose settings
    name the body's provider account in that mode, else the scope's (the URL's, the
    platform's). The account is read before the signature is checked only to choose whose
    secrets check it: a delivery naming an account claimed in a mode is, in that mode, the
    claimant's, verified with the webhook secret it stored of that mode only (never the
    platform's), or refused."""
    account = "" if p.orgNamed else domain.account_in(provider, p.body)
    owners = claimants.get((provider, account), {}) if account else {}
    whose = {mode: owners.get(mode, scope.org_id) for mode in (True, False)}
    now = time.time()
    for org_id in dict.fromkeys(whose.values()):
        claimed = {mode for mode, owner in owners.items() if owner == org_id}
        secrets = [s for s in await ctx.state.webhook_secrets.of(org_id, provider, claimed)
                   if whose[s.livemode] == org_id]
        try:
            return org_id, *domain.verify(provider, p.body, p.headers, p.url, secrets, now)
        except Failure:
            continue
    raise domain.unauthenticated()


def _first_outcome(event: WebhookEvent, effect: str | None,
                   ) -> tuple[str, str, tuple[str, dict]]:
    """(status, reason, billing event) an event is stored with. Every delivery is a billing
    event, `provider.<type>`, committed with it: in the event log (its objectId the
    provider's event id, as the reference's), and published for the services it concerns
    when forwarded (subscriptions reads `provider.subscription.*`), so no other service
    reads a provider's payload. One that changes nothing of ours (whatever we hold, as its
    own body tells), or is only forwarded, is final at once."""
    announced = (domain.forwarded_type(event), {
        "provider": event.provider, "providerEventId": event.id, "type": event.type,
        "providerType": event.provider_type, "account": event.account,
        "source": "provider", "object": event.data})
    if effect is None:
        return domain.IGNORED, f"nothing to do for {event.type}", announced
    if effect == domain.FORWARD:
        return domain.PROCESSED, "", announced
    futile = domain.changes_nothing(event, effect)
    if futile:
        return domain.IGNORED, futile, announced
    return domain.RECEIVED, "", announced


def _none_of_ours(d: store.Delivery, held: Set[tuple[str, bool, str, str]],
                  ) -> store.Delivery:
    """The delivery, ignored if it concerns nothing of ours: a payment we hold no intent for
    (most payment events are about charges made elsewhere) is found by one read for the
    batch, so it is final when stored, without the effect's transaction. The effect, were
    it applied, would read the same: an intent given the reference meanwhile is missed
    either way."""
    if not d.payment_ref or d.payment in held:
        return d
    return dataclasses.replace(d, status=domain.IGNORED, reason=(
        f"no payment intent for {d.provider} payment {d.payment_ref}"))


async def apply(ctx: Context, key: tuple[str, bool, str, str], event: WebhookEvent) -> None:
    """The event's effect, once: in one transaction with the claim of the stored event."""
    org_id, livemode, provider, _ = key
    scope = service_scope(org_id, livemode)
    postings: list[Posting] = []
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            if await store.claim(conn, key) is None:
                return  # applied already (the job, a concurrent request)
            effect = EFFECTS[domain.effect_of(event)]
            reason, postings = await effect(ctx, conn, scope, provider, event)
            await store.finish(conn, key, domain.IGNORED if reason else domain.PROCESSED,
                               reason, attempted=True)
    except Exception as e:
        log.exception("webhook %s %s: effect failed", provider, event.id)
        await store.finish(ctx.pool, key, domain.FAILED, f"{type(e).__name__}: {e}",
                           attempted=True)
        return
    disputes.send_soon(ctx, scope, postings)


async def redrive_unfinished(ctx: Context) -> None:
    """The job: events stored but not applied (a crash after the insert, a failed effect)."""
    stuck = timedelta(seconds=ctx.settings.payments_recovery_s)
    for row in await store.take_unfinished(ctx.pool, stuck, MAX_ATTEMPTS, REDRIVE_BATCH):
        event = (stripe.parse_webhook(row["body"], int(row["received_at"].timestamp()))
                 if row["provider"] == "stripe" else square.parse_webhook(row["body"]))
        await apply(ctx, (row["org_id"], row["livemode"], row["provider"], row["event_id"]),
                    event)


# ---- the effects (§5.4): (reason nothing changed, or ""; postings owed) --------------------

Outcome = tuple[str, list[Posting]]


async def _payment(ctx: Context, conn: asyncpg.Connection, scope: Scope, provider: str,
                   event: WebhookEvent) -> Outcome:
    """The intent the provider's payment is: succeeded (with the journal payment it owes)
    or failed back to `requires_payment_method`."""
    news = domain.payment_news(event)
    if news is None or not news.outcome:
        return f"no final payment status in {event.type}", []
    row = await intents_store.by_provider_ref(conn, scope.org_id, scope.livemode, provider,
                                              news.ref)
    if row is None:
        return f"no payment intent for {provider} payment {news.ref}", []
    state = intents_store.as_intent(row)
    if news.outcome == intent_rules.SUCCEEDED:
        if state.status in intent_rules.FINAL:
            return f"payment intent already {state.status}", []
        after = intent_rules.charged(state, PaymentResult(
            status=intent_rules.SUCCEEDED, transaction_id=news.ref,
            amount=news.amount or state.amount), provider)
    else:
        if state.status not in (intent_rules.PROCESSING, intent_rules.REQUIRES_ACTION):
            return f"payment intent is {state.status}", []
        after = intent_rules.payment_failed(state, news.error)
    saved = await intents_store.save_intent(conn, scope.org_id, scope.livemode, row["id"],
                                            after, row["attempts"])
    posting = await intents.owe_payment(conn, scope, await intents.announce(conn, scope, saved))
    return "", [posting] if posting else []


async def _refund(ctx: Context, conn: asyncpg.Connection, scope: Scope, provider: str,
                  event: WebhookEvent) -> Outcome:
    """Refunds the provider answered `pending`, settled: succeeded (the journal refund) or
    failed (a top-up credit taken back is restored)."""
    postings: list[Posting] = []
    settled = 0
    for ref, status in domain.refund_news(event):
        row = await refunds_store.by_provider_ref(conn, scope.org_id, scope.livemode,
                                                  provider, ref)
        if row is None or row["status"] != refund_rules.PENDING:
            continue
        state = refunds_store.as_refund(row)
        after = (refund_rules.mark_succeeded(state) if status == refund_rules.SUCCEEDED
                 else refund_rules.mark_failed(state, refund_rules.PROVIDER_FAILED))
        saved = await refunds_store.settle_pending(conn, scope.org_id, scope.livemode,
                                                   row["id"], after)
        if saved is not None:
            settled += 1
            postings += await refunds.settled(
                conn, scope, saved,
                restore_credit=saved["status"] == refund_rules.FAILED and bool(saved["topup_id"]))
    return ("" if settled else f"no pending refund for {event.type}"), postings


async def _method(ctx: Context, conn: asyncpg.Connection, scope: Scope, provider: str,
                  event: WebhookEvent) -> Outcome:
    """A saved method the provider detached, disabled or updated (a card's new expiry)."""
    news = domain.method_news(event)
    row = news and await methods_store.by_provider_ref(conn, scope.org_id, scope.livemode,
                                                       provider, news.ref)
    if not row:
        return f"no payment method for {event.type}", []
    if news.detached:
        await methods_store.detach_method(conn, scope.org_id, scope.livemode, row["id"])
        method = msgspec.structs.replace(method_json(row, scope.livemode), isDefault=False)
        await announce_event(conn, scope, PAYMENT_METHOD_DETACHED, "payment_method", method.id,
                             method.customerId, method)
        return "", []
    if news.card is None:
        return f"no card details in {event.type}", []
    card = news.card
    row = await methods_store.update_card(conn, scope.org_id, scope.livemode, row["id"], {
        "brand": card.brand, "last4": card.last4, "expMonth": card.exp_month,
        "expYear": card.exp_year})
    method = method_json(row, scope.livemode)
    await announce_event(conn, scope, PAYMENT_METHOD_UPDATED, "payment_method", method.id,
                         method.customerId, method)
    return "", []


async def _dispute(ctx: Context, conn: asyncpg.Connection, scope: Scope, provider: str,
                   event: WebhookEvent) -> Outcome:
    news = domain.dispute_news(event)
    if news is None:
        return f"no dispute to read in {event.type}", []
    return await disputes.apply_news(conn, scope, provider, news)


async def _payout(ctx: Context, conn: asyncpg.Connection, scope: Scope, provider: str,
                  event: WebhookEvent) -> Outcome:
    """What the bank did with one of our payouts (in transit, paid, failed), as the
    provider that sent it reports; a payout of the provider's own is not ours to record."""
    news = domain.payout_news(event)
    if news is None:
        return f"no payout of ours in {event.type}", []
    try:
        _, reversal = await payouts.settle_within(
            ctx, conn, scope, news.payout_id, news.status, provider_ref=news.ref,
            failure_code=news.failure_code, failure_message=news.failure_message)
    except Failure as refused:  # unknown payout, or a report its state cannot take
        return f"{refused.error.message} ({event.type})", []
    return "", [reversal] if reversal else []


EFFECTS: dict[str | None, Callable[..., Awaitable[Outcome]]] = {
    domain.PAYMENT: _payment, domain.REFUND: _refund, domain.METHOD: _method,
    domain.DISPUTE: _dispute, domain.PAYOUT: _payout,
}


# ---- the state the handler shares ---------------------------------------------------------


class Secrets:
    """Each organization's webhook secrets per provider: the ones in its settings of each
    mode (read, and cached, with its providers: `selection.Providers`), the platform's
    (environment) for a mode with none."""

    def __init__(self, ctx: Context):
        self._ctx = ctx
        self._platform = platform_secrets(ctx.settings)

    async def of(self, org_id: str, provider: str, claimed: Set[bool] = frozenset(),
                 ) -> list[Secret]:
        """Its secrets of each mode; the platform's for a mode without, unless `claimed`
        (the delivery is the organization's for naming an account it holds in that mode)."""
        own = await self._own(org_id, provider)
        modes = {s.livemode for s in own} | claimed
        return own + [s for s in self._platform[provider] if s.livemode not in modes]

    async def _own(self, org_id: str, provider: str) -> list[Secret]:
        secrets: list[Secret] = []
        for livemode in (True, False):
            settings = await self._ctx.state.providers.stored(org_id, livemode)
            own = _stored_secret(settings.credentials, provider)
            if own:
                secrets.append(Secret(livemode, own))
        return secrets


def _stored_secret(credentials, provider: str) -> str:
    if provider == "stripe":
        return credentials.stripe.webhook_secret if credentials.stripe else ""
    return credentials.square.webhook_signature_key if credentials.square else ""


def platform_secrets(settings: Settings) -> dict[str, list[Secret]]:
    """The platform's webhook secrets (`STRIPE_WEBHOOK_SECRET`, `SQUARE_WEBHOOK_SIGNATURE_KEY`)
    by the modes its accounts serve: Stripe's, the mode of `STRIPE_SECRET_KEY` (both without
    one: the event's `livemode` decides); Square's, `SQUARE_ENVIRONMENT`'s."""
    env = settings.env
    found: dict[str, list[Secret]] = {"stripe": [], "square": []}
    if settings.stripe_webhook_secret:
        key = env.get("STRIPE_SECRET_KEY", "")
        modes = (stripe.key_livemode(key),) if key else (True, False)
        found["stripe"] = [Secret(mode, settings.stripe_webhook_secret) for mode in modes]
    if settings.square_webhook_signature_key:
        sandbox = square.environment(env.get("SQUARE_ENVIRONMENT", "")) is (
            square.SquareEnvironment.SANDBOX)
        found["square"] = [Secret(not sandbox, settings.square_webhook_signature_key)]
    return found


def intake(ctx: Context) -> MicroBatcher:
    """Concurrent deliveries stored together, one transaction per batch: the events (the
    status each is stored with; None: stored before), their billing events in the event
    log (with the webhook deliveries they owe) and, for those other services read, in the
    outbox. The same event twice in one batch is stored once; its second copy is a
    duplicate."""
    async def record(deliveries: list[store.Delivery]) -> list[str | None]:
        first: dict[tuple, int] = {}
        for i, d in enumerate(deliveries):
            first.setdefault(d.key, i)
        unique = [deliveries[i] for i in first.values()]
        payments = [d.payment for d in unique if d.payment_ref]
        event_log = ctx.state.event_log
        async with ctx.pool.acquire() as conn, conn.transaction():
            if payments:
                held = await intents_store.held_provider_refs(conn, payments)
                unique = [_none_of_ours(d, held) for d in unique]
            announced = await store.record(conn, unique)
            logged = [(d, log_rules.read(event))
                      for d, event in zip(unique, announced, strict=True) if event is not None]
            queued = await event_log.keep(conn, [e for _, e in logged])
        if queued:
            event_log.wake()
        stored = {d.key: d.status for d, event in zip(unique, announced, strict=True)
                  if event is not None}
        if any(d.forwarded and d.key in stored for d in unique):
            nudge("payments", committed=True)  # one look for many batches, not a few ms of
        return [stored.get(d.key) if first[d.key] == i else None
                for i, d in enumerate(deliveries)]

    return MicroBatcher(each_alone_on_failure(record), serial=True)
