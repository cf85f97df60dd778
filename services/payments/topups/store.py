"""Top-ups: the SQL. A top-up row is also its request's idempotency record."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from services.payments.intents import store as intents
from services.payments.topups.domain import CHARGED, COMPLETED, FAILED, STARTED, Topup
from services.runtime.outbox import insert_events

Db = asyncpg.Pool | asyncpg.Connection

# `stale`: its worker is presumed gone (parameter $4 says how long that takes).
_TOPUP = ("id, customer_id, idempotency_key, fingerprint, status, amount, currency,"
          " payment_method_id, source_token, provider, provider_ref, payment_intent_id, reply,"
          " updated_at < now() - $4::interval as stale")


KeyClaim = tuple[str, bool, str, str, str, Topup, str]  # org_id, livemode, id, key,
#                                                         fingerprint, the top-up, provider
Ref = tuple[str, bool, str]  # org_id, livemode, top-up id
KeyRef = tuple[str, bool, str, str]  # org_id, livemode, customer_id, idempotency key


async def claim(db: Db, claims: list[KeyClaim]) -> set[Ref]:
    """Claim each key for a new top-up (`started`); the top-ups that did. Sorted by key,
    so concurrent batches claiming the same keys wait instead of deadlocking."""
    claims = sorted(claims, key=lambda c: (c[0], c[1], c[5].customer_id, c[3]))
    rows = await db.fetch(
        f"insert into payments.topups (org_id, livemode, id, customer_id, idempotency_key,"
        f" fingerprint, status, amount, currency, payment_method_id, source_token, provider)"
        f" select o, l, i, c, k, f, '{STARTED}', a, cur, m, t, p from unnest($1::text[],"
        f" $2::boolean[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],"
        f" $8::text[], $9::text[], $10::text[], $11::text[])"
        f" as n(o, l, i, c, k, f, a, cur, m, t, p)"
        f" on conflict (org_id, livemode, customer_id, idempotency_key)"
        f" where status <> '{FAILED}' do nothing returning org_id, livemode, id",
        *zip(*[(org, mode, topup_id, t.customer_id, key, fingerprint, t.amount, t.currency,
                t.payment_method_id, t.token, provider)
               for org, mode, topup_id, key, fingerprint, t, provider in claims], strict=True))
    return {(r["org_id"], r["livemode"], r["id"]) for r in rows}


async def holding(db: Db, keys: list[KeyRef], stale_after: timedelta,
                  ) -> dict[KeyRef, asyncpg.Record]:
    """The top-ups that hold these keys."""
    orgs, modes, customers, names = zip(*keys, strict=True)
    rows = await db.fetch(
        f"select t.org_id, t.livemode, {_TOPUP} from payments.topups t"
        f" join unnest($1::text[], $2::boolean[], $3::text[], $5::text[]) as k(o, l, c, k)"
        f" on (t.org_id, t.livemode, t.customer_id, t.idempotency_key) = (k.o, k.l, k.c, k.k)"
        f" where t.status <> '{FAILED}'", orgs, modes, customers, stale_after, names)
    return {(r["org_id"], r["livemode"], r["customer_id"], r["idempotency_key"]): r
            for r in rows}


async def resume(db: Db, org_id: str, livemode: bool, topup_id: str,
                 stale_after: timedelta) -> asyncpg.Record | None:
    """Take over an unfinished top-up whose worker went quiet or gave up (None: someone
    else has it)."""
    return await db.fetchrow(
        f"update payments.topups set updated_at = now() where org_id = $1 and livemode = $2"
        f" and id = $3 and status in ('{STARTED}', '{CHARGED}')"
        f" and updated_at < now() - $4::interval returning {_TOPUP}",
        org_id, livemode, topup_id, stale_after)


async def unfinished(db: Db, stale_after: timedelta, limit: int) -> list[asyncpg.Record]:
    """Top-ups whose worker went quiet, taken over by this one (the janitor)."""
    return await db.fetch(
        f"update payments.topups t set updated_at = now() from ("
        f"  select org_id, livemode, id from payments.topups"
        f"  where status in ('{STARTED}', '{CHARGED}') and updated_at < now() - $1::interval"
        f"  order by updated_at limit $2 for update skip locked) due"
        f" where (t.org_id, t.livemode, t.id) = (due.org_id, due.livemode, due.id)"
        f" returning t.*",
        stale_after, limit)


async def charged(conn: asyncpg.Connection,
                  charges: list[tuple[str, bool, str, str, str, str]]) -> set[Ref]:
    """(org_id, livemode, id, provider, provider_ref, payment_intent_id) of charges the
    ledger did not credit; the top-ups they moved from `started` to `charged` (not one
    charged already: a resumed top-up racing its first worker), released for the job."""
    rows = await conn.fetch(
        f"update payments.topups t set status = '{CHARGED}', provider = c.p,"
        f" provider_ref = c.r, payment_intent_id = c.pi, updated_at = '-infinity'"
        f" from unnest($1::text[], $2::boolean[], $3::text[], $4::text[], $5::text[],"
        f" $6::text[]) as c(o, l, i, p, r, pi)"
        f" where (t.org_id, t.livemode, t.id) = (c.o, c.l, c.i) and t.status = '{STARTED}'"
        f" returning t.org_id, t.livemode, t.id", *zip(*charges, strict=True))
    return {(r["org_id"], r["livemode"], r["id"]) for r in rows}


# A completion's event: (top-up id, whether it announces the payment, event id, type, org_id,
# livemode, payload).
CompletionEvent = tuple[str, bool, str, str, str, bool, bytes]


# The payments of a completion's top-ups that were `started` ($8: the top-ups, $9-$19 their
# payments, $20 when).
_PAYING = intents.insert_paid(
    f"(select n.* from unnest($8::text[], {intents.paid_arrays(9)})"
    f" as n(t, o, l, i, c, a, cur, m, r, p, d, md) join prior"
    f" on (prior.org_id, prior.livemode, prior.id) = (n.o, n.l, n.t)"
    f" where prior.status = '{STARTED}') n", "$20::timestamptz")


# The events of a completion's top-ups that it completes ($21-$27), in the order given.
_ANNOUNCED = insert_events("payments", (
    "select e.id, e.type, e.o, e.l, e.payload from unnest($21::text[], $22::boolean[],"
    " $23::text[], $24::text[], $25::text[], $26::boolean[], $27::bytea[])"
    " with ordinality as e(t, pays, id, type, o, l, payload, n)"
    " join prior on (prior.org_id, prior.livemode, prior.id) = (e.o, e.l, e.t)"
    f" where not e.pays or prior.status = '{STARTED}' order by e.n"))


async def complete(db: Db, replies: list[tuple[str, bool, str, str, str, str, bytes]],
                   paid: list[tuple[str, intents.Paid]], created_at: datetime,
                   events: list[CompletionEvent]) -> dict[Ref, str]:
    """(org_id, livemode, id, provider, provider_ref, payment_intent_id, reply) of credited
    top-ups; those it completed (not one completed already), with the status each had. With
    them, in the same statement: the payment (`paid`: each top-up's, by id) of those that
    were `started` (a `charged` one's is recorded), and the events of those completed —
    one that announces the payment only where it is recorded now — in the order given.
    The top-ups are found by their keys, their status checked once locked: not through the
    index of unfinished ones, whose entries of completed top-ups stay until a vacuum. Each
    by its primary key (a lateral lookup), whatever the table's statistics say: a join
    planned while they were stale read the whole table for every batch."""
    rows = await db.fetch(
        f"with c as (select * from unnest($1::text[], $2::boolean[], $3::text[],"
        f"  $4::text[], $5::text[], $6::text[], $7::bytea[]) as c(o, l, i, p, r, pi, reply)),"
        f" locked as (select t.* from c cross join lateral (select org_id, livemode, id, status"
        f"  from payments.topups t where (t.org_id, t.livemode, t.id) = (c.o, c.l, c.i)"
        f"  for update) t),"
        f" prior as (select * from locked where status in ('{STARTED}', '{CHARGED}')),"
        f" done as (update payments.topups t set status = '{COMPLETED}', provider = c.p,"
        f"  provider_ref = c.r, payment_intent_id = c.pi, reply = c.reply, updated_at = now()"
        f"  from c, prior where (t.org_id, t.livemode, t.id) = (c.o, c.l, c.i)"
        f"  and (prior.org_id, prior.livemode, prior.id) = (c.o, c.l, c.i)"
        f"  returning t.org_id, t.livemode, t.id),"
        f" paid as ({_PAYING}),"
        f" announced as ({_ANNOUNCED})"
        f" select prior.* from prior join done using (org_id, livemode, id)",
        *zip(*replies, strict=True), [t for t, _ in paid],
        *intents.paid_columns([p for _, p in paid]), created_at,
        *zip(*events, strict=True))
    return {(r["org_id"], r["livemode"], r["id"]): r["status"] for r in rows}


async def release(db: Db, org_id: str, livemode: bool, topup_id: str) -> None:
    """This worker gives up on an unfinished top-up: a retry or the job may take it now."""
    await db.execute(
        "update payments.topups set updated_at = '-infinity' where org_id = $1"
        " and livemode = $2 and id = $3 and status in ('started', 'charged')",
        org_id, livemode, topup_id)


async def failed(db: Db, org_id: str, livemode: bool, topup_id: str) -> None:
    """Never charged: the key is free again."""
    await db.execute(
        f"update payments.topups set status = '{FAILED}', updated_at = now()"
        f" where org_id = $1 and livemode = $2 and id = $3 and status = '{STARTED}'",
        org_id, livemode, topup_id)
