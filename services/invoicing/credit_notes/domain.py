"""Credit notes, pure (metering-invoicing.md §2.6, §6, §11.9): what a new note is, how much
an invoice can still be credited, numbering, the state machine. No I/O.

A note on an open invoice lowers what is due; on a paid one it credits the customer balance.
The notes of an invoice never add up to more than its total (`subtotal + tax − discount`),
and a note on an open invoice never to more than what is still due."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from contracts.errors import invalid
from contracts.invoicing import CREDIT_NOTE_LINES_BYTES, CreditNoteCreateParams
from services.invoicing.invoices.domain import OPEN, PAID, in_range, refused

ISSUED, VOID = "issued", "void"
ON_INVOICE, ON_BALANCE = "invoice", "customer_balance"  # where a note's credit went
CREDIT_NOTE_NOT_FOUND = "credit note not found"
_encode = msgspec.json.Encoder().encode


def number_str(number: int) -> str:
    """§2.6: Go's `CN-%04d` (1 → CN-0001, 12345 → CN-12345, −1 → CN--001)."""
    return f"CN-{number:04d}"


def require_invoice_id(raw: str) -> str:
    invoice_id = raw.strip()
    if not invoice_id:
        raise invalid("invoiceId is required", "invoiceId")
    return invoice_id


@dataclass(frozen=True, slots=True)
class Invoice:
    """What a note needs of its invoice."""

    status: str
    total: int  # subtotal + tax − discount
    due_left: int  # amountDue − amountPaid
    credited: int  # Σ of its notes not void


def amount(p: CreditNoteCreateParams) -> int:
    """§6.1: the amount given, else the lines and the out-of-band amount."""
    if len(_encode(p.lineItems or [])) > CREDIT_NOTE_LINES_BYTES:
        raise invalid(f"lineItems: at most {CREDIT_NOTE_LINES_BYTES} bytes as JSON",
                      "lineItems")
    if p.amount > 0:
        return p.amount
    lines = sum(line.amount for line in p.lineItems or ())
    return in_range(lines + p.outOfBandAmount)


def applied_to(invoice: Invoice, credit: int) -> str:
    """Where `credit` goes, or why it cannot be given (§6.1 Δ)."""
    if invoice.status not in (OPEN, PAID):
        raise invalid("credit notes can only be issued for open or paid invoices")
    if credit <= 0:
        raise invalid("credit note amount must be positive", "amount")
    if invoice.credited + credit > invoice.total or (
            invoice.status == OPEN and credit > invoice.due_left):
        raise invalid("credit note total exceeds invoice total", "amount")
    return ON_INVOICE if invoice.status == OPEN else ON_BALANCE


def voidable(status: str) -> None:
    if status != ISSUED:
        raise refused(f"can only void issued credit notes, current: {status}")
