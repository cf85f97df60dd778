"""Customer balances: the SQL (schema `invoicing`). Every query names the organization and
the mode. A change is an upsert that adds to the balance under its row lock, so concurrent
changes take turns and each transaction row carries the balance right after it."""

from __future__ import annotations

import asyncpg

from services.invoicing.customer_balance.domain import Change
from services.runtime.db import fetch_page

Db = asyncpg.Pool | asyncpg.Connection

_TRANSACTION = ("id, customer_id, currency, amount, type, description, invoice_id,"
                " credit_note_id, source_ref, ending_balance, created_at")


async def balance(db: Db, org_id: str, livemode: bool, customer_id: str, currency: str, *,
                  lock: bool = False) -> int:
    """The balance (0 when the customer never had one); locked: until the caller's
    transaction ends, nobody else changes it."""
    return await db.fetchval(
        "select balance from invoicing.customer_balances where org_id = $1 and livemode = $2"
        " and customer_id = $3 and currency = $4" + (" for update" if lock else ""),
        org_id, livemode, customer_id, currency) or 0


async def balances(db: Db, keys: list[tuple[str, bool, str, str]]) -> list[int]:
    """`balance` of many (org_id, livemode, customer_id, currency), in one query, unlocked."""
    rows = await db.fetch(
        "select k.n, b.balance from unnest($1::text[], $2::boolean[], $3::text[], $4::text[])"
        " with ordinality as k(o, l, c, cur, n) join invoicing.customer_balances b"
        " on b.org_id = k.o and b.livemode = k.l and b.customer_id = k.c and b.currency = k.cur",
        *zip(*keys, strict=True))
    found = [0] * len(keys)
    for r in rows:
        found[r["n"] - 1] = r["balance"]
    return found


async def change(conn: asyncpg.Connection, org_id: str, livemode: bool, transaction_id: str,
                 c: Change) -> asyncpg.Record | None:
    """The balance moved by `c.amount` and its transaction, in the caller's transaction.
    None when a change with this `source_ref` was made before (nothing moves again)."""
    if c.source_ref and await conn.fetchval(
            "select 1 from invoicing.balance_transactions where org_id = $1 and livemode = $2"
            " and source_ref = $3", org_id, livemode, c.source_ref):
        return None
    ending = await conn.fetchval(
        """insert into invoicing.customer_balances (org_id, livemode, customer_id, currency,
            balance) values ($1, $2, $3, $4, $5)
        on conflict (org_id, livemode, customer_id, currency)
        do update set balance = customer_balances.balance + excluded.balance,
                      updated_at = now()
        returning balance""", org_id, livemode, c.customer_id, c.currency, c.amount)
    return await conn.fetchrow(
        f"""insert into invoicing.balance_transactions (org_id, livemode, id, customer_id,
            currency, amount, type, description, invoice_id, credit_note_id, source_ref,
            ending_balance)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) returning {_TRANSACTION}""",
        org_id, livemode, transaction_id, c.customer_id, c.currency, c.amount, c.type,
        c.description, c.invoice_id, c.credit_note_id, c.source_ref, ending)


async def transactions(db: Db, org_id: str, livemode: bool, customer_id: str, currency: str,
                       limit: int, offset: int) -> tuple[list[asyncpg.Record], int]:
    """A page, newest first (§7.3 Δ), and how many match in all."""
    return await fetch_page(db,
        f"""select {_TRANSACTION}, count(*) over () as total from invoicing.balance_transactions
        where org_id = $1 and livemode = $2 and ($3 = '' or customer_id = $3)
          and ($4 = '' or currency = $4)
        order by created_at desc, id desc limit $5 offset $6""",
        org_id, livemode, customer_id, currency, limit, offset)
