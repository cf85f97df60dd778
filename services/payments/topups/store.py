"""Top-ups: the SQL. A top-up row is also its request's idempotency record."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from services.payments.topups.domain import CHARGED, COMPLETED, FAILED, STARTED, Topup

Db = asyncpg.Pool | asyncpg.Connection

# `stale`: its worker is presumed gone (parameter $4 says how long that takes).
_TOPUP = ("id, customer_id, idempotency_key, fingerprint, status, amount, currency,"
          " payment_method_id, source_token, provider, provider_ref, payment_intent_id, reply,"
          " updated_at < now() - $4::interval as stale")


async def start(db: Db, org_id: str, livemode: bool, topup_id: str, key: str,
                fingerprint: str, t: Topup, provider: str, stale_after: timedelta,
                ) -> asyncpg.Record | None:
    """Claim `key` for a new top-up; None when claimed, else the top-up that holds it."""
    claimed = await db.fetchval(
        "insert into payments.topups (org_id, livemode, id, customer_id, idempotency_key,"
        " fingerprint, status, amount, currency, payment_method_id, source_token, provider)"
        " values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        " on conflict (org_id, livemode, customer_id, idempotency_key)"
        " where status <> 'failed' do nothing returning true",
        org_id, livemode, topup_id, t.customer_id, key, fingerprint, STARTED, t.amount,
        t.currency, t.payment_method_id, t.token, provider)
    if claimed:
        return None
    return await db.fetchrow(
        f"select {_TOPUP} from payments.topups where org_id = $1 and livemode = $2"
        " and customer_id = $3 and idempotency_key = $5 and status <> 'failed'",
        org_id, livemode, t.customer_id, stale_after, key)


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


async def charged(conn: asyncpg.Connection, org_id: str, livemode: bool, topup_id: str,
                  provider: str, provider_ref: str, payment_intent_id: str) -> bool:
    """False when it was charged already (a resumed top-up racing its first worker)."""
    done = await conn.fetchval(
        f"update payments.topups set status = '{CHARGED}', provider = $4, provider_ref = $5,"
        f" payment_intent_id = $6, updated_at = now() where org_id = $1 and livemode = $2"
        f" and id = $3 and status = '{STARTED}' returning true",
        org_id, livemode, topup_id, provider, provider_ref, payment_intent_id)
    return bool(done)


async def completed(db: Db, org_id: str, livemode: bool, topup_id: str, reply: bytes) -> None:
    await db.execute(
        f"update payments.topups set status = '{COMPLETED}', reply = $4, updated_at = now()"
        f" where org_id = $1 and livemode = $2 and id = $3 and status = '{CHARGED}'",
        org_id, livemode, topup_id, reply)


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
