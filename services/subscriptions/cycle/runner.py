"""A run of the billing cycle over one organization and mode (metering-invoicing.md §8.3):
due periods are claimed in batches, invoicing is asked for each period invoice (or its
dunning retry) with bounded concurrency, and the answers are settled in batches — the
subscription advanced, past due, ended or written off, with its event, in one transaction.

Exactly once: a period is billed under its claim (`period_renewals`), taken in the
transaction that locks the subscription. A runner that dies leaves the claim leased; once
the lease has passed, the next run asks invoicing again, which answers the invoice it made
the first time (one invoice per period, collected once) and the period is settled then.
The scheduler, the cycle endpoints and renew all run this code."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from contracts import Reply, Scope
from contracts.common import IdParams
from contracts.cycle import CycleResult, Renewal
from contracts.envelope import ErrorCode
from contracts.errors import Failure, conflict, not_found
from contracts.ids import new_id, now
from contracts.invoicing import (
    INVOICE_GET,
    INVOICE_MARK_UNCOLLECTIBLE,
    INVOICE_RENEW_PERIOD,
    INVOICE_RENEW_PERIODS,
    INVOICE_RETRY,
    Collection,
    Invoice,
    PeriodInvoiceParams,
    PeriodInvoicesParams,
    PeriodItem,
    PeriodRenewed,
    ProrationLine,
)
from services.runtime.outbox import add_events
from services.runtime.scopes import service_scope
from services.runtime.service import Context
from services.subscriptions.cycle import domain, store
from services.subscriptions.items import store as items
from services.subscriptions.subscriptions import store as subscriptions
from services.subscriptions.subscriptions.handlers import view

BATCH = 200  # periods claimed, and settled, per transaction
IN_FLIGHT = 2  # batches the scheduler's run works on at once: one is claimed or settled
# while invoicing bills another (their claims part them as they part runners)
CONCURRENCY = BATCH  # invoicing requests in flight per batch: a claimed batch at once
PER_REQUEST = 50  # first asks of periods sent to invoicing in one request
LEASE = timedelta(seconds=120)  # how long a claim is a runner's before another resumes it
INVOICING_TIMEOUT = 30.0  # a collection may charge a card through payments
RENEW_WAIT = 5.0  # how long renew waits for a runner renewing the same period

@dataclass(slots=True)
class Period:
    """One claimed period as a run works on it: the subscription as claimed, what it asks
    invoicing, and the answer."""

    row: asyncpg.Record
    retry: bool = False
    attempts: int = 0  # collection attempts made before this one
    first_failed_at: datetime | None = None
    invoice_id: str = ""
    prorations: list[asyncpg.Record] = field(default_factory=list)
    items: list[PeriodItem] = field(default_factory=list)
    invoice: Invoice | None = None
    collection: Collection | None = None
    written_off: bool = False
    error: str = ""  # invoicing refused or did not answer: nothing to settle

    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def start(self) -> datetime:
        return self.row["period_start"]


# ---- a run ---------------------------------------------------------------------------------


async def run(ctx: Context, scope: Scope, user: str, now: datetime,
              in_flight: int = 1) -> list[CycleResult]:
    """Bill every due period of the scope's organization and mode (of `user` if given): at
    most `domain.CATCH_UP` per subscription; one result row per period, in the order they
    were claimed when one batch is worked on at a time (`in_flight`)."""
    scope = service_scope(scope.org_id, scope.livemode, scope.org_name)
    dunning = domain.Dunning.from_env(ctx.settings.env)
    token = new_id("run_")
    billed: Counter[str] = Counter()
    skip: set[str] = set()  # caught up to the limit, or invoicing failed: the next run's
    results: list[CycleResult] = []

    async def batches() -> None:
        while True:
            found, periods = await take(ctx, scope, user, now, token, skip)
            if not found:
                return
            if not periods:
                continue
            await ask_together(ctx, scope, periods, dunning, now)
            for p in periods:  # before the settle commits: no other batch takes them then
                billed[p.id] += 1
                if p.error or billed[p.id] >= domain.CATCH_UP:
                    skip.add(p.id)
            results.extend(await settle(ctx, scope, periods, now, token, dunning))

    working = [asyncio.create_task(batches()) for _ in range(in_flight)]
    try:
        await asyncio.gather(*working)
    finally:  # one failed: the others stop too (what they hold is resumed, as a crash's)
        for task in working:
            task.cancel()
    return results


async def _bounded(work: Iterable[Awaitable[None]]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(w: Awaitable[None]) -> None:
        async with gate:
            await w

    await asyncio.gather(*(one(w) for w in work))


async def take(ctx: Context, scope: Scope, user: str, now: datetime, token: str,
               skip: set[str]) -> tuple[bool, list[Period]]:
    """Claim a batch: trials that ended become active, due periods are claimed, due retries
    leased — in one transaction holding the subscriptions' locks. Whether anything was
    found (a batch of trials ending bills nothing, and more may follow), and the periods."""
    org, mode = scope.org_id, scope.livemode
    async with ctx.pool.acquire() as conn, conn.transaction():
        rows = await store.lock_due(conn, org, mode, user, now, BATCH, sorted(skip))
        rows = await end_trials(conn, scope, rows, now)
        due = [r for r in rows if domain.due(subscriptions.sub_of(r), now)]
        periods = await claim(conn, scope, due, now, token)
        retries = await store.lock_retries(conn, org, mode, user, now, BATCH, sorted(skip))
        if retries:
            await store.lease_retries(conn, org, mode,
                                      [(r["id"], r["period_start"]) for r in retries],
                                      now + LEASE, token)
    return bool(rows or retries), periods + [
        Period(r, retry=True, attempts=r["attempts"], first_failed_at=r["first_failed_at"],
               invoice_id=r["claim_invoice_id"]) for r in retries]


async def end_trials(conn: asyncpg.Connection, scope: Scope, rows: list[asyncpg.Record],
                     now: datetime) -> list[asyncpg.Record]:
    """§1.3.3: trials over become active (or end, cancelled at period end); the rows as
    they are now."""
    changes = {r["id"]: domain.end_trial(subscriptions.sub_of(r)) for r in rows
               if domain.trial_over(subscriptions.sub_of(r), now)}
    if not changes:
        return rows
    changed = await apply(conn, scope, changes, {})
    return [changed.get(r["id"], r) for r in rows]


async def claim(conn: asyncpg.Connection, scope: Scope, rows: list[asyncpg.Record],
                now: datetime, token: str) -> list[Period]:
    """Claim the current period of each due subscription (locked by the caller), with the
    prorations pending now — or, for a claim resumed, the ones it fixed then."""
    if not rows:
        return []
    org, mode = scope.org_id, scope.livemode
    ids = [r["id"] for r in rows]
    pending = await store.pending_prorations(conn, org, mode, ids)
    taken = await store.claim(
        conn, org, mode,
        [(r["id"], r["period_start"], r["period_end"],
          [p["id"] for p in pending.get(r["id"], [])]) for r in rows],
        now, LEASE, token)
    fixed = {t["subscription_id"]: t for t in taken}
    prorations = {p["id"]: p for p in await store.prorations_by_id(
        conn, org, mode, [i for t in taken for i in t["proration_ids"]])}
    items = await subscriptions_items(conn, org, mode, list(fixed))
    return [Period(r, invoice_id=fixed[r["id"]]["invoice_id"],
                   prorations=[prorations[i] for i in fixed[r["id"]]["proration_ids"]
                               if i in prorations],
                   items=items.get(r["id"], []))
            for r in rows if r["id"] in fixed]


async def subscriptions_items(conn: asyncpg.Connection, org: str, mode: bool,
                              ids: list[str]) -> dict[str, list[PeriodItem]]:
    """The subscriptions' billable items: licensed ones bill unitAmount × quantity, metered
    ones their meter's usage in the period."""
    found = await items.billable_items(conn, org, mode, ids)
    return {sub: [PeriodItem(meterId=i["meter_id"], planId=i["plan_id"],
                             priceId=i["price_id"], quantity=i["quantity"],
                             billingMode=i["billing_mode"], unitAmount=i["unit_amount"])
                  for i in rows]
            for sub, rows in found.items()}


