"""Metering request handlers and upkeep: decode (done by the runtime), call the domain,
encode. Meter events come in by request/reply here (`events.record`; `events.accept` takes
asynchronous batches with an Idempotency-Key, see `intake.py`) and through JetStream
(`consumer.py`); both store through `store.write_events`."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime, timedelta

import asyncpg

from contracts import Reply, Scope
from contracts import meter_events as batches
from contracts.errors import invalid, not_found
from contracts.ids import new_id, now, rfc3339
from contracts.limits import METERS_PAGE
from contracts.metering import (
    DNS_PLAN_LIST,
    DNS_USAGE_RECORD,
    DNS_USAGE_SUMMARY,
    EVENTS_ACCEPT,
    EVENTS_RECORD,
    EVENTS_SUMMARY,
    METER_CREATE,
    METER_FIND,
    METER_GET,
    METER_IDS,
    METER_LIST,
    USAGE_AGGREGATE,
    AcceptedBatch,
    AcceptedEvent,
    DnsPlansQuery,
    DnsSummary,
    DnsSummaryQuery,
    DnsUsageParams,
    DnsUsageResult,
    Meter,
    MeterCreateParams,
    MeterEventBatch,
    MeterFindQuery,
    MeterGetParams,
    MeterIds,
    MeterIdsQuery,
    MeterList,
    MeterListParams,
    MeterUsage,
    Summary,
    SummaryQuery,
    UsageAggregate,
    UsageAggregateParams,
)
from contracts.rules import DEFAULT_CURRENCY
from services.metering import domain, store
from services.metering.intake import hand_over, keyed_batch_id
from services.runtime import db
from services.runtime.batching import MicroBatcher
from services.runtime.bus import created, paged
from services.runtime.service import Context, Router

log = logging.getLogger(__name__)

UPKEEP_INTERVAL_S = 3600.0
# Every block of the key table is read once a day: a key is forgotten 0 to 24 h after its
# window (domain.DEDUP_RETENTION) ends.
KEY_SWEEP_PASS_S = 86400.0

# Rollup shard rows folded per statement (`store.fold_shards`).
FOLD_ROWS = 10_000

router = Router()


# ---- meters -------------------------------------------------------------------------


@router.handler(METER_CREATE)
async def create_meter(ctx: Context, scope: Scope, p: MeterCreateParams):
    aggregation, currency = domain.new_meter(p.name, p.eventName, p.aggregationType,
                                             p.currency)
    row = await store.create_meter(ctx.pool, scope.org_id, scope.livemode, new_id("mtr_"),
                                   p.name, p.eventName, aggregation, currency,
                                   p.dimensions)
    if row is None:
        raise domain.meter_exists_conflict()
    return created(_meter(row))


@router.handler(METER_LIST)
async def list_meters(ctx: Context, scope: Scope, p: MeterListParams) -> Reply:
    limit, offset = METERS_PAGE.apply(p.limit, p.offset)
    rows, total = await store.meters(ctx.pool, scope.org_id, scope.livemode, limit, offset)
    items = [_meter(r) for r in rows]
    return paged(MeterList(items, len(items)), total, offset, len(items))


@router.handler(METER_GET)
async def get_meter(ctx: Context, scope: Scope, p: MeterGetParams) -> Meter:
    row = await store.meter(ctx.pool, scope.org_id, scope.livemode, p.id)
    if row is None:
        raise not_found("meter not found")
    return _meter(row)


@router.handler(METER_FIND)
async def find_meter(ctx: Context, scope: Scope, p: MeterFindQuery) -> Meter:
    row = await store.meter_by_event_name(ctx.pool, scope.org_id, scope.livemode,
                                          p.eventName)
    if row is None:
        raise not_found("meter not found")
    return _meter(row)


@router.handler(METER_IDS)
async def meter_ids(ctx: Context, scope: Scope, p: MeterIdsQuery) -> MeterIds:
    return MeterIds(await store.meter_ids(ctx.pool, scope.org_id, scope.livemode))


# ---- meter events -------------------------------------------------------------------


@router.handler(EVENTS_RECORD)
async def record_events(ctx: Context, scope: Scope, p: MeterEventBatch) -> bytes:
    events = batches.accept_batch(p.events, now(), batches.fresh_id_base())
    await _require_meters(ctx, scope, events)
    return await ctx.state.recorder.record(scope, events)


@router.handler(EVENTS_ACCEPT, transaction=True)
async def accept_keyed_events(ctx: Context, scope: Scope, p: MeterEventBatch,
                              conn: asyncpg.Connection) -> Reply:
    """`Prefer: respond-async` with an Idempotency-Key (the gateway sends keyless ones
    to JetStream itself): the same rules, the key claimed by the runtime (`intake.py`)."""
    if not scope.idempotency_key:
        raise invalid("Idempotency-Key is required", "Idempotency-Key")
    batch_id = keyed_batch_id(scope)
    events = batches.accept_batch(p.events, now(), batches.derived_id_base(batch_id))
    await _require_meters(ctx, scope, events)
    await hand_over(ctx.state.consumer.js,
                    AcceptedBatch(batch_id, scope.org_id, scope.livemode, events))
    return Reply(result=batches.accepted(events), status=202)


async def _require_meters(ctx: Context, scope: Scope, events: list[AcceptedEvent]) -> None:
    await ctx.state.meters.require(scope.org_id, scope.livemode, events,
                                   lambda: store.meter_ids(ctx.pool, scope.org_id,
                                                           scope.livemode))


@router.handler(EVENTS_SUMMARY)
async def summary(ctx: Context, scope: Scope, p: SummaryQuery) -> Summary:
    meter_id = p.meterId.strip()
    if not meter_id:
        raise invalid("meterId query parameter is required", "meterId")
    row = await store.meter(ctx.pool, scope.org_id, scope.livemode, meter_id)
    if row is None:
        raise not_found("meter not found")
    window = domain.summary_window(p.periodStart, p.periodEnd)
    value, count = await store.aggregate(ctx.state.usage_reads, scope.org_id, scope.livemode,
                                         meter_id, p.userId, window,
                                         row["aggregation_type"])
    return Summary(meter_id, row["name"], p.userId, row["aggregation_type"],
                   domain.quantity(value), count, p.periodStart, p.periodEnd)


@router.handler(USAGE_AGGREGATE)
async def aggregate_usage(ctx: Context, scope: Scope, p: UsageAggregateParams,
                          ) -> UsageAggregate:
    if not p.userId:
        raise invalid("userId is required", "userId")
    window = domain.usage_window(p.start, p.end, p.endInclusive)
    rows = await ctx.state.usage((scope.org_id, scope.livemode, window, p.userId))
    return UsageAggregate([
        MeterUsage(r["id"], r["name"], r["currency"], r["aggregation_type"],
                   domain.quantity(r[r["aggregation_type"]]), r["count"]) for r in rows])


UsageKey = tuple[str, bool, domain.Window, str]  # organization, mode, window, customer


def usage_reader(readers: asyncpg.Pool) -> MicroBatcher[UsageKey, list[asyncpg.Record]]:
    """Customers' usage asked for together (a billing cycle's renewals, a batch of them in
    one message) read with one statement per organization, mode and window."""

    async def read(keys: list[UsageKey]) -> list[list[asyncpg.Record]]:
        customers: dict[tuple[str, bool, domain.Window], list[str]] = {}
        for org, mode, window, user in keys:
            customers.setdefault((org, mode, window), []).append(user)
        groups = list(customers)
        found = dict(zip(groups, await asyncio.gather(*(
            store.usage_by_meter(readers, org, mode, customers[org, mode, window], window,
                                 batches.API_USAGE_EVENT_NAME)
            for org, mode, window in groups)), strict=True))
        return [found[org, mode, window].get(user, []) for org, mode, window, user in keys]

    return MicroBatcher(read)


# ---- DNS ----------------------------------------------------------------------------


async def dns_meter(ctx: Context, scope: Scope, conn: asyncpg.Connection, *,
                    create: bool) -> str | None:
    """The organization's `dns-queries` meter, created on first use."""
    account = (scope.org_id, scope.livemode)
    dns_meters = ctx.state.dns_meters
    if account in dns_meters:
        return dns_meters[account]
    row = await store.meter_by_event_name(conn, *account, domain.DNS_EVENT_NAME)
    if row is None and create:
        # Committed on its own (not in the caller's transaction, which a refusal rolls
        # back): the meter exists from now on, as in the reference.
        await store.create_meter(ctx.pool, *account, new_id("mtr_"),
                                 domain.DNS_METER_NAME, domain.DNS_EVENT_NAME, "sum",
                                 DEFAULT_CURRENCY, domain.DNS_DIMENSIONS)
        row = await store.meter_by_event_name(conn, *account, domain.DNS_EVENT_NAME)
    if row is None:
        return None
    dns_meters[account] = row["id"]
    return row["id"]


