"""Payment methods and provider customers: the SQL. Every query names the organization and
the mode; `owner` (when not None) restricts by-id queries to that customer's methods."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.payments.methods.domain import NewMethod
from services.runtime.db import newest_first

Db = asyncpg.Pool | asyncpg.Connection

# ---- provider customers ------------------------------------------------------------------


async def provider_customer(db: Db, org_id: str, livemode: bool, customer_id: str,
                            provider: str) -> str | None:
    return await db.fetchval(
        "select provider_ref from payments.provider_customers"
        " where org_id = $1 and livemode = $2 and customer_id = $3 and provider = $4",
        org_id, livemode, customer_id, provider)


async def remember_provider_customer(db: Db, org_id: str, livemode: bool, customer_id: str,
                                     provider: str, ref: str) -> str:
    """The mapping (the first one written wins a race)."""
    return await db.fetchval(
        "insert into payments.provider_customers"
        " (org_id, livemode, customer_id, provider, provider_ref) values ($1, $2, $3, $4, $5)"
        " on conflict (org_id, livemode, customer_id, provider)"
        " do update set provider_ref = payments.provider_customers.provider_ref"
        " returning provider_ref", org_id, livemode, customer_id, provider, ref)


# ---- payment methods ---------------------------------------------------------------------

_METHOD = ("id, customer_id, type, name, card, bank_account, billing_address, provider_ref,"
           " provider_type, verified, is_default, metadata, created_at")
_METHOD_BY_ID = ("org_id = $1 and livemode = $2 and id = $3 and not deleted"
                 " and ($4::text is null or customer_id = $4)")


async def create_method(db: Db, org_id: str, livemode: bool, method_id: str, m: NewMethod,
                        provider_ref: str, provider_type: str, verified: bool,
                        metadata: dict[str, Any]) -> asyncpg.Record:
    return await db.fetchrow(
        f"insert into payments.payment_methods (org_id, livemode, id, customer_id, type, name,"
        f" card, bank_account, billing_address, provider_ref, provider_type, verified,"
        f" metadata) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        f" returning {_METHOD}",
        org_id, livemode, method_id, m.customer_id, m.type, m.name, m.card, m.bank_account,
        m.billing_address, provider_ref, provider_type, verified, metadata)


async def method(db: Db, org_id: str, livemode: bool, method_id: str, owner: str | None,
                 *, lock: bool = False) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_METHOD} from payments.payment_methods where {_METHOD_BY_ID}"
        + (" for update" if lock else ""), org_id, livemode, method_id, owner)


_METHODS = newest_first("payments.payment_methods m", _METHOD, ("customer_id", "type"),
                        where="not deleted")


async def methods(db: Db, org_id: str, livemode: bool, customer_id: str | None, kind: str,
                  limit: int, starting_after: str) -> list[asyncpg.Record]:
    """Newest first; after the method `starting_after` when given."""
    return await db.fetch(_METHODS, org_id, livemode, customer_id or "", kind, limit,
                          starting_after)


MethodCheck = tuple[str, bool, str, bool]  # org_id, livemode, customer_id, verified only


async def methods_exist(db: Db, checks: list[MethodCheck]) -> list[bool]:
    """Whether each customer has a (verified) payment method, for many at once (the ledger's
    questions; see `PaymentsState.method_checks`)."""
    orgs, modes, customers, verified = zip(*checks, strict=True)
    rows = await db.fetch(
        "select exists (select 1 from payments.payment_methods m"
        "   where m.org_id = k.o and m.livemode = k.l and m.customer_id = k.c"
        "     and not m.deleted and (m.verified or not k.v)) as found"
        " from unnest($1::text[], $2::boolean[], $3::text[], $4::boolean[])"
        "   with ordinality as k(o, l, c, v, i) order by k.i",
        orgs, modes, customers, verified)
    return [r["found"] for r in rows]


async def update_method(db: Db, org_id: str, livemode: bool, method_id: str,
                        billing_address: Any, metadata: dict[str, Any]) -> asyncpg.Record:
    return await db.fetchrow(
        f"update payments.payment_methods set billing_address = coalesce($4, billing_address),"
        f" metadata = $5, updated_at = now()"
        f" where org_id = $1 and livemode = $2 and id = $3 and not deleted returning {_METHOD}",
        org_id, livemode, method_id, billing_address, metadata)


async def by_provider_ref(conn: asyncpg.Connection, org_id: str, livemode: bool,
                          provider: str, ref: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"select {_METHOD} from payments.payment_methods where org_id = $1 and livemode = $2"
        f" and provider_type = $3 and provider_ref = $4 and provider_ref <> '' and not deleted"
        f" for update", org_id, livemode, provider, ref)


async def update_card(conn: asyncpg.Connection, org_id: str, livemode: bool, method_id: str,
                      card: dict[str, Any]) -> asyncpg.Record:
    """The card's details as its provider now has them (a new expiry, a reissued number)."""
    return await conn.fetchrow(
        f"update payments.payment_methods set card = coalesce(card, '{{}}'::jsonb) || $4,"
        f" updated_at = now() where org_id = $1 and livemode = $2 and id = $3"
        f" returning {_METHOD}", org_id, livemode, method_id, card)


async def detach_method(db: Db, org_id: str, livemode: bool, method_id: str) -> None:
    await db.execute(
        "update payments.payment_methods set deleted = true, is_default = false,"
        " updated_at = now() where org_id = $1 and livemode = $2 and id = $3",
        org_id, livemode, method_id)


async def make_default(db: Db, org_id: str, livemode: bool, customer_id: str,
                       method_id: str) -> asyncpg.Record:
    """Clear the customer's other default, then set this one, in the caller's transaction.
    One customer's changes of default run one after the other (the partial unique index
    would refuse the second of two concurrent ones)."""
    await db.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))",
                     f"payments.default|{org_id}|{livemode}|{customer_id}")
    await db.execute(
        "update payments.payment_methods set is_default = false, updated_at = now()"
        " where org_id = $1 and livemode = $2 and customer_id = $3 and is_default"
        " and not deleted and id <> $4", org_id, livemode, customer_id, method_id)
    return await db.fetchrow(
        f"update payments.payment_methods set is_default = true, updated_at = now()"
        f" where org_id = $1 and livemode = $2 and id = $3 returning {_METHOD}",
        org_id, livemode, method_id)


async def mark_verified(db: Db, org_id: str, livemode: bool, method_id: str,
                        provider_ref: str, provider_type: str) -> asyncpg.Record:
    """A provider saved the method for later payments (a setup intent succeeded); the
    method after the change."""
    return await db.fetchrow(
        "update payments.payment_methods set verified = true, provider_ref = $4,"
        " provider_type = $5, metadata = metadata || '{\"verified\": true}'::jsonb,"
        " updated_at = now() where org_id = $1 and livemode = $2 and id = $3"
        f" returning {_METHOD}", org_id, livemode, method_id, provider_ref, provider_type)
