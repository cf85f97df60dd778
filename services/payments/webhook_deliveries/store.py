"""Webhook deliveries: the SQL — fan-out, the senders' claims and queues, what a run
settles, and the reads. Reads name the organization and the mode.

`now` parameters are the deliveries' clock (injectable, for three-day schedules in tests);
leases use the database's clock, as they only say whether a sender is still alive."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import asyncpg

from services.payments.webhook_deliveries.domain import (
    CANCELED,
    DELIVERED,
    FAILED,
    PENDING,
    Attempt,
    NewDelivery,
    Settled,
)

Db = asyncpg.Pool | asyncpg.Connection

_DELIVERY = ("d.id, d.org_id, d.livemode, d.endpoint_id, d.event_id, d.event_type, d.status,"
             " d.attempt_count, d.next_attempt_at, d.delivered_at, d.created_at")


# ---- fan-out ---------------------------------------------------------------------------------


def enabled_endpoints_of(scopes: str) -> str:
    """The enabled endpoints of the organizations and modes of `scopes` (a relation of
    (org_id, livemode)) and the events they want, for a longer statement."""
    return ("select w.org_id, w.livemode, w.id, w.events from payments.webhook_endpoints w"
            f" join {scopes} as s(org_id, livemode)"
            " on w.org_id = s.org_id and w.livemode = s.livemode"
            " where w.status = 'enabled' and w.deleted_at is null")


async def add(conn: asyncpg.Connection, deliveries: list[NewDelivery], now: datetime) -> None:
    """Queue the deliveries, in order, and make their endpoints due unless they wait
    already (a failing head keeps its later deliveries waiting). What an event's
    deliveries share is sent once per event, and each endpoint once."""
    events: dict[str, tuple[int, NewDelivery]] = {}
    for d in deliveries:
        events.setdefault(d.event_id, (len(events) + 1, d))
    await conn.execute(
        "insert into payments.webhook_deliveries (id, org_id, livemode, endpoint_id, event_id,"
        " event_type, next_attempt_at)"
        " select d.i, e.o, e.l, d.e, e.v, e.t, $8"
        " from unnest($1::text[], $2::text[], $3::int[]) with ordinality as d(i, e, k, n)"
        " join unnest($4::text[], $5::boolean[], $6::text[], $7::text[]) with ordinality"
        " as e(o, l, v, t, k) on e.k = d.k"
        " order by d.n on conflict (event_id, endpoint_id) do nothing",
        [d.id for d in deliveries], [d.endpoint_id for d in deliveries],
        [events[d.event_id][0] for d in deliveries],
        *_columns([e for _, e in events.values()],
                  lambda e: (e.org_id, e.livemode, e.event_id, e.event_type), 4), now)
    await conn.execute(
        "update payments.webhook_endpoints set next_attempt_at = coalesce(next_attempt_at, $4)"
        " where (org_id, livemode, id) in (select * from unnest($1::text[], $2::boolean[],"
        " $3::text[]))",
        *_columns(list({(d.org_id, d.livemode, d.endpoint_id) for d in deliveries}),
                  lambda key: key, 3), now)


# ---- a sender's run --------------------------------------------------------------------------


async def claim(db: Db, now: datetime, most: int, lease: timedelta) -> list[asyncpg.Record]:
    """Endpoints whose queue is due (or whose sender died), taken for a run: leased, and
    nothing known due beyond what the run will load."""
    return await db.fetch(
        """update payments.webhook_endpoints w
        set leased_until = now() + $3::interval, next_attempt_at = null
        from (select org_id, livemode, id from payments.webhook_endpoints
              where status = 'enabled' and deleted_at is null
                and (next_attempt_at <= $1 or leased_until < now())
                and (leased_until is null or leased_until < now())
              order by next_attempt_at nulls first limit $2
              for update skip locked) c
        where w.org_id = c.org_id and w.livemode = c.livemode and w.id = c.id
        returning w.org_id, w.livemode, w.id, w.url, w.secret_key_id, w.secret,
                  case when w.previous_until > $1 then w.previous_key_id end
                      as previous_key_id,
                  w.previous_secret, w.failing_since""", now, most, lease)


async def queue(db: Db, endpoint_id: str, most: int) -> list[asyncpg.Record]:
    """The endpoint's waiting deliveries, in order, with the bodies they send."""
    return await db.fetch(
        "select d.id, d.event_type, d.attempt_count, d.failures, d.next_attempt_at, e.body"
        " from payments.webhook_deliveries d join payments.billing_events e on e.id = d.event_id"
        " where d.endpoint_id = $1 and d.status = 'pending' order by d.seq limit $2",
        endpoint_id, most)


# A run's record in one statement: its attempts, the deliveries they settled (the
# delivered; the failed one rescheduled, or final when its retry $17 is null), and the
# endpoint released.
_SETTLE = f"""with attempts as (
    insert into payments.webhook_attempts (delivery_id, attempt, at, status_code, latency_ms,
        error, response)
    select * from unnest($4::text[], $5::int[], $6::timestamptz[], $7::int[], $8::int[],
        $9::text[], $10::text[])
    on conflict do nothing),
delivered as (
    update payments.webhook_deliveries d set status = '{DELIVERED}', delivered_at = x.at,
        attempt_count = x.attempt, next_attempt_at = null
    from unnest($11::text[], $12::timestamptz[], $13::int[]) as x(id, at, attempt)
    where d.id = x.id and d.status = '{PENDING}'),
failed as (
    update payments.webhook_deliveries set attempt_count = $15, failures = $16,
        next_attempt_at = $17,
        status = case when $17::timestamptz is null then '{FAILED}' else status end
    where id = $14 and status = '{PENDING}')
update payments.webhook_endpoints set leased_until = null,
    next_attempt_at = coalesce($18, next_attempt_at), failing_since = $19,
    status = case when $20 then 'disabled' else status end,
    updated_at = case when $20 then now() else updated_at end
where org_id = $1 and livemode = $2 and id = $3
returning org_id, livemode, id, url, events, description, status, created_at, deleted_at"""


