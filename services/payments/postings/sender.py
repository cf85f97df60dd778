"""Sending postings to the ledger: right after the change that owes one commits — the
caller waits for the ledger's answer (`send`, `ask`) or does not (`Outbound.post_soon`) —
and from the `post_due` job for any a crash, a ledger outage or a burst left behind."""

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
from contracts.journal import (
    DISPUTE_RECORD,
    ENTRY_POST,
    PAYMENT_RECORD,
    PAYOUT_RECORD,
    REFUND_RECORD,
)
from contracts.ledger import TOPUP_CREDIT, TOPUP_REVERSE
from services.payments.common import service_scope
from services.payments.postings import store
from services.runtime.batching import MicroBatcher
from services.runtime.service import Context

log = logging.getLogger(__name__)

ENDPOINTS: dict[str, Endpoint] = {e.subject: e for e in (
    TOPUP_CREDIT, TOPUP_REVERSE, PAYMENT_RECORD, REFUND_RECORD, PAYOUT_RECORD, ENTRY_POST,
    DISPUTE_RECORD)}
LEASE = timedelta(seconds=5)  # a sender's hold on a posting before the job may send it
DUE_BATCH = 100
IN_BACKGROUND = 500  # postings sent at once that nobody waits for; more wait for the job
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Posting:
    id: str  # its natural key in the ledger's terms: `topup:<id>`, `payment:<pi>`, ...
    endpoint: Endpoint
    params: Any


async def owe(conn: asyncpg.Connection, scope: Scope, posting: Posting) -> None:
    """Record the posting in the caller's transaction (with the change that owes it)."""
    await owe_many(conn, [(scope, posting)])


async def owe_many(conn: asyncpg.Connection, owed: list[tuple[Scope, Posting]]) -> None:
    """`owe` for the postings of many changes (a batch's), in one statement."""
    await store.add(conn, [(scope.org_id, scope.livemode, *recorded(posting))
                           for scope, posting in owed], LEASE)


def recorded(posting: Posting) -> tuple[str, str, bytes]:
    """The posting as the store records it: id, subject, params (for a statement of the
    caller's own that records it with the change that owes it, for `LEASE`)."""
    assert posting.endpoint.subject in ENDPOINTS, posting.endpoint.subject
    return posting.id, posting.endpoint.subject, _encode(posting.params)


async def ask(ctx: Context, org_id: str, livemode: bool, posting: Posting) -> Any:
    """Post it now; the ledger's result. A refusal, or silence (503), is raised. It stays
    owed until marked posted: by `send`, or by the caller's next write (a top-up's
    completion marks its credit)."""
    result = await ctx.ask(posting.endpoint, service_scope(org_id, livemode), posting.params,
                           timeout=5.0)
    if result is None:
        raise unavailable()
    return result


async def send(ctx: Context, org_id: str, livemode: bool, posting: Posting) -> Any:
    """Post it now; the ledger's result. A refusal, or silence (503), is raised: the posting
    stays owed and the job sends it once its lease ends."""
    result = await ask(ctx, org_id, livemode, posting)
    await ctx.state.postings.posted(((org_id, livemode, posting.id), _encode(result)))
    return result


async def send_within(ctx: Context, conn: asyncpg.Connection, org_id: str, livemode: bool,
                      posting: Posting) -> Any:
    """`send`, marked posted in the caller's transaction on `conn` (whatever the caller
    holds there is held until the ledger took it and it is marked so)."""
    result = await ask(ctx, org_id, livemode, posting)
    await store.mark_posted(conn, [(org_id, livemode, posting.id)], [_encode(result)])
    return result


async def answered(ctx: Context, org_id: str, livemode: bool, posting: Posting) -> Any:
    """The ledger's answer to the posting: the one kept when it was posted (whoever sent
    it), else sent now. Never asks the ledger again for a posting it took."""
    kept = await store.result(ctx.pool, org_id, livemode, posting.id)
    if kept is not None:
        return posting.endpoint.decode_result(kept)
    return await send(ctx, org_id, livemode, posting)


class Outbound:
    """This process's postings on their way: concurrent sends mark theirs posted in one
    statement, and postings nobody waits for (a payment's journal entry) go out right after
    the commit that owes them, in the background — up to `IN_BACKGROUND` at once; past that,
    or when one fails, the job sends it once its lease ends."""

    def __init__(self, ctx: Context):
        self._ctx = ctx
        self._sending: set[asyncio.Task] = set()
        self.posted = MicroBatcher(self._mark_posted)

    async def _mark_posted(self, posted: list[tuple[tuple[str, bool, str], bytes]],
                           ) -> list[None]:
        await store.mark_posted(self._ctx.pool, [key for key, _ in posted],
                                [result for _, result in posted])
        return [None] * len(posted)

    def post_soon(self, org_id: str, livemode: bool, posting: Posting) -> None:
        if len(self._sending) < IN_BACKGROUND:
            task = asyncio.create_task(self._send(org_id, livemode, posting))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, org_id: str, livemode: bool, posting: Posting) -> None:
        try:
            await send(self._ctx, org_id, livemode, posting)
        except Failure:
            pass  # still owed: the job sends it
        except Exception:
            log.exception("ledger posting %s not sent", posting.id)

    async def stop(self) -> None:
        await asyncio.gather(*self._sending, return_exceptions=True)


async def post_due(ctx: Context) -> None:
    """The job: send what is owed and not in flight, oldest first, until none is due or
    one is not taken."""
    while True:
        due = await store.take_due(ctx.pool, DUE_BATCH, LEASE)
        posted = await asyncio.gather(*(_resend(ctx, r) for r in due))
        if len(due) < DUE_BATCH or not all(posted):
            return


async def _resend(ctx: Context, row: asyncpg.Record) -> bool:
    endpoint = ENDPOINTS[row["subject"]]
    posting = Posting(row["id"], endpoint, msgspec.json.decode(row["params"],
                                                               type=endpoint.params))
    try:
        await send(ctx, row["org_id"], row["livemode"], posting)
        return True
    except Failure as failure:
        # Waits longer after every attempt (up to an hour); a refusal here is a bug to see.
        retry_in = timedelta(seconds=min(2 ** row["attempts"], 3600))
        await store.mark_failed(ctx.pool, row["org_id"], row["livemode"], row["id"],
                                failure.error.message, retry_in)
        log.warning("ledger posting %s not posted (attempt %d): %s", row["id"],
                    row["attempts"], failure.error.message)
        return False
