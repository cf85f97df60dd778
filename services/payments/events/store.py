"""The event log: the SQL. Reads name the organization and the mode."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from services.payments.events.domain import Filter, Logged
from services.payments.webhook_deliveries.store import enabled_endpoints_of

Db = asyncpg.Pool | asyncpg.Connection

# Whether a delivery of the event is still being tried (§6.5: `pending`).
_PENDING = ("exists (select 1 from payments.webhook_deliveries d"
            " where d.event_id = e.id and d.status = 'pending')")


# Replicas log their fetches one at a time, so deliveries queue in the order the stream holds
# their events: with `serialized`, the lock is taken before the first event is written (an
# init plan) and held until the caller's transaction ends.
_LOCK = "pg_advisory_xact_lock(hashtextextended('payments.event_log', 0))"
_LOG = """with kept as (
    insert into payments.billing_events (id, org_id, livemode, type, object_type, object_id,
        customer_id, created_at, body)
    select * from unnest($1::text[], $2::text[], $3::boolean[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::timestamptz[], $9::bytea[])
    {where}
    on conflict (id) do nothing returning id, org_id, livemode),
wanted as ({wanted})
select (select coalesce(array_agg(id), '{{}}') from kept) as new,
    (select coalesce(json_agg(wanted), '[]') from wanted) as endpoints"""
_WANTED = enabled_endpoints_of("(select distinct org_id, livemode from kept)")
_LOG_SERIALIZED = _LOG.format(where=f"where (select true from {_LOCK})", wanted=_WANTED)
_LOG_UNLOCKED = _LOG.format(where="", wanted=_WANTED)


async def log(conn: asyncpg.Connection, events: list[Logged], *, serialized: bool,
              ) -> tuple[list[Logged], list[dict[str, Any]]]:
    """Keep the events, in the caller's transaction; returns those not kept before (an
    event delivered again is not), and the enabled endpoints of their organizations and
    modes (as `enabled_endpoints_of` reads them), for their deliveries."""
    row = await conn.fetchrow(_LOG_SERIALIZED if serialized else _LOG_UNLOCKED, *map(list, zip(*(
        (e.id, e.org_id, e.livemode, e.type, e.object_type, e.object_id, e.customer_id,
         e.created_at, e.body) for e in events), strict=True)))
    new = set(row["new"])
    return [e for e in events if e.id in new], msgspec.json.decode(row["endpoints"])


async def serialize(conn: asyncpg.Connection) -> None:
    """Take the log's write lock, until the caller's transaction ends."""
    await conn.execute(f"select {_LOCK}")


async def events(db: Db, org_id: str, livemode: bool, f: Filter) -> list[asyncpg.Record]:
    return await db.fetch(
        f"""select e.body, {_PENDING} as pending from payments.billing_events e
        where e.org_id = $1 and e.livemode = $2 and ($3 = '' or e.type = $3)
          and ($4 = '' or e.object_id = $4) and ($5 = '' or e.object_type = $5)
          and ($6 = '' or e.customer_id = $6)
          and ($8 = '' or (e.created_at, e.id) < (
              select created_at, id from payments.billing_events
              where org_id = $1 and livemode = $2 and id = $8))
        order by e.created_at desc, e.id desc limit $7""",
        org_id, livemode, f.type, f.object_id, f.object_type, f.customer_id, f.limit,
        f.starting_after)


async def event(db: Db, org_id: str, livemode: bool, event_id: str,
                ) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select e.body, {_PENDING} as pending from payments.billing_events e"
        f" where e.org_id = $1 and e.livemode = $2 and e.id = $3", org_id, livemode, event_id)
