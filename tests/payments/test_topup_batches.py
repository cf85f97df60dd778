"""Top-ups under load: concurrent top-ups share their claims and completions
(`topups/batches.py`) and the ledger's credits, and each top-up is still charged, credited,
journaled and answered once — also when a shared write's commit goes through
unacknowledged, and when the recovery job finishes one."""

from __future__ import annotations

import asyncio
import secrets
from types import SimpleNamespace

from services.payments.topups import handlers as topups
from services.payments.topups.batches import Charge, Claim, Completion, TopupWrites
from services.payments.topups.domain import Topup
from tests.runtime.test_integrity_keys import _CommitsThenFails
from tests.support import (
    balance,
    eventually,
    get,
    new_user,
    org_id_of,
    post,
    scope,
    service,
    service_down,
)


async def token_topup(http, org, body, headers=None):
    return await post(http, "/topup/token", body, {**org.auth(), **(headers or {})})


async def test_concurrent_top_ups_are_each_charged_credited_and_answered_once(http, org, pool):
    user = new_user()
    bodies = [{"sourceId": f"cnon:{secrets.token_hex(4)}", "amountCents": 100 + n,
               "userId": user} for n in range(16)]
    replies = await asyncio.gather(*(token_topup(http, org, b) for b in bodies))
    assert {status for status, _, _ in replies} == {200}
    answers = sorted((r for _, r, _ in replies), key=lambda r: r["balanceCents"])
    assert len({a["transactionId"] for a in answers}) == 16
    assert answers[-1]["balanceCents"] == sum(b["amountCents"] for b in bodies)
    # Replays answer what was answered, from the stored replies.
    again = await asyncio.gather(*(token_topup(http, org, b) for b in bodies))
    assert [r for _, r, _ in again] == [r for _, r, _ in replies]
    assert {h.get("Idempotent-Replayed") for _, _, h in again} == {"true"}
    assert await balance(http, org, user) == answers[-1]["balanceCents"]
    assert await pool.fetchval(
        "select count(*) from payments.payment_intents where customer_id = $1", user) == 16
    # The journal recorded every payment with its credit, and every top-up is completed.
    assert await pool.fetchval(
        "select count(*) from ledger.journal_entries e join payments.payment_intents i"
        " on i.id = e.payment_intent_id where i.customer_id = $1", user) == 16
    assert await pool.fetchval(
        "select count(*) from payments.topups where customer_id = $1 and status = 'completed'",
        user) == 16


async def test_a_top_ups_events_announce_its_payment_intent_as_it_reads(http, org):
    user = new_user()
    status, reply, _ = await token_topup(http, org, {
        "sourceId": f"cnon:{secrets.token_hex(4)}", "amountCents": 1234, "userId": user})
    assert status == 200

    async def events():
        status, body, _ = await get(http, "/events", org.auth(), customerId=user)
        assert status == 200, body
        return body

    listed = await eventually(events, lambda body: len(body) >= 2)
    paid, topped_up = sorted(listed, key=lambda e: e["type"])
    assert (paid["type"], topped_up["type"]) == ("payment_intent.succeeded", "topup.succeeded")
    status, intent, _ = await get(http, f"/payment-intents/{paid['objectId']}", org.auth())
    assert status == 200 and paid["data"] == intent
    assert (intent["status"], intent["amount"], intent["amountReceived"]) == (
        "succeeded", 1234, 1234)
    assert topped_up["data"]["paymentIntentId"] == intent["id"]
    assert topped_up["data"]["transactionId"] == reply["transactionId"]


async def test_completions_committed_before_a_failure_are_not_recorded_again(org, platform,
                                                                             pool):
    payments = service(platform, "payments")
    sc = scope(await org_id_of(platform, org))
    user = new_user()
    topup = Topup(user, 500, "usd", token="cnon:lost-ack")
    ids = [f"tu_{secrets.token_hex(6)}" for _ in range(2)]
    for topup_id in ids:  # claimed as a request would
        assert await payments.ctx.state.topups.claim(
            Claim(sc, topup_id, f"key-{topup_id}", "fp", topup, "offline")) is None
    faulty = _CommitsThenFails(payments.pool)
    writes = TopupWrites(SimpleNamespace(pool=faulty, settings=payments.settings))
    await asyncio.gather(*(writes.complete(Completion(
        Charge(sc, topup_id, topup, "offline", f"ch_{topup_id}", f"pi_{topup_id}"),
        b"{}", {"userId": user})) for topup_id in ids))
    assert faulty.faults == 0
    # Written again alone, each finds itself completed: one intent and one event each.
    assert await pool.fetchval(
        "select count(*) from payments.payment_intents where customer_id = $1", user) == 2
    assert await pool.fetchval(
        "select count(*) from payments.topups where customer_id = $1 and status = 'completed'",
        user) == 2
    assert await pool.fetchval(
        "select count(*) from payments.outbox where type = 'topup.succeeded' and"
        " convert_from(payload, 'utf8')::jsonb->'data'->>'userId' = $1", user) == 2


async def test_the_recovery_job_finishes_a_top_up_the_ledger_missed(http, org, platform, pool):
    user = new_user()
    body = {"sourceId": f"cnon:{secrets.token_hex(4)}", "amountCents": 700, "userId": user}
    async with service_down(platform, "ledger"):
        status, _, _ = await token_topup(http, org, body)
        assert status == 500  # charged, not credited: released for the job
    await topups.finish_unfinished(service(platform, "payments").ctx)
    assert await eventually(lambda: pool.fetchval(
        "select status from payments.topups where customer_id = $1", user),
        lambda s: s == "completed") == "completed"
    status, reply, headers = await token_topup(http, org, body)
    assert status == 200 and headers.get("Idempotent-Replayed") == "true"
    assert reply["balanceCents"] == 700
    assert await balance(http, org, user) == 700
    # Its payment was recorded when it was charged; completing it announced the top-up only.
    assert sorted(await pool.fetchval(
        "select array_agg(type) from payments.outbox"
        " where convert_from(payload, 'utf8')::jsonb->>'customerId' = $1", user)) == [
        "payment_intent.succeeded", "topup.succeeded"]
    assert await pool.fetchval(
        "select count(*) from payments.payment_intents where customer_id = $1", user) == 1
