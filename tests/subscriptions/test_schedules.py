"""Subscription schedules through the gateway (subscriptions.md §1.5, §3.3, §5.8 #46, #53,
§5.10 #88), and their phases running (spec/README.md): a schedule whose boundaries have
passed creates the customer's subscription on phase 0's plan, changes it at each later
phase and releases or cancels it at the end — in order, each boundary once, with two job
runs racing and after a first attempt whose outcome was lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from contracts import Request
from contracts.limits import METADATA_BYTES
from contracts.subscription_schedules import (
    PHASES_BYTES,
    SUBSCRIPTION_SCHEDULES_PAGE,
    Phase,
    PhaseItem,
    SubscriptionSchedule,
)
from contracts.subscriptions import SUBSCRIPTION_UPDATE, SubscriptionUpdateParams
from services.runtime.idempotency import fingerprint_of
from services.subscriptions.schedules.handlers import run_due
from tests.conftest import bearer, iam_token
from tests.support import (
    PLATFORM,
    eventually,
    get,
    new_user,
    org_id_of,
    post,
    request,
    scope,
    service,
    zulu,
)

SCHEDULES = "/subscription-schedules"
DAY = timedelta(days=1)


def ago(delta):
    return zulu(datetime.now(UTC) - delta)


def later(delta):
    # Whole seconds: a time is answered with its trailing zeros trimmed (RFC 3339 as Go's).
    return zulu((datetime.now(UTC) + delta).replace(microsecond=0))


async def create(http, org, body, key="sk_test", **kw):
    return await post(http, SCHEDULES, body, org.auth(key), **kw)


async def created(http, org, body, key="sk_test"):
    status, schedule, _ = await create(http, org, body, key)
    assert status == 201, schedule
    return schedule


async def patch(http, org, schedule_id, body, key="sk_test"):
    return await request(http, "PATCH", f"/api/v1/billing{SCHEDULES}/{schedule_id}",
                         org.auth(key), body)


async def act(http, org, schedule_id, action, key="sk_test"):
    return await post(http, f"{SCHEDULES}/{schedule_id}/{action}", None, org.auth(key))


async def fetch(http, org, schedule_id):
    status, schedule, _ = await get(http, f"{SCHEDULES}/{schedule_id}", org.auth())
    assert status == 200, schedule
    return schedule


async def subscription_of(http, org, schedule):
    status, sub, _ = await get(http, f"/subscriptions/{schedule['subscriptionId']}", org.auth())
    assert status == 200, sub
    return sub


async def events(pool, object_id):
    return [r["type"] for r in await pool.fetch(
        "select type from subscriptions.outbox where"
        " convert_from(payload, 'utf8')::jsonb->>'objectId' = $1 order by seq", object_id)]


def error(reply):
    return reply[0], reply[1]["error"]["message"]


def phase(plan, start, end, seats=None, **kw):
    body = {"planId": plan, "startDate": start, "endDate": end, **kw}
    if seats is not None:
        body["items"] = [{"priceId": f"price_{plan}", "quantity": seats}]
    return body


# ---- the resource ------------------------------------------------------------------------

async def test_a_new_schedule_then_cancel(http, org):  # 46, 88
    schedule = await created(http, org, {"customerId": "c1"})
    assert set(schedule) == {"id", "customerId", "status", "startDate", "endBehavior",
                             "created"}
    assert (schedule["customerId"], schedule["status"], schedule["endBehavior"],
            schedule["startDate"]) == ("c1", "not_started", "release", "0001-01-01T00:00:00Z")
    assert schedule["created"].endswith("Z")
    status, canceled, _ = await act(http, org, schedule["id"], "cancel")
    assert (status, canceled["status"]) == (200, "canceled")
    assert error(await act(http, org, schedule["id"], "cancel")) == (
        400, "can only cancel active or not_started schedules, current: canceled")
    assert error(await act(http, org, schedule["id"], "release")) == (
        400, "can only release active or not_started schedules, current: canceled")
    assert error(await patch(http, org, schedule["id"], {"endBehavior": "cancel"})) == (
        400, "cannot update a canceled schedule")


async def test_release(http, org):  # 47
    schedule = await created(http, org, {"customerId": "c1"})
    status, released, _ = await act(http, org, schedule["id"], "release")
    assert (status, released["status"]) == (200, "released")
    assert error(await act(http, org, schedule["id"], "cancel")) == (
        400, "can only cancel active or not_started schedules, current: released")


async def test_phases_and_metadata_round_trip(http, org):  # 53
    start, end = later(10 * DAY), later(40 * DAY)
    schedule = await created(http, org, {
        "customerId": "cus_rt", "endBehavior": "cancel", "startDate": start,
        "phases": [phase("pro", start, end, seats=3, prorationBehavior="none")],
        "metadata": {"test": "value"}})
    assert schedule["phases"] == [{
        "planId": "pro", "items": [{"priceId": "price_pro", "quantity": 3}],
        "startDate": start, "endDate": end, "trialEnd": "0001-01-01T00:00:00Z",
        "prorationBehavior": "none"}]
    assert (schedule["metadata"], schedule["endBehavior"], schedule["startDate"],
            schedule["status"]) == ({"test": "value"}, "cancel", start, "not_started")
    assert "subscriptionId" not in schedule
    assert await fetch(http, org, schedule["id"]) == schedule


async def test_update(http, org):  # §3.3.4
    start = later(10 * DAY)
    schedule = await created(http, org, {"customerId": "c1", "phases": [
        phase("pro", start, later(20 * DAY))]})
    status, changed, _ = await patch(http, org, schedule["id"], {"endBehavior": "cancel",
                                                                 "phases": []})
    assert (status, changed["endBehavior"], changed["phases"]) == (
        200, "cancel", schedule["phases"])  # an empty array changes nothing
    status, changed, _ = await patch(http, org, schedule["id"], {"phases": [
        phase("max", start, later(30 * DAY))]})
    assert (status, [p["planId"] for p in changed["phases"]]) == (200, ["max"])
    assert await fetch(http, org, schedule["id"]) == changed
    assert error(await patch(http, org, schedule["id"], None)) == (400, "invalid request body")
    assert error(await patch(http, org, schedule["id"], {"endBehavior": "never"})) == (
        400, "endBehavior must be release or cancel")


async def test_list_filters_newest_first(http, make_org):  # §3.3.2
    org = await make_org()
    first = await created(http, org, {"customerId": "Hanzo/Alice"})
    second = await created(http, org, {"customerId": "hanzo/bob"})
    third = await created(http, org, {"customerId": "hanzo/alice"})
    await act(http, org, third["id"], "cancel")
    status, listed, headers = await get(http, SCHEDULES, org.auth())
    assert (status, [s["id"] for s in listed], headers["X-Total-Count"]) == (
        200, [third["id"], second["id"], first["id"]], "3")
    assert first["customerId"] == "hanzo/alice"  # canonical
    _, listed, _ = await get(http, SCHEDULES, org.auth(), customerId=" hanzo/ALICE ")
    assert [s["id"] for s in listed] == [third["id"], first["id"]]
    _, listed, _ = await get(http, SCHEDULES, org.auth(), status="not_started")
    assert [s["id"] for s in listed] == [second["id"], first["id"]]


@pytest.mark.parametrize("body, status, message", [
    ({}, 400, "customerId is required"),
    ({"customerId": "c1", "endBehavior": "pause"}, 400, "endBehavior must be release or cancel"),
    ({"customerId": "c1", "startDate": "tomorrow"}, 400, "invalid request body"),
    ({"customerId": "c1", "phases": [phase("pro", "2030-01-02T00:00:00Z",
                                           "2030-01-01T00:00:00Z")]},
     400, "phases[0]: endDate must be after startDate"),
    ({"customerId": "c1", "phases": [
        phase("pro", "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z"),
        phase("max", "2030-01-15T00:00:00Z", "2030-03-01T00:00:00Z")]},
     400, "phases[1]: phases must be in order and must not overlap"),
    ({"customerId": "c1", "phases": [phase("pro", "2030-01-01T00:00:00Z",
                                           "2030-02-01T00:00:00Z", prorationBehavior="x")]},
     400, "phases[0].prorationBehavior must be create_prorations or none"),
    ({"customerId": "c1", "phases": [phase("nope", "2030-01-01T00:00:00Z",
                                           "2030-02-01T00:00:00Z")]}, 404, "plan not found"),
    ({"customerId": "c1", "phases": "pro"}, 400, "invalid request body"),
])
async def test_bad_input_stores_nothing(http, make_org, body, status, message):
    org = await make_org()
    assert error(await create(http, org, body)) == (status, message)
    assert error(await create(http, org, None, raw=b"[")) == (400, "invalid request body")
    assert (await get(http, SCHEDULES, org.auth()))[1] == []


async def test_a_paid_plan_needs_the_right_to_sell_it(http, org):  # as §3.1.1 step 5
    admin = bearer(iam_token(owner=org.name, roles=["admin"]))
    body = {"customerId": "c1", "phases": [phase("pro", later(DAY), later(2 * DAY))]}
    status, body_, _ = await post(http, SCHEDULES, body, admin)
    assert (status, body_["error"]["message"]) == (
        403, "creating a paid-tier subscription requires platform-administrator or"
             " internal-service credentials")
    status, _, _ = await post(http, SCHEDULES, {**body, "phases": [
        phase("developer", later(DAY), later(2 * DAY))]}, admin)
    assert status == 201


async def test_other_organizations_and_modes_see_nothing(http, make_org):
    org, other = await make_org(), await make_org()
    schedule = await created(http, org, {"customerId": "c1"})
    for caller, key in ((other, "sk_test"), (org, "sk_live")):
        assert error(await get(http, f"{SCHEDULES}/{schedule['id']}", caller.auth(key))) == (
            404, "subscription schedule not found")
        assert error(await patch(http, caller, schedule["id"], {"endBehavior": "cancel"},
                                 key)) == (404, "subscription schedule not found")
        for action in ("cancel", "release"):
            assert error(await act(http, caller, schedule["id"], action, key)) == (
                404, "subscription schedule not found")
        assert (await get(http, SCHEDULES, caller.auth(key)))[1] == []
    assert await fetch(http, org, schedule["id"]) == schedule


async def test_idempotency_key(http, org):
    headers = {**org.auth(), "Idempotency-Key": f"sched-{new_user()}"}
    first = await post(http, SCHEDULES, {"customerId": "c1"}, headers)
    again = await post(http, SCHEDULES, {"customerId": "c1"}, headers)
    assert (first[0], again[1], again[2]["Idempotent-Replayed"]) == (201, first[1], "true")
    assert len((await get(http, SCHEDULES, org.auth()))[1]) == 1


# ---- the phases run ----------------------------------------------------------------------

async def test_boundaries_already_past_run_in_order_once(http, org, pool):
    customer = new_user()
    schedule = await created(http, org, {
        "customerId": customer, "startDate": ago(3 * DAY), "phases": [
            phase("pro", ago(3 * DAY), ago(2 * DAY), seats=2),
            phase("max", ago(2 * DAY), ago(DAY), seats=3,
                  prorationBehavior="create_prorations")]})
    # Start, phase 1, end (release): all crossed before the reply.
    assert schedule["status"] == "released"
    sub = await subscription_of(http, org, schedule)
    assert (sub["userId"], sub["planId"], sub["quantity"], sub["status"]) == (
        customer, "max", 3, "active")
    assert await events(pool, sub["id"]) == [
        "subscription.created", "subscription.updated", "subscription.plan_changed"]
    assert await events(pool, schedule["id"]) == [
        "subscription_schedule.created", "subscription_schedule.updated",
        "subscription_schedule.updated", "subscription_schedule.released"]
    assert await pool.fetchval(
        "select count(*) from subscriptions.pending_invoice_items where subscription_id = $1",
        sub["id"]) == 1  # the phase's create_prorations
    _, subs, _ = await get(http, "/subscriptions", org.auth(), userId=customer)
    assert subs["count"] == 1


async def test_a_schedule_starts_on_its_own_start_date(http, org):
    """startDate before phase 0's: the subscription starts then, on phase 0's plan."""
    schedule = await created(http, org, {
        "customerId": new_user(), "startDate": ago(DAY), "phases": [
            phase("developer", later(DAY), later(2 * DAY))]})
    assert schedule["status"] == "active"
    assert (await subscription_of(http, org, schedule))["planId"] == "developer"


async def crossed(http, org, schedule_id: str, status: str) -> dict:
    """The schedule once it has `status` (or as it is after 5 s). The platform's own job
    runs every 15 s: when it holds the schedule, a test's runner skips it, and the job's
    crossing commits a moment later."""
    return await eventually(lambda: fetch(http, org, schedule_id),
                            lambda schedule: schedule["status"] == status)


async def test_the_job_runs_each_boundary_once_with_two_runners(http, org, platform, pool,
                                                                nc):
    """Phase 0 has begun at create; phase 1 and the end pass while nobody looks. The first
    attempt at phase 1 changed the subscription but its outcome was lost (its claim rolled
    back): the runners' retry gets that change back instead of making another."""
    now = datetime.now(UTC)
    switch, end = now + timedelta(seconds=2), now + timedelta(seconds=3)
    schedule = await created(http, org, {
        "customerId": new_user(), "endBehavior": "cancel", "phases": [
            phase("pro", ago(DAY), zulu(switch), seats=1),
            phase("max", zulu(switch), zulu(end), seats=2)]})
    assert schedule["status"] == "active"
    sub = await subscription_of(http, org, schedule)
    assert (sub["planId"], sub["quantity"]) == ("pro", 1)
    lost = SubscriptionUpdateParams(id=sub["id"], planId="max", prorate=False, quantity=2)
    key = f"subscription_schedule {schedule['id']} boundary 1 attempt 0"
    sent = Request(scope(await org_id_of(platform, org), actor=PLATFORM, key=key,
                         fingerprint=fingerprint_of(lost)), lost)
    reply = msgspec.json.decode((await nc.request(
        SUBSCRIPTION_UPDATE.subject, msgspec.json.encode(sent), timeout=10)).data)
    assert reply["result"]["planId"] == "max", reply
    await asyncio.sleep((end - datetime.now(UTC)).total_seconds() + 0.2)
    ctx = service(platform, "subscriptions").ctx
    await asyncio.gather(run_due(ctx), run_due(ctx))
    schedule = await crossed(http, org, schedule["id"], "completed")
    assert schedule["status"] == "completed"
    sub = await subscription_of(http, org, schedule)
    assert (sub["planId"], sub["quantity"], sub["status"]) == ("max", 2, "canceled")
    assert await events(pool, sub["id"]) == [
        "subscription.created", "subscription.updated", "subscription.plan_changed",
        "subscription.canceled"]
    assert (await events(pool, schedule["id"]))[-1] == "subscription_schedule.completed"
    await asyncio.gather(run_due(ctx), run_due(ctx))  # nothing left to do
    assert len(await events(pool, sub["id"])) == 4


