"""Payouts: the SQL. Every query names the organization and the mode."""

from __future__ import annotations

import dataclasses

import asyncpg

from services.payments.payouts.domain import NewPayout, Payout
from services.runtime.db import newest_first

Db = asyncpg.Pool | asyncpg.Connection

_PAYOUT = ("id, amount, currency, status, destination_type, destination_id, merchant_id,"
           " description, metadata, arrival_date, provider_ref, failure_code,"
           " failure_message, created_at")


async def lock_cash(conn: asyncpg.Connection, org_id: str, livemode: bool, currency: str,
                    ) -> None:
    """Payouts of one organization, mode and currency take their turn from here to the end
    of the caller's transaction: each sees the cash the ones before it took."""
    await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))",
                       f"payments.payouts|{org_id}|{int(livemode)}|{currency}")


async def on_their_way(conn: asyncpg.Connection, org_id: str, livemode: bool, currency: str,
                       ) -> int:
    """What payouts took whose journal entry the ledger has not acknowledged yet (their
    cash is still in the journal's balance). Read before the balance, under the cash lock
    (their entries are sent under it too): an entry the job posts in between is then
    counted twice, never missed."""
    return await conn.fetchval(
        "select coalesce(sum(p.amount), 0) from payments.ledger_postings l"
        " join payments.payouts p on (p.org_id, p.livemode, p.id)"
        "   = (l.org_id, l.livemode, substr(l.id, length('payout:') + 1))"
        " where l.posted_at is null and l.org_id = $1 and l.livemode = $2"
        " and l.id like 'payout:%' and p.currency = $3", org_id, livemode, currency)


async def create_payout(conn: asyncpg.Connection, org_id: str, livemode: bool,
                        payout_id: str, n: NewPayout, merchant_id: str) -> asyncpg.Record:
    return await conn.fetchrow(
        f"insert into payments.payouts (org_id, livemode, id, amount, currency, status,"
        f" destination_type, destination_id, merchant_id, description, metadata)"
        f" values ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10) returning {_PAYOUT}",
        org_id, livemode, payout_id, n.amount, n.currency, n.destination_type,
        n.destination_id, merchant_id, n.description, n.metadata)


async def payout(db: Db, org_id: str, livemode: bool, payout_id: str, *, lock: bool = False,
                 ) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_PAYOUT} from payments.payouts"
        f" where org_id = $1 and livemode = $2 and id = $3" + (" for update" if lock else ""),
        org_id, livemode, payout_id)


_PAYOUTS = newest_first("payments.payouts", _PAYOUT, ("status",))


async def payouts(db: Db, org_id: str, livemode: bool, status: str, limit: int,
                  starting_after: str) -> list[asyncpg.Record]:
    return await db.fetch(_PAYOUTS, org_id, livemode, status, limit, starting_after)


async def save_payout(conn: asyncpg.Connection, org_id: str, livemode: bool, payout_id: str,
                      p: Payout) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""update payments.payouts set status = $4, arrival_date = $5, provider_ref = $6,
            failure_code = $7, failure_message = $8, updated_at = now()
        where org_id = $1 and livemode = $2 and id = $3 returning {_PAYOUT}""",
        org_id, livemode, payout_id, p.status, p.arrival_date, p.provider_ref,
        p.failure_code, p.failure_message)


_PAYOUT_FIELDS = tuple(f.name for f in dataclasses.fields(Payout))  # columns of those names


def as_payout(r: asyncpg.Record) -> Payout:
    return Payout(**{f: r[f] for f in _PAYOUT_FIELDS})
