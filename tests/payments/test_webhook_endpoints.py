"""Webhook endpoints (payments.md §2.9, §6.3, §9 94–97): create with a secret shown once and
kept sealed, list, get, update, delete; URLs, event filters and statuses checked, nothing
stored on a refusal; organizations and modes apart."""

from __future__ import annotations

import msgspec
import pytest

from contracts.webhooks import (
    EVENT_TYPES,
    URL_CHARS,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointCreateParams,
    WebhookEndpointUpdateParams,
)
from services.payments.webhook_deliveries import domain as deliveries
from services.payments.webhook_endpoints import domain
from tests.support import get, post, refused, request

HOOK = "https://hooks.example.com/billing"


async def create(http, org, body, key="sk_test"):
    return await post(http, "/webhook-endpoints", body, org.auth(key))


async def listed(http, org, key="sk_test"):
    status, body, _ = await get(http, "/webhook-endpoints", org.auth(key))
    assert status == 200, body
    return body


# ---- the rules, without I/O ---------------------------------------------------------------


@pytest.mark.parametrize(("events", "type", "expected"), [  # §9 94
    ([], "invoice.paid", True), (None, "payment_intent.succeeded", True),
    (["invoice.paid", "payment_intent.succeeded"], "invoice.paid", True),
    (["invoice.paid", "payment_intent.succeeded"], "payment_intent.succeeded", True),
    (["invoice.paid", "payment_intent.succeeded"], "subscription.created", False),
    (["invoice.paid"], "payment_intent.succeeded", False), (["invoice.paid"], "", False),
    (["*"], "anything.at_all", True), (["invoice.paid", "*"], "subscription.created", True),
])
def test_the_event_filter(events, type, expected):
    assert domain.matches(events, type) is expected


@pytest.mark.parametrize(("url", "livemode", "message"), [
    ("", False, "url is required"), ("   ", True, "url is required"),
    ("hooks.example.com/x", False, "url must be an absolute https URL"),
    ("ftp://hooks.example.com", False, "url must be an absolute https URL"),
    ("http://hooks.example.com", True, "url must be an absolute https URL"),
    ("https://", False, "url must be an absolute https URL"),
    ("https://hooks.example.com:port/x", False, "url must be an absolute https URL"),
    ("https://hooks.example.com/a b", False, "url must be an absolute https URL"),
    ("https://127.0.0.1/x", True, "url must be a public address in live mode"),
    ("https://10.1.2.3/x", True, "url must be a public address in live mode"),
    ("https://169.254.169.254/latest", True, "url must be a public address in live mode"),
    ("https://[::1]/x", True, "url must be a public address in live mode"),
    ("https://localhost/x", True, "url must be a public address in live mode"),
])
def test_urls_refused(url, livemode, message):
    assert refused(domain.url, url, livemode) == (400, message)


@pytest.mark.parametrize(("url", "livemode"), [
    (HOOK, True), (" https://hooks.example.com ", True), ("http://127.0.0.1:8080/x", False),
    ("https://localhost/x", False),
])
def test_urls_accepted(url, livemode):
    assert domain.url(url, livemode) == url.strip()


def test_event_types_are_known_ones():
    assert domain.event_types([" invoice.paid", "*", "invoice.paid"]) == ["invoice.paid", "*"]
    assert refused(domain.event_types, ["invoice.paid", "invoice.pad"]) == (
        400, "unknown event type invoice.pad")


def test_an_update_sets_what_it_names():
    assert domain.change(WebhookEndpointUpdateParams(description=""), False) == domain.Change(
        None, None, None, "")
    assert domain.change(WebhookEndpointUpdateParams(events=[], status="disabled"), True) == (
        domain.Change(None, [], "disabled", None))
    assert refused(domain.change, WebhookEndpointUpdateParams(status="paused"), False) == (
        400, "status must be enabled or disabled")


def test_a_new_secret():
    secret = domain.new_secret()
    assert secret.startswith("whsec_") and len(secret) == 70
    assert set(secret[6:]) <= set("0123456789abcdef")  # hex, lower case
    assert domain.created(WebhookEndpointCreateParams(url=HOOK), True) == (HOOK, [], "")


def test_a_full_page_at_every_limit_fits_in_one_bus_message():
    """The costliest characters: 4 UTF-8 bytes in a URL (no control characters pass its
    check), 6 for a control character in a description or an answer's excerpt."""
    w, ts = "\x01", "2026-12-06T21:00:00.123456Z"
    row = WebhookEndpoint(id="we_" + "x" * 22, url="https://h/" + "\U0001F600" * URL_CHARS,
                          status="disabled", events=sorted(EVENT_TYPES) + ["*"],
                          description=w * 1000, created=ts, livemode=True)
    last = WebhookAttempt(attempt=2**31 - 1, at=ts, latencyMs=2**31 - 1, status=599,
                          error=w * deliveries.RESPONSE_CHARS,
                          response=w * deliveries.RESPONSE_CHARS)
    delivery = WebhookDelivery(id="whd_" + "x" * 22, endpointId="we_" + "x" * 22,
                               eventId=w * 255, eventType=w * 255, status="canceled",
                               attemptCount=2**31 - 1, created=ts, livemode=True,
                               nextAttempt=ts, deliveredAt=ts, lastAttempt=last)
    for page, item in ((domain.PAGE, row), (deliveries.PAGE, delivery)):
        reply = msgspec.json.encode({"result": [item] * page.maximum, "status": 200})
        assert len(reply) < 0.9 * 1024 * 1024


