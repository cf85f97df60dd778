"""Payment and setup intents: the SQL. Every query names the organization and the mode."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from services.payments.intents.domain import Intent, NewIntent, Setup
from services.payments.postings import store as postings
from services.runtime.db import newest_first
from services.runtime.outbox import insert_events

Db = asyncpg.Pool | asyncpg.Connection


# ---- payment intents ---------------------------------------------------------------------

_INTENT = ("id, customer_id, amount, currency, status, payment_method_id, capture_method,"
           " confirmation_method, amount_capturable, amount_received, amount_refunded,"
           " description, provider_ref, provider_type, last_error, client_secret, invoice_id,"
           " cancellation_reason, canceled_at, metadata, attempts, created_at")
# Every write of a row gives it a new `xmin`: the version a write can be conditional on.
_VERSIONED = _INTENT + ", xmin as version"


async def create_intent(db: Db, org_id: str, livemode: bool, intent_id: str, n: NewIntent,
                        created_at: datetime, event: tuple[str, str, bytes]) -> None:
    """The new intent, with its event (id, type, payload) in the outbox: one statement."""
    i = n.intent
    await db.execute(
        "with new as (insert into payments.payment_intents (org_id, livemode, id, customer_id,"
        " amount, currency, status, payment_method_id, capture_method, confirmation_method,"
        " setup_future_usage, description, receipt_email, invoice_id, metadata, created_at)"
        " values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        " returning org_id) " + insert_events("payments", "select $17, $18, $1, $2, $19 from new"),
        org_id, livemode, intent_id, n.customer_id, i.amount, i.currency, i.status,
        i.payment_method_id, i.capture_method, n.confirmation_method, n.setup_future_usage,
        n.description, n.receipt_email, n.invoice_id, n.metadata, created_at, *event)


async def intent(db: Db, org_id: str, livemode: bool, intent_id: str, *,
                 lock: bool = False) -> asyncpg.Record | None:
    """The intent, with its version. `lock`: the row stays locked until the caller's
    transaction ends, so two changes of one intent run one after the other."""
    return await db.fetchrow(
        f"select {_VERSIONED} from payments.payment_intents"
        f" where org_id = $1 and livemode = $2 and id = $3" + (" for update" if lock else ""),
        org_id, livemode, intent_id)


_CONFIRMING = (
    f"select {', '.join('i.' + c for c in _VERSIONED.split(', '))},"
    " m.customer_id as method_customer_id, m.provider_type as method_provider_type,"
    " m.provider_ref as method_provider_ref,"
    " coalesce((select jsonb_object_agg(c.provider, c.provider_ref)"
    "  from payments.provider_customers c where (c.org_id, c.livemode, c.customer_id)"
    "  = (i.org_id, i.livemode, i.customer_id)), '{}') as provider_customers"
    " from payments.payment_intents i left join payments.payment_methods m"
    " on (m.org_id, m.livemode, m.id)"
    " = (i.org_id, i.livemode, coalesce(nullif($4, ''), i.payment_method_id)) and not m.deleted"
    " where i.org_id = $1 and i.livemode = $2 and i.id = $3")


async def confirming(db: Db, org_id: str, livemode: bool, intent_id: str,
                     payment_method_id: str, *, lock: bool) -> asyncpg.Record | None:
    """The intent (with its version; `lock`: as `intent`) and what charging it needs, in
    one read: the method it is confirmed with (`payment_method_id`, or else its own), as
    `method_customer_id`, `method_provider_type` and `method_provider_ref` (null: no such
    method), and its customer's references at the providers (`provider_customers`, by
    provider)."""
    return await db.fetchrow(_CONFIRMING + (" for update of i" if lock else ""),
                             org_id, livemode, intent_id, payment_method_id)


async def by_provider_ref(conn: asyncpg.Connection, org_id: str, livemode: bool,
                          provider: str, ref: str) -> asyncpg.Record | None:
    """The intent the provider knows as `ref` (a webhook's), locked as `intent(lock=True)`."""
    return await conn.fetchrow(
        f"select {_INTENT} from payments.payment_intents where org_id = $1 and livemode = $2"
        f" and provider_type = $3 and provider_ref = $4 and provider_ref <> '' for update",
        org_id, livemode, provider, ref)


async def held_provider_refs(db: Db, refs: list[tuple[str, bool, str, str]],
                             ) -> set[tuple[str, bool, str, str]]:
    """Which of these (org, mode, provider, provider's payment) an intent is, in one read
    (unlocked: webhooks' first look)."""
    rows = await db.fetch(
        "select k.o, k.l, k.p, k.r from unnest($1::text[], $2::boolean[], $3::text[],"
        " $4::text[]) as k(o, l, p, r) where k.r <> '' and exists (select 1"
        " from payments.payment_intents i where i.org_id = k.o and i.livemode = k.l"
        " and i.provider_type = k.p and i.provider_ref = k.r)",
        *map(list, zip(*refs, strict=True)))
    return {tuple(r) for r in rows}


_INTENTS = newest_first("payments.payment_intents", _INTENT, ("customer_id",))


async def intents(db: Db, org_id: str, livemode: bool, customer_id: str, limit: int,
                  starting_after: str) -> list[asyncpg.Record]:
    return await db.fetch(_INTENTS, org_id, livemode, customer_id, limit, starting_after)


# The state machine's fields that a write changes: all but what the intent was created with.
_SAVED_FIELDS = tuple(f.name for f in dataclasses.fields(Intent)
                      if f.name not in ("amount", "currency", "capture_method"))
_SAVE = (f"update payments.payment_intents set"
         f" {', '.join(f'{f} = ${n}' for n, f in enumerate(_SAVED_FIELDS, start=4))},"
         f" attempts = ${4 + len(_SAVED_FIELDS)}, updated_at = now()"
         f" where org_id = $1 and livemode = $2 and id = $3"
         f" and (${5 + len(_SAVED_FIELDS)}::xid is null or xmin = ${5 + len(_SAVED_FIELDS)})")


def _saved(org_id: str, livemode: bool, intent_id: str, i: Intent, attempts: int,
           version: int | None) -> tuple:
    """`_SAVE`'s parameters, $1 to $15."""
    return (org_id, livemode, intent_id, *(getattr(i, f) for f in _SAVED_FIELDS), attempts,
            version)


async def save_intent(db: Db, org_id: str, livemode: bool, intent_id: str, i: Intent,
                      attempts: int, *, version: int | None = None) -> asyncpg.Record | None:
    """Write the state machine's fields back; with `version`, only if the row is still the
    version read (None: it changed since)."""
    return await db.fetchrow(f"{_SAVE} returning {_VERSIONED}",
                             *_saved(org_id, livemode, intent_id, i, attempts, version))


def as_saved(row: asyncpg.Record, i: Intent, attempts: int) -> dict[str, Any]:
    """`row` as `save_intent` leaves it with `i` and `attempts` (but its version)."""
    return {**row, **{f: getattr(i, f) for f in _SAVED_FIELDS}, "attempts": attempts}


_ANNOUNCED = insert_events("payments", "select $16, $17, $1, $2, $18 from saved")
_OWED = postings.insert_owed(
    "(select $1, $2, $19::text, $20::text, $21::bytea from saved where $19 is not null) n",
    "$22")


async def settle(db: Db, org_id: str, livemode: bool, intent_id: str, i: Intent, attempts: int,
                 version: int, event: tuple[str, str, bytes],
                 posting: tuple[str, str, bytes] | None, lease: timedelta,
                 ) -> asyncpg.Record | None:
    """One statement: the intent's new state if the row is still `version` (None: it changed
    since), with its event (id, type, payload) in the outbox and the ledger posting it owes
    (id, subject, params), if any."""
    return await db.fetchrow(
        f"with saved as ({_SAVE} returning {_VERSIONED}),"
        f" announced as ({_ANNOUNCED}),"
        f" owed as ({_OWED}) select * from saved",
        *_saved(org_id, livemode, intent_id, i, attempts, version), *event,
        *(posting or (None, None, None)), lease)


_INTENT_FIELDS = tuple(f.name for f in dataclasses.fields(Intent))  # columns of those names


def as_intent(r: asyncpg.Record) -> Intent:
    return Intent(**{f: r[f] for f in _INTENT_FIELDS})


# ---- setup intents -----------------------------------------------------------------------

_SETUP = ("id, customer_id, status, usage, payment_method_id, provider_ref, provider_type,"
          " last_error, cancellation_reason, canceled_at, metadata, created_at")


async def create_setup(db: Db, org_id: str, livemode: bool, setup_id: str, customer_id: str,
                       s: Setup, usage: str) -> asyncpg.Record:
    return await db.fetchrow(
        f"insert into payments.setup_intents (org_id, livemode, id, customer_id, status, usage,"
        f" payment_method_id) values ($1, $2, $3, $4, $5, $6, $7) returning {_SETUP}",
        org_id, livemode, setup_id, customer_id, s.status, usage, s.payment_method_id)


async def setup(db: Db, org_id: str, livemode: bool, setup_id: str, *, lock: bool = False,
                ) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_SETUP} from payments.setup_intents"
        f" where org_id = $1 and livemode = $2 and id = $3" + (" for update" if lock else ""),
        org_id, livemode, setup_id)


