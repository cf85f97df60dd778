"""Idempotency key spaces (issue 8, items 2 and 4): keys the ledger derives itself are out of
reach of any client key, and only final outcomes are stored under a key."""

from __future__ import annotations

import asyncio

import msgspec

from contracts import Actor, Request, Scope
from contracts.ids import now
from contracts.ledger import USAGE_RECORD, UsageRecordParams
from contracts.metering import MeterEventInput
from tests.support import (
    add_payment_method,
    balance,
    eventually_value,
    get,
    make_meter,
    org_id_of,
    post,
    record,
    service,
    service_down,
    summary,
)
from tests.support import scope as support_scope


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


async def test_a_derived_key_sent_over_the_bus_is_refused(nc, org):
    """Services may call each other directly: the runtime, not only the gateway, keeps
    derived keys out of a request's scope."""
    scope = support_scope(org.name, actor=Actor(kind="service", role="platform"),
                          request_id="req_bus", key='\x1fusage["acme/x","r1"]', fingerprint="f")
    msg = await nc.request(USAGE_RECORD.subject, msgspec.json.encode(Request(
        scope, UsageRecordParams(user="acme/x", amount=5, requestId="r1"))), timeout=5)
    error = msgspec.json.decode(msg.data)["error"]
    assert (error["status"], error["message"]) == (400, "invalid idempotency key")


# ---- item 4: transient failures are not stored -------------------------------------------


async def test_a_claim_refused_while_payments_is_silent_can_be_retried(http, org, platform):
    user = "hanzo/early"
    claim = {**org.auth(), "Idempotency-Key": "claim-1"}
    # Payments is down: nobody answers whether the user has a payment method.
    async with service_down(platform, "payments"):
        status, body, _ = await post(http, "/credit", {"user": user}, claim)
    assert (status, body["error"]["message"]) == (
        403, "a verified payment method is required before claiming starter credit")

    # Payments is back up and the user has a verified method: the same key is tried again.
    await add_payment_method(http, org, user)
    status, body, headers = await post(http, "/credit", {"user": user}, claim)
    assert status == 201, body
    assert "Idempotent-Replayed" not in headers
    assert (body["amount"], body["tags"]) == (500, "starter-credit")
    assert await balance(http, org, user) == 500


async def test_a_final_refusal_is_still_replayed(http, org):
    """Payments answered "no": that outcome is final and stays stored under the key."""
    user = "hanzo/nocard"
    claim = {**org.auth(), "Idempotency-Key": "claim-2"}
    status, _, _ = await post(http, "/credit", {"user": user}, claim)
    assert status == 403
    await add_payment_method(http, org, user)  # the same key replays the stored refusal
    status, _, _ = await post(http, "/credit", {"user": user}, claim)
    assert status == 403
    status, _, _ = await post(http, "/credit", {"user": user}, {**org.auth()})
    assert status == 201  # a new request sees the new state


# ---- item 5: a shared write that fails after its commit is not written again -------------


class _CommitsThenFails:
    """A pool whose next transaction commits, then raises as if the connection dropped
    while COMMIT was acknowledged (and whose next `fetch` or `execute` runs, then raises
    likewise)."""

    def __init__(self, pool):
        self._pool = pool
        self.faults = 1

    def _fault(self) -> None:
        if self.faults:
            self.faults -= 1
            raise ConnectionResetError("connection lost after commit")

    def acquire(self):
        outer = self

        class Acquired:
            async def __aenter__(self):
                self._cm = outer._pool.acquire()
                return _Connection(await self._cm.__aenter__(), outer)

            async def __aexit__(self, *exc):
                return await self._cm.__aexit__(*exc)

        return Acquired()

    async def fetch(self, *args, **kwargs):
        rows = await self._pool.fetch(*args, **kwargs)
        self._fault()
        return rows

    async def execute(self, *args, **kwargs):
        status = await self._pool.execute(*args, **kwargs)
        self._fault()
        return status


class _Connection:
    def __init__(self, conn, pool: _CommitsThenFails):
        self._conn, self._pool = conn, pool

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def transaction(self):
        pool, tx = self._pool, self._conn.transaction()

        class Transaction:
            async def __aenter__(self):
                return await tx.__aenter__()

            async def __aexit__(self, *exc):
                suppress = await tx.__aexit__(*exc)
                if exc[0] is None:
                    pool._fault()
                return suppress

        return Transaction()


def _scope(org_id: str, n: int) -> Scope:
    return support_scope(org_id, org_name="", actor=Actor(kind="api_key", role="admin"),
                         request_id=f"req_{n}")


async def _transactions(http, org, user):
    status, body, _ = await get(http, "/transactions", org.auth(), user=user)
    assert status == 200, body
    return body["count"]


async def test_usage_debits_committed_before_a_failure_are_not_written_again(
        http, org, platform):
    from services.ledger.balances import domain
    from services.ledger.usage.recorder import UsageRecord, UsageRecorder

    ledger = service(platform, "ledger")
    faulty = _CommitsThenFails(ledger.pool)
    recorder = UsageRecorder(lambda: faulty, ledger.keys)
    user = f"{org.name}/faulty"
    org_id = await org_id_of(platform, org)

    def record(n: int, amount: int) -> UsageRecord:
        debit = domain.usage_debit(UsageRecordParams(user=user, amount=amount))
        return UsageRecord(_scope(org_id, n), debit, None, "")

    # Two keyless debits written together; their shared transaction commits, then fails.
    replies = await asyncio.gather(recorder.record(record(1, 10)),
                                   recorder.record(record(2, 20)))
    assert [msgspec.json.decode(r)["status"] for r in replies] == [201, 201]
    assert faulty.faults == 0  # the fault did happen
    assert await _transactions(http, org, user) == 2
    assert await balance(http, org, user) == -30

    # A debit alone in its batch: answered 201 too, not 500.
    faulty.faults = 1
    [reply] = await asyncio.gather(recorder.record(record(3, 5)))
    assert msgspec.json.decode(reply)["status"] == 201 and faulty.faults == 0
    assert await _transactions(http, org, user) == 3
    assert await balance(http, org, user) == -35