async def test_a_stopped_schedule_runs_no_more(http, org):
    schedule = await created(http, org, {
        "customerId": new_user(), "phases": [
            phase("developer", ago(DAY), later(DAY)),
            phase("pro", later(DAY), later(2 * DAY))]})
    assert schedule["status"] == "active"
    status, released, _ = await act(http, org, schedule["id"], "release")
    assert (status, released["status"], released["subscriptionId"]) == (
        200, "released", schedule["subscriptionId"])
    sub = await subscription_of(http, org, schedule)
    assert (sub["planId"], sub["status"]) == ("developer", "active")  # it goes on alone


async def test_new_phases_of_a_running_schedule(http, org):
    start = ago(DAY)
    schedule = await created(http, org, {
        "customerId": new_user(), "phases": [
            phase("developer", start, later(DAY)),
            phase("pro", later(DAY), later(2 * DAY))]})
    # Phase 1 moved into the past: it runs with the update.
    status, changed, _ = await patch(http, org, schedule["id"], {"phases": [
        phase("developer", start, ago(DAY / 2)),
        phase("pro", ago(DAY / 2), later(2 * DAY), seats=4)]})
    assert (status, changed["status"]) == (200, "active")
    sub = await subscription_of(http, org, changed)
    assert (sub["planId"], sub["quantity"]) == ("pro", 4)
    # Both phases have begun: new phases keep two.
    assert error(await patch(http, org, schedule["id"], {"phases": [
        phase("pro", start, later(DAY))]})) == (
        400, "phases: 2 phases have begun; give at least that many")


