"""Collection attempts: the SQL (schema `invoicing`). Every query names the organization
and the mode."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from services.invoicing.collection.domain import Attempt

Db = asyncpg.Pool | asyncpg.Connection

_ATTEMPT = ("invoice_id, attempt, due, credit_used, credit_by_meter, balance_used, wallet_planned, wallet_used,"
            " card_used, card_ref, payment_intent_id, error")

def _attempt(r: asyncpg.Record) -> Attempt:
    return Attempt(invoice_id=r["invoice_id"], number=r["attempt"], due=r["due"],
                   credit_used=r["credit_used"], credit_by_meter=r["credit_by_meter"],
                   balance_used=r["balance_used"],
                   wallet_planned=r["wallet_planned"], wallet_used=r["wallet_used"],
                   card_used=r["card_used"], card_ref=r["card_ref"],
                   payment_intent_id=r["payment_intent_id"], error=r["error"])


async def running(conn: asyncpg.Connection, org_id: str, livemode: bool, invoice_id: str,
                  ) -> tuple[Attempt, datetime] | None:
    """The invoice's attempt in progress, if any, and until when its lease runs."""
    r = await conn.fetchrow(
        f"select {_ATTEMPT}, lease_until from invoicing.collection_attempts"
        " where org_id = $1 and livemode = $2 and invoice_id = $3 and state = 'collecting'",
        org_id, livemode, invoice_id)
    return None if r is None else (_attempt(r), r["lease_until"])


async def stalled(db: Db, limit: int) -> list[tuple[str, bool, str]]:
    rows = await db.fetch(
        "select org_id, livemode, invoice_id from invoicing.collection_attempts"
        " where state = 'collecting' and lease_until < now() order by lease_until limit $1",
        limit)
    return [(r["org_id"], r["livemode"], r["invoice_id"]) for r in rows]


async def start(conn: asyncpg.Connection, org_id: str, livemode: bool, invoice_id: str,
                number: int, due: int, lease_until: datetime) -> Attempt:
    return _attempt(await conn.fetchrow(
        f"""insert into invoicing.collection_attempts (org_id, livemode, invoice_id, attempt,
            due, lease_until) values ($1, $2, $3, $4, $5, $6) returning {_ATTEMPT}""",
        org_id, livemode, invoice_id, number, due, lease_until))


async def start_many(conn: asyncpg.Connection,
                     attempts: list[tuple[str, bool, str, int, int, datetime]],
                     ) -> dict[str, Attempt]:
    """`start` for many invoices in one statement: (org_id, livemode, invoice_id, attempt,
    due, lease_until) each; the attempts by invoice."""
    rows = await conn.fetch(
        f"""insert into invoicing.collection_attempts (org_id, livemode, invoice_id, attempt,
            due, lease_until)
        select * from unnest($1::text[], $2::boolean[], $3::text[], $4::integer[],
            $5::bigint[], $6::timestamptz[]) returning {_ATTEMPT}""", *zip(*attempts, strict=True))
    return {r["invoice_id"]: _attempt(r) for r in rows}


async def lease(db: Db, org_id: str, livemode: bool, a: Attempt, until: datetime) -> None:
    await db.execute(
        "update invoicing.collection_attempts set lease_until = $5, updated_at = now()"
        " where org_id = $1 and livemode = $2 and invoice_id = $3 and attempt = $4",
        org_id, livemode, a.invoice_id, a.number, until)


async def save(db: Db, org_id: str, livemode: bool, a: Attempt, state: str | None = None,
               ) -> None:
    """Every leg outcome the attempt has so far; with `state`, the attempt ended."""
    await db.execute(
        """update invoicing.collection_attempts set credit_used = $5, credit_by_meter = $6,
            balance_used = $7, wallet_planned = $8, wallet_used = $9, card_used = $10,
            card_ref = $11, payment_intent_id = $12, error = $13,
            state = coalesce($14, state), updated_at = now()
        where org_id = $1 and livemode = $2 and invoice_id = $3 and attempt = $4""",
        org_id, livemode, a.invoice_id, a.number, a.credit_used, a.credit_by_meter,
        a.balance_used, a.wallet_planned, a.wallet_used, a.card_used, a.card_ref,
        a.payment_intent_id, a.error, state)


async def save_many(db: Db, attempts: list[tuple[str, bool, Attempt, str | None]]) -> None:
    """`save` of many attempts in one statement: (org_id, livemode, attempt, state) each
    (state None: still collecting)."""
    rows = [(org, mode, a.invoice_id, a.number, a.credit_used,
             None if a.credit_by_meter is None else msgspec.json.encode(
                 a.credit_by_meter).decode(), a.balance_used, a.wallet_planned, a.wallet_used,
             a.card_used, a.card_ref, a.payment_intent_id, a.error, state)
            for org, mode, a, state in attempts]
    await db.execute(
        """update invoicing.collection_attempts c set credit_used = s.credit,
            credit_by_meter = s.by_meter::jsonb, balance_used = s.balance,
            wallet_planned = s.planned, wallet_used = s.wallet, card_used = s.card,
            card_ref = s.ref, payment_intent_id = s.intent, error = s.error,
            state = coalesce(s.state, c.state),
            updated_at = now()
        from unnest($1::text[], $2::boolean[], $3::text[], $4::integer[], $5::bigint[],
            $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[],
            $12::text[], $13::text[], $14::text[]) as s(org, mode, invoice, attempt, credit,
            by_meter, balance, planned, wallet, card, ref, intent, error, state)
        where c.org_id = s.org and c.livemode = s.mode and c.invoice_id = s.invoice
            and c.attempt = s.attempt""", *zip(*rows, strict=True))


async def credited_by_meter(db: Db, org_id: str, livemode: bool, invoice_id: str,
                            ) -> dict[str, int]:
    """What the invoice's ended attempts' credit paid of each meter's usage lines."""
    rows = await db.fetch(
        "select m.key as meter, sum(m.value::bigint) as used"
        " from invoicing.collection_attempts a, jsonb_each_text(a.credit_by_meter) m"
        " where a.org_id = $1 and a.livemode = $2 and a.invoice_id = $3"
        " and a.state <> 'collecting' group by m.key", org_id, livemode, invoice_id)
    return {r["meter"]: r["used"] for r in rows}


async def to_give_back(conn: asyncpg.Connection, org_id: str, livemode: bool,
                       invoice_id: str) -> list[Attempt]:
    """The invoice's ended attempts whose takings a void has not given back yet, locked."""
    rows = await conn.fetch(
        f"select {_ATTEMPT} from invoicing.collection_attempts where org_id = $1"
        " and livemode = $2 and invoice_id = $3 and state <> 'collecting' and not given_back"
        " order by attempt for update", org_id, livemode, invoice_id)
    return [_attempt(r) for r in rows]


async def given_back(conn: asyncpg.Connection, org_id: str, livemode: bool,
                     a: Attempt) -> None:
    await conn.execute(
        "update invoicing.collection_attempts set given_back = true, updated_at = now()"
        " where org_id = $1 and livemode = $2 and invoice_id = $3 and attempt = $4",
        org_id, livemode, a.invoice_id, a.number)
