"""Sending postings to the ledger: right after the change that owes one commits (the
caller waits for the ledger's answer), and from the `post_due` job for any a crash or a
ledger outage left behind."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec

from contracts import Scope
from contracts.endpoint import Endpoint
from contracts.errors import Failure, unavailable
from contracts.journal import PAYMENT_RECORD, REFUND_RECORD
from contracts.ledger import TOPUP_CREDIT
from services.payments.common import service_scope
from services.payments.postings import store
from services.runtime.service import Context

log = logging.getLogger(__name__)

ENDPOINTS: dict[str, Endpoint] = {e.subject: e for e in (TOPUP_CREDIT, PAYMENT_RECORD,
                                                          REFUND_RECORD)}
LEASE = timedelta(seconds=5)  # a sender's hold on a posting before the job may send it
DUE_BATCH = 100
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Posting:
    id: str  # its natural key in the ledger's terms: `topup:<id>`, `payment:<pi>`, ...
    endpoint: Endpoint
    params: Any


async def owe(conn: asyncpg.Connection, scope: Scope, posting: Posting) -> None:
    """Record the posting in the caller's transaction (with the change that owes it)."""
    assert posting.endpoint.subject in ENDPOINTS, posting.endpoint.subject
    await store.add(conn, scope.org_id, scope.livemode, posting.id, posting.endpoint.subject,
                    _encode(posting.params), LEASE)


async def send(ctx: Context, org_id: str, livemode: bool, posting: Posting) -> Any:
    """Post it now; the ledger's result. A refusal, or silence (503), is raised: the posting
    stays owed and the job sends it once its lease ends."""
    result = await ctx.ask(posting.endpoint, service_scope(org_id, livemode), posting.params,
                           timeout=5.0)
    if result is None:
        raise unavailable()
    await store.mark_posted(ctx.pool, [(org_id, livemode, posting.id)])
    return result


async def post_due(ctx: Context) -> None:
    """The job: send what is owed and not in flight, oldest first."""
    due = await store.take_due(ctx.pool, DUE_BATCH, LEASE)
    await asyncio.gather(*(_resend(ctx, r) for r in due))


async def _resend(ctx: Context, row: asyncpg.Record) -> None:
    endpoint = ENDPOINTS[row["subject"]]
    posting = Posting(row["id"], endpoint, msgspec.json.decode(row["params"],
                                                               type=endpoint.params))
    try:
        await send(ctx, row["org_id"], row["livemode"], posting)
    except Failure as failure:
        # Waits longer after every attempt (up to an hour); a refusal here is a bug to see.
        retry_in = timedelta(seconds=min(2 ** row["attempts"], 3600))
        await store.mark_failed(ctx.pool, row["org_id"], row["livemode"], row["id"],
                                failure.error.message, retry_in)
        log.warning("ledger posting %s not posted (attempt %d): %s", row["id"],
                    row["attempts"], failure.error.message)
