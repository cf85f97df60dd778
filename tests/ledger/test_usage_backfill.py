"""Usage debits copied into the organization's `api-usage` meter (ledger.md §3.5, product
decision Q4): visible in its summaries, once per `requestId`, never in invoice usage."""

from __future__ import annotations

import asyncio

from tests.support import eventually_value, make_meter, post, record, summary


async def _usage(http, org, user, amount, request_id, key="sk_test", **extra):
    status, body, _ = await post(http, "/usage", {
        "user": user, "amount": amount, "requestId": request_id, **extra}, org.auth(key))
    assert status == 201, body
    return body


async def test_usage_debits_show_in_the_api_usage_meter_once_per_request(http, org):
    meter_id = await make_meter(http, org, "api-usage")
    user = f"{org.name}/alice"
    await _usage(http, org, user, 25, "req-1", model="gpt-4", provider="openai")
    await _usage(http, org, user, 25, "req-1", model="gpt-4", provider="openai")  # a retry
    await _usage(http, org, user, 10, "req-2")
    body = await eventually_value(http, org, meter_id, 35, userId=user)
    assert (body["value"], body["eventCount"]) == (35, 2)
    # The copies' keys have a namespace of their own: the organization's key req-2 is free.
    status, reply, _ = await record(http, org, [{"meterId": meter_id, "userId": user,
                                                  "value": 99, "idempotency": "req-2"}])
    assert status == 201 and reply["events"][0]["status"] == "created"


async def test_no_copies_without_the_meter_or_into_the_other_mode(http, org):
    tokens = await make_meter(http, org, "tokens")
    live_meter = await make_meter(http, org, "api-usage", key="sk_live")
    user = f"{org.name}/bob"
    await _usage(http, org, user, 40, "req-test")  # test mode: it has no api-usage meter
    await _usage(http, org, user, 7, "req-live", key="sk_live")
    body = await eventually_value(http, org, live_meter, 7, key="sk_live", userId=user)
    assert body["value"] == 7
    await asyncio.sleep(0.3)  # the test-mode debit had as long to be copied anywhere
    assert (await summary(http, org, tokens, userId=user))["eventCount"] == 0
