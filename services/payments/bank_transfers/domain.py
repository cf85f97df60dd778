"""Bank-transfer instructions and the reconciliation of inbound transfers, pure: what a
request asks, account-number masking (payments.md §8.4), references, and what a transfer
must agree with (§4.7, §4.8). No I/O; a refusal is a `Failure`."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from contracts.errors import invalid, not_found
from contracts.payouts import InstructionCreateParams, TransferMatchParams
from contracts.rules import user_id
from services.payments.common import currency

TYPES = ("ach", "wire", "sepa")
ACTIVE = "active"
INSTRUCTION_NOT_FOUND = "bank transfer instruction not found"
NO_ACTIVE_INSTRUCTION = "no active instruction found for reference"

# §4.7 DO: 8 characters of Crockford's base32 (no I, L, O, U to misread), unique per
# organization and mode: 32^8 ≈ 10^12 references instead of the reference's 16^8.
REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_LENGTH = 8


@dataclass(frozen=True, slots=True)
class NewInstruction:
    customer_id: str
    currency: str
    type: str
    bank_name: str
    account_holder: str
    account_number: str  # masked
    routing_number: str  # masked
    iban: str  # masked
    bic: str
    metadata: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Transfer:
    """An inbound transfer as the bank reports it."""

    reference: str  # canonical (`reference`)
    amount: int
    currency: str
    transfer_id: str


def mask(value: str) -> str:
    """§8.4, in characters: "****" and the last 4, unless there are no more than 4."""
    return value if len(value) <= 4 else "****" + value[-4:]


def new_reference() -> str:
    return "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))


def reference(raw: str) -> str:
    """How a reference is stored and compared: trimmed, case-insensitive (§4.8 DO)."""
    return raw.strip().upper()


def new_instruction(p: InstructionCreateParams) -> NewInstruction:
    """§4.7, in the reference's order (the type is case-sensitive)."""
    customer = user_id(p.customerId)
    if not customer:
        raise invalid("customerId is required", "customerId")
    kind = p.type.strip()
    if not kind:
        raise invalid("type is required (ach, wire, sepa)", "type")
    if kind not in TYPES:
        raise invalid("type must be one of: ach, wire, sepa", "type")
    bank = p.bankName.strip()
    if not bank:
        raise invalid("bankName is required", "bankName")
    number = p.accountNumber.strip()
    if not number:
        raise invalid("accountNumber is required", "accountNumber")
    return NewInstruction(
        customer, currency(p.currency), kind, bank, p.accountHolder.strip(), mask(number),
        mask(p.routingNumber.strip()), mask(p.iban.strip()), p.bic.strip(), p.metadata)


def transfer(p: TransferMatchParams) -> Transfer:
    ref = reference(p.reference)
    if not ref:
        raise invalid("reference is required", "reference")
    if p.amount <= 0:
        raise invalid("amount must be positive", "amount")
    return Transfer(ref, p.amount, currency(p.currency), p.transferId.strip())


def require_matchable(instruction: Any, t: Transfer) -> None:
    """The instruction the reference names must be active and in the transfer's currency
    (§4.8 DO: the reference credited any currency)."""
    if instruction is None or instruction["status"] != ACTIVE:
        raise not_found(NO_ACTIVE_INSTRUCTION)
    if instruction["currency"] != t.currency:
        raise invalid(f"currency does not match instruction currency {instruction['currency']}",
                      "currency")
