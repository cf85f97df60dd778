"""Refunds: the SQL. Every query names the organization and the mode."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import asyncpg

from services.payments.refunds.domain import Refund
from services.runtime.db import newest_first

Db = asyncpg.Pool | asyncpg.Connection

_REFUND = ("org_id, livemode, id, payment_intent_id, invoice_id, customer_id, amount,"
           " currency, status, reason, provider, payment_ref, provider_ref, failure_reason,"
           " fingerprint, answered_at, topup_id, created_at")


async def reserved(conn: asyncpg.Connection, org_id: str, livemode: bool, intent_id: str,
                   ) -> int:
    """What refunds of the intent already took or hold (succeeded and pending). Read while
    the intent's row is locked, so no other refund of it is being added meanwhile."""
    return await conn.fetchval(
        "select coalesce(sum(amount), 0) from payments.refunds"
        " where org_id = $1 and livemode = $2 and payment_intent_id = $3"
        " and status in ('pending', 'succeeded')", org_id, livemode, intent_id)


async def create_refund(conn: asyncpg.Connection, org_id: str, livemode: bool, refund_id: str,
                        intent: asyncpg.Record, invoice_id: str, r: Refund,
                        key: str | None, fingerprint: str) -> asyncpg.Record | None:
    """The refund, `pending`; None when a concurrent request took the idempotency key."""
    return await conn.fetchrow(
        f"insert into payments.refunds (org_id, livemode, id, payment_intent_id, invoice_id,"
        f" customer_id, amount, currency, status, reason, provider, payment_ref,"
        f" idempotency_key, fingerprint, topup_id)"
        f" values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        f" on conflict (org_id, livemode, idempotency_key) where idempotency_key is not null"
        f" do nothing returning {_REFUND}",
        org_id, livemode, refund_id, intent["id"], invoice_id, intent["customer_id"], r.amount,
        r.currency, r.status, r.reason, intent["provider_type"], intent["provider_ref"], key,
        fingerprint, (intent["metadata"] or {}).get("topupId", ""))


async def refund(db: Db, org_id: str, livemode: bool, refund_id: str,
                 ) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_REFUND} from payments.refunds"
        f" where org_id = $1 and livemode = $2 and id = $3", org_id, livemode, refund_id)


async def refund_by_key(db: Db, org_id: str, livemode: bool, key: str,
                        ) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_REFUND} from payments.refunds"
        f" where org_id = $1 and livemode = $2 and idempotency_key = $3",
        org_id, livemode, key)


_REFUNDS = newest_first("payments.refunds", _REFUND, ("payment_intent_id", "invoice_id"))


async def refunds(db: Db, org_id: str, livemode: bool, intent_id: str, invoice_id: str,
                  limit: int, starting_after: str) -> list[asyncpg.Record]:
    return await db.fetch(_REFUNDS, org_id, livemode, intent_id, invoice_id, limit,
                          starting_after)


async def claim(conn: asyncpg.Connection, org_id: str, livemode: bool, refund_id: str,
                stuck_for: timedelta) -> bool:
    """Take an unanswered refund to ask the provider again: refused while another request
    asks it (unless that ask is older than `stuck_for`: it died)."""
    return await conn.fetchval(
        "update payments.refunds set in_flight = true, updated_at = now()"
        " where org_id = $1 and livemode = $2 and id = $3 and answered_at is null"
        " and (not in_flight or updated_at < now() - $4::interval) returning true",
        org_id, livemode, refund_id, stuck_for) is not None


async def release(db: Db, org_id: str, livemode: bool, refund_id: str) -> None:
    """The provider did not answer: a retry may ask again at once, the job in a while."""
    await db.execute(
        "update payments.refunds set in_flight = false, updated_at = now()"
        " where org_id = $1 and livemode = $2 and id = $3 and answered_at is null",
        org_id, livemode, refund_id)


async def settle(conn: asyncpg.Connection, org_id: str, livemode: bool, refund_id: str,
                 r: Refund) -> asyncpg.Record | None:
    """Record the provider's answer, once: None when another driver (a retry, the job)
    recorded one first. A `pending` answer may be followed by the final one (the janitor's
    retrieve)."""
    return await conn.fetchrow(
        f"""update payments.refunds set status = $4, provider_ref = $5, failure_reason = $6,
            answered_at = now(), in_flight = false, updated_at = now()
        where org_id = $1 and livemode = $2 and id = $3
          and (answered_at is null or status = 'pending')
        returning {_REFUND}""",
        org_id, livemode, refund_id, r.status, r.provider_ref, r.failure_reason)


async def by_provider_ref(conn: asyncpg.Connection, org_id: str, livemode: bool,
                          provider: str, ref: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"select {_REFUND} from payments.refunds where org_id = $1 and livemode = $2"
        f" and provider = $3 and provider_ref = $4 and provider_ref <> '' for update",
        org_id, livemode, provider, ref)


async def settle_pending(conn: asyncpg.Connection, org_id: str, livemode: bool,
                         refund_id: str, r: Refund) -> asyncpg.Record | None:
    """A refund the provider answered `pending`, settled by its webhook (once: None when it
    is not pending any more)."""
    return await conn.fetchrow(
        f"""update payments.refunds set status = $4, failure_reason = $5, updated_at = now()
        where org_id = $1 and livemode = $2 and id = $3 and status = 'pending'
          and answered_at is not null returning {_REFUND}""",
        org_id, livemode, refund_id, r.status, r.failure_reason)


async def add_refunded(conn: asyncpg.Connection, org_id: str, livemode: bool, intent_id: str,
                       amount: int) -> None:
    """The intent's `amount_refunded` grows by a refund that succeeded (an increment, so
    concurrent settlements of one intent add up without a lock)."""
    await conn.execute(
        "update payments.payment_intents set amount_refunded = amount_refunded + $4,"
        " updated_at = now() where org_id = $1 and livemode = $2 and id = $3",
        org_id, livemode, intent_id, amount)


async def take_unanswered(db: Db, stuck_for: timedelta, younger_than: timedelta, limit: int,
                          ) -> list[asyncpg.Record]:
    """Refunds the provider has not answered, untouched for `stuck_for` (released by a
    request that found the provider unreachable, or left by a process that died asking),
    taken by this driver (another replica skips them, a retry waits)."""
    return await db.fetch(
        f"""update payments.refunds r set in_flight = true, updated_at = now() from (
            select org_id as o, livemode as l, id as i from payments.refunds
            where status = 'pending' and answered_at is null
              and updated_at < now() - $1::interval and created_at > now() - $2::interval
            order by updated_at limit $3 for update skip locked) due
        where (r.org_id, r.livemode, r.id) = (due.o, due.l, due.i) returning {_REFUND}""",
        stuck_for, younger_than, limit)


async def take_settling(db: Db, waited: timedelta, limit: int) -> list[asyncpg.Record]:
    """Refunds the provider answered `pending` and nothing settled for `waited`, taken by
    this janitor for as long again (another replica skips them)."""
    return await db.fetch(
        f"""update payments.refunds r set updated_at = now() from (
            select org_id as o, livemode as l, id as i from payments.refunds
            where status = 'pending' and answered_at is not null
              and updated_at < now() - $1::interval
            order by updated_at limit $2 for update skip locked) due
        where (r.org_id, r.livemode, r.id) = (due.o, due.l, due.i) returning {_REFUND}""",
        waited, limit)


_REFUND_FIELDS = tuple(f.name for f in dataclasses.fields(Refund))  # columns of those names


def as_refund(r: asyncpg.Record) -> Refund:
    return Refund(**{f: r[f] for f in _REFUND_FIELDS})
