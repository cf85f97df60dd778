"""Disputes (payments.md §2.5, §4.5): made and moved by the provider's webhooks
(`apply_news`, called by webhooks_in/), read, answered with evidence and closed through the
admin API.

Evidence and a close go to the provider that raised the dispute, outside any transaction
and under a key derived from the dispute (and the evidence), between a check and the record
of the change, as intents do. Where the disputed amount stands in the ledger follows the
status (`domain.ledger_moves`): taken from the customer when the dispute opens, given back
when it is won, kept out when it is lost — each move a journal posting owed in the
transaction of the change, once per dispute (`dispute:<id>`, `dispute-won:<id>`,
`dispute-lost:<id>`), sent right after the commit."""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg
import msgspec
from msgspec import UNSET

from contracts import Reply, Scope
from contracts.common import IdParams
from contracts.disputes import (
    DISPUTE_CLOSE,
    DISPUTE_GET,
    DISPUTE_LIST,
    DISPUTE_SUBMIT_EVIDENCE,
    Dispute,
    DisputeEvidenceParams,
    DisputeListParams,
    Evidence,
)
from contracts.errors import not_found
from contracts.ids import new_id, rfc3339
from contracts.journal import DISPUTE_RECORD, JournalDisputeParams
from services.payments.common import event, issuer, page, provider_failure
from services.payments.disputes import domain, store
from services.payments.intents import store as intents
from services.payments.postings import sender
from services.payments.postings.sender import Posting
from services.payments.providers.base import ProviderError, provider_key
from services.payments.webhooks_in.domain import DisputeNews
from services.runtime.service import Context, Router

router = Router()


@router.handler(DISPUTE_LIST)
async def list_disputes(ctx: Context, scope: Scope, p: DisputeListParams) -> list[Dispute]:
    rows = await store.disputes(ctx.pool, scope.org_id, scope.livemode,
                                p.paymentIntentId.strip(), page(p.limit),
                                p.startingAfter.strip())
    return [_dispute(r, scope.livemode) for r in rows]


@router.handler(DISPUTE_GET)
async def get_dispute(ctx: Context, scope: Scope, p: IdParams) -> Dispute:
    return _dispute(await _load(ctx.pool, scope, p.id), scope.livemode)


@router.handler(DISPUTE_SUBMIT_EVIDENCE)
async def submit_evidence(ctx: Context, scope: Scope, p: DisputeEvidenceParams) -> Any:
    """§4.5 DO: merged evidence, sent to the provider and submitted; then `under_review`."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        if stored := await ctx.keys.replay(conn, scope):
            return stored
        row = await _load(conn, scope, p.id)
        domain.submitted(row["status"])  # a final dispute is refused before the provider
        evidence = domain.merged_evidence(_evidence(row), p)
    sent = domain.for_provider(evidence)
    digest = hashlib.sha256(msgspec.json.encode(sent)).hexdigest()[:16]
    await _at_provider(ctx, scope, row, "evidence not submitted: ", lambda provider:
                       provider.submit_dispute_evidence(row["provider_ref"], sent, provider_key(
                           scope.org_id, scope.livemode, "dispute-evidence",
                           f"{row['id']}:{digest}")))
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _load(conn, scope, p.id, lock=True)
        saved = await store.update(conn, scope.org_id, scope.livemode, row["id"],
                                   status=domain.submitted(row["status"]), ledger=row["ledger"],
                                   evidence=evidence)
        dispute = await _announce(conn, scope, saved, "dispute.updated")
        return await ctx.keys.answer(conn, scope, Reply(result=dispute))


@router.handler(DISPUTE_CLOSE)
async def close_dispute(ctx: Context, scope: Scope, p: IdParams) -> Any:
    """§4.5 DO: accepted at the provider, then `lost` (an inquiry: `warning_closed`); the
    amount the dispute took from the customer stays out."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        if stored := await ctx.keys.replay(conn, scope):
            return stored
        row = await _load(conn, scope, p.id)
        domain.closed(row["status"])
    await _at_provider(ctx, scope, row, "dispute not closed: ", lambda provider:
                       provider.accept_dispute(row["provider_ref"], provider_key(
                           scope.org_id, scope.livemode, "dispute-close", row["id"])))
    postings: list[Posting] = []
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _load(conn, scope, p.id, lock=True)
        if row["status"] in domain.FINAL:  # the provider's webhook closed it meanwhile
            dispute = _dispute(row, scope.livemode)
        else:
            row, postings = await _move(conn, scope, row, domain.closed(row["status"]))
            dispute = await _announce(conn, scope, row, "dispute.closed")
        encoded = await ctx.keys.answer(conn, scope, Reply(result=dispute))
    send_soon(ctx, scope, postings)
    return encoded


