"""Top-ups' writes, shared by the top-ups at the same step.

A top-up writes twice, a commit each: its claim, and once credited and answered its
completion (the charge, its payment intent and their events); a charge the ledger did not credit is
written on its own (`charged`, with its intent). Under load the top-ups at one step share
it: one statement for the claims, one for the completions. Each write is
conditional on the top-up's status, so a batch written again item by item after a failure
(`each_alone_on_failure`) finds what a lost commit did instead of doing it twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from contracts import Scope
from contracts.errors import conflict
from contracts.ids import now
from services.payments.common import new_events, nudge_relay
from services.payments.intents import store as intents
from services.payments.intents.handlers import announce_many, paid_events
from services.payments.topups import domain, store
from services.payments.topups.domain import Topup
from services.runtime.batching import MicroBatcher, each_alone_on_failure
from services.runtime.service import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    scope: Scope
    topup_id: str
    key: str
    fingerprint: str
    topup: Topup
    provider: str


@dataclass(frozen=True, slots=True)
class Charge:
    scope: Scope
    topup_id: str
    topup: Topup
    provider: str
    provider_ref: str
    intent_id: str


@dataclass(frozen=True, slots=True)
class Completion:
    charge: Charge
    reply: bytes  # the answer, as replays send it
    event: dict[str, Any]  # `topup.succeeded`'s data


def _ref(scope: Scope, topup_id: str) -> store.Ref:
    return scope.org_id, scope.livemode, topup_id


class TopupWrites:
    def __init__(self, ctx: Context):
        self._ctx = ctx
        self._claims = MicroBatcher(each_alone_on_failure(self._claim_together))
        self._charges = MicroBatcher(each_alone_on_failure(self._charge_together))
        self._completions = MicroBatcher(each_alone_on_failure(self._complete_together))
        self._completing: dict[store.Ref, tuple[asyncio.Task, bytes]] = {}

    async def claim(self, claim: Claim) -> asyncpg.Record | None:
        """Claim the key for a new top-up; None when claimed, else the top-up that holds
        it (with `stale`: its worker is presumed gone)."""
        return await self._claims(claim)

    async def charge(self, charge: Charge) -> None:
        """Record a charge the ledger did not credit, for the job."""
        await self._charges(charge)

    async def complete(self, completion: Completion) -> None:
        await self._completions(completion)

    def complete_soon(self, completion: Completion) -> None:
        """`complete` in the background (the answer has gone out); `answer` has it
        meanwhile, for a retry of the same request."""
        ref = _ref(completion.charge.scope, completion.charge.topup_id)
        task = asyncio.create_task(self._complete_now(completion))
        self._completing[ref] = (task, completion.reply)
        task.add_done_callback(lambda _: self._completing.pop(ref, None))

    async def _complete_now(self, completion: Completion) -> None:
        try:
            await self.complete(completion)
        except Exception:  # still `started`: the job finishes it
            log.exception("top-up %s not completed", completion.charge.topup_id)

    async def answer(self, ref: store.Ref) -> bytes | None:
        """The answer of a top-up this process is completing, once it is (for a retry);
        None if it is not completing here."""
        completing = self._completing.get(ref)
        if completing is None:
            return None
        task, reply = completing
        await asyncio.shield(task)
        return reply

    async def stop(self) -> None:
        await asyncio.gather(*(task for task, _ in self._completing.values()),
                             return_exceptions=True)

    async def _claim_together(self, claims: list[Claim]) -> list[Any]:
        pool = self._ctx.pool
        claimed = await store.claim(pool, [
            (c.scope.org_id, c.scope.livemode, c.topup_id, c.key, c.fingerprint, c.topup,
             c.provider) for c in claims])
        keys = {i: (c.scope.org_id, c.scope.livemode, c.topup.customer_id, c.key)
                for i, c in enumerate(claims) if _ref(c.scope, c.topup_id) not in claimed}
        if not keys:
            return [None] * len(claims)
        held = await store.holding(pool, list(set(keys.values())), timedelta(
            seconds=self._ctx.settings.payments_recovery_s))
        results: list[Any] = [None] * len(claims)
        for i, key in keys.items():
            holder = held.get(key)
            if holder is None:  # its holder failed meanwhile: the key is free again
                results[i] = conflict(domain.IN_PROGRESS)
            elif holder["id"] != claims[i].topup_id:  # (its own: a lost commit's claim)
                results[i] = holder
        return results

    async def _charge_together(self, charges: list[Charge]) -> list[None]:
        async with self._ctx.pool.acquire() as conn, conn.transaction():
            charged = await store.charged(conn, [
                (c.scope.org_id, c.scope.livemode, c.topup_id, c.provider, c.provider_ref,
                 c.intent_id) for c in charges])
            await _record_intents(conn, [c for c in charges
                                         if _ref(c.scope, c.topup_id) in charged])
        return [None] * len(charges)

    async def _complete_together(self, completions: list[Completion]) -> list[None]:
        """One statement (one round trip, no transaction around it): the top-ups, their
        payment intents and their events, made beforehand for every top-up of the batch —
        the statement leaves out those it does not complete."""
        at = now()
        charges = [c.charge for c in completions]
        paid = [_paid(c) for c in charges]
        announced = [*paid_events([(c.scope, p) for c, p in zip(charges, paid, strict=True)],
                                  at),
                     *[("topup.succeeded", "topup", c.charge.scope, c.charge.topup_id,
                        c.charge.topup.customer_id, c.event) for c in completions]]
        topup_ids = [c.topup_id for c in charges] * 2
        pays = [True] * len(charges) + [False] * len(charges)
        await store.complete(self._ctx.pool, [
            (*_ref(c.scope, c.topup_id), c.provider, c.provider_ref, c.intent_id, done.reply)
            for c, done in zip(charges, completions, strict=True)],
            [(c.topup_id, p) for c, p in zip(charges, paid, strict=True)], at, [
            (topup_id, announces, event_id, a[0], a[2].org_id, a[2].livemode, payload)
            for topup_id, announces, a, (event_id, payload)
            in zip(topup_ids, pays, announced, new_events(announced), strict=True)])
        nudge_relay()
        return [None] * len(completions)


def _paid(c: Charge) -> intents.Paid:
    """A charge's payment, as its payment intent records it."""
    return intents.Paid(
        c.scope.org_id, c.scope.livemode, c.intent_id, c.topup.customer_id, c.topup.amount,
        c.topup.currency, c.topup.payment_method_id, c.provider_ref, c.provider,
        domain.description(c.topup), {"topupId": c.topup_id})


async def _record_intents(conn: asyncpg.Connection, charges: list[Charge]) -> None:
    """The charges' succeeded payment intents, with their events."""
    if charges:
        rows = await intents.record_paid(conn, [_paid(c) for c in charges])
        await announce_many(conn, [(c.scope, rows[c.intent_id]) for c in charges])
