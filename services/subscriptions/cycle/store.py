"""The billing cycle's SQL (schema subscriptions): the claims of subscription periods
(`period_renewals`, migration 002) and the subscription changes a settled period makes.

Claims are taken in batches under `FOR UPDATE SKIP LOCKED`: concurrent runners split the due
subscriptions between them instead of waiting for each other, and a subscription whose
period is claimed by a live lease is not offered again until that lease ends."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec

_json = msgspec.json.encode

# The cycle's index (migration 002) is on this expression: when the subscription next
# needs the cycle, unless it is past due (its claim says when the retry is).
DUE_AT = ("(case s.status when 'trialing' then s.trial_end"
          " when 'active' then s.period_end end)")

_SCOPED = ("s.org_id = $1 and s.livemode = $2"
           " and ($3::text = '' or s.user_id = $3)")

# Claims are looked up by their key, one index probe each, in the forms below (a scalar
# subquery, a lateral one with its own lock, an update per key): never joined to the batch's
# keys at the planner's choice. A join's plan follows the claims' statistics, and those lag the table:
# claims come by the thousand per cycle (and a table analyzed before its first claim has no
# statistics of its columns at all), so a join planned for few claims compares every claim
# of the organization with every key, per statement, until the next analysis.
_KEYS = ("(select * from unnest($3::text[], $4::timestamptz[]) as k(sub, start_at)"
         ' order by sub collate "C", start_at) k')  # the order claims are locked in
_CLAIM = ("r.org_id = $1 and r.livemode = $2 and r.subscription_id = k.sub"
          " and r.period_start = k.start_at")


async def due_scopes(db: asyncpg.Pool, now: datetime) -> list[tuple[str, bool]]:
    """(organization, mode) pairs with due subscriptions or retries: the scheduler's work."""
    rows = await db.fetch(
        f"select distinct s.org_id, s.livemode from subscriptions.subscriptions s"
        f" where s.provider_type = 'internal' and {DUE_AT} < $1"
        " union select r.org_id, r.livemode from subscriptions.period_renewals r"
        " where r.state = 'past_due' and r.next_attempt_at <= $1", now)
    return [(r["org_id"], r["livemode"]) for r in rows]


async def lock_due(conn: asyncpg.Connection, org_id: str, livemode: bool, user: str,
                   now: datetime, limit: int, skip: Sequence[str]) -> list[asyncpg.Record]:
    """Subscriptions whose trial or period ended, locked, with no live claim on their
    current period; those another transaction holds are left to it."""
    return await conn.fetch(
        f"select s.* from subscriptions.subscriptions s"
        f" where s.provider_type = 'internal' and {DUE_AT} < $4 and {_SCOPED}"
        " and s.id <> all($6::text[])"
        " and (select r.state <> 'renewing' or r.lease_until > $4"
        "   from subscriptions.period_renewals r"
        "   where r.org_id = s.org_id and r.livemode = s.livemode"
        "   and r.subscription_id = s.id and r.period_start = s.period_start) is not true"
        f" order by {DUE_AT} limit $5 for update of s skip locked",
        org_id, livemode, user, now, limit, list(skip))


async def lock_retries(conn: asyncpg.Connection, org_id: str, livemode: bool,
                       user: str, now: datetime, limit: int, skip: Sequence[str]
                       ) -> list[asyncpg.Record]:
    """Claims whose dunning retry is due, with their subscription, both locked."""
    return await conn.fetch(
        "select s.*, r.invoice_id as claim_invoice_id, r.attempts, r.first_failed_at"
        " from subscriptions.period_renewals r join subscriptions.subscriptions s"
        "   on s.org_id = r.org_id and s.livemode = r.livemode and s.id = r.subscription_id"
        f" where r.state = 'past_due' and r.next_attempt_at <= $4 and {_SCOPED}"
        " and (r.lease_until is null or r.lease_until < $4) and s.id <> all($6::text[])"
        " order by r.next_attempt_at limit $5 for update of r, s skip locked",
        org_id, livemode, user, now, limit, list(skip))


async def claim_of(conn: asyncpg.Connection, org_id: str, livemode: bool,
                   subscription_id: str, period_start: datetime) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select * from subscriptions.period_renewals where org_id = $1 and livemode = $2"
        " and subscription_id = $3 and period_start = $4",
        org_id, livemode, subscription_id, period_start)


