"""Meters, meter events and usage summaries through the gateway (metering-invoicing.md §11.1–
§11.3, and issue 4's dedup and bad-input cases), both ways in: synchronous (the default) and
asynchronous (`Prefer: respond-async`, through JetStream)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import (
    ASYNC,
    ev,
    eventually_value,
    get,
    make_meter,
    meter_name,
    post,
    record,
    summary,
    zulu,
)

# Event times inside the accepted window (35 days back): yesterday from 10:00 UTC.
T = (datetime.now(UTC) - timedelta(days=1)).replace(hour=10, minute=0, second=0,
                                                    microsecond=0)


def at(minutes: float) -> str:
    return (T + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- §11.1 meters ----------------------------------------------------------------------


async def test_create_meter_defaults_and_lower_cases(http, org):
    # 1
    status, body, _ = await post(http, "/meters", {"name": "API Calls", "eventName": "api_calls",
                                                   "currency": "USD"}, org.auth())
    assert status == 201
    assert body["id"] and body["createdAt"].endswith("Z")
    assert body == {"id": body["id"], "name": "API Calls", "eventName": "api_calls",
                    "aggregationType": "sum", "currency": "usd", "dimensions": None,
                    "createdAt": body["createdAt"]}
    # 2
    status, body, _ = await post(http, "/meters", {"name": "Calls", "eventName": "calls",
                                                   "aggregationType": "COUNT",
                                                   "dimensions": ["model"]}, org.auth())
    assert status == 201
    assert body["aggregationType"] == "count" and body["dimensions"] == ["model"]
    status, got, _ = await get(http, f"/meters/{body['id']}", org.auth())
    assert (status, got) == (200, body)


@pytest.mark.parametrize("body, message", [
    ({"eventName": "x"}, "name is required"),
    ({"name": "x"}, "eventName is required"),
    ({"name": "x", "eventName": "x", "aggregationType": "avg"}, "invalid aggregationType"),
    ({"name": "x", "eventName": "x", "currency": "dollars!"}, "invalid currency"),
])
async def test_meter_refusals(http, org, body, message):
    # 3, 7
    status, reply, _ = await post(http, "/meters", body, org.auth())
    assert status == 400 and reply["error"]["message"] == message
    assert reply["error"]["type"] == "api-error"


async def test_meter_body_not_json(http, org):
    status, reply, _ = await post(http, "/meters", None, org.auth(), raw=b"not json")
    assert (status, reply["error"]["message"]) == (400, "invalid request body")


async def test_meter_not_found_and_other_org(http, org, make_org):
    # 4
    status, reply, _ = await get(http, "/meters/mtr_unknown", org.auth())
    assert (status, reply["error"]["message"]) == (404, "meter not found")
    other = await make_org()
    meter_id = await make_meter(http, other)
    status, reply, _ = await get(http, f"/meters/{meter_id}", org.auth())
    assert (status, reply["error"]["message"]) == (404, "meter not found")


async def test_meters_list_in_creation_order_and_event_name_unique(http, org):
    # 5, 6
    first = await make_meter(http, org, "input_tokens")
    second = await make_meter(http, org, "output_tokens")
    status, body, _ = await get(http, "/meters", org.auth())
    assert status == 200 and body["count"] == 2
    assert [m["id"] for m in body["meters"]] == [first, second]
    status, reply, _ = await post(http, "/meters", {"name": "Again", "eventName": "input_tokens"},
                                  org.auth())
    assert (status, reply["error"]["message"]) == (409, "meter with this eventName already exists")


async def test_meters_are_per_mode(http, org):
    meter_id = await make_meter(http, org, "api_calls", key="sk_test")
    status, _, _ = await get(http, f"/meters/{meter_id}", org.auth("sk_live"))
    assert status == 404
    status, body, _ = await get(http, "/meters", org.auth("sk_live"))
    assert body == {"meters": [], "count": 0}
    # The same event name in live mode is another meter.
    await make_meter(http, org, "api_calls", key="sk_live")


async def test_meters_need_an_admin_credential(http, org):
    status, reply, _ = await post(http, "/meters", {"name": "x", "eventName": "x"},
                                  org.auth("pk_test"))
    assert (status, reply["error"]["message"]) == (403, "Token doesn't support this scope")


# ---- §11.2 meter events ----------------------------------------------------------------


async def test_batch_size_limits(http, org):
    # 8
    meter_id = await make_meter(http, org)
    status, reply, _ = await record(http, org, [])
    assert (status, reply["error"]["message"]) == (400, "at least one event is required")
    status, reply, _ = await record(http, org, [ev(meter_id)] * 101)
    assert (status, reply["error"]["message"]) == (400, "maximum 100 events per batch")
    status, body, _ = await record(http, org, [ev(meter_id) for _ in range(100)])
    assert status == 201 and body["count"] == 100
    assert {e["status"] for e in body["events"]} == {"created"}
    assert len({e["id"] for e in body["events"]}) == 100
    assert (await summary(http, org, meter_id))["eventCount"] == 100


@pytest.mark.parametrize("event, message", [
    ({"userId": "alice", "value": 1}, "meterId is required for each event"),
    ({"meterId": "{m}", "value": 1}, "userId is required for each event"),
    ({"value": 1}, "meterId is required for each event"),
])
async def test_required_event_fields(http, org, event, message):
    # 9
    meter_id = await make_meter(http, org)
    event = {k: (meter_id if v == "{m}" else v) for k, v in event.items()}
    status, reply, _ = await record(http, org, [event])
    assert (status, reply["error"]["message"]) == (400, message)


async def test_a_refused_batch_stores_nothing(http, org):
    # 10 (Δ: the valid first event is not stored either)
    meter_id = await make_meter(http, org)
    status, reply, _ = await record(http, org, [ev(meter_id, 5), {"meterId": "m"}])
    assert (status, reply["error"]["message"]) == (400, "userId is required for each event")
    assert (await summary(http, org, meter_id))["eventCount"] == 0


async def test_idempotency_key_is_per_organization_and_mode_across_meters(http, org):
    # 11, 17
    tokens = await make_meter(http, org, "tokens")
    calls = await make_meter(http, org, "calls")
    status, body, _ = await record(http, org, [ev(tokens, 5, idempotency="k1")])
    assert status == 201 and body["events"][0]["status"] == "created"
    first = body["events"][0]["id"]
    status, body, _ = await record(http, org, [ev(calls, 9, idempotency="k1")])
    assert status == 201
    assert body == {"events": [{"id": first, "status": "duplicate"}], "count": 1}
    assert (await summary(http, org, tokens))["value"] == 5
    assert (await summary(http, org, calls))["value"] == 0
    # Another mode is another scope: the same key is new there.
    live_meter = await make_meter(http, org, "tokens", key="sk_live")
    status, body, _ = await record(http, org, [ev(live_meter, 1, idempotency="k1")],
                                   key="sk_live")
    assert body["events"][0]["status"] == "created"


async def test_same_key_twice_in_one_batch(http, org):
    # 12
    meter_id = await make_meter(http, org)
    status, body, _ = await record(http, org, [ev(meter_id, 1, idempotency="k2"),
                                               ev(meter_id, 2, idempotency="k2")])
    assert status == 201 and body["count"] == 2
    first, second = body["events"]
    assert first["status"] == "created"
    assert second == {"id": first["id"], "status": "duplicate"}
    assert (await summary(http, org, meter_id))["value"] == 1


async def test_same_batch_sent_twice_is_stored_once(http, org):
    meter_id = await make_meter(http, org)
    batch = [ev(meter_id, v, idempotency=f"twice-{v}") for v in (1, 2, 3)]
    _, first, _ = await record(http, org, batch)
    status, second, _ = await record(http, org, batch)
    assert status == 201
    assert second["events"] == [{"id": e["id"], "status": "duplicate"} for e in first["events"]]
    assert (await summary(http, org, meter_id))["value"] == 6


async def test_concurrent_batches_with_one_key_store_it_once(http, org):
    meter_id = await make_meter(http, org)
    replies = await asyncio.gather(*[
        record(http, org, [ev(meter_id, 1, idempotency="race"), ev(meter_id, 1)])
        for _ in range(20)])
    assert all(status == 201 for status, _, _ in replies)
    keyed = [body["events"][0] for _, body, _ in replies]
    assert [e["status"] for e in keyed].count("created") == 1
    assert len({e["id"] for e in keyed}) == 1
    body = await summary(http, org, meter_id)
    assert body["eventCount"] == 21


async def test_timestamps(http, org):
    # 13, 14
    meter_id = await make_meter(http, org)
    before = datetime.now(UTC)
    await record(http, org, [ev(meter_id, 1, user="now")])
    after = datetime.now(UTC)
    window = {"userId": "now", "periodStart": zulu(before - timedelta(seconds=1)),
              "periodEnd": zulu(after + timedelta(seconds=1))}
    assert (await summary(http, org, meter_id, **window))["value"] == 1
    # An offset is converted to UTC: 12:00+02:00 is 10:00Z.
    local = (T + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    await record(http, org, [ev(meter_id, 1, user="tz", timestamp=local)])
    assert (await summary(http, org, meter_id, userId="tz", periodStart=at(0),
                          periodEnd=at(0)))["value"] == 1
    assert (await summary(http, org, meter_id, userId="tz",
                          periodEnd=at(-0.01)))["value"] == 0
    status, reply, _ = await record(http, org, [ev(meter_id, timestamp="yesterday")])
    assert (status, reply["error"]["message"]) == (400, "invalid timestamp for event 0")


@pytest.mark.parametrize("shift", [timedelta(days=-36), timedelta(minutes=10)])
async def test_timestamps_outside_the_window_are_refused(http, org, shift):
    meter_id = await make_meter(http, org)
    ts = zulu(datetime.now(UTC) + shift)
    status, reply, _ = await record(http, org, [ev(meter_id), ev(meter_id, timestamp=ts)])
    assert status == 400
    assert reply["error"]["message"] == ("timestamp out of range for event 1: accepted from "
                                         "35 days ago to 5 minutes ahead")
    assert (await summary(http, org, meter_id))["eventCount"] == 0


async def test_values(http, org):
    # 15 (negative values: refused, per the issue)
    meter_id = await make_meter(http, org)
    status, body, _ = await record(http, org, [ev(meter_id, 0), ev(meter_id, 4)])
    assert status == 201
    for bad, message in ((-3, "negative value for event 1"), (1.5, "invalid request body"),
                         ("5", "invalid request body")):
        status, reply, _ = await record(http, org, [ev(meter_id, 1), ev(meter_id, bad)])
        assert (status, reply["error"]["message"]) == (400, message)
    body = await summary(http, org, meter_id)
    assert (body["value"], body["eventCount"]) == (4, 2)


async def test_unknown_meter_and_malformed_json(http, org, make_org):
    # 16
    meter_id = await make_meter(http, org)
    status, reply, _ = await record(http, org, [ev(meter_id), ev("mtr_nope")])
    assert (status, reply["error"]["message"]) == (400, "unknown meterId: mtr_nope")
    other = await make_org()
    foreign = await make_meter(http, other)
    status, reply, _ = await record(http, org, [ev(foreign)])
    assert (status, reply["error"]["message"]) == (400, f"unknown meterId: {foreign}")
    status, reply, _ = await post(http, "/meter-events", None, org.auth(),
                                  raw=b'{"events": [{"meterId": "x"')
    assert (status, reply["error"]["message"]) == (400, "invalid request body")
    assert (await summary(http, org, meter_id))["eventCount"] == 0


async def test_user_ids_are_canonical(http, org):
    meter_id = await make_meter(http, org)
    await record(http, org, [ev(meter_id, 2, user=" Hanzo/Alice ")])
    assert (await summary(http, org, meter_id, userId="HANZO/alice"))["value"] == 2


async def test_idempotency_key_header_replays(http, org):
    meter_id = await make_meter(http, org)
    headers = {"Idempotency-Key": "batch-1"}
    _, first, h1 = await record(http, org, [ev(meter_id, 3)], headers)
    status, again, h2 = await record(http, org, [ev(meter_id, 3)], headers)
    assert status == 201 and again == first and h2["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in h1
    status, reply, _ = await record(http, org, [ev(meter_id, 4)], headers)
    assert (status, reply["error"]["message"]) == (
        422, "idempotency key reused with different parameters")
    assert (await summary(http, org, meter_id))["value"] == 3


# ---- §11.3 summaries -------------------------------------------------------------------


async def _alice_events(http, org, meter_id, order=(0, 1, 2)):
    events = [ev(meter_id, 5, timestamp=at(0)), ev(meter_id, 3, timestamp=at(5)),
              ev(meter_id, 7, timestamp=at(10))]
    for i in order:  # one batch each: ingestion order as given
        status, _, _ = await record(http, org, [events[i]])
        assert status == 201


async def test_summary_of_each_aggregation(http, org):
    # 18, 19 and ours (max, min, unique_count)
    expected = {"sum": 15, "count": 3, "last": 7, "max": 7, "min": 3, "unique_count": 3}
    for aggregation, value in expected.items():
        meter_id = await make_meter(http, org, f"m_{aggregation}", aggregation)
        await _alice_events(http, org, meter_id)
        body = await summary(http, org, meter_id, userId="alice")
        assert body == {"meterId": meter_id, "meterName": meter_name(f"m_{aggregation}"),
                        "userId": "alice", "aggregationType": aggregation, "value": value,
                        "eventCount": 3, "periodStart": "", "periodEnd": ""}


async def test_unique_count_counts_distinct_values(http, org):
    meter_id = await make_meter(http, org, "seats", "unique_count")
    await record(http, org, [ev(meter_id, v) for v in (1, 2, 2, 3, 3, 3)])
    body = await summary(http, org, meter_id)
    assert (body["value"], body["eventCount"]) == (3, 6)


async def test_last_is_the_latest_event_time_not_the_latest_ingested(http, org):
    # 25 (and §9.1 example 2)
    meter_id = await make_meter(http, org, "gauge", "last")
    await _alice_events(http, org, meter_id, order=(2, 0, 1))
    assert (await summary(http, org, meter_id, userId="alice"))["value"] == 7


async def test_summary_over_every_user_and_windows(http, org):
    # 20, 21
    meter_id = await make_meter(http, org)
    await _alice_events(http, org, meter_id)
    await record(http, org, [ev(meter_id, 10, user="bob", timestamp=at(1))])
    assert (await summary(http, org, meter_id))["value"] == 25
    body = await summary(http, org, meter_id, userId="alice", periodStart=at(5))
    assert (body["value"], body["eventCount"], body["periodStart"]) == (10, 2, at(5))
    # RFC 3339 periodEnd is inclusive.
    assert (await summary(http, org, meter_id, userId="alice", periodEnd=at(5)))["value"] == 8
    # Date-only periodEnd ends before the next midnight (Δ: the event at midnight is out).
    day = T.date()
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    await record(http, org, [ev(meter_id, 100, user="carol", timestamp=zulu(midnight))])
    body = await summary(http, org, meter_id, userId="carol", periodEnd=day.isoformat())
    assert (body["value"], body["periodEnd"]) == (0, day.isoformat())
    body = await summary(http, org, meter_id, userId="carol",
                         periodStart=(day + timedelta(days=1)).isoformat())
    assert body["value"] == 100


async def test_summary_refusals_and_empty(http, org):
    # 22, 23, 24
    status, reply, _ = await get(http, "/meter-events/summary", org.auth())
    assert (status, reply["error"]["message"]) == (400, "meterId query parameter is required")
    status, reply, _ = await get(http, "/meter-events/summary", org.auth(), meterId="mtr_x")
    assert (status, reply["error"]["message"]) == (404, "meter not found")
    meter_id = await make_meter(http, org)
    for name in ("periodStart", "periodEnd"):
        status, reply, _ = await get(http, "/meter-events/summary", org.auth(), meterId=meter_id,
                                     **{name: "garbage"})
        assert (status, reply["error"]["message"]) == (400, f"invalid {name} format")
    body = await summary(http, org, meter_id, userId="nobody")
    assert (body["value"], body["eventCount"]) == (0, 0)


# ---- the asynchronous way in -----------------------------------------------------------


async def test_async_batch_is_accepted_then_visible(http, org):
    meter_id = await make_meter(http, org)
    started = time.monotonic()
    status, body, headers = await record(http, org, [ev(meter_id, 2), ev(meter_id, 3)], ASYNC)
    assert status == 202 and headers["Preference-Applied"] == "respond-async"
    assert body["count"] == 2 and {e["status"] for e in body["events"]} == {"accepted"}
    assert all(e["id"].startswith("mev_") and len(e["id"]) == 26 for e in body["events"])
    assert (await eventually_value(http, org, meter_id, 5))["value"] == 5
    assert time.monotonic() - started < 1.0  # visible within a second of acceptance


async def test_async_batch_sent_twice_with_one_key_is_stored_once_with_the_same_ids(http, org):
    meter_id = await make_meter(http, org)
    batch = [ev(meter_id, 1), ev(meter_id, 2)]  # no event keys: the request's key decides
    keyed = {**ASYNC, "Idempotency-Key": "twice"}
    _, first, _ = await record(http, org, batch, keyed)
    _, second, headers = await record(http, org, batch, keyed)
    assert second == first and headers["Idempotent-Replayed"] == "true"
    await eventually_value(http, org, meter_id, 3)
    await asyncio.sleep(0.3)
    assert (await summary(http, org, meter_id))["eventCount"] == 2
    # A different Idempotency-Key makes it a new batch.
    _, third, _ = await record(http, org, batch, {**ASYNC, "Idempotency-Key": "again"})
    assert third["events"][0]["id"] != first["events"][0]["id"]
    assert (await eventually_value(http, org, meter_id, 6))["eventCount"] == 4


async def test_one_key_across_both_ways_in_is_stored_once(http, org):
    meter_id = await make_meter(http, org)
    await record(http, org, [ev(meter_id, 5, idempotency="both")], ASYNC)
    await record(http, org, [ev(meter_id, 1, idempotency="fresh")], ASYNC)
    await eventually_value(http, org, meter_id, 6)
    status, body, _ = await record(http, org, [ev(meter_id, 9, idempotency="both")])
    assert status == 201 and body["events"][0]["status"] == "duplicate"
    await record(http, org, [ev(meter_id, 9, idempotency="fresh"),
                             ev(meter_id, 4, idempotency="new")], ASYNC)
    await eventually_value(http, org, meter_id, 10)
    await asyncio.sleep(0.3)
    assert (await summary(http, org, meter_id))["value"] == 10


async def test_async_bad_input_is_refused_before_acceptance(http, org):
    meter_id = await make_meter(http, org)
    cases = [
        ([ev(meter_id)] * 101, "maximum 100 events per batch"),
        ([ev(meter_id), {"userId": "a"}], "meterId is required for each event"),
        ([ev(meter_id), ev("mtr_nope")], "unknown meterId: mtr_nope"),
        ([ev(meter_id), ev(meter_id, -1)], "negative value for event 1"),
        ([ev(meter_id, timestamp="soon")], "invalid timestamp for event 0"),
    ]
    for events, message in cases:
        status, reply, _ = await record(http, org, events, ASYNC)
        assert (status, reply["error"]["message"]) == (400, message)
    status, reply, _ = await post(http, "/meter-events", None, {**org.auth(), **ASYNC},
                                  raw=b"{")
    assert (status, reply["error"]["message"]) == (400, "invalid request body")
    # A meter created after the gateway cached the organization's meters is known at once.
    newer = await make_meter(http, org, "newer")
    status, _, _ = await record(http, org, [ev(newer, 1)], ASYNC)
    assert status == 202
    await eventually_value(http, org, newer, 1)
    assert (await summary(http, org, meter_id))["eventCount"] == 0


async def test_a_batch_that_cannot_be_stored_does_not_hold_up_the_others(http, org,
                                                                         nc):
    # Only the gateway publishes to the stream, and only what it validated; should anything
    # else land there, the workers put it in the dead letters and go on.
    meter_id = await make_meter(http, org)
    await nc.jetstream().publish("billing.meter_events.org_garbage", b'{"not": "a batch"}')
    await record(http, org, [ev(meter_id, 7)], ASYNC)
    assert (await eventually_value(http, org, meter_id, 7))["value"] == 7


