"""Subscription schedules (subscriptions.md §3.3): create, list, get, update, cancel,
release — and the phases run (spec/README.md: "Subscription schedules execute their
phases"), by the job `run_due` and by the create or update that finds a boundary already
past.

At each boundary (domain.next_boundary) the schedule changes its subscription over the bus,
as the subscriptions service itself acting for the schedule's organization and mode: its
start creates the customer's subscription on phase 0's plan, a later phase's start changes
its plan and seats, the end releases it or cancels it at once.

Exactly once per boundary, with any number of runners: a runner takes the schedule's row
lock (skipping a schedule another runner holds), reads `current_phase`, and moves it to the
boundary it crossed in the transaction that records what the boundary did. The request to
the subscription carries an idempotency key made of the schedule and the boundary, so a
boundary retried after that transaction rolled back (no answer, a crash before commit)
changes the subscription once: the retry gets the first reply back. A refusal (4xx) changed
nothing: the next attempt asks afresh, with the key's refusal count one higher."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
from msgspec import UNSET

from contracts import Scope
from contracts.common import IdParams
from contracts.errors import Failure, not_found, unavailable
from contracts.ids import new_id, now, rfc3339
from contracts.rules import user_id
from contracts.subscription_schedules import (
    SCHEDULE_CANCEL,
    SCHEDULE_CREATE,
    SCHEDULE_GET,
    SCHEDULE_LIST,
    SCHEDULE_RELEASE,
    SCHEDULE_UPDATE,
    SUBSCRIPTION_SCHEDULES_PAGE,
    Phase,
    ScheduleCreateParams,
    ScheduleListParams,
    ScheduleUpdateParams,
    SubscriptionSchedule,
)
from contracts.subscriptions import (
    SUBSCRIPTION_CANCEL,
    SUBSCRIPTION_CREATE,
    SUBSCRIPTION_UPDATE,
    SubscriptionCancelParams,
    SubscriptionCreateParams,
    SubscriptionUpdateParams,
)
from services.runtime.bus import created, paged
from services.runtime.idempotency import fingerprint_of
from services.runtime.outbox import add_event
from services.runtime.scopes import service_scope
from services.runtime.service import Context, Router
from services.subscriptions.items.handlers import plan_price
from services.subscriptions.schedules import domain, store
from services.subscriptions.subscriptions.domain import require_mint

log = logging.getLogger(__name__)
router = Router()

DUE_BATCH = 100  # schedules taken per run of the job
INTERVAL_SECONDS = 15.0
RETRY_AFTER = timedelta(minutes=5)  # a boundary refused or unanswered
PLAN_NOT_FOUND = "plan not found"


@router.handler(SCHEDULE_CREATE, transaction=True)
async def create_schedule(ctx: Context, scope: Scope, p: ScheduleCreateParams,
                          conn: asyncpg.Connection) -> Any:
    customer = user_id(domain.customer(p))
    behavior = domain.end_behavior(p.endBehavior)
    phases = domain.phases(p.phases or [])
    await _plans_allowed(conn, scope, phases)
    first = domain.next_boundary(p.startDate, phases, domain.BEFORE_START)
    row = await store.create(
        conn, scope.org_id, scope.livemode, new_id("sub_sched_"), customer_id=customer,
        start_date=p.startDate, end_behavior=behavior, phases=msgspec.to_builtins(phases),
        metadata=p.metadata, next_run_at=first.at if first else None)
    await _announce(conn, scope, row, "subscription_schedule.created")
    return created(await _ran(ctx, conn, scope, row["id"]))


@router.handler(SCHEDULE_LIST)
async def list_schedules(ctx: Context, scope: Scope, p: ScheduleListParams) -> Any:
    limit, offset = SUBSCRIPTION_SCHEDULES_PAGE.apply(p.limit, p.offset)
    rows, total = await store.schedules(ctx.pool, scope.org_id, scope.livemode,
                                        user_id(p.customerId), p.status, limit, offset)
    return paged([_view(r) for r in rows], total, offset, len(rows))


@router.handler(SCHEDULE_GET)
async def get_schedule(ctx: Context, scope: Scope, p: IdParams) -> SubscriptionSchedule:
    return _view(await _load(ctx.pool, scope, p.id))


@router.handler(SCHEDULE_UPDATE, transaction=True)
async def update_schedule(ctx: Context, scope: Scope, p: ScheduleUpdateParams,
                          conn: asyncpg.Connection) -> SubscriptionSchedule:
    row = await _load(conn, scope, p.id, lock=True)
    domain.updatable(row["status"])
    changes: dict[str, Any] = {}
    if p.endBehavior.strip():
        changes["end_behavior"] = domain.end_behavior(p.endBehavior)
    if p.phases:  # an empty array changes nothing (§3.3.4)
        phases = domain.phases(p.phases)
        domain.keeps_begun(row["current_phase"], phases)
        await _plans_allowed(conn, scope, phases)
        following = domain.next_boundary(row["start_date"], phases, row["current_phase"])
        changes.update(phases=msgspec.to_builtins(phases),
                       next_run_at=following.at if following else None)
    if changes:
        row = await store.update(conn, scope.org_id, scope.livemode, row["id"], **changes)
    await _announce(conn, scope, row, "subscription_schedule.updated")
    return await _ran(ctx, conn, scope, row["id"])


@router.handler(SCHEDULE_CANCEL, transaction=True)
async def cancel_schedule(ctx: Context, scope: Scope, p: IdParams,
                          conn: asyncpg.Connection) -> SubscriptionSchedule:
    """§3.3.5: the schedule stops; its subscription is left as it is."""
    row = await _load(conn, scope, p.id, lock=True)
    return await _stop(conn, scope, row, domain.cancel(row["status"]))


@router.handler(SCHEDULE_RELEASE, transaction=True)
async def release_schedule(ctx: Context, scope: Scope, p: IdParams,
                           conn: asyncpg.Connection) -> SubscriptionSchedule:
    """§3.3.6: the schedule stops; its subscription goes on alone."""
    row = await _load(conn, scope, p.id, lock=True)
    return await _stop(conn, scope, row, domain.release(row["status"]))


async def _stop(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                status: str) -> SubscriptionSchedule:
    row = await store.update(conn, scope.org_id, scope.livemode, row["id"], status=status,
                             next_run_at=None)
    return await _announce(conn, scope, row, f"subscription_schedule.{status}")


async def _plans_allowed(conn: asyncpg.Connection, scope: Scope, phases: list[Phase]) -> None:
    """Every phase's plan exists, and a paid one is the caller's to sell (as a subscription
    create asks, §3.1.1 step 5): the schedule will act on it with the service's rights."""
    for plan_id in dict.fromkeys(phase.planId for phase in phases):
        price = await plan_price(conn, plan_id)
        if price is None:
            raise not_found(PLAN_NOT_FOUND)
        require_mint(price, scope.actor.may_mint)


