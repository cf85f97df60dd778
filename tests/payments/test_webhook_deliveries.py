"""Outbound webhook deliveries (payments.md §6.4, §6.5, §9 92, 93, 96, 98) to a real local
receiver: signed, at least once with a stable event id, in order per endpoint, retried on
the schedule (the sender's clock is moved forward instead of waiting), disabled after three
days, stopped by deletion or disabling; filters, organizations and modes honoured. First
the signature and the schedule without I/O."""

from __future__ import annotations

import ipaddress
import socket
from datetime import UTC, datetime, timedelta

import pytest

from contracts.ids import now
from contracts.webhooks import SignatureError, sign, signature, verify
from services.payments.webhook_deliveries import domain
from services.payments.webhook_deliveries.sender import PublicResolver
from tests.payments.test_event_log import publish
from tests.payments.webhook_receiver import Receiver
from tests.support import eventually, get, org_id_of, post, request, service_down

SECRET = "whsec_test_secret"
KNOWN = "f52064bb4e77a37e83e6170c4546cbd5a25345b5986d579186dc14646d205366"

# ---- the signature (§6.4, §9 92, 93) ---------------------------------------------------------


def test_the_known_signature():
    assert signature(1700000000, b'{"type":"invoice.paid"}', SECRET) == KNOWN
    assert signature(1700000000, b'{"type":"invoice.paid"}', "whsec_other") != KNOWN
    assert signature(1700000001, b'{"type":"invoice.paid"}', SECRET) != KNOWN
    empty = signature(1700000000, b"", SECRET)
    assert len(empty) == 64 and set(empty) <= set("0123456789abcdef")  # hex, lower case


def test_verification():
    body = b'{"amount":1000}'
    header = sign(1700000000, body, SECRET)
    assert verify(header, body, SECRET, now=1700000100) == 1700000000
    assert verify(header.replace(",", ", "), body, SECRET, tolerance_s=0) == 1700000000
    for bad, message in (
            (f"t=1700000000,v1={'0' * 64}", "signature verification failed"),
            ("v1=abc123", "invalid signature header format"),
            ("t=1234567890", "invalid signature header format"),
            ("", "invalid signature header format"),
            ("t=soon,v1=abc", "invalid signature header format")):
        with pytest.raises(SignatureError, match=message):
            verify(bad, body, SECRET, tolerance_s=0)
    with pytest.raises(SignatureError, match="verification failed"):
        verify(sign(1700000000, body, "correct_secret"), body, "wrong_secret", tolerance_s=0)
    with pytest.raises(SignatureError, match="verification failed"):
        verify(header, b'{"amount":9999}', SECRET, tolerance_s=0)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(header, body, SECRET, now=1700000301)
    # After a rotation two v1s: either secret verifies, and only those.
    both = sign(1700000000, body, "whsec_new", SECRET)
    assert both.count("v1=") == 2
    for secret in ("whsec_new", SECRET):
        assert verify(both, body, secret, tolerance_s=0) == 1700000000
    with pytest.raises(SignatureError, match="verification failed"):
        verify(both, body, "whsec_third", tolerance_s=0)
    with pytest.raises(SignatureError, match="verification failed"):
        verify(f"t=1700000000,v1=é{KNOWN[1:]}", body, SECRET, tolerance_s=0)


# ---- the schedule (§6.5) -------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_retry_schedule():
    delays = [domain.retry_at(n, T0, T0, 0.0) - T0 for n in range(1, 9)]
    minutes = [d.total_seconds() / 60 for d in delays]
    assert minutes == [1, 5, 30, 120, 480, 1440, 1440, 1440]
    assert domain.retry_at(1, T0, T0, 1.0) - T0 == timedelta(seconds=66)  # +10 %
    assert domain.retry_at(2, T0, T0, -1.0) - T0 == timedelta(seconds=270)  # -10 %
    # The last try is three days after the first failure; then no more.
    late = T0 + timedelta(hours=60)
    assert domain.retry_at(8, T0, late, 0.0) == T0 + timedelta(days=3)
    assert domain.retry_at(9, T0, T0 + timedelta(days=3), 0.0) is None


