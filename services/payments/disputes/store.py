"""Disputes: the SQL. Every query names the organization and the mode."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from contracts.disputes import Evidence
from services.runtime.db import newest_first

Db = asyncpg.Pool | asyncpg.Connection

_DISPUTE = ("id, provider, provider_ref, payment_intent_id, customer_id, amount, currency,"
            " status, reason, evidence_due_by, evidence, metadata, ledger, created_at")


async def dispute(db: Db, org_id: str, livemode: bool, dispute_id: str, *,
                  lock: bool = False) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_DISPUTE} from payments.disputes where org_id = $1 and livemode = $2"
        f" and id = $3" + (" for update" if lock else ""), org_id, livemode, dispute_id)


async def by_provider_ref(conn: asyncpg.Connection, org_id: str, livemode: bool,
                          provider: str, ref: str) -> asyncpg.Record | None:
    """Locked: the provider's events about one dispute apply one after the other."""
    return await conn.fetchrow(
        f"select {_DISPUTE} from payments.disputes where org_id = $1 and livemode = $2"
        f" and provider = $3 and provider_ref = $4 for update", org_id, livemode, provider, ref)


_DISPUTES = newest_first("payments.disputes", _DISPUTE, ("payment_intent_id",))


async def disputes(db: Db, org_id: str, livemode: bool, intent_id: str, limit: int,
                   starting_after: str) -> list[asyncpg.Record]:
    return await db.fetch(_DISPUTES, org_id, livemode, intent_id, limit, starting_after)


async def create(conn: asyncpg.Connection, org_id: str, livemode: bool, dispute_id: str,
                 provider: str, ref: str, intent: asyncpg.Record, amount: int, currency: str,
                 status: str, reason: str, due_by: datetime | None) -> asyncpg.Record | None:
    """The dispute, first seen; None when a concurrent event created it first."""
    return await conn.fetchrow(
        f"insert into payments.disputes (org_id, livemode, id, provider, provider_ref,"
        f" payment_intent_id, customer_id, amount, currency, status, reason, evidence_due_by)"
        f" values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        f" on conflict (org_id, livemode, provider, provider_ref) do nothing"
        f" returning {_DISPUTE}",
        org_id, livemode, dispute_id, provider, ref, intent["id"], intent["customer_id"],
        amount, currency, status, reason, due_by)


async def update(conn: asyncpg.Connection, org_id: str, livemode: bool, dispute_id: str, *,
                 status: str, ledger: str, reason: str | None = None,
                 due_by: datetime | None = None, evidence: Evidence | None = None,
                 ) -> asyncpg.Record:
    """Set the status and ledger state; the other fields only when given."""
    return await conn.fetchrow(
        f"""update payments.disputes set status = $4, ledger = $5,
            reason = coalesce($6, reason), evidence_due_by = coalesce($7, evidence_due_by),
            evidence = coalesce($8::jsonb, evidence), updated_at = now()
        where org_id = $1 and livemode = $2 and id = $3 returning {_DISPUTE}""",
        org_id, livemode, dispute_id, status, ledger, reason, due_by, evidence)
