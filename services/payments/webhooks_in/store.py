"""Inbound provider webhooks: the SQL. Every query names the organization and the mode."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from services.runtime.outbox import new_events

Db = asyncpg.Pool | asyncpg.Connection


@dataclass(frozen=True, slots=True)
class Delivery:
    """A verified event to store once, what it becomes at once, and the billing event it
    is (type, data)."""

    org_id: str
    livemode: bool
    provider: str
    event_id: str
    type: str
    provider_type: str
    body: bytes
    status: str
    reason: str
    announced: tuple[str, Any]
    forwarded: bool  # other services read its billing event: it goes to the stream too
    payment_ref: str = ""  # the provider's payment it settles, if we hold an intent for it

    @property
    def key(self) -> tuple[str, bool, str, str]:
        return self.org_id, self.livemode, self.provider, self.event_id

    @property
    def payment(self) -> tuple[str, bool, str, str]:
        return self.org_id, self.livemode, self.provider, self.payment_ref


async def record(conn: asyncpg.Connection, deliveries: list[Delivery]) -> list[bytes | None]:
    """Store each delivery not stored before (one key per delivery: the caller sends a key
    once per batch), with the outbox row of the event it forwards, in one statement; for
    each, the billing event it announces (encoded as published) if it was new, else None.
    The caller nudges the outbox relay once its transaction has committed."""
    announced = _announcements(deliveries)
    rows = await conn.fetch(
        "with batch as (select * from unnest($1::text[], $2::boolean[], $3::text[],"
        "  $4::text[], $5::text[], $6::text[], $7::bytea[], $8::text[], $9::text[],"
        "  $10::text[], $11::bytea[], $12::text[], $13::boolean[]) as d(org_id, livemode,"
        "  provider, event_id, type, provider_type, body, status, reason, announced_id,"
        "  announced, announced_type, forwarded)),"
        " stored as (insert into payments.webhook_events_in (org_id, livemode, provider,"
        "  event_id, type, provider_type, body, status, reason)"
        "  select org_id, livemode, provider, event_id, type, provider_type, body, status,"
        "  reason from batch on conflict do nothing"
        "  returning org_id, livemode, provider, event_id),"
        " forwarding as (insert into payments.outbox (id, type, org_id, livemode, payload)"
        "  select b.announced_id, b.announced_type, b.org_id, b.livemode, b.announced"
        "  from batch b join stored s using (org_id, livemode, provider, event_id)"
        "  where b.forwarded)"
        " select org_id, livemode, provider, event_id from stored",
        *zip(*[(d.org_id, d.livemode, d.provider, d.event_id, d.type, d.provider_type, d.body,
                d.status, d.reason, *a, d.forwarded)
               for d, a in zip(deliveries, announced, strict=True)], strict=True))
    new = {tuple(r) for r in rows}
    return [payload if d.key in new else None
            for d, (_, payload, _) in zip(deliveries, announced, strict=True)]


def _announcements(deliveries: list[Delivery]) -> list[tuple[str, bytes, str]]:
    """(id, payload, type) of the event each delivery announces. Their objectType and
    objectId: the provider and its event id (payments.md §7)."""
    made = new_events("payments", [
        (type, d.provider, d.org_id, d.livemode, d.event_id, None, data)
        for d in deliveries for type, data in (d.announced,)])
    return [(event_id, payload, d.announced[0])
            for d, (event_id, payload) in zip(deliveries, made, strict=True)]


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
