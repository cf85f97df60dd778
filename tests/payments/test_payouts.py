"""Payouts (payments.md §2.6, §4.6, §9 73–76): the model's transitions without I/O, then
through the gateway — only within the platform's available cash (the journal's
`platform:cash`), also when payouts race; the journal entry posted once, and reversed once
by a cancel or a failure; organizations and modes apart; bad input refused with nothing
stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from contracts import Actor, journal
from contracts.errors import Failure, unavailable
from contracts.journal import (
    JournalAccountGetParams,
    JournalBalanceGetParams,
)
from contracts.payouts import PAYOUT_SETTLE, PayoutCreateParams, PayoutSettleParams
from services.payments.payouts import domain, handlers
from services.payments.payouts.domain import Payout
from services.payments.postings.sender import post_due
from tests.conftest import bearer, iam_token
from tests.support import (
    Bus,
    events_of,
    eventually,
    get,
    journal_entries,
    new_user,
    org_id_of,
    paid_intent,
    post,
    refused,
)

# ---- the rules, without I/O ---------------------------------------------------------------

AT = datetime(2026, 4, 19, 10, 0, tzinfo=UTC)
OTHERS = ["in_transit", "paid", "failed", "canceled", "", "held"]


def test_pending_to_in_transit_to_paid():  # §9 76
    before = datetime.now(UTC)
    paid = domain.mark_paid(domain.mark_in_transit(Payout("pending")), datetime.now(UTC))
    assert paid.status == "paid" and before <= paid.arrival_date <= datetime.now(UTC)
    assert domain.mark_paid(Payout("pending"), AT) == Payout("paid", arrival_date=AT)


@pytest.mark.parametrize("status", OTHERS)
def test_what_only_a_pending_payout_does(status):  # §9 76
    if status != "in_transit":
        assert refused(domain.mark_in_transit, Payout(status)) == (
            400, f"can only transit pending payouts, current: {status}")
    else:
        assert refused(domain.mark_in_transit, Payout(status))[0] == 400
    assert refused(domain.cancel, Payout(status)) == (
        400, f"can only cancel pending payouts, current: {status}")
    if status != "in_transit":
        assert refused(domain.mark_paid, Payout(status), AT) == (
            400, f"can only pay pending/in-transit payouts, current: {status}")


@pytest.mark.parametrize("status", ["pending", "in_transit", "paid", "canceled", "failed"])
def test_a_payout_fails_from_anywhere(status):  # §9 76
    old = Payout(status, failure_code="old", failure_message="older")
    assert domain.mark_failed(old, "account_closed", "Bank account is closed") == Payout(
        "failed", failure_code="account_closed", failure_message="Bank account is closed")
    assert domain.mark_failed(old, "", "") == Payout("failed")


def test_what_a_request_asks():  # §9 73
    def asked(body):
        return domain.new_payout(PayoutCreateParams(**body))

    card = {"destinationId": "pm_1", "destinationType": "card"}
    assert refused(asked, {"amount": 0, **card}) == (400, "amount must be positive")
    assert refused(asked, {"amount": -5, **card}) == (400, "amount must be positive")
    assert refused(asked, {"amount": 100}) == (400, "destinationId is required")
    assert refused(asked, {"amount": 100, "destinationId": "pm_1",
                           "destinationType": "wire"}) == (
        400, "destinationType must be bank_account or card")
    assert refused(asked, {"amount": 100, "currency": "US Dollar", **card}) == (
        400, "invalid currency")
    assert asked({"amount": 100, "destinationId": " pm_1 ", "destinationType": "card",
                  "currency": "EUR"}) == domain.NewPayout(100, "eur", "card", "pm_1", "", None)


def test_funds():
    assert domain.require_funds(5000, 2000, 3000) is None
    assert refused(domain.require_funds, 5000, 2000, 3001) == (
        402, "insufficient balance: have 3000 cents, need 3001 cents")
    assert refused(domain.require_funds, -10, 0, 1) == (
        402, "insufficient balance: have 0 cents, need 1 cents")


# ---- through the gateway ------------------------------------------------------------------


async def destination(http, org, key="sk_test"):
    """A bank account of the organization's merchant to pay out to."""
    status, body, _ = await post(http, "/payment-methods", {
        "customerId": new_user(), "type": "bank_account",
        "bankAccount": {"last4": "6789", "bankName": "Chase"}}, org.auth(key))
    assert status == 201, body
    return body["id"]


async def cash(platform, nc, org, livemode=False, currency="usd"):
    """The journal's available platform cash (0 before any payment)."""
    tenant = Bus(nc, await org_id_of(platform, org), livemode)
    reply = await tenant.ask(journal.ACCOUNT_GET.subject, JournalAccountGetParams(
        name="platform:cash"))
    if "error" in reply:
        return 0
    balance = await tenant.ok(journal.BALANCE_GET.subject, JournalBalanceGetParams(
        accountId=reply["result"]["id"], currency=currency))
    return balance["availableBalance"]


