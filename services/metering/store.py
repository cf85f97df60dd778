"""Metering's SQL, in one place.

Events are written by `write_events` / `write_accepted`: the dedup keys (and batch ids) are
claimed and the events inserted by one statement, so an event and its key commit together.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from contracts.metering import AcceptedBatch
from services.metering.domain import Window, WindowParts, day_parts, window_parts
from services.runtime.db import fetch_page

_encode = msgspec.json.Encoder().encode

# ---- meters ----------------------------------------------------------------------------

_METER_COLUMNS = "id, name, event_name, aggregation_type, currency, dimensions, created_at"

_CREATE_METER = f"""
insert into metering.meters (org_id, livemode, id, name, event_name, aggregation_type,
                             currency, dimensions)
values ($1, $2, $3, $4, $5, $6, $7, $8)
on conflict (org_id, livemode, event_name) do nothing
returning {_METER_COLUMNS}
"""


async def create_meter(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                       meter_id: str, name: str, event_name: str, aggregation: str,
                       currency: str, dimensions: list[str] | None) -> asyncpg.Record | None:
    """The new meter, or None when the event name is taken in this organization and mode."""
    return await db.fetchrow(_CREATE_METER, org_id, livemode, meter_id, name, event_name,
                             aggregation, currency, dimensions)


async def meter(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                meter_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_METER_COLUMNS} from metering.meters"
        " where org_id = $1 and livemode = $2 and id = $3", org_id, livemode, meter_id)


async def meter_by_event_name(db: asyncpg.Pool | asyncpg.Connection, org_id: str,
                              livemode: bool, event_name: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_METER_COLUMNS} from metering.meters"
        " where org_id = $1 and livemode = $2 and event_name = $3",
        org_id, livemode, event_name)


async def meters(db: asyncpg.Pool, org_id: str, livemode: bool, limit: int, offset: int
                 ) -> tuple[list[asyncpg.Record], int]:
    """A page of the meters, oldest first, and how many there are in all."""
    return await fetch_page(
        db, f"select {_METER_COLUMNS}, count(*) over () as total from metering.meters"
        " where org_id = $1 and livemode = $2 order by created_at, id limit $3 offset $4",
        org_id, livemode, limit, offset)


async def meter_ids(db: asyncpg.Pool, org_id: str, livemode: bool) -> list[str]:
    rows = await db.fetch("select id from metering.meters where org_id = $1 and livemode = $2",
                          org_id, livemode)
    return [r["id"] for r in rows]


# ---- writing events --------------------------------------------------------------------

# A document is a JSON array of `AcceptedBatch`es as msgspec encodes them — exactly what the
# gateway publishes to JetStream, so a worker hands the messages over without decoding them:
# `[{"b": batch id, "o": org id, "l": livemode, "e": [{"i": id, "m": meter id, "u": user id,
# "v": value, "t": Unix µs, "k": idempotency key, "d": dimensions}, ...]}, ...]`.
_BATCHES = """
    select g.b as batch_id, g.o as org_id, g.l as livemode, g.e, g.n
    from rows from (json_to_recordset($1::json) as (b text, o text, l boolean, e json))
         with ordinality as g(b, o, l, e, n)"""

_EVENTS_OF = """
    select g.org_id, g.livemode, e.*, g.n as batch_n
    from {batches} g, rows from (json_to_recordset(g.e) as (
             i text, m text, u text, v bigint, t bigint, k text, d json))
         with ordinality as e(id, meter_id, user_id, value, ts_us, idempotency, dimensions, n)"""

# Adds a partial aggregate (`excluded`) to an hour's row `h`.
_ADD_TO_HOUR = """on conflict (meter_id, user_id, hour, shard) do update set
        events = h.events + excluded.events,
        total = h.total + excluded.total,
        min_value = least(h.min_value, excluded.min_value),
        max_value = greatest(h.max_value, excluded.max_value),
        last_ts = greatest(h.last_ts, excluded.last_ts),
        last_seq = case when (excluded.last_ts, excluded.last_seq) > (h.last_ts, h.last_seq)
                        then excluded.last_seq else h.last_seq end,
        last_value = case when (excluded.last_ts, excluded.last_seq) > (h.last_ts, h.last_seq)
                          then excluded.last_value else h.last_value end"""

# What the events `stored` (those inserted: duplicates never reach it) add to the usage
# rollups (migration 003): to each hour of each meter and customer, and of each meter for
# every customer (user ''), in this connection's shard; rows are taken in one order by
# every statement (concurrent writers wait, never deadlock). The distinct values of each
# hour, and of each UTC day, are kept for unique_count meters alone: a day takes the values
# new to an hour (a value already in its hour is in its day), so it costs next to nothing
# once an hour has its values.
_ROLLUP = f"""
hours as (
    insert into metering.usage_hours as h (
        meter_id, user_id, hour, shard, org_id, livemode, events, total, min_value,
        max_value, last_ts, last_seq, last_value)
    select meter_id, user_id, hour, pg_backend_pid() % 16, org_id, livemode, events, total,
           min_value, max_value, timestamptz 'epoch' + last[1] * interval '1 microsecond',
           last[2], last[3]
    from (
        select meter_id, coalesce(user_id, '') as user_id, hour, org_id, livemode,
               count(*) as events, sum(value) as total, min(value) as min_value,
               max(value) as max_value,
               -- [time in µs, ingest order, value] of the last event: arrays compare element
               -- by element, so max finds it without sorting
               max(array[(extract(epoch from ts) * 1000000)::bigint, ingest_seq, value]) as last
        from (select *, date_trunc('hour', ts, 'UTC') as hour from stored) s
        group by grouping sets ((meter_id, user_id, hour, org_id, livemode),
                                (meter_id, hour, org_id, livemode))
    ) g
    order by 1, 2, 3
    {_ADD_TO_HOUR}
), hour_values as (
    insert into metering.usage_hour_values (meter_id, user_id, hour, value)
    select meter_id, coalesce(user_id, ''), hour, value
    from (select *, date_trunc('hour', ts, 'UTC') as hour from stored) s
    where meter_id in (
        select m.id from (select distinct org_id, livemode, meter_id from stored) d
        join metering.meters m
          on m.org_id = d.org_id and m.livemode = d.livemode and m.id = d.meter_id
        where m.aggregation_type = 'unique_count')
    group by grouping sets ((meter_id, user_id, hour, value), (meter_id, hour, value))
    order by 1, 2, 3, 4
    on conflict do nothing
    returning meter_id, user_id, hour, value
), day_values as (
    insert into metering.usage_day_values (meter_id, user_id, day, value)
    select distinct meter_id, user_id, date_trunc('day', hour, 'UTC'), value from hour_values
    order by 1, 2, 3, 4
    on conflict do nothing
)"""

# From the events `e`: claim the keys of keyed events, then insert every keyless event and
# each keyed one whose key was claimed (`claimed`: the ids of keyed events inserted). Keys
# are claimed in one order in every statement (concurrent writers wait, never deadlock), and
# among events of this statement with one key the first in the document wins. A key held by
# a committed event is skipped; one being written by another transaction is waited for.
# The events inserted are added to the rollups (`_ROLLUP`). One statement: atomic without
# an explicit transaction.
_STORE = f"""
claimed as (
    insert into metering.event_keys (key_hash, org_id, livemode, key, event_id)
    select metering.event_key_hash(org_id, livemode, idempotency), org_id, livemode,
           idempotency, id
    from e where idempotency <> ''
    order by 1, batch_n, n
    on conflict do nothing
    returning event_id
), stored as (
    insert into metering.events (org_id, livemode, id, meter_id, user_id, value, ts,
                                 idempotency, dimensions)
    select org_id, livemode, id, meter_id, user_id, value,
           timestamptz 'epoch' + ts_us * interval '1 microsecond', idempotency, dimensions
    from e
    where idempotency = '' or id in (select event_id from claimed)
    returning org_id, livemode, meter_id, user_id, value, ts, ingest_seq
), {_ROLLUP}"""

_EVENTS_OF_DOCUMENT = _EVENTS_OF.format(batches=f"({_BATCHES})")
_EVENTS_OF_NEW_BATCHES = _EVENTS_OF.format(batches="""(
    select * from g where (org_id, livemode, batch_id) in (select * from new_batches))""")

# Returns the keyed events not inserted (duplicates: most batches have none) with, for keys
# already held when the statement began, the holder's id. A key taken by a transaction that
# committed meanwhile is not visible to this statement: the caller looks those up
# afterwards (`_STORED_IDS`).
_INSERT_EVENTS = f"""
with e as materialized ({_EVENTS_OF_DOCUMENT}
), {_STORE}
select e.id, e.org_id, e.livemode, e.idempotency as key,
       (select k.event_id from metering.event_keys k  -- an index lookup per duplicate
        where k.key_hash = metering.event_key_hash(e.org_id, e.livemode, e.idempotency)
       ) as holder