def test_retries_span_three_days():
    at, failures = T0, 0
    while at is not None:
        last, failures = at, failures + 1
        at = domain.retry_at(failures, T0, at, 1.0)
    assert last == T0 + timedelta(days=3) and failures >= 8


def attempt(n, status, at=T0):
    return domain.Attempt(f"whd_{n}", 1, at, status, 3, domain.failure_text(status))


def test_what_a_run_settles():
    ok = domain.settle([attempt(1, 200), attempt(2, 204)], 0, T0, False, T0, 0.0)
    assert (len(ok.delivered), ok.failed, ok.failing_since, ok.next_attempt_at) == (
        2, None, None, None)
    assert domain.settle([attempt(1, 200)], 0, None, True, T0, 0.0).next_attempt_at == T0
    bad = domain.settle([attempt(1, 200), attempt(2, 503)], 2, None, True, T0, 0.0)
    assert (len(bad.delivered), bad.failed.delivery_id, bad.failures, bad.failing_since) == (
        1, "whd_2", 3, T0)
    assert bad.retry == bad.next_attempt_at == T0 + timedelta(minutes=30)
    assert not bad.disable
    end = T0 + timedelta(days=3)
    over = domain.settle([attempt(1, 500, end)], 8, T0, False, end, 0.0)
    assert (over.retry, over.disable) == (None, True)
    assert attempt(1, 302).succeeded is False and attempt(1, 299).succeeded is True


async def test_live_names_must_resolve_to_public_addresses():
    with pytest.raises(OSError, match="private address"):
        await PublicResolver().resolve("localhost", 443, socket.AF_INET)


# ---- to a real receiver --------------------------------------------------------------------


class Clock:
    """The sender's clock, moved by the test."""

    def __init__(self) -> None:
        self.at = now()

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
async def receiver():
    running = Receiver()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
def clock(payments_service):
    sender = payments_service.ctx.state.webhooks
    fake, real = Clock(), sender.clock
    sender.clock = fake
    yield fake
    sender.clock = real


async def endpoint(http, org, receiver, name, key="sk_test", **fields):
    status, made, _ = await post(http, "/webhook-endpoints",
                                 {"url": receiver.url(name), **fields}, org.auth(key))
    assert status == 201, made
    receiver.paths[name].secret = made["secret"]
    return made


async def deliveries(http, org, endpoint_id, key="sk_test", **query):
    status, body, _ = await get(http, f"/webhook-endpoints/{endpoint_id}/deliveries",
                                org.auth(key), **query)
    assert status == 200, body
    return body


async def delivery(http, org, endpoint_id, delivery_id):
    status, body, _ = await get(
        http, f"/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}", org.auth())
    assert status == 200, body
    return body


async def received(path, count, timeout=5.0):
    return await eventually(lambda: _ids(path), lambda ids: len(ids) >= count, timeout)


async def _ids(path):
    return path.ids


async def attempted(http, org, endpoint_id, count, key="sk_test"):
    """The endpoint's deliveries once its head has been attempted `count` times."""
    def done(body):
        return body and max(d["attemptCount"] for d in body) >= count
    body = await eventually(lambda: deliveries(http, org, endpoint_id, key), done)
    assert done(body), body
    return body


async def next_retry(http, org, endpoint_id, clock, payments_service, tries):
    """Move the clock to the head's next attempt and wait until it was made."""
    [head] = [d for d in await deliveries(http, org, endpoint_id)
              if d["status"] == "pending" and d["attemptCount"]]
    due = datetime.fromisoformat(head["nextAttempt"])
    clock.at = due
    payments_service.ctx.state.webhooks.wake()
    return await attempted(http, org, endpoint_id, tries)


