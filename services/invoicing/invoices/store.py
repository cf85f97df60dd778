"""Invoices: the SQL (schema `invoicing`). Every query names the organization and the mode."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from services.invoicing.invoices.domain import Draft, Rate
from services.runtime.db import fetch_page

Db = asyncpg.Pool | asyncpg.Connection

_INVOICE = ("id, user_id, customer_email, subscription_id, period_start, period_end, status,"
            " currency, subtotal, tax, tax_address, tax_lines, discount, discount_name,"
            " credit_applied, amount_due, amount_paid, payment_method, payment_ref,"
            " payment_intent_id, number, attempt_count, due_date, paid_at, voided_at,"
            " line_items, line_counter, metadata, created_at, updated_at")


def _columns_of(alias: str) -> str:
    """`_INVOICE` of a table named `alias` in a query that joins others."""
    return ", ".join(f"{alias}.{c.strip()}" for c in _INVOICE.split(","))


# What an edit may set (`update`): column names are ours, never a client's.
_CHANGEABLE = frozenset({"status", "subtotal", "tax", "tax_percent", "tax_address",
                         "tax_lines", "discount", "discount_name", "amount_due", "number",
                         "voided_at", "line_items", "line_counter", "amount_paid",
                         "credit_applied", "attempt_count", "last_attempt_at", "paid_at",
                         "payment_method", "payment_ref", "payment_intent_id"})


async def invoice(db: Db, org_id: str, livemode: bool, invoice_id: str, *,
                  lock: bool = False) -> asyncpg.Record | None:
    """Locked: every change of one invoice waits for the one before (§5.0, a row lock)."""
    return await db.fetchrow(
        f"select {_INVOICE} from invoicing.invoices where org_id = $1 and livemode = $2"
        f" and id = $3" + (" for update" if lock else ""), org_id, livemode, invoice_id)


async def locked(conn: asyncpg.Connection, ids: list[tuple[str, bool, str]],
                 ) -> dict[str, asyncpg.Record]:
    """Invoices (org_id, livemode, id) locked, by id; locked in id order, so concurrent
    lockers of the same invoices wait for each other rather than deadlock."""
    rows = await conn.fetch(
        f"select {_INVOICE} from invoicing.invoices where (org_id, livemode, id) in"
        " (select * from unnest($1::text[], $2::boolean[], $3::text[])) order by id"
        " for update", *zip(*ids, strict=True))
    return {r["id"]: r for r in rows}


async def create(conn: asyncpg.Connection, org_id: str, livemode: bool, invoice_id: str,
                 draft: Draft, lines: list[Any], subtotal: int, amount_due: int,
                 ) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""insert into invoicing.invoices (org_id, livemode, id, user_id, customer_email,
            subscription_id, currency, line_items, line_counter, subtotal, amount_due,
            metadata)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) returning {_INVOICE}""",
        org_id, livemode, invoice_id, draft.user_id, draft.customer_email,
        draft.subscription_id, draft.currency, lines, draft.counter, subtotal, amount_due,
        draft.metadata)


async def period_invoices(db: Db, periods: list[tuple[str, bool, str, datetime, datetime]],
                          ) -> list[asyncpg.Record | None]:
    """The renewal invoices of subscriptions' periods (§10: one per period), if any, of
    many (org_id, livemode, subscription_id, start, end), in one query."""
    rows = await db.fetch(
        f"select k.n, {_columns_of('i')}"
        " from unnest($1::text[], $2::boolean[], $3::text[], $4::timestamptz[],"
        " $5::timestamptz[]) with ordinality as k(o, l, s, ps, pe, n)"
        " join invoicing.invoices i on i.org_id = k.o and i.livemode = k.l"
        " and i.origin = 'renewal' and i.subscription_id = k.s and i.period_start = k.ps"
        " and i.period_end = k.pe", *zip(*periods, strict=True))
    found: list[asyncpg.Record | None] = [None] * len(periods)
    for r in rows:
        found[r["n"] - 1] = r
    return found


async def create_for_periods(conn: asyncpg.Connection,
                             invoices: list[tuple[str, bool, str, str, str, str, datetime,
                                                  datetime, str, int, int, int]],
                             ) -> list[asyncpg.Record]:
    """Renewal invoices of periods, open and numbered, in one statement: (org_id, livemode,
    invoice_id, subscription_id, user_id, currency, start, end, lines as JSON text,
    subtotal, amount_due, number) each, at most one per period. The invoices inserted: a
    period that has its invoice already is skipped (a concurrent renewal's insert is waited
    for, then skipped)."""
    columns = list(zip(*invoices, strict=True))
    return await conn.fetch(
        f"""insert into invoicing.invoices (org_id, livemode, id, subscription_id, user_id,
            origin, period_start, period_end, currency, line_items, subtotal, amount_due,
            status, number)
        select o, l, i, s, u, 'renewal', ps, pe, c, li::jsonb, st, ad, 'open', n
        from unnest($1::text[], $2::boolean[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[], $8::timestamptz[], $9::text[], $10::bigint[], $11::bigint[],
            $12::bigint[]) as d(o, l, i, s, u, c, ps, pe, li, st, ad, n)
        on conflict (org_id, livemode, subscription_id, period_start, period_end)
            where origin = 'renewal' do nothing
        returning {_INVOICE}""", *columns)


