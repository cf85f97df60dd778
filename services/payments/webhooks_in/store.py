"""Inbound provider webhooks: the SQL. Every query names the organization and the mode."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from services.runtime.outbox import new_events, nudge

Db = asyncpg.Pool | asyncpg.Connection


@dataclass(frozen=True, slots=True)
class Delivery:
    """A verified event to store once, and what it becomes at once."""

    org_id: str
    livemode: bool
    provider: str
    event_id: str
    type: str
    provider_type: str
    body: bytes
    status: str
    reason: str = ""
    announced: tuple[str, Any] | None = None  # (event type, data) to publish with it

    @property
    def key(self) -> tuple[str, bool, str, str]:
        return self.org_id, self.livemode, self.provider, self.event_id


async def record(db: Db, deliveries: list[Delivery]) -> list[bool]:
    """Store each delivery not stored before (one key per delivery: the caller sends a key
    once per batch), with the event it announces, in one statement (atomic on its own: no
    transaction round trips); whether each was new."""
    announced = _announcements(deliveries)
    rows = await db.fetch(
        "with batch as (select * from unnest($1::text[], $2::boolean[], $3::text[],"
        "  $4::text[], $5::text[], $6::text[], $7::bytea[], $8::text[], $9::text[],"
        "  $10::text[], $11::bytea[], $12::text[]) as d(org_id, livemode, provider, event_id,"
        "  type, provider_type, body, status, reason, announced_id, announced,"
        "  announced_type)),"
        " stored as (insert into payments.webhook_events_in (org_id, livemode, provider,"
        "  event_id, type, provider_type, body, status, reason)"
        "  select org_id, livemode, provider, event_id, type, provider_type, body, status,"
        "  reason from batch on conflict do nothing"
        "  returning org_id, livemode, provider, event_id),"
        " announcing as (insert into payments.outbox (id, type, org_id, livemode, payload)"
        "  select b.announced_id, b.announced_type, b.org_id, b.livemode, b.announced"
        "  from batch b join stored s using (org_id, livemode, provider, event_id)"
        "  where b.announced_id is not null)"
        " select org_id, livemode, provider, event_id from stored",
        *zip(*[(d.org_id, d.livemode, d.provider, d.event_id, d.type, d.provider_type, d.body,
                d.status, d.reason, *a) for d, a in zip(deliveries, announced, strict=True)],
             strict=True))
    new = {tuple(r) for r in rows}
    if any(a[0] is not None for a in announced):
        nudge("payments")
    return [d.key in new for d in deliveries]


def _announcements(deliveries: list[Delivery]) -> list[tuple[str | None, bytes | None,
                                                              str | None]]:
    """(id, payload, type) of the event each delivery announces, if any. Their objectType
    and objectId: the provider and its event id (payments.md §7)."""
    made: list[tuple[str | None, bytes | None, str | None]] = [(None, None, None)] * len(
        deliveries)
    announcing = [(i, d.announced) for i, d in enumerate(deliveries) if d.announced is not None]
    rows = [(type, deliveries[i].provider, deliveries[i].org_id, deliveries[i].livemode,
             deliveries[i].event_id, None, data) for i, (type, data) in announcing]
    for (i, (type, _)), (event_id, payload) in zip(announcing, new_events(rows), strict=True):
        made[i] = event_id, payload, type
    return made


async def claim(conn: asyncpg.Connection, key: tuple[str, bool, str, str],
                ) -> asyncpg.Record | None:
    """The stored event, locked for its effect, if the effect is still to apply."""
    return await conn.fetchrow(
        "select org_id, livemode, provider, event_id, body, received_at"
        " from payments.webhook_events_in where org_id = $1 and livemode = $2"
        " and provider = $3 and event_id = $4 and status in ('received', 'failed')"
        " for update", *key)


async def finish(db: Db, key: tuple[str, bool, str, str], status: str, reason: str,
                 attempted: bool = False) -> None:
    await db.execute(
        "update payments.webhook_events_in set status = $5, reason = $6,"
        " attempts = attempts + $7::int, updated_at = now()"
        " where org_id = $1 and livemode = $2 and provider = $3 and event_id = $4",
        *key, status, reason[:500], int(attempted))


async def take_unfinished(db: Db, stuck_for: timedelta, max_attempts: int, limit: int,
                          ) -> list[asyncpg.Record]:
    """Events whose effect was not applied (their process died, or the effect failed),
    untouched for `stuck_for` (a failed one longer after each attempt), leased to this
    replica for as long again."""
    return await db.fetch(
        "update payments.webhook_events_in e set updated_at = now() from ("
        "  select org_id, livemode, provider, event_id from payments.webhook_events_in"
        "  where status in ('received', 'failed') and attempts < $2"
        "  and updated_at < now() - $1::interval * (1 + attempts * attempts)"
        "  order by updated_at limit $3 for update skip locked) due"
        " where (e.org_id, e.livemode, e.provider, e.event_id)"
        " = (due.org_id, due.livemode, due.provider, due.event_id)"
        " returning e.org_id, e.livemode, e.provider, e.event_id, e.body, e.received_at",
        stuck_for, max_attempts, limit)