async def test_a_receiver_failing_twice_gets_the_event_once_signed(  # §9 98
        http, org, platform, js, receiver, clock, payments_service):
    hook = await endpoint(http, org, receiver, "flaky")
    receiver.paths["flaky"].fail_next = 2
    event_id = await publish(js, await org_id_of(platform, org))
    await attempted(http, org, hook["id"], 1)
    await next_retry(http, org, hook["id"], clock, payments_service, 2)
    [d] = await next_retry(http, org, hook["id"], clock, payments_service, 3)
    assert await received(receiver.paths["flaky"], 1) == [event_id]
    got = receiver.paths["flaky"].received[0]
    assert got["type"] == "invoice.paid" and got["data"] == {"amount": 1200}
    assert got["headers"]["Commerce-Event-Type"] == "invoice.paid"
    assert got["headers"]["Commerce-Delivery-Id"] == d["id"]
    assert (d["status"], d["eventId"], d["attemptCount"]) == ("delivered", event_id, 3)
    one = await delivery(http, org, hook["id"], d["id"])
    assert [(a["attempt"], a["status"]) for a in one["attempts"]] == [(1, 500), (2, 500),
                                                                       (3, 200)]
    assert one["attempts"][0]["response"] == "not now" and one["attempts"][0]["error"]
    assert all(a["latencyMs"] >= 0 for a in one["attempts"])
    # Final after the 2xx: a day later nothing is sent again.
    clock.at += timedelta(days=1)
    payments_service.ctx.state.webhooks.wake()
    status, event, _ = await get(http, f"/events/{event_id}", org.auth())
    assert (status, event["pending"]) == (200, False)
    assert receiver.paths["flaky"].ids == [event_id]


async def test_a_receiver_down_a_while_gets_everything_in_order(
        http, org, platform, js, receiver, clock, payments_service):
    hook = await endpoint(http, org, receiver, "down")
    path = receiver.paths["down"]
    path.down = True
    org_id = await org_id_of(platform, org)
    sent = [await publish(js, org_id, object_id=f"in_{n}") for n in range(5)]
    await attempted(http, org, hook["id"], 1)
    await next_retry(http, org, hook["id"], clock, payments_service, 2)
    assert path.refused == 2  # the head only: the rest wait behind it
    status, event, _ = await get(http, f"/events/{sent[-1]}", org.auth())
    assert event["pending"] is True
    path.down = False
    await next_retry(http, org, hook["id"], clock, payments_service, 3)
    assert await received(path, 5) == sent


async def test_a_deleted_endpoint_gets_nothing_more(
        http, org, platform, js, receiver, clock, payments_service):
    hook = await endpoint(http, org, receiver, "deleted")
    receiver.paths["deleted"].down = True
    await publish(js, await org_id_of(platform, org))
    await attempted(http, org, hook["id"], 1)
    status, _, _ = await request(http, "DELETE",
                                 f"/api/v1/billing/webhook-endpoints/{hook['id']}", org.auth())
    assert status == 200
    receiver.paths["deleted"].down = False
    clock.at += timedelta(days=1)
    payments_service.ctx.state.webhooks.wake()
    await publish(js, await org_id_of(platform, org))
    assert await received(receiver.paths["deleted"], 1, timeout=1.0) == []
    [d] = (await payments_service.pool.fetch(
        "select status from payments.webhook_deliveries where endpoint_id = $1", hook["id"]))
    assert d["status"] == "canceled"


async def test_a_disabled_endpoint_gets_nothing(http, org, platform, js, receiver):  # §9 96
    hook = await endpoint(http, org, receiver, "off")
    status, _, _ = await request(http, "PATCH",
                                 f"/api/v1/billing/webhook-endpoints/{hook['id']}", org.auth(),
                                 {"status": "disabled"})
    assert status == 200
    await publish(js, await org_id_of(platform, org))
    assert await received(receiver.paths["off"], 1, timeout=1.0) == []
    assert await deliveries(http, org, hook["id"]) == []