async def _ran(ctx: Context, conn: asyncpg.Connection, scope: Scope,
               schedule_id: str) -> SubscriptionSchedule:
    """The schedule once the boundaries already past are crossed (savepoints of the
    request's transaction, which holds the schedule)."""
    await run(ctx, scope.org_id, scope.livemode, schedule_id, conn)
    return _view(await store.schedule(conn, scope.org_id, scope.livemode, schedule_id))


# ---- the phases run ------------------------------------------------------------------------

async def run_due(ctx: Context) -> None:
    """The job: every schedule with a boundary due, through all its due boundaries."""
    for row in await store.due(ctx.pool, now(), DUE_BATCH):
        await run(ctx, row["org_id"], row["livemode"], row["id"])


async def run(ctx: Context, org_id: str, livemode: bool, schedule_id: str,
              conn: asyncpg.Connection | None = None) -> None:
    """Cross the schedule's due boundaries in order, each in a transaction of its own (a
    savepoint of `conn`'s when given). A boundary the subscription refuses, or that gets
    no answer, stays due: the job comes back to it after RETRY_AFTER (meanwhile other
    schedules go first)."""
    # The schedule changing its subscription is the subscriptions service itself: the
    # caller's right to each phase's plan was checked when the schedule was written.
    scope = service_scope(org_id, livemode)
    while True:
        try:
            async with _transaction(ctx, conn) as tx:
                if not await _cross(ctx, tx, scope, schedule_id):
                    return
        except Failure as failure:
            log.warning("subscription schedule %s: boundary not crossed: %s", schedule_id,
                        failure.error.message)
            refused = 400 <= failure.error.status < 500 and not failure.error.retryable
            await store.postpone(conn or ctx.pool, org_id, livemode, schedule_id,
                                 now() + RETRY_AFTER, refused=refused)
            return


