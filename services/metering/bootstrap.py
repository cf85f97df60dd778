"""Metering's state, built once when it starts: the plan catalog (and the DNS plans reply,
encoded once), caches of meter ids, the synchronous writer and the JetStream
workers."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import msgspec

from contracts import Reply
from contracts.catalog import Catalog, load_catalog
from contracts.meter_events import KnownMeters
from contracts.metering import plan_view
from services.metering import domain
from services.metering.consumer import MAX_DELIVERIES, MeterEventConsumer
from services.metering.handlers import ExpiredKeySweeper, UsageKey, usage_reader
from services.metering.recorder import EventRecorder
from services.runtime import db
from services.runtime.batching import MicroBatcher
from services.runtime.bus import nats_servers
from services.runtime.config import Settings
from services.runtime.entitlements import EntitlementCache
from services.runtime.service import Context


@dataclass(slots=True)
class Metering:
    catalog: Catalog
    dns_plans: bytes  # the `dns_plan.list` reply
    meters: KnownMeters
    recorder: EventRecorder
    usage_reads: asyncpg.Pool  # see `usage_reads`
    usage: MicroBatcher[UsageKey, list[asyncpg.Record]]  # customers' usage, read together
    consumer: MeterEventConsumer
    sweeper: ExpiredKeySweeper
    dns_meters: dict[tuple[str, bool], str] = field(default_factory=dict)  # org's dns meter
    # Customers' subscriptions (their DNS plan), as the subscriptions service last said.
    entitlements: EntitlementCache = field(default_factory=EntitlementCache)


async def usage_reads(settings: Settings) -> asyncpg.Pool:
    """Sessions of their own for usage over a period (summaries, invoices' lines), which
    keep one plan per statement. Left to choose, PostgreSQL plans such a read again on
    every call (a plan for the given times prunes the events' partitions, so it always looks
    cheaper than the generic plan), and planning costs five times what the read does; the
    generic plan prunes the partitions as it starts. Writers keep the planner's choice."""
    return await db.create_pool(settings.database_url, min_size=1,
                                max_size=settings.db_pool_size,
                                settings={"plan_cache_mode": "force_generic_plan"})


async def bootstrap(ctx: Context) -> None:
    settings, env = ctx.settings, ctx.settings.env
    readers = await usage_reads(settings)
    ctx.on_stop(readers.close)
    catalog = load_catalog(settings.plans_dir or None)
    consumer = MeterEventConsumer(
        lambda: ctx.pool, nats_servers(settings.nats_url),
        ack_wait_s=float(env.get("METERING_ACK_WAIT", "30")),
        max_deliveries=int(env.get("METERING_MAX_DELIVERIES", str(MAX_DELIVERIES))))
    ctx.state = Metering(
        catalog=catalog,
        dns_plans=msgspec.json.encode(Reply(result=[
            plan_view(plan) for plan in catalog.by_category(domain.DNS_CATEGORY)])),
        meters=KnownMeters(),
        recorder=EventRecorder(lambda: ctx.pool, ctx.keys),
        usage_reads=readers,
        usage=usage_reader(readers),
        consumer=consumer,
        sweeper=ExpiredKeySweeper())
    await consumer.start()
    ctx.on_stop(consumer.stop)
