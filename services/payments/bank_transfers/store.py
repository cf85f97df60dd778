"""Bank-transfer instructions and matches: the SQL. Every query names the organization and
the mode."""

from __future__ import annotations

import asyncpg

from services.payments.bank_transfers.domain import NewInstruction, Transfer
from services.runtime.db import newest_first

Db = asyncpg.Pool | asyncpg.Connection

_INSTRUCTION = ("id, customer_id, currency, type, reference, bank_name, account_holder,"
                " account_number, routing_number, iban, bic, status, metadata, created_at,"
                " updated_at")
_MATCH = ("id, instruction_id, transfer_key, transfer_id, fingerprint, customer_id, amount,"
          " currency, created_at")


async def create_instruction(db: Db, org_id: str, livemode: bool, instruction_id: str,
                             reference: str, n: NewInstruction) -> asyncpg.Record | None:
    """The instruction; None when its reference is taken in the organization and mode."""
    return await db.fetchrow(
        f"insert into payments.bank_transfer_instructions (org_id, livemode, id, customer_id,"
        f" currency, type, reference, bank_name, account_holder, account_number,"
        f" routing_number, iban, bic, metadata)"
        f" values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        f" on conflict (org_id, livemode, reference) do nothing returning {_INSTRUCTION}",
        org_id, livemode, instruction_id, n.customer_id, n.currency, n.type, reference,
        n.bank_name, n.account_holder, n.account_number, n.routing_number, n.iban, n.bic,
        n.metadata)


async def instruction(db: Db, org_id: str, livemode: bool, instruction_id: str,
                      ) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_INSTRUCTION} from payments.bank_transfer_instructions"
        f" where org_id = $1 and livemode = $2 and id = $3", org_id, livemode, instruction_id)


async def instruction_by_reference(db: Db, org_id: str, livemode: bool, reference: str,
                                   ) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_INSTRUCTION} from payments.bank_transfer_instructions"
        f" where org_id = $1 and livemode = $2 and reference = $3", org_id, livemode, reference)


_INSTRUCTIONS = newest_first("payments.bank_transfer_instructions", _INSTRUCTION,
                             ("customer_id", "status"))


async def instructions(db: Db, org_id: str, livemode: bool, customer_id: str, status: str,
                       limit: int, starting_after: str) -> list[asyncpg.Record]:
    return await db.fetch(_INSTRUCTIONS, org_id, livemode, customer_id, status, limit,
                          starting_after)


async def record_match(conn: asyncpg.Connection, org_id: str, livemode: bool, match_id: str,
                       instruction: asyncpg.Record, transfer_key: str, t: Transfer,
                       key: str | None, fingerprint: str) -> tuple[asyncpg.Record, bool]:
    """The transfer's match: (the new row, True), or (the row of the same transfer, or of
    the same Idempotency-Key, matched before, False). A concurrent match of the same
    transfer waits here for the first to commit, then finds it."""
    row = await conn.fetchrow(
        f"insert into payments.bank_transfer_matches (org_id, livemode, id, instruction_id,"
        f" transfer_key, transfer_id, idempotency_key, fingerprint, customer_id, amount,"
        f" currency) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        f" on conflict do nothing returning {_MATCH}",
        org_id, livemode, match_id, instruction["id"], transfer_key, t.transfer_id, key,
        fingerprint, instruction["customer_id"], t.amount, t.currency)
    if row is not None:
        return row, True
    return await conn.fetchrow(
        f"select {_MATCH} from payments.bank_transfer_matches where org_id = $1"
        f" and livemode = $2 and ((instruction_id = $3 and transfer_key = $4)"
        f" or idempotency_key = $5) limit 1",
        org_id, livemode, instruction["id"], transfer_key, key), False