async def settle(pool: asyncpg.Pool, endpoint: asyncpg.Record, attempts: list[Attempt],
                 s: Settled, disabled: Callable[[asyncpg.Connection, asyncpg.Record],
                                                Awaitable[None]]) -> None:
    """Record a run in one statement (one round trip for its whole batch): its attempts,
    the deliveries they settled, and the endpoint's state (released). When the run
    disables the endpoint, what waited for it is canceled and `disabled(conn, endpoint
    row)` announces it, in the same transaction."""
    key = (endpoint["org_id"], endpoint["livemode"], endpoint["id"])
    f = s.failed
    args = (*key,
            *_columns(attempts, lambda a: (a.delivery_id, a.attempt, a.at, a.status_code,
                                           a.latency_ms, a.error, a.response), 7),
            *_columns(s.delivered, lambda a: (a.delivery_id, a.at, a.attempt), 3),
            f and f.delivery_id, f and f.attempt, s.failures, s.retry,
            s.next_attempt_at, s.failing_since, s.disable)
    if not s.disable:
        await pool.execute(_SETTLE, *args)
        return
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_SETTLE, *args)
        if row is not None:
            await cancel_waiting(conn, *key)
            await disabled(conn, row)


def _columns(rows: list, fields: Callable, width: int) -> list[list]:
    """Rows as `width` column lists (unnest's arguments), empty ones when there are none."""
    return [list(c) for c in zip(*map(fields, rows), strict=True)] if rows else [[]] * width


async def release(db: Db, endpoint: asyncpg.Record, due: datetime | None) -> None:
    """Give an endpoint back without a run (its head is not due yet, or nothing waits)."""
    await db.execute(
        "update payments.webhook_endpoints set leased_until = null,"
        " next_attempt_at = coalesce($4, next_attempt_at)"
        " where org_id = $1 and livemode = $2 and id = $3",
        endpoint["org_id"], endpoint["livemode"], endpoint["id"], due)


async def cancel_waiting(conn: asyncpg.Connection, org_id: str, livemode: bool,
                         endpoint_id: str) -> None:
    """The endpoint receives nothing more: what waits for it is canceled."""
    await conn.execute(
        f"update payments.webhook_deliveries set status = '{CANCELED}', next_attempt_at = null"
        f" where org_id = $1 and livemode = $2 and endpoint_id = $3 and status = '{PENDING}'",
        org_id, livemode, endpoint_id)
    await conn.execute(
        "update payments.webhook_endpoints set next_attempt_at = null"
        " where org_id = $1 and livemode = $2 and id = $3", org_id, livemode, endpoint_id)


# ---- reads and redelivery -------------------------------------------------------------------

# The latest attempt's columns, named `last_<column>`.
_LAST_ATTEMPT = """left join lateral (
    select a.attempt as last_attempt, a.at as last_at, a.status_code as last_status_code,
           a.latency_ms as last_latency_ms, a.error as last_error, a.response as last_response
    from payments.webhook_attempts a where a.delivery_id = d.id
    order by a.attempt desc limit 1) a on true"""


async def deliveries(db: Db, org_id: str, livemode: bool, endpoint_id: str, status: str,
                     event_id: str, limit: int, starting_after: str) -> list[asyncpg.Record]:
    """Last queued first (the queue's order, backwards; a redelivery is queued anew)."""
    return await db.fetch(
        f"""select {_DELIVERY}, a.* from payments.webhook_deliveries d {_LAST_ATTEMPT}
        where d.org_id = $1 and d.livemode = $2 and d.endpoint_id = $3
          and ($4 = '' or d.status = $4) and ($5 = '' or d.event_id = $5)
          and ($7 = '' or d.seq < (
              select seq from payments.webhook_deliveries
              where org_id = $1 and livemode = $2 and id = $7))
        order by d.seq desc limit $6""",
        org_id, livemode, endpoint_id, status, event_id, limit, starting_after)


async def delivery(db: Db, org_id: str, livemode: bool, endpoint_id: str, delivery_id: str,
                   ) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_DELIVERY} from payments.webhook_deliveries d"
        f" where d.org_id = $1 and d.livemode = $2 and d.endpoint_id = $3 and d.id = $4",
        org_id, livemode, endpoint_id, delivery_id)


async def attempts(db: Db, delivery_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "select attempt, at, status_code, latency_ms, error, response"
        " from payments.webhook_attempts where delivery_id = $1 order by attempt",
        delivery_id)


async def requeue(conn: asyncpg.Connection, org_id: str, livemode: bool, endpoint_id: str,
                  delivery_id: str, now: datetime) -> asyncpg.Record:
    """Send a settled delivery again, at the back of its endpoint's queue, on a fresh
    schedule; its earlier attempts stay listed."""
    row = await conn.fetchrow(
        f"update payments.webhook_deliveries d set status = '{PENDING}', failures = 0,"
        f" next_attempt_at = $5, delivered_at = null,"
        f" seq = nextval(pg_get_serial_sequence('payments.webhook_deliveries', 'seq'))"
        f" where d.org_id = $1 and d.livemode = $2 and d.endpoint_id = $3 and d.id = $4"
        f" returning {_DELIVERY}", org_id, livemode, endpoint_id, delivery_id, now)
    await conn.execute(
        "update payments.webhook_endpoints set next_attempt_at = coalesce(next_attempt_at, $4)"
        " where org_id = $1 and livemode = $2 and id = $3", org_id, livemode, endpoint_id, now)
    return row