from e where e.idempotency <> '' and e.id not in (select event_id from claimed)"""

# Batches accepted asynchronously: their ids are claimed in the same statement and only the
# events of batches never stored before go in, so a redelivered batch is stored once.
_INSERT_ACCEPTED = f"""
with g as (
    select distinct on (org_id, livemode, batch_id) * from ({_BATCHES}) g
    order by org_id, livemode, batch_id, n
), new_batches as (
    insert into metering.ingested_batches (org_id, livemode, batch_id)
    select org_id, livemode, batch_id from g order by 1, 2, 3
    on conflict do nothing
    returning org_id, livemode, batch_id
), e as materialized ({_EVENTS_OF_NEW_BATCHES}
), {_STORE}
select count(*) from claimed"""

_STORED_IDS = """
select k.org_id, k.livemode, k.key, k.event_id
from unnest($1::text[], $2::boolean[], $3::text[]) as u(org_id, livemode, key)
join metering.event_keys k
  on k.key_hash = metering.event_key_hash(u.org_id, u.livemode, u.key)
"""

Db = asyncpg.Pool | asyncpg.Connection


async def write_events(db: Db, batches: list[AcceptedBatch]) -> list[list[str]]:
    """Store each event once per (organization, mode, idempotency key). Returns, for each
    event of each batch, the id of the stored event: its own when it was created now, the
    earlier event's when it is a duplicate (the first occurrence in `batches` wins).

    Give it a connection in a transaction: the rare follow-up read (`_STORED_IDS`, keys
    taken by transactions that committed meanwhile) must come before the commit."""
    skipped: set[str] = set()  # keyed events not inserted
    stored: dict[tuple[str, bool, str], str] = {}  # key → id of the event holding it
    for r in await db.fetch(_INSERT_EVENTS, _encode(batches).decode()):
        skipped.add(r["id"])
        if r["holder"] is not None:
            stored[(r["org_id"], r["livemode"], r["key"])] = r["holder"]
    if not skipped:  # the usual case: every event is new
        return [[e.id for e in b.events] for b in batches]
    first: dict[tuple[str, bool, str], str] = {}  # key → id of its first occurrence
    unseen = []  # held by a transaction that committed while this statement ran
    for b in batches:
        for e in b.events:
            key = (b.orgId, b.livemode, e.idempotency)
            if e.idempotency and key not in first:
                first[key] = e.id
                if e.id in skipped and key not in stored:
                    unseen.append(key)
    if unseen:
        orgs, modes, names = zip(*unseen, strict=True)
        stored.update({(r["org_id"], r["livemode"], r["key"]): r["event_id"]
                       for r in await db.fetch(_STORED_IDS, orgs, modes, names)})
    ids = []
    for b in batches:
        batch_ids = []
        for e in b.events:
            if not e.idempotency:
                batch_ids.append(e.id)
                continue
            key = (b.orgId, b.livemode, e.idempotency)
            winner = first[key]
            batch_ids.append(stored[key] if winner in skipped else winner)
        ids.append(batch_ids)
    return ids


async def write_accepted(db: Db, document: str) -> None:
    """Store the batches of a document (a JSON array of encoded `AcceptedBatch`es), each
    batch once."""
    await db.execute(_INSERT_ACCEPTED, document)


# For each event (in order): the id of the stored event holding its key, or, keyless, its own
# id when it is stored. Read by a writer whose shared write failed, perhaps after its commit.
_STORED_EVENTS = """
select case when u.key <> '' then (
           select k.event_id from metering.event_keys k
           where k.key_hash = metering.event_key_hash(u.org_id, u.livemode, u.key))
       when exists (
           select from metering.events e
           where e.meter_id = u.meter_id and e.user_id = u.user_id
             and e.ts = timestamptz 'epoch' + u.ts_us * interval '1 microsecond'
             and e.id = u.id and e.org_id = u.org_id and e.livemode = u.livemode)
       then u.id end as stored_id
