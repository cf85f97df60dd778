"""Idempotency key spaces (issue 8, items 2 and 4): keys the ledger derives itself are out of
reach of any client key, and only final outcomes are stored under a key."""

from __future__ import annotations

import msgspec
import nats

from contracts import Actor, Request, Scope, subjects
from contracts.ledger import UsageRecordParams
from tests.test_metering import get, post


async def balance(http, org, user):
    status, body = await get(http, "/balance", org.auth(), user=user)
    assert status == 200, body
    return body["balance"]


async def usage(http, org, user, amount, request_id, headers=None):
    return await post(http, "/usage", {"user": user, "amount": amount, "requestId": request_id},
                      {**org.auth(), **(headers or {})})


# ---- item 2: derived keys live in their own namespace ------------------------------------


async def test_a_client_key_cannot_block_a_usage_debit_in_advance(http, org):
    user = f"{org.name}/victim"
    # An end user takes the key today's usage debit for req-42 would use, with a refusal.
    status, body, _ = await post(http, "/withdraw", {"user": user, "amount": 500},
                                 {**org.auth(), "Idempotency-Key": "usage:req-42"})
    assert status == 402, body
    status, body, _ = await usage(http, org, user, 25, "req-42")
    assert status == 201, body
    assert body["amount"] == 25
    assert await balance(http, org, user) == -25


async def test_two_users_sharing_a_request_id_are_each_debited_once(http, org):
    alice, bob = f"{org.name}/alice", f"{org.name}/bob"
    status, first, headers = await usage(http, org, alice, 10, "req-7")
    assert status == 201 and "Idempotent-Replayed" not in headers
    status, body, _ = await usage(http, org, bob, 20, "req-7")
    assert status == 201 and body["user"] == bob
    # A retry of one user's request replays that user's debit, once.
    status, again, headers = await usage(http, org, alice, 10, "req-7")
    assert status == 201 and again == first and headers["Idempotent-Replayed"] == "true"
    assert (await balance(http, org, alice), await balance(http, org, bob)) == (-10, -20)


async def test_a_derived_key_sent_over_the_bus_is_refused(nats_url, platform, org):
    """Services may call each other directly: the runtime, not only the gateway, keeps
    derived keys out of a request's scope."""
    scope = Scope(org_id=org.name, org_name=org.name, livemode=False,
                  actor=Actor(kind="service", role="platform"), request_id="req_bus",
                  idempotency_key='\x1fusage["acme/x","r1"]', fingerprint="f")
    nc = await nats.connect(nats_url)
    try:
        msg = await nc.request(subjects.LEDGER_USAGE_RECORD, msgspec.json.encode(Request(
            scope, UsageRecordParams(user="acme/x", amount=5, requestId="r1"))), timeout=5)
    finally:
        await nc.close()
    error = msgspec.json.decode(msg.data)["error"]
    assert (error["status"], error["message"]) == (400, "invalid idempotency key")


# ---- item 4: transient failures are not stored -------------------------------------------


async def test_a_claim_refused_while_payments_is_silent_can_be_retried(http, org, nats_url):
    user = "hanzo/early"
    claim = {**org.auth(), "Idempotency-Key": "claim-1"}
    # Payments is not deployed: nobody answers whether the user has a payment method.
    status, body, _ = await post(http, "/credit", {"user": user}, claim)
    assert (status, body["error"]["message"]) == (
        403, "a verified payment method is required before claiming starter credit")

    # Payments comes up (this responder stands in for it) and knows a verified method.
    nc = await nats.connect(nats_url)
    try:
        async def answer(msg):
            await msg.respond(msgspec.json.encode({"result": {"exists": True}}))

        await nc.subscribe(subjects.PAYMENTS_PAYMENT_METHOD_EXISTS, queue="payments",
                           cb=answer)
        await nc.flush()
        status, body, headers = await post(http, "/credit", {"user": user}, claim)
    finally:
        await nc.close()
    assert status == 201, body
    assert "Idempotent-Replayed" not in headers
    assert (body["amount"], body["tags"]) == (500, "starter-credit")
    assert await balance(http, org, user) == 500


async def test_a_final_refusal_is_still_replayed(http, org, nats_url):
    """Payments answered "no": that outcome is final and stays stored under the key."""
    user = "hanzo/nocard"
    claim = {**org.auth(), "Idempotency-Key": "claim-2"}
    verified = False
    nc = await nats.connect(nats_url)
    try:
        async def answer(msg):
            await msg.respond(msgspec.json.encode({"result": {"exists": verified}}))

        await nc.subscribe(subjects.PAYMENTS_PAYMENT_METHOD_EXISTS, queue="payments",
                           cb=answer)
        await nc.flush()
        status, _, _ = await post(http, "/credit", {"user": user}, claim)
        assert status == 403
        verified = True  # the same key replays the stored refusal
        status, _, _ = await post(http, "/credit", {"user": user}, claim)
        assert status == 403
        status, _, _ = await post(http, "/credit", {"user": user}, {**org.auth()})
        assert status == 201  # a new request sees the new state
    finally:
        await nc.close()