async def test_a_refused_boundary_stays_due(http, org, pool, platform):
    """Phase 0's subscription would be a second paid one in its category (409): the schedule
    does not start, and is looked at again later rather than at every run — and starts once
    the refusal's reason has gone."""
    customer = new_user()
    status, _, _ = await post(http, "/subscriptions", {"userId": customer, "planId": "pro"},
                              org.auth())
    assert status == 201
    schedule = await created(http, org, {"customerId": customer, "phases": [
        phase("max", ago(DAY), later(DAY))]})
    assert (schedule["status"], "subscriptionId" in schedule) == ("not_started", False)
    retry = await pool.fetchval(
        "select next_run_at from subscriptions.subscription_schedules where id = $1",
        schedule["id"])
    assert retry > datetime.now(UTC) + timedelta(minutes=4)
    _, subs, _ = await get(http, "/subscriptions", org.auth(), userId=customer)
    assert [s["planId"] for s in subs["subscriptions"]] == ["pro"]
    # Once the other subscription has ended, the next run starts it: the refusal changed
    # nothing, so this attempt is asked afresh rather than answered with the 409 again.
    status, _, _ = await post(http, f"/subscriptions/{subs['subscriptions'][0]['id']}/cancel",
                              {"atPeriodEnd": False}, org.auth())
    assert status == 200
    await pool.execute("update subscriptions.subscription_schedules set next_run_at = now()"
                       " where id = $1", schedule["id"])
    await run_due(service(platform, "subscriptions").ctx)
    schedule = await crossed(http, org, schedule["id"], "active")
    assert schedule["status"] == "active"
    assert (await subscription_of(http, org, schedule))["planId"] == "max"