# ---- asking invoicing ------------------------------------------------------------------------


async def ask_together(ctx: Context, scope: Scope, periods: list[Period],
                       dunning: domain.Dunning, now: datetime) -> None:
    """`ask` for every period: first asks PER_REQUEST in a request (invoicing renews them
    together), dunning retries one by one. A request refused as a whole (a reply too large)
    is asked again period by period: invoicing answers a period invoiced before with its
    invoice, and collects nothing again. One not answered leaves its periods to the next
    run, as a period not answered alone is."""
    first = [p for p in periods if not p.retry]
    await _bounded([
        *(_ask_many(ctx, scope, first[i:i + PER_REQUEST], dunning, now)
          for i in range(0, len(first), PER_REQUEST)),
        *(ask(ctx, scope, p, dunning, now) for p in periods if p.retry)])


async def _ask_many(ctx: Context, scope: Scope, periods: list[Period],
                    dunning: domain.Dunning, now: datetime) -> None:
    try:
        answers = await ctx.ask(INVOICE_RENEW_PERIODS, scope, PeriodInvoicesParams(
            [period_params(p) for p in periods]), timeout=INVOICING_TIMEOUT)
    except Failure:
        await asyncio.gather(*(ask(ctx, scope, p, dunning, now) for p in periods))
        return
    if answers is None:  # still renewing, maybe: the next run asks again
        for p in periods:
            p.error = "invoicing did not answer"
        return

    async def answered(p: Period, renewed: PeriodRenewed) -> None:
        try:
            if renewed.error is not None:
                raise Failure.of(renewed.error)
            if renewed.result is not None:
                p.invoice, p.collection = renewed.result.invoice, renewed.result.collection
            await _written_off_if_last(ctx, scope, p, dunning, now)
        except Failure as failure:
            p.error = failure.error.message

    await asyncio.gather(*(answered(p, r)
                           for p, r in zip(periods, answers.renewed, strict=True)))


