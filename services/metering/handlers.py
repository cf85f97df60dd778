"""Metering request handlers and upkeep: decode (done by the runtime), call the domain,
encode. Meter events come in by request/reply here (`events.record`; `events.accept` takes
asynchronous batches with an Idempotency-Key, see `intake.py`) and through JetStream
(`consumer.py`); both store through `store.write_events`."""

from __future__ import annotations

import functools
import logging
import math
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec

from contracts import Reply, Scope
from contracts.catalog import load_catalog
from contracts.errors import invalid, not_found
from contracts.ids import new_id, now, rfc3339
from contracts.limits import METERS_PAGE
from contracts.metering import (
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
from contracts.metering_subjects import (
    METERING_DNS_PLAN_LIST,
    METERING_DNS_USAGE_RECORD,
    METERING_DNS_USAGE_SUMMARY,
    METERING_EVENTS_ACCEPT,
    METERING_EVENTS_RECORD,
    METERING_EVENTS_SUMMARY,
    METERING_METER_CREATE,
    METERING_METER_FIND,
    METERING_METER_GET,
    METERING_METER_IDS,
    METERING_METER_LIST,
    METERING_USAGE_AGGREGATE,
)
from services.metering import domain, store
from services.metering.consumer import MAX_DELIVERIES, MeterEventConsumer
from services.metering.intake import KeyedIntake, keyed_batch_id
from services.metering.recorder import EventRecorder
from services.runtime import db
from services.runtime.bus import Service, created, nats_servers
from services.runtime.config import Settings

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
UPKEEP_INTERVAL_S = 3600.0
# Every block of the key table is read once a day: a key is forgotten 0 to 24 h after its
# window (domain.DEDUP_RETENTION) ends.
KEY_SWEEP_PASS_S = 86400.0


class MeteringService(Service):
    """The bus service plus the JetStream consumer of asynchronously accepted batches."""

    def __init__(self, settings: Settings):
        super().__init__("metering", settings, migrations=MIGRATIONS)
        env = settings.env
        self.consumer = MeterEventConsumer(
            lambda: self.pool, nats_servers(settings.nats_url),
            ack_wait_s=float(env.get("METERING_ACK_WAIT", "30")),
            max_deliveries=int(env.get("METERING_MAX_DELIVERIES", str(MAX_DELIVERIES))))

    async def start(self) -> None:
        await super().start()
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        await super().stop()


class KnownMeters:
    """Meter ids per organization and mode. Meters are never deleted, so an id once seen
    stays valid; an id not seen yet is looked up again (created by another replica)."""

    def __init__(self, svc: Service):
        self._svc = svc
        self._ids: dict[tuple[str, bool], frozenset[str]] = {}

    async def require(self, scope: Scope, events: list[AcceptedEvent]) -> None:
        account = (scope.org_id, scope.livemode)
        known = self._ids.get(account, frozenset())
        if all(e.meterId in known for e in events):
            return
        known = frozenset(await store.meter_ids(self._svc.pool, *account))
        if len(self._ids) > 100_000:
            self._ids.clear()
        self._ids[account] = known
        domain.require_known_meters(events, known)


def create(settings: Settings) -> Service:
    svc = MeteringService(settings)
    catalog = load_catalog(settings.plans_dir or None)
    meters = KnownMeters(svc)
    recorder = EventRecorder(lambda: svc.pool, svc.keys)
    intake = KeyedIntake(lambda: svc.pool, svc.keys, lambda: svc.consumer.js)

    # ---- meters -------------------------------------------------------------------------

    @svc.handler(METERING_METER_CREATE, MeterCreateParams)
    async def create_meter(scope: Scope, p: MeterCreateParams):
        aggregation, currency = domain.new_meter(p.name, p.eventName, p.aggregationType,
                                                 p.currency)
        row = await store.create_meter(svc.pool, scope.org_id, scope.livemode, new_id("mtr_"),
                                       p.name, p.eventName, aggregation, currency,
                                       p.dimensions)
        if row is None:
            raise domain.meter_exists_conflict()
        return created(_meter(row))

    @svc.handler(METERING_METER_LIST, MeterListParams)
    async def list_meters(scope: Scope, p: MeterListParams) -> MeterList:
        limit, offset = METERS_PAGE.apply(p.limit, p.offset)
        rows = await store.meters(svc.pool, scope.org_id, scope.livemode, limit, offset)
        items = [_meter(r) for r in rows]
        return MeterList(items, len(items))

    @svc.handler(METERING_METER_GET, MeterGetParams)
    async def get_meter(scope: Scope, p: MeterGetParams) -> Meter:
        row = await store.meter(svc.pool, scope.org_id, scope.livemode, p.id)
        if row is None:
            raise not_found("meter not found")
        return _meter(row)

    @svc.handler(METERING_METER_FIND, MeterFindQuery)
    async def find_meter(scope: Scope, p: MeterFindQuery) -> Meter:
        row = await store.meter_by_event_name(svc.pool, scope.org_id, scope.livemode,
                                              p.eventName)
        if row is None:
            raise not_found("meter not found")
        return _meter(row)

    @svc.handler(METERING_METER_IDS, MeterIdsQuery)
    async def meter_ids(scope: Scope, p: MeterIdsQuery) -> MeterIds:
        return MeterIds(await store.meter_ids(svc.pool, scope.org_id, scope.livemode))

    # ---- meter events -------------------------------------------------------------------

    @svc.handler(METERING_EVENTS_RECORD, MeterEventBatch)
    async def record_events(scope: Scope, p: MeterEventBatch) -> bytes:
        events = domain.accept_batch(p.events, now(), domain.fresh_id_base())
        await meters.require(scope, events)
        return await recorder.record(scope, events)

    @svc.handler(METERING_EVENTS_ACCEPT, MeterEventBatch)
    async def accept_keyed_events(scope: Scope, p: MeterEventBatch) -> bytes:
        """`Prefer: respond-async` with an Idempotency-Key (the gateway sends keyless ones
        to JetStream itself): the same rules, then the key claimed here (`intake.py`)."""
        if not scope.idempotency_key:
            raise invalid("Idempotency-Key is required", "Idempotency-Key")
        batch_id = keyed_batch_id(scope)
        events = domain.accept_batch(p.events, now(), domain.derived_id_base(batch_id))
        await meters.require(scope, events)
        return await intake.accept(scope, batch_id, events)

    @svc.handler(METERING_EVENTS_SUMMARY, SummaryQuery)
    async def summary(scope: Scope, p: SummaryQuery) -> Summary:
        meter_id = p.meterId.strip()
        if not meter_id:
            raise invalid("meterId query parameter is required", "meterId")
        row = await store.meter(svc.pool, scope.org_id, scope.livemode, meter_id)
        if row is None:
            raise not_found("meter not found")
        window = domain.summary_window(p.periodStart, p.periodEnd)
        value, count = await store.aggregate(svc.pool, scope.org_id, scope.livemode,
                                             meter_id, p.userId, window,
                                             row["aggregation_type"])
        return Summary(meter_id, row["name"], p.userId, row["aggregation_type"],
                       domain.quantity(value), count, p.periodStart, p.periodEnd)

    @svc.handler(METERING_USAGE_AGGREGATE, UsageAggregateParams)
    async def aggregate_usage(scope: Scope, p: UsageAggregateParams) -> UsageAggregate:
        if not p.userId:
            raise invalid("userId is required", "userId")
        window = domain.usage_window(p.start, p.end, p.endInclusive)
        rows = await store.usage_by_meter(svc.pool, scope.org_id, scope.livemode, p.userId,
                                          window, domain.API_USAGE_EVENT_NAME)
        return UsageAggregate([
            MeterUsage(r["id"], r["name"], r["currency"], r["aggregation_type"],
                       domain.quantity(r[r["aggregation_type"]]), r["count"]) for r in rows])

    # ---- DNS ----------------------------------------------------------------------------

    dns_meters: dict[tuple[str, bool], str] = {}

    async def dns_meter(scope: Scope, conn: asyncpg.Connection, *, create: bool) -> str | None:
        """The organization's `dns-queries` meter, created on first use."""
        account = (scope.org_id, scope.livemode)
        if account in dns_meters:
            return dns_meters[account]
        row = await store.meter_by_event_name(conn, *account, domain.DNS_EVENT_NAME)
        if row is None and create:
            # Committed on its own (not in the caller's transaction, which a refusal rolls
            # back): the meter exists from now on, as in the reference.
            await store.create_meter(svc.pool, *account, new_id("mtr_"),
                                     domain.DNS_METER_NAME, domain.DNS_EVENT_NAME, "sum",
                                     domain.DEFAULT_CURRENCY, domain.DNS_DIMENSIONS)
            row = await store.meter_by_event_name(conn, *account, domain.DNS_EVENT_NAME)
        if row is None:
            return None
        dns_meters[account] = row["id"]
        return row["id"]

    def dns_plan_of(scope: Scope, user: str):
        # No subscriptions service yet: nobody has a known DNS subscription, so everyone is
        # on `dns-free` until subscriptions can answer (then pass its plan slug here).
        return domain.dns_plan(catalog, None)

    @svc.handler(METERING_DNS_USAGE_RECORD, DnsUsageParams, transaction=True)
    async def record_dns_usage(scope: Scope, p: DnsUsageParams, conn: asyncpg.Connection):
        zone, user = domain.dns_usage_request(p.zone, p.user)
        if p.queries <= 0:  # the reference answers 200 and writes nothing
            return DnsUsageResult(recorded=True, remaining=domain.UNLIMITED,
                                  limit=domain.UNLIMITED)
        ts = domain.dns_timestamp(p.timestamp, now())
        limit = domain.daily_limit(dns_plan_of(scope, user))
        day = domain.start_of_day(ts)
        # The limit is checked against the usage's own day, under a lock held until commit.
        await store.lock_dns_day(conn, scope.org_id, scope.livemode, user, day)
        meter_id = await dns_meter(scope, conn, create=True)
        used, _ = await store.dns_usage(conn, scope.org_id, scope.livemode, meter_id, user,
                                        day, day + timedelta(days=1))
        key = domain.dns_idempotency(user, zone, ts)
        if await store.event_key(conn, scope.org_id, scope.livemode, key) is not None:
            # Recorded before (a retry): counted once.
            return created(DnsUsageResult(True, domain.remaining(limit, used), limit))
        if domain.over_limit(limit, used, p.queries):
            raise domain.limit_exceeded(limit, used, p.queries)
        event = AcceptedEvent(domain.fresh_id_base() + "00", meter_id, user, p.queries,
                              domain.to_us(ts), key, {"zone": zone, "errors": p.errors})
        await store.write_events(conn, [AcceptedBatch("", scope.org_id, scope.livemode,
                                                      [event])])
        return created(DnsUsageResult(True, domain.remaining(limit, used + p.queries), limit))

    @svc.handler(METERING_DNS_USAGE_SUMMARY, DnsSummaryQuery)
    async def dns_summary(scope: Scope, p: DnsSummaryQuery) -> DnsSummary:
        if not p.user:
            raise invalid("user query parameter is required", "user")
        period = p.period.strip() or "day"
        start, end = domain.dns_window(period, now())
        plan = dns_plan_of(scope, p.user)
        limit = domain.daily_limit(plan)
        async with svc.pool.acquire() as conn:
            meter_id = await dns_meter(scope, conn, create=False)
            queries, zones = (0, 0) if meter_id is None else await store.dns_usage(
                conn, scope.org_id, scope.livemode, meter_id, p.user, start, end)
        return DnsSummary(
            user=p.user, period=period, queries=queries, zones=zones, records=0, limit=limit,
            plan=plan.slug if plan else domain.DEFAULT_DNS_PLAN,
            periodLimit=domain.period_limit(limit, start) if period == "month" else None)

    # The catalog is loaded once at start: its reply is encoded once too.
    dns_plans = msgspec.json.encode(Reply(result=[
        domain.plan_view(plan) for plan in catalog.by_category(domain.DNS_CATEGORY)]))

    @svc.handler(METERING_DNS_PLAN_LIST, DnsPlansQuery)
    async def list_dns_plans(scope: Scope, p: DnsPlansQuery) -> bytes:
        return dns_plans

    svc.every(UPKEEP_INTERVAL_S, functools.partial(upkeep, svc, ExpiredKeySweeper()))
    return svc


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


async def upkeep(svc: Service, sweeper: ExpiredKeySweeper | None = None) -> None:
    """Monthly partitions ahead of need; dedup keys and batch ids forgotten after their
    window; event months dropped after the retention, when one is configured."""
    at = now()
    current = domain.start_of_month(at)
    # From the month of the oldest acceptable timestamp to two months ahead.
    first = domain.first_month_needed(at)
    months = (current.year - first.year) * 12 + current.month - first.month + 3
    await store.ensure_partitions(svc.pool, first, months)
    cutoff = now() - domain.DEDUP_RETENTION
    await (sweeper or ExpiredKeySweeper()).sweep(svc.pool, cutoff,
                                                 UPKEEP_INTERVAL_S / KEY_SWEEP_PASS_S)
    await db.delete_older_than(svc.pool, "metering.ingested_batches", cutoff)
    retention = int(svc.settings.env.get("METERING_RETENTION_MONTHS", "0"))
    if retention > 0:
        dropped = await store.drop_partitions_before(svc.pool,
                                                     domain.retention_cutoff(at, retention))
        if dropped:
            log.info("metering: dropped event partitions %s", ", ".join(dropped))