async def save_setup(db: Db, org_id: str, livemode: bool, setup_id: str, s: Setup,
                     ) -> asyncpg.Record:
    return await db.fetchrow(
        f"""update payments.setup_intents set status = $4, payment_method_id = $5,
            provider_ref = $6, provider_type = $7, last_error = $8, cancellation_reason = $9,
            canceled_at = $10, updated_at = now()
        where org_id = $1 and livemode = $2 and id = $3 returning {_SETUP}""",
        org_id, livemode, setup_id, s.status, s.payment_method_id, s.provider_ref,
        s.provider_type, s.last_error, s.cancellation_reason, s.canceled_at)


_SETUP_FIELDS = tuple(f.name for f in dataclasses.fields(Setup))  # columns of those names


def as_setup(r: asyncpg.Record) -> Setup:
    return Setup(**{f: r[f] for f in _SETUP_FIELDS})


@dataclasses.dataclass(frozen=True, slots=True)
class Paid:
    """A payment collected outside the intent flow (a top-up's charge)."""

    org_id: str
    livemode: bool
    intent_id: str
    customer_id: str
    amount: int
    currency: str
    payment_method_id: str
    provider_ref: str
    provider_type: str
    description: str
    metadata: dict


def insert_paid(rows: str, created_at: str) -> str:
    """The insert of payments collected outside the intent flow, from `rows`: a relation of
    (o, l, i, c, a, cur, m, r, p, d, md), the `paid_columns` (for a longer statement that
    chooses which), created at `created_at`."""
    return (f"insert into payments.payment_intents (org_id, livemode, id, customer_id, amount,"
            f" currency, status, payment_method_id, capture_method, confirmation_method,"
            f" amount_received, provider_ref, provider_type, description, metadata, created_at)"
            f" select o, l, i, c, a, cur, 'succeeded', m, 'automatic', 'automatic', a, r, p, d,"
            f" md::jsonb, {created_at} from {rows}")