async def update(conn: asyncpg.Connection, org_id: str, livemode: bool, invoice_id: str,
                 **changes: Any) -> asyncpg.Record:
    """The invoice with `changes` (columns of `_CHANGEABLE`) made, as it is now."""
    assert changes.keys() <= _CHANGEABLE, changes.keys() - _CHANGEABLE
    names = list(changes)
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=4))
    return await conn.fetchrow(
        f"update invoicing.invoices set {sets}, updated_at = now()"
        f" where org_id = $1 and livemode = $2 and id = $3 returning {_INVOICE}",
        org_id, livemode, invoice_id, *changes.values())


# What an ended attempt may change (`collection.domain.finished`): the rest stays.
_ATTEMPT_ENDED = ("amount_paid", "credit_applied", "attempt_count", "last_attempt_at", "status",
                  "paid_at", "payment_method", "payment_ref", "payment_intent_id")


async def attempts_ended(conn: asyncpg.Connection,
                         ended: list[tuple[str, bool, str, dict[str, Any]]],
                         ) -> dict[str, asyncpg.Record]:
    """Many invoices' changes from their ended attempts, (org_id, livemode, id, changes)
    each, in one statement; the invoices as they are now, by id."""
    assert all(c.keys() <= set(_ATTEMPT_ENDED) for *_, c in ended)
    orgs, modes, ids, changes = zip(*ended, strict=True)
    rows = await conn.fetch(
        f"""update invoicing.invoices i set amount_paid = e.paid, credit_applied = e.credit,
            attempt_count = e.attempt, last_attempt_at = e.at,
            status = coalesce(e.status, i.status), paid_at = coalesce(e.paid_at, i.paid_at),
            payment_method = coalesce(e.method, i.payment_method),
            payment_ref = coalesce(e.ref, i.payment_ref),
            payment_intent_id = coalesce(e.intent, i.payment_intent_id), updated_at = now()
        from unnest($1::text[], $2::boolean[], $3::text[], $4::bigint[], $5::bigint[],
            $6::integer[], $7::timestamptz[], $8::text[], $9::timestamptz[], $10::text[],
            $11::text[], $12::text[]) as e(org, mode, invoice, paid, credit, attempt, at,
            status, paid_at, method, ref, intent)
        where i.org_id = e.org and i.livemode = e.mode and i.id = e.invoice
        returning {_columns_of("i")}""",
        orgs, modes, ids, *zip(*([c.get(name) for name in _ATTEMPT_ENDED] for c in changes),
                               strict=True))
    return {r["id"]: r for r in rows}


async def invoices(db: Db, org_id: str, livemode: bool, user_id: str, status: str,
                   subscription_id: str, limit: int, offset: int,
                   ) -> tuple[list[asyncpg.Record], int]:
    """A page, oldest first (§1.7), and how many match in all."""
    return await fetch_page(db,
        f"""select {_INVOICE}, count(*) over () as total from invoicing.invoices
        where org_id = $1 and livemode = $2 and ($3 = '' or user_id = $3)
          and ($4 = '' or status = $4) and ($5 = '' or subscription_id = $5)
        order by created_at, id limit $6 offset $7""",
        org_id, livemode, user_id, status, subscription_id, limit, offset)


async def next_number(conn: asyncpg.Connection, org_id: str, livemode: bool,
                      kind: str, count: int = 1) -> int:
    """The next number of `kind` for the organization and mode (§9.11). The counter's row
    stays locked until the caller's transaction ends, so concurrent numberings take their
    turn, and a rollback gives the number back: no gaps, no duplicates. With `count`, the
    last of `count` numbers taken at once."""
    return await conn.fetchval(
        """insert into invoicing.numbers (org_id, livemode, kind, last) values ($1, $2, $3, $4)
        on conflict (org_id, livemode, kind) do update set last = numbers.last + $4
        returning last""", org_id, livemode, kind, count)


# ---- tax rates -----------------------------------------------------------------------------


async def tax_rates(db: Db, org_id: str, livemode: bool, country: str) -> list[Rate]:
    rows = await db.fetch(
        "select id, country, state, rate, name from invoicing.tax_rates"
        " where org_id = $1 and livemode = $2 and ($3 = '' or country = $3)"
        " order by created_at, id", org_id, livemode, country)
    return [Rate(r["id"], r["country"], r["state"], r["rate"], r["name"]) for r in rows]


async def tax_rate_rows(db: Db, org_id: str, livemode: bool, country: str,
                        ) -> list[asyncpg.Record]:
    return await db.fetch(
        "select id, country, state, rate, name, code, created_at from invoicing.tax_rates"
        " where org_id = $1 and livemode = $2 and ($3 = '' or country = $3)"
        " order by country, state, created_at, id", org_id, livemode, country)


async def create_tax_rate(conn: asyncpg.Connection, org_id: str, livemode: bool, rate_id: str,
                          rate: Rate, code: str) -> asyncpg.Record:
    return await conn.fetchrow(
        "insert into invoicing.tax_rates (org_id, livemode, id, country, state, rate, name, code)"
        " values ($1, $2, $3, $4, $5, $6, $7, $8)"
        " returning id, country, state, rate, name, code, created_at",
        org_id, livemode, rate_id, rate.country, rate.state, rate.rate, rate.name, code)
