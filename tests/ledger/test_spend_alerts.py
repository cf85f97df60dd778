"""Spend alerts through the gateway (ledger.md §3.18–§3.21, §9.12): CRUD with the reference's
messages, end users reaching only their own alerts, organization and mode isolation, and
firing once per crossing on `billing.events.spend_alert.triggered` (JetStream)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy

from contracts import Actor
from services.ledger.alerts import handlers as alert_handlers
from services.ledger.alerts.domain import crossings
from services.ledger.balances import domain
from tests import support
from tests.conftest import SERVICE_TOKENS, bearer, iam_token
from tests.support import API, org_id_of, post, request, stream_ready

ALERTS = API + "/spend-alerts"
SUBJECT = "billing.events.spend_alert.triggered"


async def create(http, headers, **body):
    status, alert, _ = await request(http, "POST", ALERTS, headers, body)
    assert status == 201, alert
    return alert


def service(org, mode="live"):
    headers = {"Authorization": f"Bearer {SERVICE_TOKENS[0]}", "X-IAM-Org-Id": org.name}
    if mode == "test":
        headers["X-Billing-Mode"] = "test"
    return headers


def iam_user(org, name):
    """An end user (IAM role `user`) of `org`, billed as `<org>/<name>`."""
    return bearer(iam_token(owner=org.name, name=name))


async def usage(http, org, user, amount, key="sk_test", **extra):
    status, body, _ = await post(http, "/usage", {"user": user, "amount": amount, **extra},
                                 org.auth(key))
    assert status in (200, 201), body


# ---- CRUD -------------------------------------------------------------------------------


async def test_create_list_update_delete(http, org):
    first = await create(http, org.auth(), userId=" Hanzo/Alice ", title="Monthly cap",
                         threshold=5000, currency="EUR")
    assert first["id"] and first["userId"] == "hanzo/alice"
    assert (first["title"], first["threshold"], first["currency"]) == ("Monthly cap", 5000,
                                                                       "eur")
    assert first["triggeredAt"] == "" and first["createdAt"].endswith("Z")
    assert first["updatedAt"] == first["createdAt"]
    second = await create(http, org.auth(), userId="hanzo/alice", threshold=100)
    assert second["currency"] == "usd" and second["title"] == ""
    await create(http, org.auth(), userId="hanzo/bob", threshold=100)

    # A bare array, newest first, of that user's alerts only.
    status, listed, _ = await request(http, "GET", ALERTS, org.auth(),
                                      params={"user": "HANZO/alice"})
    assert status == 200 and listed == [second, first]

    path = f"{ALERTS}/{first['id']}"
    status, updated, _ = await request(http, "PATCH", path, org.auth(), {"title": "Renamed"})
    assert status == 200
    assert (updated["title"], updated["threshold"]) == ("Renamed", 5000)
    assert updated["updatedAt"] >= updated["createdAt"] == first["createdAt"]
    status, updated, _ = await request(http, "PATCH", path, org.auth(), {"title": "",
                                                                         "threshold": 7000})
    assert status == 200 and (updated["title"], updated["threshold"]) == ("Renamed", 7000)
    assert updated["userId"] == "hanzo/alice" and updated["currency"] == "eur"

    status, _, _ = await request(http, "DELETE", path, org.auth())
    assert status == 204
    async with http.delete(path, headers=org.auth()) as r:
        assert r.status == 404 and (await r.json())["error"]["message"] == "spend alert not found"
    status, listed, _ = await request(http, "GET", ALERTS, org.auth(),
                                      params={"user": "hanzo/alice"})
    assert [a["id"] for a in listed] == [second["id"]]


async def test_delete_answers_204_with_no_body(http, org):
    alert = await create(http, org.auth(), userId="hanzo/alice", threshold=1)
    async with http.delete(f"{ALERTS}/{alert['id']}", headers=org.auth()) as r:
        assert r.status == 204 and await r.read() == b""


@pytest.mark.parametrize(("body", "message"), [
    ({"threshold": 5}, "userId is required"),
    ({"userId": "   ", "threshold": 5}, "userId is required"),
    ({"userId": "x"}, "threshold must be positive"),
    ({"userId": "x", "threshold": -3}, "threshold must be positive"),
    ({"userId": "x", "threshold": "5"}, "invalid request body"),
    ({"userId": "x", "threshold": 1.5}, "invalid request body"),
    ({"userId": "x", "threshold": 5, "currency": "$$"}, "invalid currency"),
])
async def test_create_refuses_bad_input(http, org, body, message):
    status, reply, _ = await request(http, "POST", ALERTS, org.auth(), body)
    assert status == 400 and reply["error"]["message"] == message


async def test_update_validates_after_finding_the_alert(http, org):
    alert = await create(http, org.auth(), userId="hanzo/alice", threshold=100)
    path = f"{ALERTS}/{alert['id']}"
    for threshold in (0, -5):  # [FIX] no longer silently ignored
        status, reply, _ = await request(http, "PATCH", path, org.auth(), {"threshold": threshold})
        assert status == 400 and reply["error"]["message"] == "threshold must be positive"
    status, reply, _ = await request(http, "PATCH", path, org.auth(), {"threshold": "7"})
    assert status == 400 and reply["error"]["message"] == "invalid request body"
    # Lookup first, as the reference: an unknown alert is 404 whatever the body says.
    for body in ({"title": "x"}, {"threshold": -1}):
        status, reply, _ = await request(http, "PATCH", f"{ALERTS}/nope", org.auth(), body)
        assert status == 404 and reply["error"]["message"] == "spend alert not found"
    status, listed, _ = await request(http, "GET", ALERTS, org.auth(),
                                      params={"user": "hanzo/alice"})
    assert listed == [alert]  # nothing changed


async def test_list_needs_a_user_and_publishable_keys_are_refused(http, org):
    status, reply, _ = await request(http, "GET", ALERTS, org.auth())
    assert status == 400 and reply["error"]["message"] == "user query parameter is required"
    for method, path in (("GET", ALERTS), ("POST", ALERTS), ("PATCH", ALERTS + "/x"),
                         ("DELETE", ALERTS + "/x")):
        status, reply, _ = await request(http, method, path, org.auth("pk_test"),
                                         {"userId": "x", "threshold": 1}, params={"user": "x"})
        assert status == 403 and reply["error"]["message"] == "Token doesn't support this scope"


# ---- ownership and isolation ------------------------------------------------------------


async def test_end_users_reach_only_their_own_alerts(http, org):
    alice, bob = f"{org.name}/alice", f"{org.name}/bob"
    mine = await create(http, service(org), userId=alice, title="mine", threshold=10)
    theirs = await create(http, service(org), userId=bob, title="theirs", threshold=10)
    as_alice = iam_user(org, "Alice")

    # The list is the caller's own; naming someone else is refused.
    status, listed, _ = await request(http, "GET", ALERTS, as_alice)
    assert status == 200 and listed == [mine]
    status, reply, _ = await request(http, "GET", ALERTS, as_alice, params={"user": bob})
    assert status == 403 and reply["error"]["message"] == "cannot access another user's account"

    # Someone else's alert by id does not exist for her, whatever the body.
    other = f"{ALERTS}/{theirs['id']}"
    for body in ({"title": "hijacked"}, {"threshold": -1}):
        status, reply, _ = await request(http, "PATCH", other, as_alice, body)
        assert status == 404 and reply["error"]["message"] == "spend alert not found"
    status, reply, _ = await request(http, "DELETE", other, as_alice)
    assert status == 404 and reply["error"]["message"] == "spend alert not found"
    status, listed, _ = await request(http, "GET", ALERTS, service(org), params={"user": bob})
    assert listed == [theirs]

    # Creating: defaults to herself; naming someone else is refused.
    status, created, _ = await request(http, "POST", ALERTS, as_alice, {"threshold": 50})
    assert status == 201 and created["userId"] == alice
    status, reply, _ = await request(http, "POST", ALERTS, as_alice, {"userId": bob,
                                                                      "threshold": 50})
    assert status == 403 and reply["error"]["message"] == "cannot access another user's account"

    # Her own: she may change and delete it.
    status, updated, _ = await request(http, "PATCH", f"{ALERTS}/{mine['id']}", as_alice,
                                       {"title": "still mine"})
    assert status == 200 and updated["title"] == "still mine"
    status, _, _ = await request(http, "DELETE", f"{ALERTS}/{mine['id']}", as_alice)
    assert status == 204

    # An organization admin acts on anyone's alert in the organization.
    admin = bearer(iam_token(owner=org.name, name="root", isAdmin=True))
    status, updated, _ = await request(http, "PATCH", other, admin, {"threshold": 20})
    assert status == 200 and updated["threshold"] == 20 and updated["userId"] == bob


async def test_organizations_and_modes_never_see_each_other(http, make_org):
    a, b = await make_org(), await make_org()
    alert = await create(http, a.auth("sk_test"), userId="hanzo/alice", threshold=10)
    path = f"{ALERTS}/{alert['id']}"
    for other in (b.auth("sk_test"), a.auth("sk_live")):
        status, listed, _ = await request(http, "GET", ALERTS, other,
                                          params={"user": "hanzo/alice"})
        assert status == 200 and listed == []
        status, reply, _ = await request(http, "PATCH", path, other, {"title": "x"})
        assert status == 404 and reply["error"]["message"] == "spend alert not found"
        status, _, _ = await request(http, "DELETE", path, other)
        assert status == 404
    status, listed, _ = await request(http, "GET", ALERTS, a.auth("sk_test"),
                                      params={"user": "hanzo/alice"})
    assert listed == [alert]


# ---- firing -----------------------------------------------------------------------------


@pytest.fixture
async def triggered(js, platform):
    """New `spend_alert.triggered` events on JetStream, from now on."""
    await stream_ready(js)  # the ledger's relay creates the stream when it starts
    return await js.subscribe(SUBJECT, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)


@pytest.fixture
def ledger_pool(ledger):
    return ledger.pool


async def events_of(sub, pool, org_ref: str, wait: float = 0.5) -> list:
    """This organization's events, once the ledger's outbox has none of them left to
    publish (plus `wait` seconds for delivery)."""
    for _ in range(200):
        if not await pool.fetchval("select count(*) from ledger.outbox"
                                   " where org_id = $1 and published_at is null", org_ref):
            break
        await asyncio.sleep(0.05)
    out = []
    while True:
        try:
            msg = await sub.next_msg(timeout=wait)
        except NatsTimeout:
            return out
        body = msgspec.json.decode(msg.data)
        if body["orgId"] == org_ref:
            assert msg.headers["Nats-Msg-Id"] == body["id"]
            out.append(body)


async def test_an_alert_fires_once_when_the_months_spend_crosses_it(
        http, org, platform, triggered, ledger_pool):
    ref = await org_id_of(platform, org)
    user = "hanzo/spender"
    alert = await create(http, org.auth(), userId=user, title="Heads up", threshold=100)
    euros = await create(http, org.auth(), userId=user, threshold=10, currency="eur")
    someone = await create(http, org.auth(), userId="hanzo/other", threshold=10)

    await usage(http, org, user, 60)
    assert await events_of(triggered, ledger_pool, ref) == []
    await usage(http, org, user, 50)  # 110: crosses 100
    [event] = await events_of(triggered, ledger_pool, ref)

    period = datetime.now(UTC).strftime("%Y-%m")
    status, listed, _ = await request(http, "GET", ALERTS, org.auth(), params={"user": user})
    fired = next(a for a in listed if a["id"] == alert["id"])
    assert fired["triggeredAt"].endswith("Z") and fired["triggeredAt"] >= alert["createdAt"]
    assert {**fired, "triggeredAt": ""} == alert
    assert event["id"].startswith("evt_") and event["created"].endswith("Z")
    assert event == {
        "id": event["id"], "type": "spend_alert.triggered", "objectType": "spend_alert",
        "objectId": alert["id"], "customerId": user, "orgId": ref, "livemode": False,
        "created": event["created"], "data": {**fired, "spend": 110, "period": period}}

    # Past the threshold already: more usage this month fires nothing again.
    await usage(http, org, user, 500)
    await usage(http, org, user, 1)
    assert await events_of(triggered, ledger_pool, ref) == []
    # Once a month per alert: raising the threshold does not re-arm it this month.
    status, _, _ = await request(http, "PATCH", f"{ALERTS}/{alert['id']}", org.auth(),
                                 {"threshold": 1000})
    assert status == 200
    await usage(http, org, user, 400)  # 1011
    assert await events_of(triggered, ledger_pool, ref) == []
    assert await ledger_pool.fetchval(
        "select count(*) from ledger.outbox where org_id = $1", ref) == 1
    # Other currencies and other users were not touched.
    status, listed, _ = await request(http, "GET", ALERTS, org.auth(), params={"user": user})
    assert next(a for a in listed if a["id"] == euros["id"])["triggeredAt"] == ""
    status, listed, _ = await request(http, "GET", ALERTS, org.auth(),
                                      params={"user": "hanzo/other"})
    assert listed == [someone]


async def test_zap_usage_fires_alerts_too(http, org, platform, triggered, ledger_pool):
    ref = await org_id_of(platform, org)
    alert = await create(http, org.auth(), userId="hanzo/zap", threshold=30)
    async with http.post(API + "/zap", headers=org.auth(), json={
            "method": "billing.recordUsage", "id": 1,
            "params": {"user": "hanzo/zap", "amount": 30}}) as r:
        assert r.status == 200, await r.text()
    [event] = await events_of(triggered, ledger_pool, ref)
    assert event["objectId"] == alert["id"] and event["data"]["spend"] == 30


async def test_the_threshold_is_reached_exactly_and_replays_do_not_count(
        http, org, platform, triggered, ledger_pool):
    ref = await org_id_of(platform, org)
    await create(http, org.auth(), userId="hanzo/idem", threshold=100)
    for _ in range(3):  # one debit, replayed
        await usage(http, org, "hanzo/idem", 60, requestId="req-1")
    assert await events_of(triggered, ledger_pool, ref) == []
    await usage(http, org, "hanzo/idem", 40, requestId="req-2")  # exactly 100
    [event] = await events_of(triggered, ledger_pool, ref)
    assert event["data"]["spend"] == 100


async def test_an_alert_fires_again_in_a_new_month(http, org, platform, triggered,
                                                   ledger_pool):
    ref = await org_id_of(platform, org)
    await create(http, org.auth(), userId="hanzo/monthly", threshold=100)
    await usage(http, org, "hanzo/monthly", 150)
    assert len(await events_of(triggered, ledger_pool, ref)) == 1
    # Make that spend and that firing last month's.
    for table, column in (("monthly_spend", "period"), ("spend_alerts", "triggered_period")):
        await ledger_pool.execute(
            f"update ledger.{table} set {column} = ({column} - interval '1 month')::date"
            " where org_id = $1", ref)
    await usage(http, org, "hanzo/monthly", 99)
    assert await events_of(triggered, ledger_pool, ref) == []
    await usage(http, org, "hanzo/monthly", 1)
    [event] = await events_of(triggered, ledger_pool, ref)
    assert event["data"]["spend"] == 100


async def test_an_alert_created_past_its_threshold_waits_for_the_next_crossing(
        http, org, platform, triggered, ledger_pool):
    ref = await org_id_of(platform, org)
    await usage(http, org, "hanzo/late", 500)
    await create(http, org.auth(), userId="hanzo/late", threshold=100)
    await usage(http, org, "hanzo/late", 10)
    assert await events_of(triggered, ledger_pool, ref) == []


async def test_usage_in_the_other_mode_does_not_count(http, org, platform, triggered,
                                                      ledger_pool):
    ref = await org_id_of(platform, org)
    await create(http, org.auth("sk_test"), userId="hanzo/modes", threshold=100)
    await usage(http, org, "hanzo/modes", 500, key="sk_live")
    assert await events_of(triggered, ledger_pool, ref) == []
    await usage(http, org, "hanzo/modes", 100, key="sk_test")
    [event] = await events_of(triggered, ledger_pool, ref)
    assert event["livemode"] is False and event["data"]["spend"] == 100


async def test_concurrent_debits_fire_each_alert_exactly_once(http, org, platform, triggered,
                                                              ledger_pool):
    ref = await org_id_of(platform, org)
    alerts = [await create(http, org.auth(), userId="hanzo/burst", threshold=t)
              for t in (100, 250, 499)]
    await asyncio.gather(*[usage(http, org, "hanzo/burst", 10) for _ in range(50)])
    got = await events_of(triggered, ledger_pool, ref)
    assert sorted(e["objectId"] for e in got) == sorted(a["id"] for a in alerts)
    for e in got:  # each fired on the debit that crossed it
        assert e["data"]["threshold"] <= e["data"]["spend"] < e["data"]["threshold"] + 10
    assert await ledger_pool.fetchval(
        "select amount from ledger.monthly_spend where org_id = $1", ref) == 500


async def test_a_batch_of_debits_fires_on_the_debit_that_crosses(http, org, platform,
                                                                 triggered, ledger_pool):
    """Usage debits written together (one transaction) are counted in one round trip; each
    alert fires on the debit that crossed it, with the spend right after that debit."""
    ref = await org_id_of(platform, org)
    low = await create(http, org.auth(), userId="hanzo/a", threshold=25)
    high = await create(http, org.auth(), userId="hanzo/a", threshold=40)
    other = await create(http, org.auth(), userId="hanzo/b", threshold=5)
    scope = support.scope(ref, org_name=org.name, request_id="r",
                          actor=Actor(kind="api_key", role="admin"))

    def debit(user, amount):
        return scope, domain.Movement(type="withdraw", user_id=user, debit="user:" + user,
                                      credit=domain.USAGE_REVENUE, currency="usd",
                                      amount=amount)

    async with ledger_pool.acquire() as conn, conn.transaction():
        await alert_handlers.on_usage_batch(conn, [
            debit("hanzo/a", 10), debit("hanzo/b", 5), debit("hanzo/a", 20),
            debit("hanzo/a", 30), debit("hanzo/a", 1)])
    got = {e["objectId"]: e["data"]["spend"] for e in await events_of(triggered, ledger_pool,
                                                                      ref)}
    assert got == {low["id"]: 30, high["id"]: 60, other["id"]: 5}


@pytest.mark.parametrize(("amounts", "spend_after", "expected"), [
    ([10], 10, []),  # 0 → 10: below
    ([10], 100, [(0, "a", 100)]),  # 90 → 100: reaches it exactly
    ([5], 105, []),  # 100 → 105: already past
    ([50, 50, 50], 150, [(1, "a", 100)]),  # fires on the second debit only
    ([200], 200, [(0, "a", 200), (0, "b", 200)]),  # one debit crossing two alerts
])
def test_crossings(amounts, spend_after, expected):
    assert crossings(amounts, spend_after, [("a", 100), ("b", 200)]) == expected
