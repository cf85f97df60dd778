"""Provider subscription events (subscriptions.md §2.7 OURS; payments.md §5.4): what Stripe
and Square say of the subscriptions they back, read into ours (pure), then signed Stripe
webhooks through `POST /billing/webhooks/stripe/{org}` that payments publishes as
`provider.<type>` and the subscriptions service applies — once per event, to the
organization's and mode's subscription only — and the bus endpoint
`billing.subscriptions.provider_event.apply`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from contracts.provider_events import PROVIDER_EVENT_APPLY, ProviderEventParams
from services.subscriptions.reconcile import domain
from tests.payments.test_webhooks_in import (
    deliver,
    fake_providers,
    stripe_event,
    stripe_header,
    stripe_org,
)
from tests.support import Bus, eventually, get, new_user, org_id_of, post, refused

NOW = datetime(2026, 3, 1, tzinfo=UTC)
START, END = 1_772_323_200, 1_775_001_600  # 2026-03-01, 2026-04-01 (UTC)


def _event(type: str, obj: dict, provider: str = "stripe") -> ProviderEventParams:
    return ProviderEventParams(provider=provider, providerEventId="evt_1", type=type,
                               object=obj)


def _row(**columns) -> dict:
    row = dict.fromkeys(("period_start", "period_end", "cancel_at_period_end", "canceled_at",
                         "ended_at", "trial_start", "trial_end"))
    return {**row, "status": "active", "canceled": False, **columns}


# ---- the rules, without I/O ---------------------------------------------------------------


def test_a_stripe_subscription_update_gives_status_periods_and_cancel():
    said = domain.news(_event("subscription.updated", {
        "id": "sub_1", "status": "past_due", "current_period_start": START,
        "current_period_end": END, "cancel_at_period_end": True}), NOW)
    assert (said.provider_id, said.status, said.cancel_at_period_end) == (
        "sub_1", "past_due", True)
    assert (said.period_start, said.period_end) == (
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert domain.changes(_row(), said) == {
        "status": "past_due", "period_start": said.period_start,
        "period_end": said.period_end, "cancel_at_period_end": True}
    assert domain.event_of("active", "past_due") == "past_due"


def test_unknown_statuses_are_ignored_and_deletion_ends_the_subscription():
    said = domain.news(_event("subscription.updated", {"id": "sub_1", "status": "exploded"}),
                       NOW)
    assert said.status is None and domain.changes(_row(), said) == {}
    gone = domain.news(_event("subscription.canceled", {"id": "sub_1", "status": "canceled"}),
                       NOW)
    assert domain.changes(_row(), gone) == {
        "status": "canceled", "canceled": True, "canceled_at": NOW, "ended_at": NOW}
    assert domain.event_of("active", "canceled") == "canceled"


def test_square_states_in_our_words():
    for square, ours in (("ACTIVE", "active"), ("CANCELED", "canceled"),
                         ("DEACTIVATED", "canceled"), ("PENDING", "trialing"),
                         ("PAUSED", "paused")):
        said = domain.news(_event("subscription.updated", {
            "id": "sq_1", "status": square, "charged_through_date": "2026-04-01"}, "square"),
            NOW)
        assert (said.status, said.period_end) == (ours, datetime(2026, 4, 1, tzinfo=UTC))


def test_invoices_name_their_subscription_and_move_its_status():
    for obj in ({"id": "in_1", "subscription": "sub_1"},
                {"id": "in_1", "subscription": {"id": "sub_1"}},
                {"id": "in_1", "parent": {"subscription_details": {"subscription": "sub_1"}}},
                {"id": "inv_1", "subscription_id": "sub_1"}):
        assert domain.news(_event("invoice.paid", obj), NOW).provider_id == "sub_1"
    assert domain.news(_event("invoice.paid", {"id": "in_2"}), NOW) is None
    paid = domain.news(_event("invoice.paid", {"subscription": "sub_1"}), NOW)
    failed = domain.news(_event("invoice.payment_failed", {"subscription": "sub_1"}), NOW)
    assert domain.changes(_row(status="past_due"), paid) == {"status": "active"}
    assert domain.changes(_row(status="canceled"), paid) == {}
    assert domain.changes(_row(), failed) == {"status": "past_due"}
    assert domain.news(_event("payment.completed", {"id": "pi_1"}), NOW) is None


def test_a_request_names_a_provider_and_an_event():
    assert refused(domain.processor, _event("subscription.updated", {}, "paypal")) == (
        400, "provider must be stripe or square")
    bad = ProviderEventParams(provider="stripe", type="subscription.updated")
    assert refused(domain.processor, bad) == (400, "providerEventId is required")


# ---- through the gateway and the bus ------------------------------------------------------


@pytest.fixture(scope="module")
async def providers(platform, settings):
    async with fake_providers(platform, settings) as fakes:
        yield fakes


async def _backed_subscription(http, org, pool, provider_id: str, plan: str = "pro") -> dict:
    """A subscription of ours that Stripe backs (as the provider's checkout would link it)."""
    status, sub, _ = await post(http, "/subscriptions", {"userId": new_user(), "planId": plan},
                                org.auth())
    assert status == 201, sub
    await pool.execute("update subscriptions.subscriptions set provider_type = 'stripe',"
                       " provider_id = $2 where id = $1", sub["id"], provider_id)
    return sub


async def _subscription(http, org, sub_id: str, done) -> dict:
    _, sub, _ = await eventually(lambda: get(http, f"/subscriptions/{sub_id}", org.auth()),
                                 lambda r: done(r[1]), timeout=10)
    return sub


async def _events(pool, sub_id: str) -> list[str]:
    return [r["type"] for r in await pool.fetch(
        "select type from subscriptions.outbox"
        " where convert_from(payload, 'utf8')::jsonb->>'objectId' = $1 order by seq", sub_id)]


async def test_a_signed_stripe_webhook_reconciles_the_subscription_once(
        http, make_org, pool, providers):
    org = await stripe_org(http, make_org)
    sub = await _backed_subscription(http, org, pool, "sub_stripe_1")
    body = stripe_event("customer.subscription.updated", {
        "id": "sub_stripe_1", "object": "subscription", "status": "past_due",
        "current_period_start": START, "current_period_end": END})
    for _ in range(2):  # Stripe delivers again: applied once
        status, _, _ = await deliver(http, org, body, stripe_header(body))
        assert status == 200
    seen = await _subscription(http, org, sub["id"], lambda s: s["status"] == "past_due")
    assert (seen["status"], seen["currentPeriodStart"], seen["currentPeriodEnd"]) == (
        "past_due", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
    event_id = json.loads(body)["id"]
    assert await pool.fetchval("select count(*) from subscriptions.provider_events"
                               " where event_id = $1", event_id) == 1
    assert (await _events(pool, sub["id"]))[-1:] == ["subscription.past_due"]

    # Stripe's invoice paid revives it; the deletion ends it, for good (§7 B12).
    paid = stripe_event("invoice.paid", {"id": "in_1", "object": "invoice",
                                         "subscription": "sub_stripe_1", "status": "paid"})
    await deliver(http, org, paid, stripe_header(paid))
    await _subscription(http, org, sub["id"], lambda s: s["status"] == "active")
    deleted = stripe_event("customer.subscription.deleted", {
        "id": "sub_stripe_1", "status": "canceled", "ended_at": int(time.time())})
    await deliver(http, org, deleted, stripe_header(deleted))
    ended = await _subscription(http, org, sub["id"], lambda s: s["status"] == "canceled")
    assert "endedAt" in ended and "canceledAt" in ended
    status, body, _ = await post(http, f"/subscriptions/{sub['id']}/reactivate", None,
                                 org.auth())
    assert (status, body["error"]["message"]) == (
        400, "cannot reactivate a fully ended subscription")
    assert await _events(pool, sub["id"]) == [
        "subscription.created", "subscription.past_due", "subscription.updated",
        "subscription.canceled"]


async def test_another_orgs_subscription_of_the_same_provider_id_is_left_alone(
        http, make_org, pool, providers):
    ours, theirs = await stripe_org(http, make_org), await stripe_org(http, make_org)
    left_alone = await _backed_subscription(http, theirs, pool, "sub_shared")
    changed = await _backed_subscription(http, ours, pool, "sub_shared")
    body = stripe_event("customer.subscription.updated", {"id": "sub_shared",
                                                          "status": "unpaid"})
    await deliver(http, ours, body, stripe_header(body))
    await _subscription(http, ours, changed["id"], lambda s: s["status"] == "unpaid")
    _, theirs_now, _ = await get(http, f"/subscriptions/{left_alone['id']}", theirs.auth())
    assert theirs_now["status"] == "active"


async def test_the_bus_endpoint_applies_once_and_acknowledges_the_unknown(
        http, org, nc, platform, pool):
    bus = Bus(nc, await org_id_of(platform, org))
    sub = await _backed_subscription(http, org, pool, "sub_bus_1", plan="team")
    event = {"provider": "stripe", "providerEventId": "evt_bus_1",
             "type": "subscription.updated",
             "object": {"id": "sub_bus_1", "status": "active", "cancel_at_period_end": True}}
    assert await bus.ok(PROVIDER_EVENT_APPLY.subject, event) == {
        "applied": True, "subscriptionId": sub["id"]}
    assert await bus.ok(PROVIDER_EVENT_APPLY.subject, event) == {
        "applied": False, "subscriptionId": sub["id"], "duplicate": True}
    _, seen, _ = await get(http, f"/subscriptions/{sub['id']}", org.auth())
    assert seen["cancelAtPeriodEnd"] is True
    unknown = {**event, "providerEventId": "evt_bus_2", "object": {"id": "sub_nobody"}}
    assert await bus.ok(PROVIDER_EVENT_APPLY.subject, unknown) == {"applied": False}
    assert await bus.error(PROVIDER_EVENT_APPLY.subject, {**event, "provider": "paypal"}) == (
        400, "provider must be stripe or square")