async def ask(ctx: Context, scope: Scope, p: Period, dunning: domain.Dunning,
              now: datetime) -> None:
    """The period's invoice and its collection (attempt 1), or its dunning retry; when that
    was the last attempt and it failed, the invoice is written off."""
    try:
        if p.retry:
            await _retry(ctx, scope, p)
        else:
            answer = await ctx.ask(INVOICE_RENEW_PERIOD, scope, period_params(p),
                                   timeout=INVOICING_TIMEOUT)
            if answer is not None:
                p.invoice, p.collection = answer.invoice, answer.collection
        await _written_off_if_last(ctx, scope, p, dunning, now)
    except Failure as failure:
        p.error = failure.error.message


async def _written_off_if_last(ctx: Context, scope: Scope, p: Period,
                               dunning: domain.Dunning, now: datetime) -> None:
    """Once invoicing answered: the invoice written off when this was the last attempt and
    it failed."""
    if p.invoice is None:
        p.error = "invoicing did not answer"
        return
    if not _success(p) and p.invoice.status == "open" and dunning.next_attempt(
            p.first_failed_at or now, p.attempts + 1) is None:
        written = await ctx.ask(INVOICE_MARK_UNCOLLECTIBLE, scope, IdParams(id=p.invoice.id))
        if written is not None:
            p.invoice, p.written_off = written, True


async def _retry(ctx: Context, scope: Scope, p: Period) -> None:
    """A dunning attempt, under a key of its own (bus keys are client-shaped): asked again
    after a crash, invoicing answers the attempt it made. An invoice no longer open (paid
    or voided meanwhile) is taken as it is."""
    key = f"cycle-retry:{p.id}:{p.start.isoformat()}:{p.attempts + 1}"
    keyed = msgspec.structs.replace(scope, idempotency_key=key)
    try:
        answer = await ctx.ask(INVOICE_RETRY, keyed, IdParams(id=p.invoice_id),
                               timeout=INVOICING_TIMEOUT)
    except Failure:
        invoice = await ctx.ask(INVOICE_GET, scope, IdParams(id=p.invoice_id))
        if invoice is None or invoice.status == "open":
            raise
        p.invoice, p.collection = invoice, synthesised(invoice)
        return
    if answer is not None:
        p.invoice, p.collection = answer.invoice, answer.collection


def period_params(p: Period) -> PeriodInvoiceParams:
    """The period invoice as the subscription's plan snapshot says (grandfathered price ×
    quantity), with its prorations and items."""
    r, plan = p.row, subscriptions.terms(p.row["plan_snapshot"])
    return PeriodInvoiceParams(
        subscriptionId=r["id"], userId=r["user_id"], planId=plan.id, planName=plan.name,
        price=plan.price, currency=plan.currency,
        quantity=r["quantity"] if plan.per_user else 1,
        periodStart=r["period_start"], periodEnd=r["period_end"],
        defaultPaymentMethod=r["default_payment_method"],
        prorations=[ProrationLine(
            id=x["id"], description=x["description"], planId=x["plan_id"],
            planName=x["plan_name"], amount=x["amount"], currency=x["currency"],
            periodStart=x["period_start"], periodEnd=x["period_end"]) for x in p.prorations],
        items=p.items)


def synthesised(invoice: Invoice) -> Collection:
    """§2.5 OURS: the collection an existing invoice stands for."""
    return Collection(success=invoice.status == "paid", creditUsed=invoice.creditApplied,
                      amountCharged=invoice.amountPaid)


def _success(p: Period) -> bool:
    return p.collection is not None and p.collection.success


# ---- settling ------------------------------------------------------------------------------