async def test_meter_events_committed_before_a_failure_are_not_written_again(
        http, org, platform):
    from contracts import meter_events
    from services.metering.recorder import EventRecorder

    metering = service(platform, "metering")
    meter_id = await make_meter(http, org, "faulty")
    faulty = _CommitsThenFails(metering.pool)
    recorder = EventRecorder(lambda: faulty, metering.keys)

    def batch(*events):
        return meter_events.accept_batch([MeterEventInput(meterId=meter_id, userId="alice", value=v,
                                                          idempotency=k) for v, k in events],
                                         now(), meter_events.fresh_id_base())

    org_id = await org_id_of(platform, org)
    first, second = batch((1, None), (2, "k-1")), batch((4, None))
    replies = await asyncio.gather(recorder.record(_scope(org_id, 1), first),
                                   recorder.record(_scope(org_id, 2), second))
    assert faulty.faults == 0
    bodies = [msgspec.json.decode(r) for r in replies]
    assert [b["status"] for b in bodies] == [201, 201]
    assert [e["status"] for b in bodies for e in b["result"]["events"]] == ["created"] * 3
    assert (await summary(http, org, meter_id))["eventCount"] == 3


# ---- item 9: the api-usage copy has keys of its own, is durable, in the meter's currency --


async def _api_usage_meter(http, org, currency="usd"):
    status, body, _ = await post(http, "/meters", {
        "name": "API usage", "eventName": "api-usage", "aggregationType": "sum",
        "currency": currency}, org.auth())
    assert status == 201, body
    return body["id"]


async def test_the_api_usage_copy_leaves_the_organizations_event_keys_alone(http, org):

    api_usage, tokens = await _api_usage_meter(http, org), await make_meter(http, org, "tokens")
    user = f"{org.name}/alice"
    for _ in range(2):  # a retry: one debit, one copy
        status, body, _ = await usage(http, org, user, 25, "req-9")
        assert status == 201, body
    assert (await eventually_value(http, org, api_usage, 25))["eventCount"] == 1
    # The client's own billable event keyed like the request is its own event.
    status, body, _ = await record(http, org, [{"meterId": tokens, "userId": user,
                                                "value": 1000, "idempotency": "req-9"}])
    assert status == 201 and body["events"][0]["status"] == "created"
    assert (await summary(http, org, tokens))["value"] == 1000
    # Another user's request req-9 is another debit, and another copy.
    status, _, _ = await usage(http, org, f"{org.name}/bob", 5, "req-9")
    assert status == 201
    assert (await eventually_value(http, org, api_usage, 30))["eventCount"] == 2


async def test_clients_cannot_use_the_copies_key_namespace(http, org):

    tokens = await make_meter(http, org, "tokens")
    status, body, _ = await record(http, org, [{
        "meterId": tokens, "userId": "alice", "value": 1,
        "idempotency": 'billing:usage:["alice","req-1"]'}])
    assert status == 400 and body["error"]["param"] == "idempotency"


async def test_only_debits_in_the_meters_currency_are_copied(http, org):

    api_usage = await _api_usage_meter(http, org, currency="usd")
    user = f"{org.name}/carol"
    status, _, _ = await post(http, "/usage", {"user": user, "amount": 70, "currency": "eur",
                                               "requestId": "req-eur"}, org.auth())
    assert status == 201
    status, _, _ = await usage(http, org, user, 3, "req-usd")
    assert status == 201
    body = await eventually_value(http, org, api_usage, 3)
    await asyncio.sleep(0.3)  # the eur debit had as long to be copied
    assert (await summary(http, org, api_usage))["value"] == 3 and body["eventCount"] == 1


async def test_the_copy_commits_with_the_debit_and_goes_out_later(http, org, platform):
    """The copy is an outbox row of the debit's own transaction: with the ledger's relay
    stopped, the debit commits and its copy waits; it is published once a relay runs."""

    ledger = service(platform, "ledger")
    api_usage = await _api_usage_meter(http, org)
    user = f"{org.name}/dave"
    await usage(http, org, user, 1, "req-warm")  # the meter is known to the ledger now
    await eventually_value(http, org, api_usage, 1)
    await ledger.relay.stop()
    try:
        status, body, _ = await usage(http, org, user, 40, "req-durable")
        assert status == 201
        async with ledger.pool.acquire() as conn:
            pending = await conn.fetchval(
                "select count(*) from ledger.outbox where published_at is null"
                " and subject = $1", f"billing.meter_events.{await org_id_of(platform, org)}")
        assert pending == 1
        await asyncio.sleep(0.3)
        assert (await summary(http, org, api_usage))["value"] == 1
    finally:
        await ledger.relay.start()
    assert (await eventually_value(http, org, api_usage, 41))["eventCount"] == 2