async def claim(conn: asyncpg.Connection, org_id: str, livemode: bool,
                claims: list[tuple[str, datetime, datetime, list[str]]],
                now: datetime, lease: timedelta, token: str) -> list[asyncpg.Record]:
    """Claim (subscription, periodStart, periodEnd, proration ids) periods under a lease
    until `now + lease`; a claim left renewing by a runner gone (its lease passed) is taken
    over with the prorations it fixed. Returns the claims taken."""
    subs, starts, ends, prorations = zip(*claims, strict=True)
    return await conn.fetch(
        "insert into subscriptions.period_renewals as r (org_id, livemode, subscription_id,"
        " period_start, period_end, proration_ids, lease_until, lease_token)"
        " select $1, $2, c.sub, c.start_at, c.end_at,"
        "   array(select jsonb_array_elements_text(c.prorations::jsonb)), $7, $8"
        " from unnest($3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[])"
        "   as c(sub, start_at, end_at, prorations)"
        " on conflict (org_id, livemode, subscription_id, period_start) do update"
        " set lease_until = $7, lease_token = $8, updated_at = now()"
        " where r.state = 'renewing' and (r.lease_until is null or r.lease_until < $9)"
        " returning subscription_id, proration_ids, invoice_id",
        org_id, livemode, list(subs), list(starts), list(ends),
        [_json(list(p)).decode() for p in prorations], now + lease, token, now)


async def lease_retries(conn: asyncpg.Connection, org_id: str, livemode: bool,
                        keys: list[tuple[str, datetime]], lease_until: datetime,
                        token: str) -> None:
    subs, starts = zip(*keys, strict=True)
    await conn.execute(
        "update subscriptions.period_renewals r set lease_until = $5, lease_token = $6,"
        " updated_at = now() from unnest($3::text[], $4::timestamptz[]) as k(sub, start_at)"
        " where r.org_id = $1 and r.livemode = $2 and r.subscription_id = k.sub"
        " and r.period_start = k.start_at",
        org_id, livemode, list(subs), list(starts), lease_until, token)


async def release(conn: asyncpg.Connection, org_id: str, livemode: bool,
                  keys: list[tuple[str, datetime]], token: str) -> None:
    """Give leases back (invoicing did not answer): the next run tries again."""
    subs, starts = zip(*keys, strict=True)
    await conn.execute(
        "update subscriptions.period_renewals r set lease_until = null, lease_token = '',"
        " updated_at = now() from unnest($3::text[], $4::timestamptz[]) as k(sub, start_at)"
        " where r.org_id = $1 and r.livemode = $2 and r.subscription_id = k.sub"
        " and r.period_start = k.start_at and r.lease_token = $5",
        org_id, livemode, list(subs), list(starts), token)