async def settle(ctx: Context, scope: Scope, periods: list[Period], now: datetime,
                 token: str, dunning: domain.Dunning) -> list[CycleResult]:
    """What the answers change, in one transaction: claims still this run's are settled,
    moved to dunning or released; their subscriptions change and announce it."""
    org, mode = scope.org_id, scope.livemode
    async with ctx.pool.acquire() as conn, conn.transaction():
        subs = await store.lock_subscriptions(conn, org, mode, [p.id for p in periods])
        claims = await store.lock_claims(conn, org, mode, [(p.id, p.start) for p in periods])
        changes: dict[str, domain.Change] = {}
        invoices: dict[str, str] = {}
        saved, consumed, released, results = [], [], [], []
        for p in periods:
            claimed = claims.get((p.id, p.start))
            if claimed is None or claimed["lease_token"] != token:
                continue  # the lease passed and another runner took the period over
            if p.error:
                released.append((p.id, p.start))
                results.append(CycleResult(p.row["user_id"], p.id, p.invoice_id, False,
                                           p.error))
                continue
            assert p.invoice is not None
            sub, invoice = subscriptions.sub_of(subs[p.id]), p.invoice
            consumed += [(i, invoice.id) for i in claimed["proration_ids"]]
            attempts = p.attempts + 1
            # Paid or voided outside while this run held the period: the invoice events said.
            status = claimed["outcome"] or invoice.status
            if status in ("paid", "void"):
                change = domain.paid(sub)
                saved.append((p.id, p.start, domain.SETTLED, invoice.id, attempts,
                              p.first_failed_at, None, status))
                invoices[p.id] = invoice.id
            elif p.written_off:
                change = domain.written_off(sub, dunning)
                saved.append((p.id, p.start, domain.SETTLED, invoice.id, attempts,
                              p.first_failed_at, None, "uncollectible"))
            else:
                first = p.first_failed_at or now
                change = None if p.retry else domain.failed(sub)
                saved.append((p.id, p.start, domain.DUNNING, invoice.id, attempts, first,
                               dunning.next_attempt(first, attempts), ""))
            if change is not None and subs[p.id]["period_start"] == p.start:
                changes[p.id] = change
            collection = p.collection or synthesised(invoice)
            success = status == "paid"
            results.append(CycleResult(p.row["user_id"], p.id, invoice.id, success,
                                       "" if success else collection.error))
        if saved:
            await store.save_claims(conn, org, mode, saved)
        if consumed:
            await store.consume_prorations(conn, org, mode, consumed)
        if released:
            await store.release(conn, org, mode, released, token)
        await apply(conn, scope, changes, invoices)
    return results


async def apply(conn: asyncpg.Connection, scope: Scope, changes: dict[str, domain.Change],
                invoices: dict[str, str]) -> dict[str, asyncpg.Record]:
    """Change the (locked) subscriptions and add their events; the rows as changed."""
    if not changes:
        return {}
    rows = await store.change_subscriptions(conn, scope.org_id, scope.livemode, [
        (sub, c.status, c.period_start, c.period_end, c.ended_at, invoices.get(sub, ""))
        for sub, c in changes.items()])
    changed = {r["id"]: r for r in rows}
    by_type: dict[str, list[tuple[str, bool, str, str | None, Any]]] = {}
    for sub, c in changes.items():
        row = changed[sub]
        by_type.setdefault(c.event, []).append(
            (scope.org_id, scope.livemode, sub, row["user_id"], view(row)))
    for type, objects in by_type.items():
        await add_events(conn, "subscriptions", type=type, object_type="subscription",
                         objects=objects)
    return changed


# ---- settled outside the cycle (the invoice events) ----------------------------------------


@dataclass(frozen=True, slots=True)
class Settled:
    """A period invoice paid or voided, as invoicing announced it."""

    org_id: str
    livemode: bool
    subscription_id: str
    period_start: datetime
    invoice_id: str
    status: str  # paid | void