@asynccontextmanager
async def _transaction(ctx: Context, conn: asyncpg.Connection | None,
                       ) -> AsyncIterator[asyncpg.Connection]:
    if conn is not None:
        async with conn.transaction():
            yield conn
    else:
        async with ctx.pool.acquire() as own, own.transaction():
            yield own


async def _cross(ctx: Context, conn: asyncpg.Connection, scope: Scope,
                 schedule_id: str) -> bool:
    """The schedule's next boundary, if it is due and no other runner holds the schedule;
    whether it was crossed."""
    org, mode = scope.org_id, scope.livemode
    row = await store.take(conn, org, mode, schedule_id)
    if row is None or row["status"] not in (domain.NOT_STARTED, domain.ACTIVE):
        return False
    phases = _phases(row)
    boundary = domain.next_boundary(row["start_date"], phases, row["current_phase"])
    if boundary is None or boundary.at > now():
        return False
    key = (f"subscription_schedule {schedule_id} boundary {boundary.phase}"
           f" attempt {row['refusals']}")
    changes: dict[str, Any] = {}
    if boundary.phase == 0:
        phase = phases[0]
        subscription = await _ask(ctx, scope, key, SUBSCRIPTION_CREATE, SubscriptionCreateParams(
            userId=row["customer_id"], planId=phase.planId, quantity=_seats(phase)))
        changes.update(status=domain.ACTIVE, subscription_id=subscription.id)
    elif boundary.phase < len(phases):
        phase = phases[boundary.phase]
        await _ask(ctx, scope, key, SUBSCRIPTION_UPDATE, SubscriptionUpdateParams(
            id=row["subscription_id"], planId=phase.planId, prorate=domain.prorates(phase),
            quantity=_seats(phase)))
    elif row["end_behavior"] == domain.CANCEL:
        # The schedule's end is its subscription's: canceled then, not at its period's end.
        await _ask(ctx, scope, key, SUBSCRIPTION_CANCEL, SubscriptionCancelParams(
            id=row["subscription_id"], atPeriodEnd=False))
        changes["status"] = domain.COMPLETED
    else:
        changes["status"] = domain.RELEASED
    following = domain.next_boundary(row["start_date"], phases, boundary.phase)
    row = await store.update(conn, org, mode, schedule_id, current_phase=boundary.phase,
                             next_run_at=following.at if following else None, refusals=0,
                             **changes)
    await _announce(conn, scope, row, "subscription_schedule." + (
        row["status"] if row["status"] in (domain.RELEASED, domain.COMPLETED) else "updated"))
    return True


async def _ask(ctx: Context, scope: Scope, key: str, endpoint: Any, params: Any) -> Any:
    keyed = msgspec.structs.replace(scope, idempotency_key=key,
                                    fingerprint=fingerprint_of(params))
    result = await ctx.ask(endpoint, keyed, params)
    if result is None:
        raise unavailable()
    return result


def _seats(phase: Phase) -> Any:
    seats = domain.quantity(phase)
    return UNSET if seats is None else seats


# ---- reading and announcing ----------------------------------------------------------------

async def _load(db: Any, scope: Scope, schedule_id: str, *, lock: bool = False,
                ) -> asyncpg.Record:
    row = await store.schedule(db, scope.org_id, scope.livemode, schedule_id.strip(),
                               lock=lock)
    if row is None:
        raise not_found(domain.SCHEDULE_NOT_FOUND)
    return row


async def _announce(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                   type: str) -> SubscriptionSchedule:
    schedule = _view(row)
    await add_event(conn, "subscriptions", type=type, object_type="subscription_schedule",
                    object_id=schedule.id, org_id=scope.org_id, livemode=scope.livemode,
                    customer_id=schedule.customerId, data=schedule)
    return schedule


def _phases(row: asyncpg.Record) -> list[Phase]:
    return msgspec.convert(row["phases"], list[Phase])


def _view(r: asyncpg.Record) -> SubscriptionSchedule:
    return SubscriptionSchedule(
        id=r["id"], customerId=r["customer_id"], status=r["status"],
        startDate=rfc3339(r["start_date"]), endBehavior=r["end_behavior"],
        created=rfc3339(r["created_at"]), subscriptionId=r["subscription_id"],
        phases=_phases(r) or None, metadata=r["metadata"])