async def dns_plan_of(ctx: Context, scope: Scope, user: str):
    """The plan of the user's DNS subscription, as the subscriptions service says (cached
    briefly); `dns-free` without one, or while no subscriptions service answers."""
    entitled = await ctx.state.entitlements.of(ctx, scope, user)
    subscribed = entitled.plan_in(domain.DNS_CATEGORY) if entitled is not None else None
    return domain.dns_plan(ctx.state.catalog, subscribed)


@router.handler(DNS_USAGE_RECORD, transaction=True)
async def record_dns_usage(ctx: Context, scope: Scope, p: DnsUsageParams,
                           conn: asyncpg.Connection):
    zone, user = domain.dns_usage_request(p.zone, p.user)
    if p.queries <= 0:  # the reference answers 200 and writes nothing
        return DnsUsageResult(recorded=True, remaining=domain.UNLIMITED,
                              limit=domain.UNLIMITED)
    ts = domain.dns_timestamp(p.timestamp, now())
    limit = domain.daily_limit(await dns_plan_of(ctx, scope, user))
    day = domain.start_of_day(ts)
    # The limit is checked against the usage's own day, under a lock held until commit.
    await store.lock_dns_day(conn, scope.org_id, scope.livemode, user, day)
    meter_id = await dns_meter(ctx, scope, conn, create=True)
    used, _ = await store.dns_usage(conn, scope.org_id, scope.livemode, meter_id, user,
                                    day, day + timedelta(days=1))
    key = domain.dns_idempotency(user, zone, ts)
    if await store.event_key(conn, scope.org_id, scope.livemode, key) is not None:
        # Recorded before (a retry): counted once.
        return created(DnsUsageResult(True, domain.remaining(limit, used), limit))
    if domain.over_limit(limit, used, p.queries):
        raise domain.limit_exceeded(limit, used, p.queries)
    event = AcceptedEvent(batches.event_id(batches.fresh_id_base(), 0), meter_id, user, p.queries,
                          batches.to_us(ts), key, {"zone": zone, "errors": p.errors})
    await store.write_events(conn, [AcceptedBatch("", scope.org_id, scope.livemode,
                                                  [event])])
    return created(DnsUsageResult(True, domain.remaining(limit, used + p.queries), limit))