# ---- through the gateway ------------------------------------------------------------------


async def test_create_list_get_update_delete(http, org, payments_service):  # §9 95–97
    status, made, _ = await create(http, org, {"url": HOOK, "description": "ours"})
    assert status == 201, made
    assert made["secret"].startswith("whsec_") and len(made["secret"]) == 70
    assert made | {"secret": None} == {
        "id": made["id"], "url": HOOK, "status": "enabled", "events": [],
        "description": "ours", "created": made["created"], "livemode": False, "secret": None}
    assert made["id"].startswith("we_")
    shown = {k: v for k, v in made.items() if k != "secret"}
    assert await listed(http, org) == [shown]
    status, one, _ = await get(http, f"/webhook-endpoints/{made['id']}", org.auth())
    assert (status, one) == (200, shown)
    # Sealed at rest: the secret is nowhere in the row.
    row = await payments_service.pool.fetchrow(
        "select secret, secret_key_id from payments.webhook_endpoints where id = $1", made["id"])
    assert made["secret"].encode() not in row["secret"] and row["secret_key_id"]

    status, changed, _ = await request(http, "PATCH", f"/api/v1/billing/webhook-endpoints/"
                                       f"{made['id']}", org.auth(), {
                                           "events": ["invoice.paid"], "description": "",
                                           "status": "disabled"})
    assert status == 200, changed
    assert (changed["events"], changed["description"], changed["status"], changed["url"]) == (
        ["invoice.paid"], "", "disabled", HOOK)
    assert "secret" not in changed

    status, gone, _ = await request(http, "DELETE",
                                    f"/api/v1/billing/webhook-endpoints/{made['id']}", org.auth())
    assert (status, gone) == (200, {"deleted": True, "id": made["id"]})
    status, body, _ = await get(http, f"/webhook-endpoints/{made['id']}", org.auth())
    assert (status, body["error"]["message"]) == (404, "webhook endpoint not found")
    assert await listed(http, org) == []
    status, body, _ = await request(http, "DELETE",
                                    f"/api/v1/billing/webhook-endpoints/{made['id']}", org.auth())
    assert status == 404


@pytest.mark.parametrize(("body", "message"), [
    ({}, "url is required"),
    ({"url": "ftp://x.example.com"}, "url must be an absolute https URL"),
    ({"url": HOOK, "events": ["nope.never"]}, "unknown event type nope.never"),
    ({"url": HOOK, "events": "invoice.paid"}, "invalid request body"),
    ({"url": HOOK, "description": "x" * 1001}, "description: at most 1000 characters"),
    ({"url": "https://h.example.com/" + "x" * 2048}, "url: at most 2048 characters"),
])
async def test_bad_creates_store_nothing(http, org, body, message):
    status, reply, _ = await create(http, org, body)
    assert (status, reply["error"]["message"]) == (400, message)
    assert await listed(http, org) == []


async def test_live_endpoints_must_be_public_https(http, org):
    for url, message in (("http://hooks.example.com", "url must be an absolute https URL"),
                         ("https://127.0.0.1:9/x", "url must be a public address in live mode")):
        status, reply, _ = await create(http, org, {"url": url}, key="sk_live")
        assert (status, reply["error"]["message"]) == (400, message)
    status, made, _ = await create(http, org, {"url": HOOK}, key="sk_live")
    assert (status, made["livemode"]) == (201, True)


@pytest.mark.parametrize(("body", "message"), [
    ({"status": "paused"}, "status must be enabled or disabled"),
    ({"url": "nope"}, "url must be an absolute https URL"),
    ({"events": ["invoice.pad"]}, "unknown event type invoice.pad"),
    ({"events": None}, "invalid request body"),
])
async def test_bad_updates_change_nothing(http, org, body, message):
    _, made, _ = await create(http, org, {"url": HOOK, "events": ["invoice.paid"]})
    path = f"/api/v1/billing/webhook-endpoints/{made['id']}"
    status, reply, _ = await request(http, "PATCH", path, org.auth(), body)
    assert (status, reply["error"]["message"]) == (400, message)
    if message != "invalid request body":  # a body that does not decode is refused first
        status, reply, _ = await request(http, "PATCH",
                                         "/api/v1/billing/webhook-endpoints/we_no",
                                         org.auth(), body)
        assert (status, reply["error"]["message"]) == (404, "webhook endpoint not found")
    _, one, _ = await get(http, f"/webhook-endpoints/{made['id']}", org.auth())
    assert (one["url"], one["events"], one["status"]) == (HOOK, ["invoice.paid"], "enabled")


async def test_organizations_and_modes_are_apart(http, org, make_org):
    other = await make_org()
    _, made, _ = await create(http, org, {"url": HOOK})
    for who, key in ((other, "sk_test"), (org, "sk_live")):
        assert await listed(http, who, key) == []
        path = f"/webhook-endpoints/{made['id']}"
        status, _, _ = await get(http, path, who.auth(key))
        assert status == 404
        status, _, _ = await request(http, "PATCH", "/api/v1/billing" + path, who.auth(key),
                                     {"status": "disabled"})
        assert status == 404
        status, _, _ = await request(http, "DELETE", "/api/v1/billing" + path, who.auth(key))
        assert status == 404
    _, one, _ = await get(http, f"/webhook-endpoints/{made['id']}", org.auth())
    assert one["status"] == "enabled"


async def test_endpoints_are_for_admins(http, org):
    status, body, _ = await create(http, org, {"url": HOOK}, key="pk_test")
    assert (status, body["error"]["message"]) == (403, "Token doesn't support this scope")