async def funded(http, platform, nc, org, amount):
    """The platform's cash grown by a payment of `amount` (once the journal shows it)."""
    before = await cash(platform, nc, org)
    await paid_intent(http, org, amount)
    assert await eventually(lambda: cash(platform, nc, org),
                            lambda c: c == before + amount, timeout=10) == before + amount


async def payout(http, org, body, key="sk_test", headers=None):
    return await post(http, "/payouts", body, {**org.auth(key), **(headers or {})})


async def listed(http, org, key="sk_test", **query):
    status, body, _ = await get(http, "/payouts", org.auth(key), **query)
    assert status == 200, body
    return body


async def test_a_payout_within_the_cash(http, org, pool, platform, nc):  # §9 74
    await funded(http, platform, nc, org, 100000)
    dest = await destination(http, org)
    status, body, _ = await payout(http, org, {
        "amount": 100000, "destinationType": "bank_account", "destinationId": dest,
        "description": "Monthly payout", "metadata": {"period": "2026-04"}})
    assert status == 201, body
    assert {k: body[k] for k in ("amount", "currency", "status", "destinationType",
                                 "destinationId", "description", "metadata", "livemode")} == {
        "amount": 100000, "currency": "usd", "status": "pending",
        "destinationType": "bank_account", "destinationId": dest,
        "description": "Monthly payout", "metadata": {"period": "2026-04"}, "livemode": False}
    assert body["id"].startswith("po_") and body["created"].endswith("Z")
    assert not {"arrivalDate", "providerRef", "failureCode", "failureMessage"} & set(body)
    status, got, _ = await get(http, f"/payouts/{body['id']}", org.auth())
    assert (status, got) == (200, body)
    assert await events_of(pool, body["id"]) == ["payout.created"]
    assert await eventually(lambda: cash(platform, nc, org), lambda c: c == 0) == 0
    [entry] = await journal_entries(platform, nc, org, payoutId=body["id"])
    assert sorted(p["amount"] for p in entry["postings"]) == [-100000, 100000]
    # Nothing left to pay out.
    status, reply, _ = await payout(http, org, {"amount": 1, "destinationType": "card",
                                                "destinationId": dest})
    assert (status, reply["error"]["message"]) == (
        402, "insufficient balance: have 0 cents, need 1 cents")


async def test_a_payout_beyond_the_cash_is_refused(http, org, platform, nc):
    dest = await destination(http, org)
    body = {"amount": 500, "destinationType": "bank_account", "destinationId": dest}
    status, reply, _ = await payout(http, org, body)  # no payment yet: no cash at all
    assert (status, reply["error"]["message"]) == (
        402, "insufficient balance: have 0 cents, need 500 cents")
    await funded(http, platform, nc, org, 400)
    status, reply, _ = await payout(http, org, body)
    assert (status, reply["error"]["message"]) == (
        402, "insufficient balance: have 400 cents, need 500 cents")
    assert await listed(http, org) == []
    status, made, _ = await payout(http, org, {**body, "amount": 400})
    assert status == 201, made


async def test_racing_payouts_never_exceed_the_cash(http, org, platform, nc):
    await funded(http, platform, nc, org, 10000)
    dest = await destination(http, org)
    results = await asyncio.gather(*[
        payout(http, org, {"amount": 3000, "destinationType": "bank_account",
                           "destinationId": dest}) for _ in range(10)])
    assert sorted(status for status, _, _ in results) == [201] * 3 + [402] * 7, results
    assert {body["error"]["message"] for status, body, _ in results if status == 402} == {
        "insufficient balance: have 1000 cents, need 3000 cents"}
    assert len(await listed(http, org)) == 3
    assert await eventually(lambda: cash(platform, nc, org), lambda c: c == 1000) == 1000