async def settled_outside(ctx: Context, found: list[Settled]) -> None:
    """Past-due periods whose invoice was paid or voided: dunning ends and the subscription
    moves on. A period a runner holds is left to it (its retry finds the invoice settled)."""
    by_scope: dict[tuple[str, bool], list[Settled]] = {}
    for s in found:
        by_scope.setdefault((s.org_id, s.livemode), []).append(s)
    for (org, mode), settled in by_scope.items():
        # Most are the cycle's own collections, whose runner settled them already (a settled
        # claim stays settled): one read leaves those out, not an update each.
        open_ = await store.in_states(ctx.pool, org, mode, [
            (s.subscription_id, s.period_start) for s in settled],
            (domain.RENEWING, domain.DUNNING))
        settled = [s for s in settled if (s.subscription_id, s.period_start) in open_]
        if not settled:
            continue
        # A period a runner holds gets the outcome noted: its settle takes it.
        await store.note_outcomes(ctx.pool, org, mode, [
            (s.subscription_id, s.period_start, s.status) for s in settled])
        dunning = await store.in_states(ctx.pool, org, mode, [
            (s.subscription_id, s.period_start) for s in settled], (domain.DUNNING,))
        settled = [s for s in settled if (s.subscription_id, s.period_start) in dunning]
        if not settled:
            continue
        scope = service_scope(org, mode)
        at = now()
        async with ctx.pool.acquire() as conn, conn.transaction():
            subs = await store.lock_subscriptions(conn, org, mode,
                                                  [s.subscription_id for s in settled])
            claims = await store.lock_claims(conn, org, mode, [
                (s.subscription_id, s.period_start) for s in settled])
            changes: dict[str, domain.Change] = {}
            saved = []
            for s in settled:
                claimed = claims.get((s.subscription_id, s.period_start))
                if (claimed is None or claimed["state"] != domain.DUNNING
                        or claimed["invoice_id"] != s.invoice_id
                        or (claimed["lease_until"] is not None and claimed["lease_until"] > at)):
                    continue
                saved.append((s.subscription_id, s.period_start, domain.SETTLED, s.invoice_id,
                              claimed["attempts"], claimed["first_failed_at"], None, s.status))
                row = subs.get(s.subscription_id)
                change = None if row is None else domain.paid(subscriptions.sub_of(row))
                if change is not None and row["period_start"] == s.period_start:
                    changes[s.subscription_id] = change
            if saved:
                await store.save_claims(conn, org, mode, saved)
            await apply(conn, scope, changes, {s.subscription_id: s.invoice_id
                                               for s in settled if s.status == "paid"})


# ---- renew one subscription (subscriptions.md §3.1.7) -------------------------------------


async def renew(ctx: Context, scope: Scope, subscription_id: str, now: datetime) -> bytes:
    """The current period if it is due, billed once whoever else renews it: a period a
    runner is renewing is waited for, one already invoiced is answered from its invoice."""
    caller, scope = scope, service_scope(scope.org_id, scope.livemode, scope.org_name)
    token = new_id("renew_")
    async with ctx.pool.acquire() as conn, conn.transaction():
        replay = await ctx.keys.replay(conn, caller)
        if replay is not None:
            return replay
        row = await subscriptions.lock_subscription(conn, scope.org_id, scope.livemode,
                                                    subscription_id)
        if row is None:
            raise not_found("subscription not found")
        row = (await end_trials(conn, scope, [row], now))[0]
        if not domain.due(subscriptions.sub_of(row), now):
            return await ctx.keys.answer(conn, caller, Reply(result=Renewal(
                subscription=view(row),
                collection=Collection(success=False, error=domain.NOT_DUE))))
        periods = await claim(conn, scope, [row], now, token)
    if periods:
        dunning = domain.Dunning.from_env(ctx.settings.env)
        await ask(ctx, scope, periods[0], dunning, now)
        await settle(ctx, scope, periods, now, token, dunning)
        if periods[0].error:
            raise Failure(ErrorCode.INTERNAL, 500, "failed to renew subscription", retryable=True)
    ours = periods[0] if periods else None
    invoice = (ours.invoice if ours is not None and ours.invoice is not None
               else await _invoiced(ctx, scope, subscription_id, row["period_start"]))
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await subscriptions.get(conn, scope.org_id, scope.livemode, subscription_id)
        collection = (ours.collection if ours is not None and ours.collection is not None
                      else synthesised(invoice))
        return await ctx.keys.answer(conn, caller, Reply(result=Renewal(
            subscription=view(row), invoice=invoice, collection=collection)))


async def _invoiced(ctx: Context, scope: Scope, subscription_id: str,
                    period_start: datetime) -> Invoice:
    """The period's invoice, once the runner renewing it (if any) is done."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RENEW_WAIT
    while True:
        claimed = await store.claim_of(ctx.pool, scope.org_id, scope.livemode,
                                       subscription_id, period_start)
        if claimed is not None and claimed["invoice_id"]:
            invoice = await ctx.ask(INVOICE_GET, scope, IdParams(id=claimed["invoice_id"]))
            if invoice is not None:
                return invoice
        if loop.time() > deadline:
            raise conflict("subscription is being renewed; try again")
        await asyncio.sleep(0.1)
