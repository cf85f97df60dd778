"""The ledger's SQL, in one place."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.ledger.domain import USAGE_TAG, Movement
from services.runtime.errors import invalid
from services.runtime.ids import new_id

# Insert the movement and apply it to the customer's stored balance in one statement: one
# round trip, and the balance row is changed by an atomic increment (no read-modify-write).
_POST = """
with t as (
    insert into ledger.transactions (org_id, livemode, id, type, user_id, debit_account,
        credit_account, currency, amount, notes, tags, metadata, expires_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    returning created_at
)
insert into ledger.balances as b (org_id, livemode, user_id, currency, balance)
values ($1, $2, $5, $8, $14)
on conflict (org_id, livemode, user_id, currency)
    do update set balance = b.balance + excluded.balance, updated_at = now()
returning (select created_at from t)
"""

_BALANCE = """
select balance, holds from ledger.balances
where org_id = $1 and livemode = $2 and user_id = $3 and currency = $4
"""

_BALANCES = """
select currency, balance, holds from ledger.balances
where org_id = $1 and livemode = $2 and user_id = $3
order by currency
"""

_USAGE = f"""
select id, amount, currency, notes, metadata, created_at from ledger.transactions
where org_id = $1 and livemode = $2 and user_id = $3 and tags = '{USAGE_TAG}'
  and ($4 = '' or currency = $4)
order by created_at desc, id desc
limit $5 offset $6
"""

_TRANSACTIONS = """
select id, type, amount, currency, notes, tags, metadata, expires_at, created_at,
       count(*) over () as total
from ledger.transactions
where org_id = $1 and livemode = $2 and user_id = $3 and ($4 = '' or currency = $4)
order by created_at desc, id desc
limit $5 offset $6
"""

_TRANSACTION_COUNT = """
select count(*) from ledger.transactions
where org_id = $1 and livemode = $2 and user_id = $3 and ($4 = '' or currency = $4)
"""


async def post(conn: asyncpg.Connection, org_id: str, livemode: bool, m: Movement
               ) -> tuple[str, datetime]:
    """Record `m`; returns the new transaction id and its timestamp."""
    tx_id = new_id("txn_")
    try:
        created_at = await conn.fetchval(
            _POST, org_id, livemode, tx_id, m.type, m.user_id, m.debit, m.credit, m.currency,
            m.amount, m.notes, m.tags, m.metadata, m.expires_at, m.balance_delta)
    except asyncpg.NumericValueOutOfRangeError:
        raise invalid("amount is too large", "amount") from None
    return tx_id, created_at


async def balance(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str,
                  currency: str) -> tuple[int, int]:
    row = await db.fetchrow(_BALANCE, org_id, livemode, user_id, currency)
    return (row["balance"], row["holds"]) if row else (0, 0)


async def balances(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str
                   ) -> list[asyncpg.Record]:
    return await db.fetch(_BALANCES, org_id, livemode, user_id)


async def usage(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str, currency: str,
                limit: int, offset: int) -> list[asyncpg.Record]:
    return await db.fetch(_USAGE, org_id, livemode, user_id, currency, limit, offset)


async def transactions(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str,
                       currency: str, limit: int, offset: int
                       ) -> tuple[list[asyncpg.Record], int]:
    """A page of the user's transactions, newest first, and how many there are in all."""
    rows = await db.fetch(_TRANSACTIONS, org_id, livemode, user_id, currency, limit, offset)
    if rows:
        return rows, rows[0]["total"]
    # An empty page (or an offset past the end) still reports the total.
    return rows, await db.fetchval(_TRANSACTION_COUNT, org_id, livemode, user_id, currency)
