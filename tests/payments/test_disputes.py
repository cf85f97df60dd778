"""Disputes (payments.md §2.5, §4.5, §9 68–72): the lifecycle and the ledger moves without
I/O, then disputes raised by Stripe webhooks through the gateway — the disputed amount
taken from the customer once, given back once when won, kept out when lost — and the admin
endpoints: list, get, evidence (sent to Stripe), close (accepted at Stripe), bad input."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from contracts.disputes import STATUSES, DisputeEvidenceParams, Evidence
from services.payments.disputes import domain
from tests.payments.test_webhooks_in import (
    deliver,
    fake_providers,
    stripe_event,
    stripe_header,
    stripe_org,
)
from tests.support import (
    add_payment_method,
    events_of,
    eventually,
    get,
    journal_entries,
    new_user,
    org_id_of,
    post,
    refused,
    request,
)

# ---- the rules, without I/O ---------------------------------------------------------------


@pytest.mark.parametrize(("state", "status", "moves", "after"), [
    ("", "needs_response", [""], "held"),
    ("", "warning_needs_response", [], ""),  # an inquiry takes nothing
    ("", "won", ["", "won"], "returned"),  # first seen when already decided
    ("held", "under_review", [], "held"),
    ("held", "won", ["won"], "returned"),
    ("held", "lost", ["lost"], "kept"),
    ("held", "warning_closed", ["won"], "returned"),
    ("returned", "won", [], "returned"),
    ("kept", "lost", [], "kept"),
])
def test_ledger_moves(state, status, moves, after):
    assert domain.ledger_moves(state, status) == (moves, after)


def test_the_lifecycle():  # §9 70, 71
    assert len(set(STATUSES)) == 7
    assert domain.submitted("needs_response") == "under_review"
    assert domain.submitted("warning_needs_response") == "warning_under_review"
    assert refused(domain.submitted, "won") == (
        400, "cannot submit evidence for dispute in status won")
    assert domain.closed("under_review") == "lost"
    assert domain.closed("warning_needs_response") == "warning_closed"
    assert refused(domain.closed, "lost") == (400, "cannot close dispute in status lost")


def test_evidence_is_merged():
    stored = Evidence(customerName="Ann", serviceDate="2026-01-01")
    merged = domain.merged_evidence(stored, DisputeEvidenceParams(
        productDescription=" API credits ", serviceDate="2026-02-02"))
    assert merged == Evidence(customerName="Ann", productDescription="API credits",
                              serviceDate="2026-02-02")
    assert domain.for_provider(merged) == {"customer_name": "Ann",
                                           "product_description": "API credits",
                                           "service_date": "2026-02-02"}
    assert refused(domain.merged_evidence, stored, DisputeEvidenceParams())[0] == 400


# ---- through the gateway ------------------------------------------------------------------


@pytest.fixture(scope="module")
async def stripe_api(platform, settings):
    async with fake_providers(platform, settings) as (fake, _):
        yield fake



async def paid_by_stripe(http, org, amount: int = 5000) -> dict:
    user = new_user()
    method = await add_payment_method(http, org, user, "pm_card_visa")
    status, created, _ = await post(http, "/payment-intents", {
        "customerId": user, "amount": amount, "paymentMethodId": method["id"]}, org.auth())
    assert status == 201, created
    status, paid, _ = await post(http, f"/payment-intents/{created['id']}/confirm", {},
                                 org.auth())
    assert paid["status"] == "succeeded", paid
    return paid


async def dispute_event(http, org, type: str, paid: dict, ref: str, status: str,
                        amount: int = 5000) -> None:
    body = stripe_event(type, {
        "id": ref, "object": "dispute", "amount": amount, "currency": "usd",
        "reason": "fraudulent", "status": status, "payment_intent": paid["providerRef"],
        "evidence_details": {"due_by": 1893456000}})
    status_, reply, _ = await deliver(http, org, body, stripe_header(body))
    assert status_ == 200, reply


async def disputes_of(http, org, key="sk_test", **query) -> list:
    status, body, _ = await get(http, "/disputes", org.auth(key), **query)
    assert status == 200, body
    return body


async def entries(platform, nc, org, dispute_id: str, count: int) -> list:
    found = await eventually(lambda: journal_entries(platform, nc, org, disputeId=dispute_id),
                             lambda e: len(e) >= count)
    return sorted(e["idempotencyKey"] for e in found)


async def test_a_fresh_organization_has_no_disputes(http, make_org, stripe_api):  # §9 68
    org = await make_org()
    assert await disputes_of(http, org) == []
    status, body, _ = await get(http, "/disputes/dp_nope", org.auth())
    assert (status, body["error"]["message"]) == (404, "dispute not found")


async def test_a_dispute_opened_answered_and_won(http, make_org, platform, nc, pool,
                                                 stripe_api):
    org = await stripe_org(http, make_org)
    paid = await paid_by_stripe(http, org)
    ref = f"dp_{secrets.token_hex(6)}"
    # §9 72: created from the webhook, linked to the intent; redelivered and updated once.
    await dispute_event(http, org, "charge.dispute.created", paid, ref, "needs_response")
    await dispute_event(http, org, "charge.dispute.created", paid, ref, "needs_response")
    await dispute_event(http, org, "charge.dispute.funds_withdrawn", paid, ref,
                        "needs_response")
    [dispute] = await disputes_of(http, org, paymentIntentId=paid["id"])
    assert {k: dispute[k] for k in ("paymentIntentId", "amount", "currency", "status",
                                    "reason", "providerRef", "evidenceDueBy")} == {
        "paymentIntentId": paid["id"], "amount": 5000, "currency": "usd",
        "status": "needs_response", "reason": "fraudulent", "providerRef": ref,
        "evidenceDueBy": "2030-01-01T00:00:00Z"}
    assert dispute["created"] and dispute["id"].startswith("dp_")
    assert await entries(platform, nc, org, dispute["id"], 1) == [f"dispute:{dispute['id']}"]

    # §9 69: evidence, merged and sent to Stripe; the dispute is under review.
    seen = len(stripe_api.requests)
    status, answered, _ = await request(http, "PATCH", f"/api/v1/billing/disputes/"
                                        f"{dispute['id']}", org.auth(), {
                                            "customerName": "Ann",
                                            "productDescription": "API credits"})
    assert (status, answered["status"], answered["evidence"]) == (
        200, "under_review", {"customerName": "Ann", "productDescription": "API credits"})
    [call] = stripe_api.requests[seen:]
    assert (call.path, call.form["evidence[customer_name]"], call.form["submit"]) == (
        f"/v1/disputes/{ref}", "Ann", "true")

    await dispute_event(http, org, "charge.dispute.closed", paid, ref, "won")
    status, won, _ = await get(http, f"/disputes/{dispute['id']}", org.auth())
    assert won["status"] == "won"
    await dispute_event(http, org, "charge.dispute.closed", paid, ref, "won")
    assert await entries(platform, nc, org, dispute["id"], 2) == [
        f"dispute-won:{dispute['id']}", f"dispute:{dispute['id']}"]
    await asyncio.sleep(0.2)  # a second posting, had one been owed, would be there by now
    assert len(await journal_entries(platform, nc, org, disputeId=dispute["id"])) == 2
    assert await events_of(pool, dispute["id"]) == [
        "dispute.created", "dispute.updated", "dispute.closed"]
    # §9 70 DO: a won dispute takes no evidence and cannot be closed.
    status, body, _ = await request(http, "PATCH", f"/api/v1/billing/disputes/{dispute['id']}",
                                    org.auth(), {"customerName": "Bob"})
    assert (status, body["error"]["message"]) == (
        400, "cannot submit evidence for dispute in status won")
    status, body, _ = await post(http, f"/disputes/{dispute['id']}/close", None, org.auth())
    assert (status, body["error"]["message"]) == (400, "cannot close dispute in status won")


async def test_closing_accepts_the_dispute_and_keeps_the_amount_out(http, make_org, platform,
                                                                    nc, stripe_api):
    org = await stripe_org(http, make_org)
    paid = await paid_by_stripe(http, org, 3000)
    ref = f"dp_{secrets.token_hex(6)}"
    await dispute_event(http, org, "charge.dispute.created", paid, ref, "needs_response",
                        3000)
    [dispute] = await disputes_of(http, org, paymentIntentId=paid["id"])
    seen = len(stripe_api.requests)
    headers = {**org.auth(), "Idempotency-Key": "close-1"}
    status, closed, _ = await post(http, f"/disputes/{dispute['id']}/close", None, headers)
    assert (status, closed["status"]) == (200, "lost")  # §9 70
    status, again, replay = await post(http, f"/disputes/{dispute['id']}/close", None, headers)
    assert (status, again, replay.get("Idempotent-Replayed")) == (200, closed, "true")
    assert [c.path for c in stripe_api.requests[seen:]] == [f"/v1/disputes/{ref}/close"]
    await dispute_event(http, org, "charge.dispute.closed", paid, ref, "lost", 3000)
    assert await entries(platform, nc, org, dispute["id"], 2) == [
        f"dispute-lost:{dispute['id']}", f"dispute:{dispute['id']}"]


async def test_bad_input_is_refused_and_changes_nothing(http, make_org, platform, stripe_api):
    org = await stripe_org(http, make_org)
    paid = await paid_by_stripe(http, org)
    await dispute_event(http, org, "charge.dispute.created", paid,
                        f"dp_{secrets.token_hex(6)}", "needs_response")
    [dispute] = await disputes_of(http, org)
    path = f"/api/v1/billing/disputes/{dispute['id']}"
    for body, message in (({"customerName": 5}, "invalid request body"),
                          ({"customerName": "x" * 5000}, "customerName: at most"),
                          ({}, "no evidence given")):
        status, reply, _ = await request(http, "PATCH", path, org.auth(), body)
        assert status == 400 and reply["error"]["message"].startswith(message), reply
    status, reply, _ = await request(http, "PATCH", path, org.auth(), raw=b"{not json")
    assert (status, reply["error"]["message"]) == (400, "invalid request body")
    status, unchanged, _ = await get(http, f"/disputes/{dispute['id']}", org.auth())
    assert unchanged == dispute
    # Another organization, and the live mode, do not see it.
    other = await make_org()
    for auth in (other.auth(), org.auth("sk_live")):
        status, reply, _ = await get(http, f"/disputes/{dispute['id']}", auth)
        assert (status, reply["error"]["message"]) == (404, "dispute not found")
        status, _, _ = await post(http, f"/disputes/{dispute['id']}/close", None, auth)
        assert status == 404
    assert await disputes_of(http, org, "sk_live") == []
    # End users have no access to disputes (admin).
    status, _, _ = await get(http, "/disputes", org.auth("pk_test"))
    assert status == 403


async def test_a_dispute_of_another_organizations_payment_is_not_ours(http, make_org, platform,
                                                                      pool, stripe_api):
    mine = await stripe_org(http, make_org)
    paid = await paid_by_stripe(http, mine)
    other = await stripe_org(http, make_org, "whsec_other_org")
    body = stripe_event("charge.dispute.created", {
        "id": "dp_x", "amount": 5000, "currency": "usd", "status": "needs_response",
        "payment_intent": paid["providerRef"]})
    status, _, _ = await deliver(http, other, body, stripe_header(body, "whsec_other_org"))
    assert status == 200
    assert await disputes_of(http, other) == [] and await disputes_of(http, mine) == []
    reason = await pool.fetchval(
        "select reason from payments.webhook_events_in where org_id = $1",
        await org_id_of(platform, other))
    assert reason == f"no payment intent for stripe payment {paid['providerRef']}"