async def test_a_payout_not_yet_in_the_journal_still_counts(http, org, pool, platform, nc,
                                                            payments_service, monkeypatch):
    """The journal did not take a payout's entry yet (the ledger refused it for a moment):
    its cash is still in the journal's balance, and still not available."""
    await funded(http, platform, nc, org, 5000)
    dest = await destination(http, org)

    async def refused_for_now(*args):
        raise Failure.of(unavailable().error)

    monkeypatch.setattr(handlers.sender, "send_within", refused_for_now)
    status, first, _ = await payout(http, org, {"amount": 4000, "destinationType": "card",
                                                "destinationId": dest})
    assert status == 201
    monkeypatch.undo()
    assert await cash(platform, nc, org) == 5000  # not posted yet
    status, reply, _ = await payout(http, org, {"amount": 1001, "destinationType": "card",
                                                "destinationId": dest})
    assert (status, reply["error"]["message"]) == (
        402, "insufficient balance: have 1000 cents, need 1001 cents")
    await pool.execute("update payments.ledger_postings set next_attempt_at = now()"
                       " where id = $1", f"payout:{first['id']}")
    await post_due(payments_service.ctx)  # the job sends it
    assert await eventually(lambda: cash(platform, nc, org), lambda c: c == 1000) == 1000
    status, _, _ = await payout(http, org, {"amount": 1000, "destinationType": "card",
                                            "destinationId": dest})
    assert status == 201
    assert len(await journal_entries(platform, nc, org, payoutId=first["id"])) == 1


async def test_a_cancel_reverses_the_payout_once(http, org, pool, platform, nc):  # §9 75
    await funded(http, platform, nc, org, 5000)
    dest = await destination(http, org)
    status, made, _ = await payout(http, org, {"amount": 3000, "destinationType": "card",
                                               "destinationId": dest})
    assert status == 201
    assert await eventually(lambda: cash(platform, nc, org), lambda c: c == 2000) == 2000
    path = f"/payouts/{made['id']}/cancel"
    keyed = {**org.auth(), "Idempotency-Key": f"cancel-{made['id']}"}
    status, canceled, _ = await post(http, path, None, keyed)
    assert (status, canceled["status"]) == (200, "canceled")
    status, again, headers = await post(http, path, None, keyed)  # replayed
    assert (status, again, headers.get("Idempotent-Replayed")) == (200, canceled, "true")
    status, reply, _ = await post(http, path, None, org.auth())
    assert (status, reply["error"]["message"]) == (
        400, "can only cancel pending payouts, current: canceled")
    assert await eventually(lambda: cash(platform, nc, org), lambda c: c == 5000) == 5000
    posted = await eventually(lambda: journal_entries(platform, nc, org, payoutId=made["id"]),
                              lambda found: len(found) == 2)
    assert [sorted(p["amount"] for p in e["postings"]) for e in posted] == [
        [-3000, 3000], [-3000, 3000]]
    assert await events_of(pool, made["id"]) == ["payout.created", "payout.canceled"]
    # The money is back: it can be paid out again.
    status, _, _ = await payout(http, org, {"amount": 5000, "destinationType": "card",
                                            "destinationId": dest})
    assert status == 201


async def test_the_bank_settles_a_payout(http, org, pool, platform, nc):
    """An operator (or a provider's webhook) reports a payout in transit, then paid; another
    failed, whose money comes back once however often the failure is reported."""
    await funded(http, platform, nc, org, 3000)
    dest = await destination(http, org)
    made = []
    for _ in range(2):
        status, body, _ = await payout(http, org, {"amount": 1500, "destinationType": "card",
                                                   "destinationId": dest})
        assert status == 201
        made.append(body["id"])
    tenant = Bus(nc, await org_id_of(platform, org))

    async def settle(payout_id, status, **kw):
        return await tenant.ask(PAYOUT_SETTLE.subject,
                                PayoutSettleParams(id=payout_id, status=status, **kw))

    moving = (await settle(made[0], "in_transit", providerRef="tr_1"))["result"]
    assert (moving["status"], moving["providerRef"]) == ("in_transit", "tr_1")
    paid = (await settle(made[0], "paid"))["result"]
    assert paid["status"] == "paid" and paid["arrivalDate"].endswith("Z")
    assert (await settle(made[0], "paid"))["result"] == paid  # reported twice: unchanged
    assert (await settle(made[0], "in_transit"))["error"]["message"] == (
        "can only transit pending payouts, current: paid")
    assert (await settle(made[0], "lost"))["error"]["message"] == (
        "status must be one of in_transit, paid, failed")
    for _ in range(2):
        failed = (await settle(made[1], "failed", failureCode="account_closed",
                               failureMessage="Bank account is closed"))["result"]
    assert (failed["status"], failed["failureCode"], failed["failureMessage"]) == (
        "failed", "account_closed", "Bank account is closed")
    assert await eventually(lambda: cash(platform, nc, org), lambda c: c == 1500) == 1500
    assert len(await eventually(lambda: journal_entries(platform, nc, org, payoutId=made[1]),
                                lambda found: len(found) == 2)) == 2
    assert await events_of(pool, made[0]) == ["payout.created", "payout.updated",
                                              "payout.paid"]
    assert await events_of(pool, made[1]) == ["payout.created", "payout.failed"]
    admin = Actor(kind="api_key", role="admin")  # may not mint: settling moves money
    reply = await tenant.ask(PAYOUT_SETTLE.subject, PayoutSettleParams(id=made[0],
                                                                       status="paid"), actor=admin)
    assert reply["error"]["status"] == 403