async def apply_news(conn: asyncpg.Connection, scope: Scope, provider: str,
                     news: DisputeNews) -> tuple[str, list[Posting]]:
    """A provider's dispute event (§5.4): the dispute created or moved, with its events and
    the postings owed (to send after the commit). The first value is why nothing changed,
    or "" when something did."""
    row = await store.by_provider_ref(conn, scope.org_id, scope.livemode, provider, news.ref)
    created = row is None
    if created:
        intent = await intents.by_provider_ref(conn, scope.org_id, scope.livemode, provider,
                                               news.payment_ref)
        if intent is None:  # another organization's or mode's payment, or none of ours
            return f"no payment intent for {provider} payment {news.payment_ref}", []
        row = await store.create(conn, scope.org_id, scope.livemode, new_id("dp_"), provider,
                                 news.ref, intent, news.amount, news.currency,
                                 domain.NEEDS_RESPONSE, news.reason, news.evidence_due_by)
        if row is None:  # created by a concurrent event: moved as an existing one
            created = False
            row = await store.by_provider_ref(conn, scope.org_id, scope.livemode, provider,
                                              news.ref)
    elif row["status"] == news.status:
        return f"dispute already {news.status}", []
    row, postings = await _move(conn, scope, row, news.status, reason=news.reason or None,
                                due_by=news.evidence_due_by)
    await _announce(conn, scope, row, "dispute.created" if created
                    else domain.event_type(row["status"]))
    return "", postings


async def _move(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record, status: str,
                **fields: Any) -> tuple[asyncpg.Record, list[Posting]]:
    """The dispute to `status`, with the journal moves that brings (owed, once each)."""
    moves, ledger = domain.ledger_moves(row["ledger"], status)
    saved = await store.update(conn, scope.org_id, scope.livemode, row["id"], status=status,
                               ledger=ledger, **fields)
    postings = [Posting(f"dispute{'-' + move if move else ''}:{saved['id']}", DISPUTE_RECORD,
                        JournalDisputeParams(disputeId=saved["id"], amount=saved["amount"],
                                             currency=saved["currency"],
                                             customerId=saved["customer_id"], outcome=move))
                for move in moves]
    if postings:
        await sender.owe_many(conn, [(scope, posting) for posting in postings])
    return saved, postings


def send_soon(ctx: Context, scope: Scope, postings: list[Posting]) -> None:
    for posting in postings:
        ctx.state.postings.post_soon(scope.org_id, scope.livemode, posting)


async def _at_provider(ctx: Context, scope: Scope, row: asyncpg.Record, prefix: str,
                       call: Any) -> None:
    provider = await issuer(ctx, scope, row["provider"])
    try:
        await call(provider)
    except ProviderError as e:
        raise provider_failure(e, prefix) from None


async def _load(db: Any, scope: Scope, dispute_id: str, *, lock: bool = False,
                ) -> asyncpg.Record:
    row = await store.dispute(db, scope.org_id, scope.livemode, dispute_id.strip(), lock=lock)
    if row is None:
        raise not_found(domain.DISPUTE_NOT_FOUND)
    return row


async def _announce(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                    type: str) -> Dispute:
    dispute = _dispute(row, scope.livemode)
    await event(conn, scope, type, "dispute", dispute.id, row["customer_id"], dispute)
    return dispute


def _evidence(row: asyncpg.Record) -> Evidence:
    return msgspec.convert(row["evidence"] or {}, Evidence)


def _dispute(r: asyncpg.Record, livemode: bool) -> Dispute:
    return Dispute(
        id=r["id"], paymentIntentId=r["payment_intent_id"], amount=r["amount"],
        currency=r["currency"], status=r["status"], created=rfc3339(r["created_at"]),
        livemode=livemode, reason=r["reason"] or UNSET,
        evidenceDueBy=rfc3339(r["evidence_due_by"]) if r["evidence_due_by"] else UNSET,
        evidence=_evidence(r) if r["evidence"] else UNSET,
        providerRef=r["provider_ref"] or UNSET,
        metadata=r["metadata"] if r["metadata"] is not None else UNSET)