from unnest($1::text[], $2::boolean[], $3::text[], $4::text[], $5::text[], $6::bigint[],
            $7::text[]) with ordinality as u(org_id, livemode, id, meter_id, user_id, ts_us,
                                             key, n)
order by u.n"""


async def stored_events(db: Db, batches: list[AcceptedBatch]) -> list[list[str | None]]:
    """For each event of each batch, the id of the stored event that holds its key (keyed)
    or its own id if it is stored (keyless); None when nothing is stored for it."""
    columns = list(zip(*[(b.orgId, b.livemode, e.id, e.meterId, e.userId, e.timestamp,
                          e.idempotency) for b in batches for e in b.events], strict=True))
    found = iter([r["stored_id"] for r in await db.fetch(_STORED_EVENTS, *columns)])
    return [[next(found) for _ in b.events] for b in batches]


async def event_key(conn: asyncpg.Connection, org_id: str, livemode: bool, key: str,
                    ) -> str | None:
    return await conn.fetchval(
        "select event_id from metering.event_keys"
        " where key_hash = metering.event_key_hash($1, $2, $3)", org_id, livemode, key)


# ---- reading usage ---------------------------------------------------------------------

# A period's usage is read from the rollups for its whole hours and from the events for the
# partial hours at its edges (`domain.window_parts`): partial aggregates of either kind,
# combined. `last` is the latest event time, the latest ingested among equal times.
_PARTIAL = "events, total, min_value, max_value, last_ts, last_seq, last_value"
_EVENT_AS_PARTIAL = ("1::bigint as events, value::numeric as total, value as min_value,"
                     " value as max_value, ts as last_ts, ingest_seq as last_seq,"
                     " value as last_value")
_COMBINED = """coalesce(sum(events), 0)::bigint as count, sum(total) as sum, min(min_value) as min,
    max(max_value) as max,
    (array_agg(last_value order by last_ts desc, last_seq desc))[1] as last"""


EVERY_CUSTOMER = "''"  # the user of a meter's rollups for all its customers together


class _Args:
    """The positional parameters of a statement being written; $1, $2 are the organization
    and the mode."""

    def __init__(self, org_id: str, livemode: bool):
        self.values: list = [org_id, livemode]

    def __call__(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _rollup_rows(arg: _Args, table: str, columns: str, meter: str, user: str | None,
                 scoped: bool, bucket: str, buckets: Window) -> str:
    """The rows of a rollup `table` for one customer (`user`) or every customer whose
    `bucket` (hour or day) is in [buckets.start, buckets.end) (None: unbounded); `scoped`:
    the table has the organization and the mode (distinct values are only ever read with
    their meter's hours, which carry them)."""
    where = [f"meter_id = {meter}", f"user_id = {user or EVERY_CUSTOMER}"]
    if scoped:
        where += ["org_id = $1", "livemode = $2"]
    if buckets.start is not None:
        where.append(f"{bucket} >= {arg(buckets.start)}")
    if buckets.end is not None:
        where.append(f"{bucket} < {arg(buckets.end)}")
    return f"select {columns} from metering.{table} where {' and '.join(where)}"


def _hour_rows(arg: _Args, meter: str, user: str | None, parts: WindowParts) -> str | None:
    """The partial aggregates of the whole hours."""
    if not parts.whole_hours:
        return None
    return _rollup_rows(arg, "usage_hours", _PARTIAL, meter, user, True, "hour",
                        Window(parts.hours_from, parts.hours_to))


def _distinct_values(arg: _Args, meter: str, user: str | None, parts: WindowParts,
                     ) -> str | None:
    """The distinct values of the whole hours: those of whole UTC days from the daily
    values, those of the partial days' hours from the hourly ones (`domain.day_parts`)."""
    cut = day_parts(parts)
    days = None if cut.days is None else _rollup_rows(
        arg, "usage_day_values", "value", meter, user, False, "day", cut.days)
    return _union(days, *(_rollup_rows(arg, "usage_hour_values", "value", meter, user,
                                       False, "hour", hours) for hours in cut.hours)) or None


def _edge_events(arg: _Args, meter: str, user: str | None, parts: WindowParts) -> str | None:
    """The events in the edges (value, ts, ingest_seq), each customer's read through the
    events index: one customer's directly; for every customer, those the rollups have in the
    edges' hours."""
    if not parts.edges:
        return None
    # An index range scan per edge (an `or` of the two would scan everything between).
    events = " union all ".join(
        "select value, ts, ingest_seq from metering.events"
        f" where org_id = $1 and livemode = $2 and meter_id = {meter}"
        f" and user_id = {user or 'u.user_id'} and ts >= {arg(e.start)}"
        f" and ts {'<=' if e.end_inclusive else '<'} {arg(e.end)}" for e in parts.edges)
    if user is not None:
        return events
    return (f"select e.* from (select distinct user_id from metering.usage_hours"
            f" where meter_id = {meter} and hour = any({arg(parts.edge_hours())})"
            f" and user_id <> {EVERY_CUSTOMER}) u"
            f" cross join lateral ({events}) e")


def _union(*sources: str | None) -> str:
    return " union all ".join(s for s in sources if s is not None)


def _usage(arg: _Args, meter: str, user: str | None, parts: WindowParts,
           unique: str | None) -> str:
    """count, sum, min, max and last of a meter's usage (one customer's or everyone's), and
    its unique_count where the SQL condition `unique` holds. The edges' events are read
    once for both (`edge`)."""
    edges = _edge_events(arg, meter, user, parts)
    rows = _union(_hour_rows(arg, meter, user, parts),
                  edges and f"select {_EVENT_AS_PARTIAL} from edge")
    unique_count = ""
    if unique is not None:
        values = _union(_distinct_values(arg, meter, user, parts),
                        edges and "select value from edge")
        # Distinct values by hashing (count(distinct) would sort them all).
        unique_count = (f", case when {unique} then (select count(*) from"
                        f" (select distinct value from ({values}) v) d) end as unique_count")
    shared = "materialized " if unique is not None else ""
    with_edge = f"with edge as {shared}({edges}) " if edges else ""
    return f"{with_edge}select {_COMBINED}{unique_count} from ({rows}) p"


async def aggregate(db: asyncpg.Pool, org_id: str, livemode: bool, meter_id: str,
                    user_id: str, window: Window, aggregation: str) -> tuple[object, int]:
    """(aggregate value, number of events) of one meter's events in the window (one
    customer's, or everyone's when `user_id` is empty)."""
    arg = _Args(org_id, livemode)
    meter, user = arg(meter_id), arg(user_id) if user_id else None
    unique = "true" if aggregation == "unique_count" else None
    row = await db.fetchrow(_usage(arg, meter, user, window_parts(window), unique), *arg.values)
    return row[aggregation], row["count"]


async def usage_by_meter(db: asyncpg.Pool, org_id: str, livemode: bool, user_ids: list[str],
                         window: Window, exclude_event_name: str,
                         ) -> dict[str, list[asyncpg.Record]]:
    """Every aggregate of each meter with events of each of the users in the window, in
    meter creation order (`unique_count` for unique_count meters alone), by user; one
    statement for them all (a billing cycle asks for its periods' usage together)."""
    arg = _Args(org_id, livemode)
    users, parts = arg(sorted(set(user_ids))), window_parts(window)
    unique = "m.aggregation_type = 'unique_count'"
    rows = await db.fetch(
        "select k.customer, m.id, m.name, m.currency, m.aggregation_type, u.*"
        f" from unnest({users}::text[]) as k(customer) cross join metering.meters m"
        f" cross join lateral ({_usage(arg, 'm.id', 'k.customer', parts, unique)}) u"
        f" where m.org_id = $1 and m.livemode = $2 and m.event_name <> {arg(exclude_event_name)}"
        " and u.count > 0 order by k.customer, m.created_at, m.id", *arg.values)
    found: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        found.setdefault(r["customer"], []).append(r)
    return found


# The same answer from the events alone, as the service gave it before the rollups: the
# reference they are checked against (tests/metering/test_rollups.py, bench/usage_rollups.py).
_RAW_AGGREGATE = {
    "sum": "sum(value)",
    "count": "count(*)",
    "max": "max(value)",
    "min": "min(value)",
    "unique_count": "count(distinct value)",
    "last": "(array_agg(value order by ts desc, ingest_seq desc))[1]",
}


async def aggregate_raw(db: asyncpg.Pool, org_id: str, livemode: bool, meter_id: str,
                        user_id: str, window: Window, aggregation: str) -> tuple[object, int]:
    arg = _Args(org_id, livemode)
    where = ["org_id = $1", "livemode = $2", f"meter_id = {arg(meter_id)}"]
    if user_id:
        where.append(f"user_id = {arg(user_id)}")
    if window.start is not None:
        where.append(f"ts >= {arg(window.start)}")
    if window.end is not None:
        where.append(f"ts {'<=' if window.end_inclusive else '<'} {arg(window.end)}")
    row = await db.fetchrow(
        f"select {_RAW_AGGREGATE[aggregation]} as value, count(*) as events"
        f" from metering.events where {' and '.join(where)}", *arg.values)
    return row["value"], row["events"]


async def dns_usage(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                    meter_id: str, user_id: str, start: datetime, end: datetime,
                    ) -> tuple[int, int]:
    """(queries, distinct zones) of a user's DNS usage in [start, end)."""
    row = await db.fetchrow(
        "select coalesce(sum(value), 0)::bigint as queries,"
        " count(distinct dimensions->>'zone') as zones from metering.events"
        " where org_id = $1 and livemode = $2 and meter_id = $3 and user_id = $4"
        " and ts >= $5 and ts < $6", org_id, livemode, meter_id, user_id, start, end)
    return row["queries"], row["zones"]


async def lock_dns_day(conn: asyncpg.Connection, org_id: str, livemode: bool, user_id: str,
                       day: datetime) -> None:
    """Serialises the limit check and the insert of one user's DNS usage for one day."""
    await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))",
                       f"metering.dns|{org_id}|{int(livemode)}|{user_id}|{day.date()}")