async def test_list_and_get(http, org, platform, nc):
    await funded(http, platform, nc, org, 600)
    dest = await destination(http, org)
    made = []
    for amount in (100, 200, 300):
        status, body, _ = await payout(http, org, {"amount": amount, "destinationType": "card",
                                                   "destinationId": dest})
        assert status == 201
        made.append(body["id"])
    status, _, _ = await post(http, f"/payouts/{made[1]}/cancel", None, org.auth())
    assert status == 200
    assert [p["id"] for p in await listed(http, org)] == made[::-1]  # newest first
    assert [p["id"] for p in await listed(http, org, limit=1, startingAfter=made[2])] == [
        made[1]]
    assert [p["id"] for p in await listed(http, org, status="canceled")] == [made[1]]
    for path in ("/payouts/po_nope", "/payouts/po_nope/cancel"):
        call = get(http, path, org.auth()) if "cancel" not in path else post(
            http, path, None, org.auth())
        status, body, _ = await call
        assert (status, body["error"]["message"]) == (404, "payout not found")


async def test_bad_input_is_refused_and_nothing_is_stored(http, org, platform, nc):
    await funded(http, platform, nc, org, 1000)
    dest = await destination(http, org)
    good = {"amount": 100, "destinationType": "bank_account", "destinationId": dest}
    cases = [
        ({**good, "amount": 0}, 400, "amount must be positive"),
        ({"amount": 100}, 400, "destinationId is required"),
        ({**good, "destinationType": "wire"}, 400,
         "destinationType must be bank_account or card"),
        ({**good, "destinationType": ""}, 400, "destinationType must be bank_account or card"),
        ({**good, "currency": "dollars"}, 400, "invalid currency"),
        ({**good, "amount": "5"}, 400, "invalid request body"),
        ({**good, "amount": 1.5}, 400, "invalid request body"),
        ({**good, "amount": 2**63}, 400, "invalid request body"),
        ({**good, "metadata": "x"}, 400, "invalid request body"),
        ({**good, "destinationId": "d" * 256}, 400, "destinationId: at most 255 characters"),
        ({**good, "destinationId": "pm_nope"}, 404, "payment method not found"),
        ({**good, "amount": 1001}, 402, "insufficient balance: have 1000 cents, need 1001 cents"),
    ]
    for body, code, message in cases:
        status, reply, _ = await payout(http, org, body)
        assert (status, reply["error"]["message"]) == (code, message), body
    for raw in (b"{", b"", b"[]"):
        status, reply, _ = await post(http, "/payouts", None, org.auth(), raw=raw)
        assert (status, reply["error"]["message"]) == (400, "invalid request body"), raw
    assert await listed(http, org) == []


async def test_organizations_and_modes_are_apart(http, org, make_org, platform, nc):
    await funded(http, platform, nc, org, 1000)
    dest = await destination(http, org)
    status, made, _ = await payout(http, org, {"amount": 100, "destinationType": "card",
                                               "destinationId": dest})
    assert status == 201
    other = await make_org()
    for auth_org, key in ((other, "sk_test"), (org, "sk_live")):
        for status, body, _ in (
                await get(http, f"/payouts/{made['id']}", auth_org.auth(key)),
                await post(http, f"/payouts/{made['id']}/cancel", None, auth_org.auth(key))):
            assert (status, body["error"]["message"]) == (404, "payout not found")
        assert await listed(http, auth_org, key) == []
        # Another organization's (or mode's) payment method is no destination.
        status, body, _ = await payout(http, auth_org, {
            "amount": 1, "destinationType": "card", "destinationId": dest}, key)
        assert (status, body["error"]["message"]) == (404, "payment method not found")
    # The test mode's cash pays nothing out in live mode.
    live_dest = await destination(http, org, "sk_live")
    status, body, _ = await payout(http, org, {"amount": 1, "destinationType": "card",
                                               "destinationId": live_dest}, "sk_live")
    assert (status, body["error"]["message"]) == (
        402, "insufficient balance: have 0 cents, need 1 cents")


async def test_payouts_move_money_minters_only(http, org):
    dest = await destination(http, org)
    user = bearer(iam_token(owner=org.name, name="alice"))
    body = {"amount": 1, "destinationType": "card", "destinationId": dest}
    for headers in (user, org.auth("pk_test")):
        status, _, _ = await post(http, "/payouts", body, headers)
        assert status == 403
        status, _, _ = await post(http, "/payouts/po_x/cancel", None, headers)
        assert status == 403
        status, _, _ = await get(http, "/payouts", headers)
        assert status == 403
    assert await listed(http, org) == []