async def test_three_days_of_failures_disable_the_endpoint(
        http, org, platform, js, receiver, clock, payments_service):
    hook = await endpoint(http, org, receiver, "dead")
    watcher = await endpoint(http, org, receiver, "watcher", events=["webhook_endpoint.disabled"])
    receiver.paths["dead"].down = True
    first = clock.at
    event_id = await publish(js, await org_id_of(platform, org))
    await attempted(http, org, hook["id"], 1)
    tries = 1
    while (await deliveries(http, org, hook["id"]))[0]["status"] == "pending":
        tries += 1
        await next_retry(http, org, hook["id"], clock, payments_service, tries)
    [d] = await deliveries(http, org, hook["id"])
    assert (d["status"], d["attemptCount"], d["eventId"]) == ("failed", tries, event_id)
    assert clock.at - first >= timedelta(days=3) and tries >= 8
    assert d["lastAttempt"]["status"] == 500
    _, one, _ = await get(http, f"/webhook-endpoints/{hook['id']}", org.auth())
    assert one["status"] == "disabled"
    logged = await eventually(
        lambda: _events(http, org, "webhook_endpoint.disabled"), lambda b: len(b) == 1)
    assert (logged[0]["objectId"], logged[0]["data"]["status"]) == (hook["id"], "disabled")
    # The organization's other endpoints are told; the disabled one is not.
    assert await received(receiver.paths["watcher"], 1) == [logged[0]["id"]]
    assert watcher["id"] != hook["id"]
    # Enabled again, a redelivery of the failed one goes through.
    receiver.paths["dead"].down = False
    await request(http, "PATCH", f"/api/v1/billing/webhook-endpoints/{hook['id']}",
                  org.auth(), {"status": "enabled"})
    status, again, _ = await post(
        http, f"/webhook-endpoints/{hook['id']}/deliveries/{d['id']}/redeliver", None,
        org.auth())
    assert (status, again["status"]) == (200, "pending"), again
    assert await received(receiver.paths["dead"], 1) == [event_id]


async def _events(http, org, type):
    _, body, _ = await get(http, "/events", org.auth(), type=type)
    return body


async def test_filters_organizations_and_modes(http, org, make_org, platform, js, receiver):
    other = await make_org()
    paid = await endpoint(http, org, receiver, "paid", events=["invoice.paid"])
    everything = await endpoint(http, org, receiver, "all")
    theirs = await endpoint(http, other, receiver, "theirs")
    ours = await org_id_of(platform, org)
    a = await publish(js, ours, "invoice.paid")
    b = await publish(js, ours, "subscription.created")
    await publish(js, ours, "invoice.paid", livemode=True)  # a live event: test endpoints skip it
    c = await publish(js, await org_id_of(platform, other), "invoice.paid")
    assert await received(receiver.paths["all"], 2) == [a, b]
    assert await received(receiver.paths["paid"], 1) == [a]
    assert await received(receiver.paths["theirs"], 1) == [c]
    assert paid["id"] != everything["id"] != theirs["id"]
    assert len(await deliveries(http, org, everything["id"])) == 2


async def test_redelivery(http, org, platform, js, receiver):
    hook = await endpoint(http, org, receiver, "again")
    event_id = await publish(js, await org_id_of(platform, org))
    assert await received(receiver.paths["again"], 1) == [event_id]
    [d] = await eventually(lambda: deliveries(http, org, hook["id"]),
                           lambda b: b and b[0]["status"] == "delivered")
    path = f"/webhook-endpoints/{hook['id']}/deliveries/{d['id']}/redeliver"
    status, again, _ = await post(http, path, None, org.auth())
    assert (status, again["id"], again["status"]) == (200, d["id"], "pending")
    assert await received(receiver.paths["again"], 2) == [event_id, event_id]
    [d] = await eventually(lambda: deliveries(http, org, hook["id"]),
                           lambda b: b[0]["status"] == "delivered")
    assert d["attemptCount"] == 2
    for bad in (f"/webhook-endpoints/{hook['id']}/deliveries/whd_none/redeliver",
                f"/webhook-endpoints/we_none/deliveries/{d['id']}/redeliver"):
        status, body, _ = await post(http, bad, None, org.auth())
        assert status == 404, body
    status, body, _ = await post(http, path, None, org.auth("sk_live"))
    assert status == 404


