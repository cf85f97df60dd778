"""Bank-transfer instructions (payments.md §4.7) and the reconciliation of an inbound
transfer (§4.8, §8.5).

A transfer reconciles once: its match is a row unique per instruction and transfer (the
bank's `transferId`, else the request's Idempotency-Key), written with the posting it owes
the ledger — the customer's credit (the ledger's top-up credit, once per match, which
records the journal's payment with it: cash in, owed to the customer) — and its event, in
one transaction. The
same transfer matched again, or concurrently, finds that row and answers the first match's
credit with `duplicate: true`: the ledger's answer as kept with the posting, or the posting
sent now if it was not yet (the ledger credits a match once, however often it is sent)."""

from __future__ import annotations

import asyncpg
from msgspec import UNSET

from contracts import ErrorCode, Scope
from contracts.common import IdParams
from contracts.errors import Failure, not_found
from contracts.ids import new_id, rfc3339
from contracts.ledger import TOPUP_CREDIT, TopupCreditParams
from contracts.payouts import (
    INSTRUCTION_CREATE,
    INSTRUCTION_GET,
    INSTRUCTION_LIST,
    TRANSFER_MATCH,
    Instruction,
    InstructionCreateParams,
    InstructionList,
    InstructionListParams,
    MatchTransaction,
    TransferMatch,
    TransferMatchParams,
)
from contracts.rules import user_id
from services.payments.bank_transfers import domain, store
from services.payments.common import event, page, require_mint
from services.payments.postings import sender
from services.payments.postings.sender import Posting
from services.runtime.bus import created
from services.runtime.idempotency import fingerprint_of, mismatch
from services.runtime.service import Context, Router

router = Router()
REFERENCE_ATTEMPTS = 5  # a new reference is drawn again when it is taken
CREDIT_PENDING = "transfer matched; the balance credit is pending, retry to see it"


@router.handler(INSTRUCTION_CREATE, transaction=True)
async def create_instruction(ctx: Context, scope: Scope, p: InstructionCreateParams,
                             conn: asyncpg.Connection):
    new = domain.new_instruction(p)
    for _ in range(REFERENCE_ATTEMPTS):
        row = await store.create_instruction(conn, scope.org_id, scope.livemode,
                                             new_id("bti_"), domain.new_reference(), new)
        if row is not None:
            break
    else:
        raise RuntimeError("no free bank-transfer reference")  # 32^8 of them: a bug
    instruction = _instruction(row, scope.livemode)
    await event(conn, scope, "bank_transfer_instruction.created", "bank_transfer_instruction",
                instruction.id, instruction.customerId, instruction)
    return created(instruction)


@router.handler(INSTRUCTION_LIST)
async def list_instructions(ctx: Context, scope: Scope, p: InstructionListParams,
                            ) -> InstructionList:
    rows = await store.instructions(ctx.pool, scope.org_id, scope.livemode,
                                    user_id(p.customerId), p.status.strip(), page(p.limit),
                                    p.startingAfter.strip())
    return InstructionList([_instruction(r, scope.livemode) for r in rows], len(rows))


@router.handler(INSTRUCTION_GET)
async def get_instruction(ctx: Context, scope: Scope, p: IdParams) -> Instruction:
    row = await store.instruction(ctx.pool, scope.org_id, scope.livemode, p.id.strip())
    if row is None:
        raise not_found(domain.INSTRUCTION_NOT_FOUND)
    return _instruction(row, scope.livemode)


@router.handler(TRANSFER_MATCH)
async def match_transfer(ctx: Context, scope: Scope, p: TransferMatchParams) -> TransferMatch:
    require_mint(scope.actor)
    transfer = domain.transfer(p)
    instruction = await store.instruction_by_reference(ctx.pool, scope.org_id, scope.livemode,
                                                       transfer.reference)
    domain.require_matchable(instruction, transfer)
    key = scope.idempotency_key
    transfer_key = (f"transfer:{transfer.transfer_id}" if transfer.transfer_id else
                    f"key:{key}" if key else "")
    fingerprint = scope.fingerprint or fingerprint_of(p)
    async with ctx.pool.acquire() as conn, conn.transaction():
        match_id = new_id("btm_")
        row, new = await store.record_match(conn, scope.org_id, scope.livemode, match_id,
                                            instruction, transfer_key or f"match:{match_id}",
                                            transfer, key, fingerprint)
        if not new and key and row["fingerprint"] != fingerprint:
            raise mismatch()
        credit = _credit(row, instruction)
        if new:
            await sender.owe(conn, scope, credit)
            await event(conn, scope, "bank_transfer.reconciled", "bank_transfer", row["id"],
                        row["customer_id"], _reconciled(row, instruction))
    try:
        credited = await sender.answered(ctx, scope.org_id, scope.livemode, credit)
    except Failure as failure:
        if failure.error.status != 503:
            raise
        # Matched and owed: the posting job credits it; the same match again answers.
        raise Failure(ErrorCode.UNAVAILABLE, 503, CREDIT_PENDING, retryable=True) from None
    return TransferMatch(
        matched=True, reference=instruction["reference"], customerId=row["customer_id"],
        amount=row["amount"], currency=row["currency"], transferType=instruction["type"],
        transaction=MatchTransaction(id=credited.transactionId, amount=row["amount"],
                                     endingBalance=credited.balance, type="bank_transfer",
                                     created=rfc3339(row["created_at"])),
        transferId=row["transfer_id"] or UNSET, duplicate=not new)


def _credit(row: asyncpg.Record, instruction: asyncpg.Record) -> Posting:
    """What a match owes the ledger: the customer's credit (a top-up paid by bank transfer,
    credited once per match, with its payment in the journal)."""
    match_id = row["id"]
    return Posting(f"bank_transfer:{match_id}", TOPUP_CREDIT, TopupCreditParams(
        topupId=match_id, user=row["customer_id"], currency=row["currency"],
        amount=row["amount"], provider="bank_transfer", providerRef=instruction["reference"],
        paymentIntentId=match_id))


def _reconciled(row: asyncpg.Record, instruction: asyncpg.Record) -> dict:
    """The `bank_transfer.reconciled` event's data: the match."""
    return {"id": row["id"], "instructionId": instruction["id"],
            "reference": instruction["reference"], "customerId": row["customer_id"],
            "amount": row["amount"], "currency": row["currency"],
            "transferType": instruction["type"], "transferId": row["transfer_id"],
            "created": rfc3339(row["created_at"])}


def _instruction(r: asyncpg.Record, livemode: bool) -> Instruction:
    return Instruction(
        id=r["id"], customerId=r["customer_id"], currency=r["currency"], type=r["type"],
        reference=r["reference"], bankName=r["bank_name"], accountNumber=r["account_number"],
        status=r["status"], createdAt=rfc3339(r["created_at"]),
        updatedAt=rfc3339(r["updated_at"]), livemode=livemode,
        accountHolder=r["account_holder"] or UNSET, routingNumber=r["routing_number"] or UNSET,
        iban=r["iban"] or UNSET, bic=r["bic"] or UNSET,
        metadata=r["metadata"] if r["metadata"] is not None else UNSET)
