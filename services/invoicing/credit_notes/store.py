"""Credit notes: the SQL (schema `invoicing`). Every query names the organization and the
mode."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.runtime.db import fetch_page, insert_owned

Db = asyncpg.Pool | asyncpg.Connection

_NOTE = ("id, invoice_id, customer_id, number, amount, currency, status, reason, line_items,"
         " out_of_band_amount, applied_to, credit_balance_transaction, memo, created_at")


async def note(db: Db, org_id: str, livemode: bool, note_id: str, *, lock: bool = False,
               ) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_NOTE} from invoicing.credit_notes where org_id = $1 and livemode = $2"
        f" and id = $3" + (" for update" if lock else ""), org_id, livemode, note_id)


async def credited(conn: asyncpg.Connection, org_id: str, livemode: bool,
                   invoice_id: str) -> int:
    """What the invoice's notes not void credit (read under the invoice's row lock)."""
    return await conn.fetchval(
        "select coalesce(sum(amount), 0) from invoicing.credit_notes where org_id = $1"
        " and livemode = $2 and invoice_id = $3 and status = 'issued'",
        org_id, livemode, invoice_id)


async def create(conn: asyncpg.Connection, org_id: str, livemode: bool, note_id: str,
                 **fields: Any) -> asyncpg.Record:
    return await insert_owned(conn, "invoicing.credit_notes", _NOTE, org_id, livemode, note_id,
                              **fields)


async def void(conn: asyncpg.Connection, org_id: str, livemode: bool, note_id: str,
               ) -> asyncpg.Record:
    return await conn.fetchrow(
        f"update invoicing.credit_notes set status = 'void', updated_at = now()"
        f" where org_id = $1 and livemode = $2 and id = $3 returning {_NOTE}",
        org_id, livemode, note_id)


async def notes(db: Db, org_id: str, livemode: bool, invoice_id: str, customer_id: str,
                limit: int, offset: int) -> tuple[list[asyncpg.Record], int]:
    """A page, newest first (§6.2 Δ), and how many match in all."""
    return await fetch_page(db,
        f"""select {_NOTE}, count(*) over () as total from invoicing.credit_notes
        where org_id = $1 and livemode = $2 and ($3 = '' or invoice_id = $3)
          and ($4 = '' or customer_id = $4)
        order by created_at desc, id desc limit $5 offset $6""",
        org_id, livemode, invoice_id, customer_id, limit, offset)