@router.handler(DNS_USAGE_SUMMARY)
async def dns_summary(ctx: Context, scope: Scope, p: DnsSummaryQuery) -> DnsSummary:
    if not p.user:
        raise invalid("user query parameter is required", "user")
    period = p.period.strip() or "day"
    start, end = domain.dns_window(period, now())
    plan = await dns_plan_of(ctx, scope, p.user)
    limit = domain.daily_limit(plan)
    async with ctx.pool.acquire() as conn:
        meter_id = await dns_meter(ctx, scope, conn, create=False)
        queries, zones = (0, 0) if meter_id is None else await store.dns_usage(
            conn, scope.org_id, scope.livemode, meter_id, p.user, start, end)
    return DnsSummary(
        user=p.user, period=period, queries=queries, zones=zones, records=0, limit=limit,
        plan=plan.slug if plan else domain.DEFAULT_DNS_PLAN,
        periodLimit=domain.period_limit(limit, start) if period == "month" else None)


@router.handler(DNS_PLAN_LIST)
async def list_dns_plans(ctx: Context, scope: Scope, p: DnsPlansQuery) -> bytes:
    return ctx.state.dns_plans  # encoded once at start (`bootstrap.py`)


def _meter(r: asyncpg.Record) -> Meter:
    return Meter(r["id"], r["name"], r["event_name"], r["aggregation_type"], r["currency"],
                 r["dimensions"], rfc3339(r["created_at"]))


class ExpiredKeySweeper:
    """Forgets idempotency keys past their window by walking the key table a block range at
    a time, a share of it per upkeep, so that no index on the keys' age has to be written
    for every event. Replicas may sweep at once: deleting a deleted key does nothing."""

    def __init__(self, chunk_blocks: int = 1024):  # 8 MB per statement
        self.chunk_blocks = chunk_blocks
        self.next_block = 0

    async def sweep(self, pool: asyncpg.Pool, cutoff: datetime, share: float) -> int:
        """Sweep `share` of the table (one chunk at least) from where the last sweep
        stopped; returns the number of keys forgotten."""
        total = await store.key_table_blocks(pool)
        budget = max(self.chunk_blocks, math.ceil(total * share))
        forgotten = 0
        while budget > 0 and self.next_block < total:
            end = min(self.next_block + min(budget, self.chunk_blocks), total)
            forgotten += await store.delete_expired_keys(pool, self.next_block, end, cutoff)
            budget -= end - self.next_block
            self.next_block = end
        if self.next_block >= total:  # the pass is complete: the next starts over
            self.next_block = 0
        return forgotten


async def run_upkeep(ctx: Context) -> None:
    """The periodic job: one key sweeper per process carries on where it stopped."""
    await upkeep(ctx, ctx.state.sweeper)


async def upkeep(ctx: Context, sweeper: ExpiredKeySweeper | None = None) -> None:
    """Monthly partitions ahead of need; dedup keys and batch ids forgotten after their
    window; the rollups' shards of past hours folded; event months dropped after the
    retention, when one is configured."""
    at = now()
    current = domain.start_of_month(at)
    # From the month of the oldest acceptable timestamp to two months ahead.
    first = domain.first_month_needed(at)
    months = (current.year - first.year) * 12 + current.month - first.month + 3
    await store.ensure_partitions(ctx.pool, first, months)
    cutoff = now() - domain.DEDUP_RETENTION
    await (sweeper or ExpiredKeySweeper()).sweep(ctx.pool, cutoff,
                                                 UPKEEP_INTERVAL_S / KEY_SWEEP_PASS_S)
    await db.delete_older_than(ctx.pool, "metering.ingested_batches", cutoff)
    while await store.fold_shards(ctx.pool, domain.shards_folded_before(at),
                                  FOLD_ROWS) == FOLD_ROWS:
        pass
    retention = int(ctx.settings.env.get("METERING_RETENTION_MONTHS", "0"))
    if retention > 0:
        dropped = await store.drop_partitions_before(ctx.pool,
                                                     domain.retention_cutoff(at, retention))
        if dropped:
            log.info("metering: dropped event partitions %s", ", ".join(dropped))