async def lock_subscriptions(conn: asyncpg.Connection, org_id: str, livemode: bool,
                             ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    """The subscriptions, locked in id order (concurrent settles wait, never deadlock)."""
    rows = await conn.fetch(
        "select * from subscriptions.subscriptions where org_id = $1 and livemode = $2"
        " and id = any($3::text[]) order by id for update", org_id, livemode, list(ids))
    return {r["id"]: r for r in rows}


async def lock_claims(conn: asyncpg.Connection, org_id: str, livemode: bool,
                      keys: list[tuple[str, datetime]]) -> dict[tuple[str, datetime], Any]:
    """The claims of these (subscription, periodStart) keys, locked in key order."""
    subs, starts = zip(*keys, strict=True)
    rows = await conn.fetch(
        f"select r.* from {_KEYS} cross join lateral (select * from"
        f" subscriptions.period_renewals r where {_CLAIM} for update) r",
        org_id, livemode, list(subs), list(starts))
    return {(r["subscription_id"], r["period_start"]): r for r in rows}


async def note_outcomes(db: asyncpg.Pool, org_id: str, livemode: bool,
                        outcomes: list[tuple[str, datetime, str]]) -> None:
    """(subscription, periodStart, invoice status) of period invoices paid or voided: a
    claim a runner holds (renewing, or leased for a retry) keeps the outcome for its
    settle. The claims are locked in `lock_claims`' order: a runner settling them at the
    same time (its batch's invoices are paid just before) waits, never deadlocks."""
    # One update of a claim by its key each (in one transaction): a claim a settle holds is
    # waited for and then taken as that settle left it.
    await db.executemany(
        "update subscriptions.period_renewals set outcome = $5, updated_at = now()"
        " where org_id = $1 and livemode = $2 and subscription_id = $3 and period_start = $4"
        " and state <> 'settled' and (state = 'renewing' or lease_until > now())",
        [(org_id, livemode, sub, start, status)
         for sub, start, status in sorted(outcomes, key=_lock_order)])


def _lock_order(outcome: tuple[str, datetime, str]) -> tuple[bytes, datetime]:
    """`_KEYS`' order: subscription ids byte by byte (collation "C"), then period starts."""
    return outcome[0].encode(), outcome[1]


async def in_states(db: asyncpg.Pool, org_id: str, livemode: bool,
                    keys: list[tuple[str, datetime]], states: Sequence[str],
                    ) -> set[tuple[str, datetime]]:
    """Which of these (subscription, periodStart) claims are in one of `states`."""
    subs, starts = zip(*keys, strict=True)
    rows = await db.fetch(
        f"select k.sub, k.start_at from {_KEYS}"
        " where (select r.state = any($5::text[]) from subscriptions.period_renewals r"
        f" where {_CLAIM})",
        org_id, livemode, list(subs), list(starts), list(states))
    return {(r["sub"], r["start_at"]) for r in rows}


async def save_claims(conn: asyncpg.Connection, org_id: str, livemode: bool,
                      rows: list[tuple[str, datetime, str, str, int, datetime | None,
                                       datetime | None, str]]) -> None:
    """(subscription, periodStart, state, invoice, attempts, firstFailedAt, nextAttemptAt,
    outcome) each; the lease ends."""
    cols = list(zip(*rows, strict=True))
    await conn.execute(
        "update subscriptions.period_renewals r set state = c.state, invoice_id = c.invoice,"
        " attempts = c.attempts, first_failed_at = c.first_failed,"
        " next_attempt_at = c.next_attempt, outcome = c.outcome, lease_until = null,"
        " lease_token = '', updated_at = now()"
        " from unnest($3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::int[],"
        "   $8::timestamptz[], $9::timestamptz[], $10::text[])"
        "   as c(sub, start_at, state, invoice, attempts, first_failed, next_attempt, outcome)"
        " where r.org_id = $1 and r.livemode = $2 and r.subscription_id = c.sub"
        " and r.period_start = c.start_at",
        org_id, livemode, *[list(c) for c in cols])


async def change_subscriptions(conn: asyncpg.Connection, org_id: str, livemode: bool,
                               rows: list[tuple[str, str, datetime | None, datetime | None,
                                                datetime | None, str]]
                               ) -> list[asyncpg.Record]:
    """(subscription, status, new periodStart, new periodEnd, endedAt, currentInvoiceId)
    each: a None period or endedAt leaves it as it is, an empty invoice id too. Returns the
    subscriptions changed."""
    cols = list(zip(*rows, strict=True))
    return await conn.fetch(
        "update subscriptions.subscriptions s set status = c.status,"
        " period_start = coalesce(c.start_at, s.period_start),"
        " period_end = coalesce(c.end_at, s.period_end),"
        " ended_at = coalesce(c.ended_at, s.ended_at),"
        " canceled = s.canceled or c.ended_at is not null,"
        " current_invoice_id = coalesce(nullif(c.invoice, ''), s.current_invoice_id),"
        " version = s.version + 1, updated_at = now()"
        " from unnest($3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],"
        "   $7::timestamptz[], $8::text[]) as c(sub, status, start_at, end_at, ended_at, invoice)"
        " where s.org_id = $1 and s.livemode = $2 and s.id = c.sub returning s.*",
        org_id, livemode, *[list(c) for c in cols])


async def pending_prorations(conn: asyncpg.Connection, org_id: str, livemode: bool,
                             subscription_ids: Sequence[str]) -> dict[str, list[asyncpg.Record]]:
    """The proration items not yet on an invoice, by subscription, oldest first."""
    rows = await conn.fetch(
        "select * from subscriptions.pending_invoice_items where org_id = $1"
        " and livemode = $2 and subscription_id = any($3::text[]) and status = 'pending'"
        " order by created_at, id", org_id, livemode, list(subscription_ids))
    found: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        found.setdefault(r["subscription_id"], []).append(r)
    return found


async def prorations_by_id(conn: asyncpg.Connection, org_id: str, livemode: bool,
                           ids: Sequence[str]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "select * from subscriptions.pending_invoice_items where org_id = $1"
        " and livemode = $2 and id = any($3::text[]) order by created_at, id",
        org_id, livemode, list(ids))


async def consume_prorations(conn: asyncpg.Connection, org_id: str, livemode: bool,
                             consumed: list[tuple[str, str]]) -> None:
    """(proration item, invoice) each: the item is on that invoice now."""
    ids, invoices = zip(*consumed, strict=True)
    await conn.execute(
        "update subscriptions.pending_invoice_items p set status = 'invoiced',"
        " invoice_id = c.invoice from unnest($3::text[], $4::text[]) as c(id, invoice)"
        " where p.org_id = $1 and p.livemode = $2 and p.id = c.id and p.status = 'pending'",
        org_id, livemode, list(ids), list(invoices))