# The arrays of `paid_columns`, from $n: for `insert_paid` (as `n`).
def paid_arrays(n: int) -> str:
    types = ("text", "boolean", "text", "text", "bigint", "text", "text", "text", "text",
             "text", "text")
    return ", ".join(f"${n + k}::{t}[]" for k, t in enumerate(types))


def paid_columns(paid: list[Paid]) -> list[list]:
    return [list(c) for c in zip(*[(
        x.org_id, x.livemode, x.intent_id, x.customer_id, x.amount, x.currency,
        x.payment_method_id, x.provider_ref, x.provider_type, x.description,
        msgspec.json.encode(x.metadata).decode()) for x in paid], strict=True)]


async def record_paid(conn: asyncpg.Connection, paid: list[Paid]) -> dict[str, asyncpg.Record]:
    """Payments collected outside the intent flow, as succeeded intents: listed, refundable
    and posted like any other. Their rows by intent id."""
    rows = await conn.fetch(
        insert_paid(f"unnest({paid_arrays(1)}) as n(o, l, i, c, a, cur, m, r, p, d, md)",
                    "now()") + f" returning {_INTENT}", *paid_columns(paid))
    return {r["id"]: r for r in rows}


async def interrupted_confirms(db: Db, older_than: timedelta, limit: int,
                               ) -> list[asyncpg.Record]:
    """Intents left `processing` for longer than `older_than` (the provider's answer never
    arrived, or it answered `processing`), each taken by one replica for as long again."""
    return await db.fetch(
        "update payments.payment_intents i set updated_at = now() from ("
        "  select org_id, livemode, id from payments.payment_intents"
        "  where status = 'processing' and updated_at < now() - $1::interval"
        "  order by updated_at limit $2 for update skip locked) due"
        " where (i.org_id, i.livemode, i.id) = (due.org_id, due.livemode, due.id)"
        " returning i.*, i.xmin as version",
        older_than, limit)