async def test_a_pending_delivery_is_not_redelivered(http, org, platform, js, receiver, clock):
    hook = await endpoint(http, org, receiver, "stuck")
    receiver.paths["stuck"].down = True
    await publish(js, await org_id_of(platform, org))
    [d] = await attempted(http, org, hook["id"], 1)
    status, body, _ = await post(
        http, f"/webhook-endpoints/{hook['id']}/deliveries/{d['id']}/redeliver", None,
        org.auth())
    assert (status, body["error"]["message"]) == (400, "webhook delivery is still pending")


async def test_a_rotated_secret_signs_alongside_the_new_one_for_a_day(
        http, org, platform, js, receiver, clock, payments_service):
    hook = await endpoint(http, org, receiver, "rotated")
    path = f"/webhook-endpoints/{hook['id']}/rotate-secret"
    status, rotated, _ = await post(http, path, None, org.auth())
    assert status == 200, rotated
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != hook["secret"]
    _, shown, _ = await get(http, f"/webhook-endpoints/{hook['id']}", org.auth())
    assert "secret" not in shown
    org_id = await org_id_of(platform, org)
    first = await publish(js, org_id)  # the receiver still checks the old secret
    assert await received(receiver.paths["rotated"], 1) == [first]
    header = receiver.paths["rotated"].received[0]["headers"]["Commerce-Signature"]
    assert header.count("v1=") == 2
    receiver.paths["rotated"].secret = rotated["secret"]
    clock.at += timedelta(hours=25)  # the old one no longer signs
    second = await publish(js, org_id)
    assert await received(receiver.paths["rotated"], 2) == [first, second]
    header = receiver.paths["rotated"].received[1]["headers"]["Commerce-Signature"]
    assert header.count("v1=") == 1
    status, body, _ = await post(http, "/webhook-endpoints/we_none/rotate-secret", None,
                                 org.auth())
    assert (status, body["error"]["message"]) == (404, "webhook endpoint not found")


async def test_events_published_while_payments_is_down_are_delivered_after(
        http, org, platform, js, receiver):
    hook = await endpoint(http, org, receiver, "restart")
    org_id = await org_id_of(platform, org)
    async with service_down(platform, "payments"):
        sent = [await publish(js, org_id, object_id=f"in_{n}") for n in range(3)]
    assert await received(receiver.paths["restart"], 3, timeout=10.0) == sent
    settled = await eventually(lambda: deliveries(http, org, hook["id"]),
                               lambda b: {d["status"] for d in b} == {"delivered"})
    assert [d["eventId"] for d in settled] == sent[::-1]


async def test_a_live_endpoint_never_reaches_a_private_address(
        http, org, platform, js, receiver, payments_service):
    # The machine's own name passes the URL check (a name); it resolves to a private
    # address, refused when sending.
    host = socket.gethostname()
    addresses = {a[4][0] for a in socket.getaddrinfo(host, 443, socket.AF_INET)}
    if all(ipaddress.ip_address(a).is_global for a in addresses):
        pytest.skip(f"{host} resolves to public addresses only")
    url = f"https://{host}:{receiver.port}/sneaky"
    status, hook, _ = await post(http, "/webhook-endpoints", {"url": url}, org.auth("sk_live"))
    assert status == 201, hook
    await publish(js, await org_id_of(platform, org), livemode=True)
    [d] = await attempted(http, org, hook["id"], 1, key="sk_live")
    assert "private address" in d["lastAttempt"]["error"] and d["lastAttempt"]["status"] == 0
    assert receiver.paths.get("sneaky") is None