# ---- upkeep ----------------------------------------------------------------------------


async def ensure_partitions(db: asyncpg.Pool, first_month: datetime, months: int) -> None:
    await db.execute("select metering.ensure_event_partitions($1::date, $2)",
                     first_month.date(), months)


async def drop_partitions_before(db: asyncpg.Pool, cutoff: datetime) -> list[str]:
    """Drop the monthly partitions that end at or before `cutoff`; returns their names."""
    rows = await db.fetch(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
        " where i.inhparent = 'metering.events'::regclass")
    dropped = []
    for name in sorted(r["relname"] for r in rows):
        year, month = int(name[7:11]), int(name[12:14])  # events_YYYY_MM
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=cutoff.tzinfo)
        if end <= cutoff:
            await db.execute(f"drop table metering.{name}")
            dropped.append(name)
            # The months before it are gone already: its rollups and theirs go with it.
            await db.execute("delete from metering.usage_hours where hour < $1", end)
            await db.execute("delete from metering.usage_hour_values where hour < $1", end)
            await db.execute("delete from metering.usage_day_values where day < $1", end)
    return dropped


# The shards of hours past their busy time, folded into shard 0 so that reads find about one
# row an hour: a share at a time, rows a writer holds skipped (they are folded next time),
# rows added in one order as writers add theirs.
_FOLD_SHARDS = f"""
with moved as (
    delete from metering.usage_hours
    where ctid = any(array(
        select ctid from metering.usage_hours where shard <> 0 and hour < $1
        limit $2 for update skip locked))
    returning *
), folded as (
    insert into metering.usage_hours as h (
        meter_id, user_id, hour, shard, org_id, livemode, events, total, min_value,
        max_value, last_ts, last_seq, last_value)
    select meter_id, user_id, hour, 0, org_id, livemode, events, total, min_value, max_value,
           last_ts, last[1][1], last[1][2]
    from (
        select meter_id, user_id, hour, org_id, livemode, sum(events) as events,
               sum(total) as total, min(min_value) as min_value, max(max_value) as max_value,
               max(last_ts) as last_ts,
               (array_agg(array[last_seq, last_value] order by last_ts desc, last_seq desc)
               )[1:1] as last
        from moved group by meter_id, user_id, hour, org_id, livemode
    ) g
    order by 1, 2, 3
    {_ADD_TO_HOUR}
)
select count(*) from moved"""


async def fold_shards(db: asyncpg.Pool, before: datetime, limit: int) -> int:
    """Fold up to `limit` shard rows of the hours before `before`; returns how many."""
    return await db.fetchval(_FOLD_SHARDS, before, limit)


async def key_table_blocks(db: asyncpg.Pool) -> int:
    return await db.fetchval("select pg_relation_size('metering.event_keys')"
                             " / current_setting('block_size')::int")


async def delete_expired_keys(db: asyncpg.Pool, first_block: int, end_block: int,
                              cutoff: datetime) -> int:
    """Forget the idempotency keys older than `cutoff` stored in blocks [first, end) of the
    key table: a TID range scan reads just those blocks."""
    status = await db.execute(
        "delete from metering.event_keys where ctid >= $1 and ctid < $2 and created_at < $3",
        (first_block, 0), (end_block, 0), cutoff)
    return int(status.split()[-1])