async def test_phases_are_bounded_as_json(http, org):
    many = [phase("pro", f"2030-01-{d:02d}T00:00:00Z", f"2030-01-{d + 1:02d}T00:00:00Z",
                  seats=1) for d in range(1, 21)]
    for p in many:
        p["items"] = [{"priceId": "p" * 64, "quantity": 1}] * 5
    assert error(await create(http, org, {"customerId": "c1", "phases": many})) == (
        400, f"phases: at most {PHASES_BYTES} bytes as JSON")


def test_a_full_page_at_every_limit_fits_in_one_bus_message():
    """As tests/gateway/test_integrity_limits.py does for the other lists."""
    w, ts = "\x01", "2026-12-06T21:00:00.123456Z"
    item = PhaseItem(priceId=w * 64, quantity=2**63 - 1)
    one = Phase(planId=w * 255, startDate=ts, endDate=ts, trialEnd=ts, items=[item],
                prorationBehavior="create_prorations")
    # Stored phases are at most PHASES_BYTES as sent; a page answers them re-encoded.
    phases = [one] * (PHASES_BYTES // len(msgspec.json.encode(one)))
    schedule = SubscriptionSchedule(
        id="sub_sched_" + "x" * 22, customerId=w * 255, status="not_started", startDate=ts,
        endBehavior="release", created=ts, subscriptionId=w * 255, phases=phases,
        metadata={"k": "v" * (METADATA_BYTES - len('{"k":""}'))})
    page = [schedule] * SUBSCRIPTION_SCHEDULES_PAGE.maximum
    assert len(msgspec.json.encode({"result": page, "status": 200})) < 0.9 * 1024 * 1024
