"""Credit notes (metering-invoicing.md §2.6, §6): create, list, get, void. Creating and
voiding hold the invoice's row lock (§5.0), and are refused while a collection attempt
runs: the check that the invoice's notes never exceed it and the change of its amount due
(open) or of its customer's balance (paid) are one transaction, with the events."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from contracts import Scope
from contracts.common import IdParams
from contracts.errors import not_found
from contracts.ids import new_id, rfc3339
from contracts.invoicing import (
    CREDIT_NOTE_CREATE,
    CREDIT_NOTE_GET,
    CREDIT_NOTE_LIST,
    CREDIT_NOTE_VOID,
    CREDIT_NOTES_PAGE,
    CreditNote,
    CreditNoteCreateParams,
    CreditNoteLine,
    CreditNoteListParams,
)
from contracts.rules import user_id
from services.invoicing.collection import handlers as collection
from services.invoicing.credit_notes import domain, store
from services.invoicing.customer_balance.domain import Change
from services.invoicing.customer_balance.handlers import apply
from services.invoicing.invoices import store as invoices
from services.invoicing.invoices.handlers import announce, load
from services.runtime.bus import created, paged
from services.runtime.outbox import add_event
from services.runtime.service import Context, Router

router = Router()


@router.handler(CREDIT_NOTE_CREATE, transaction=True)
async def create_note(ctx: Context, scope: Scope, p: CreditNoteCreateParams,
                      conn: asyncpg.Connection) -> Any:
    org, mode = scope.org_id, scope.livemode
    invoice = await load(conn, scope, domain.require_invoice_id(p.invoiceId), lock=True)
    credit = domain.amount(p)
    await collection.not_collecting(conn, scope, invoice["id"])
    where = domain.applied_to(domain.Invoice(
        status=invoice["status"],
        total=invoice["subtotal"] + invoice["tax"] - invoice["discount"],
        due_left=invoice["amount_due"] - invoice["amount_paid"],
        credited=await store.credited(conn, org, mode, invoice["id"])), credit)
    note_id = new_id("cn_")
    customer = user_id(p.customerId) or invoice["user_id"]
    balance_txn = ""
    if where == domain.ON_INVOICE:
        changed = await invoices.update(conn, org, mode, invoice["id"],
                                        amount_due=invoice["amount_due"] - credit)
        await announce(conn, scope, changed, "invoice.updated")
    else:
        made = await apply(conn, scope, Change(
            customer, invoice["currency"], credit, "credit_note",
            f"Credit note {note_id}", invoice_id=invoice["id"], credit_note_id=note_id,
            source_ref=f"credit_note:{note_id}"))
        balance_txn = made.id if made else ""
    row = await store.create(
        conn, org, mode, note_id, invoice_id=invoice["id"], customer_id=customer,
        number=await invoices.next_number(conn, org, mode, "credit_note"), amount=credit,
        currency=invoice["currency"], reason=p.reason.strip(),
        line_items=msgspec.to_builtins(p.lineItems) if p.lineItems else None,
        out_of_band_amount=p.outOfBandAmount, applied_to=where,
        credit_balance_transaction=balance_txn, memo=p.memo)
    return created(await _announce(conn, scope, row, "credit_note.created"))


@router.handler(CREDIT_NOTE_LIST)
async def list_notes(ctx: Context, scope: Scope, p: CreditNoteListParams) -> Any:
    limit, offset = CREDIT_NOTES_PAGE.apply(p.limit, p.offset)
    rows, total = await store.notes(ctx.pool, scope.org_id, scope.livemode, p.invoiceId,
                                    p.customerId, limit, offset)
    return paged([_note(r) for r in rows], total, offset, len(rows))


@router.handler(CREDIT_NOTE_GET)
async def get_note(ctx: Context, scope: Scope, p: IdParams) -> CreditNote:
    return _note(await _load(ctx.pool, scope, p.id))


@router.handler(CREDIT_NOTE_VOID, transaction=True)
async def void_note(ctx: Context, scope: Scope, p: IdParams,
                    conn: asyncpg.Connection) -> CreditNote:
    """§6.4 Δ: what the note gave is taken back — an open invoice's amount due goes up
    again; a credited balance is debited (once, whatever it holds now)."""
    org, mode = scope.org_id, scope.livemode
    row = await _load(conn, scope, p.id)
    invoice = await load(conn, scope, row["invoice_id"], lock=True)
    row = await _load(conn, scope, p.id, lock=True)
    domain.voidable(row["status"])
    await collection.not_collecting(conn, scope, invoice["id"])
    if row["applied_to"] == domain.ON_INVOICE and invoice["status"] == "open":
        changed = await invoices.update(conn, org, mode, invoice["id"],
                                        amount_due=invoice["amount_due"] + row["amount"])
        await announce(conn, scope, changed, "invoice.updated")
    elif row["applied_to"] == domain.ON_BALANCE:
        await apply(conn, scope, Change(
            row["customer_id"], row["currency"], -row["amount"], "credit_note",
            f"Credit note {row['id']} voided", invoice_id=invoice["id"],
            credit_note_id=row["id"], source_ref=f"credit_note:{row['id']}:void"))
    row = await store.void(conn, org, mode, row["id"])
    return await _announce(conn, scope, row, "credit_note.voided")


async def _load(db: Any, scope: Scope, note_id: str, *, lock: bool = False,
                ) -> asyncpg.Record:
    row = await store.note(db, scope.org_id, scope.livemode, note_id.strip(), lock=lock)
    if row is None:
        raise not_found(domain.CREDIT_NOTE_NOT_FOUND)
    return row


async def _announce(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                    type: str) -> CreditNote:
    note = _note(row)
    await add_event(conn, "invoicing", type=type, object_type="credit_note", object_id=note.id,
                    org_id=scope.org_id, livemode=scope.livemode, customer_id=note.customerId,
                    data=note)
    return note


def _note(r: asyncpg.Record) -> CreditNote:
    lines = r["line_items"]
    return CreditNote(
        id=r["id"], invoiceId=r["invoice_id"], customerId=r["customer_id"],
        number=domain.number_str(r["number"]), amount=r["amount"], currency=r["currency"],
        status=r["status"], created=rfc3339(r["created_at"]), reason=r["reason"],
        lineItems=msgspec.convert(lines, list[CreditNoteLine]) if lines else None,
        outOfBandAmount=r["out_of_band_amount"],
        creditBalanceTransaction=r["credit_balance_transaction"], memo=r["memo"])
