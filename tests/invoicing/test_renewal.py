"""A subscription's period invoice, as the subscriptions service asks for it over the bus
(metering-invoicing.md §8.3, §9.8, §9.10, §11.11; subscriptions.md §2.5): the plan × seats,
licensed items, the period's usage in a half-open window and the prorations, numbered and
collected with the waterfall; asked again or concurrently, the same invoice and no second
collection; dunning retries take only the remainder; an invoice given up is uncollectible;
its events name the subscription and the period."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from contracts import Actor, Scope
from contracts.invoicing import (
    INVOICE_MARK_UNCOLLECTIBLE,
    INVOICE_RENEW_PERIOD,
    INVOICE_RENEW_PERIODS,
    INVOICE_RETRY,
    LineItem,
)
from services.invoicing.collection.domain import Attempt
from services.invoicing.renewal.batched import Collected, Draft
from services.invoicing.renewal.domain import Period
from tests.invoicing.test_collection import deposit, invoice_now, open_invoice, paid
from tests.invoicing.test_invoices import act, events_of, fetch
from tests.invoicing.test_preview import grant, make_rule, remaining, use
from tests.support import (
    Bus,
    balance,
    eventually,
    get,
    make_meter,
    new_user,
    org_id_of,
    post,
    service,
    service_down,
    zulu,
)

# Meter events may be up to 35 days old: the period is ten days, 20 days ago.
START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=20)
END = START + timedelta(days=10)
RENEW, RETRY = INVOICE_RENEW_PERIOD.subject, INVOICE_RETRY.subject
RENEW_MANY = INVOICE_RENEW_PERIODS.subject
GIVE_UP = INVOICE_MARK_UNCOLLECTIBLE.subject


async def tenant(platform, nc, org) -> Bus:
    return Bus(nc, await org_id_of(platform, org))


def period(user: str, subscription: str = "sub_pro", start: datetime = START,
           end: datetime = END, **fields) -> dict:
    """A renewal of plan Pro (2000 usd a period) as the subscriptions service asks."""
    return {"subscriptionId": subscription, "userId": user, "planId": "pro",
            "planName": "Pro", "price": 2000, "currency": "usd", "periodStart": zulu(start),
            "periodEnd": zulu(end), **fields}


async def attempts(pool, invoice_id: str) -> int:
    return await pool.fetchval(
        "select count(*) from invoicing.collection_attempts where invoice_id = $1", invoice_id)


async def event_data(pool, invoice_id: str, event_type: str) -> dict:
    payload = await pool.fetchval(
        "select convert_from(payload, 'utf8') from invoicing.outbox where type = $2"
        " and convert_from(payload, 'utf8')::jsonb->>'objectId' = $1", invoice_id, event_type)
    return json.loads(payload)["data"]


# ---- §9.8 worked examples ------------------------------------------------------------------


async def test_plan_and_usage_paid_by_credits_then_the_wallet(http, org, platform, nc,
                                                               pool):  # §9.8 1, §11.11 94
    user = new_user()
    meter = await make_meter(http, org, "api_calls", name="API Calls")
    await make_rule(http, org, meterId=meter, unitPrice=2)
    await use(http, org, meter, user, 500, 400, 300)
    await grant(http, org, user, 1000)
    await deposit(http, org, user, 5000)
    bus = await tenant(platform, nc, org)
    renewed = await bus.ok(RENEW, period(user))
    invoice, collection = renewed["invoice"], renewed["collection"]
    assert renewed["created"] is True
    assert [(line["id"], line["type"], line["amount"], line.get("quantity"),
             line.get("unitPrice")) for line in invoice["lineItems"]] == [
        ("li_plan_pro", "subscription", 2000, None, None),
        (f"li_usage_{meter}", "usage", 2400, 1200, 2)]
    plan_line = invoice["lineItems"][0]
    assert (plan_line["description"], plan_line["planName"], plan_line["periodStart"],
            plan_line["periodEnd"]) == ("Pro subscription", "Pro", zulu(START), zulu(END))
    assert collection == {"success": True, "creditUsed": 1000, "balanceUsed": 3400,
                          "amountCharged": 4400}
    assert {k: invoice[k] for k in ("subscriptionId", "periodStart", "periodEnd", "subtotal",
                                    "amountDue", "amountPaid", "creditApplied", "status",
                                    "paymentMethod", "numberStr", "attemptCount")} == {
        "subscriptionId": "sub_pro", "periodStart": zulu(START), "periodEnd": zulu(END),
        "subtotal": 4400, "amountDue": 4400, "amountPaid": 4400, "creditApplied": 1000,
        "status": "paid", "paymentMethod": "balance", "numberStr": "INV-0001",
        "attemptCount": 1}
    assert await remaining(http, org, user) == [0]
    assert await balance(http, org, user) == 1600
    assert await events_of(pool, invoice["id"]) == [
        "invoice.created", "invoice.finalized", "invoice.paid"]
    # The subscriptions service learns of the payment from the event: it names the period.
    data = await event_data(pool, invoice["id"], "invoice.paid")
    assert (data["subscriptionId"], data["periodStart"], data["periodEnd"]) == (
        "sub_pro", zulu(START), zulu(END))


async def test_nothing_to_pay_with_leaves_it_open_and_renewing_again_collects_nothing(
        http, org, platform, nc, pool):  # §9.8 2, §11.11 95
    user = new_user()
    meter = await make_meter(http, org, "api_calls")
    await make_rule(http, org, meterId=meter, unitPrice=2)
    await use(http, org, meter, user, 1200)
    bus = await tenant(platform, nc, org)
    first = await bus.ok(RENEW, period(user))
    assert first["collection"] == {
        "success": False, "error": "insufficient funds: 4400 cents remaining after credits"
                                   " and balance"}
    assert {k: first["invoice"][k] for k in ("status", "amountDue", "amountPaid",
                                             "attemptCount")} == {
        "status": "open", "amountDue": 4400, "amountPaid": 0, "attemptCount": 1}
    # Renewing the period again (a second runner, a manual renew): the same invoice, and
    # what it collected read off it — money on hand now is not touched.
    await deposit(http, org, user, 5000)
    again = await bus.ok(RENEW, period(user))
    assert (again["created"], again["invoice"]["id"]) == (False, first["invoice"]["id"])
    assert again["collection"] == {"success": False}
    assert again["invoice"]["attemptCount"] == 1
    assert await attempts(pool, first["invoice"]["id"]) == 1
    assert await balance(http, org, user) == 5000
    assert await events_of(pool, first["invoice"]["id"]) == [
        "invoice.created", "invoice.finalized", "invoice.payment_failed"]


async def test_a_free_plan_without_usage_is_paid_at_once(http, org, platform, nc):  # §9.8 3
    bus = await tenant(platform, nc, org)
    renewed = await bus.ok(RENEW, period(new_user(), planId="developer", planName="Developer",
                                         price=0, currency=""))
    invoice = renewed["invoice"]
    assert (invoice["lineItems"], invoice["subtotal"], invoice["status"],
            invoice["paymentMethod"], invoice["currency"]) == ([], 0, "paid", "balance", "usd")
    assert renewed["collection"] == {"success": True}


async def test_seats_multiply_the_plan_price(http, org, platform, nc):  # §11.11 104
    user = new_user()
    await deposit(http, org, user, 10_000)
    bus = await tenant(platform, nc, org)
    renewed = await bus.ok(RENEW, period(user, planId="team", planName="Team", price=2500,
                                         quantity=3))
    line = renewed["invoice"]["lineItems"][0]
    assert (line["id"], line["amount"], line["quantity"], line["unitPrice"]) == (
        "li_plan_team", 7500, 3, 2500)
    assert renewed["collection"]["amountCharged"] == 7500
    none = await bus.ok(RENEW, period(user, subscription="sub_zero", quantity=0))
    assert none["invoice"]["lineItems"][0]["amount"] == 2000  # at least one seat


# ---- the period's window, items and prorations ----------------------------------------------


async def test_an_event_at_the_period_end_is_billed_in_the_next_period(http, org, platform,
                                                                      nc):  # §9.3 Δ
    user = new_user()
    meter = await make_meter(http, org, "api_calls")
    await make_rule(http, org, meterId=meter, unitPrice=1)
    await use(http, org, meter, user, 1, when=START - timedelta(seconds=1))  # before
    await use(http, org, meter, user, 2, when=START)  # at the start: in
    await use(http, org, meter, user, 4, when=END - timedelta(seconds=1))
    await use(http, org, meter, user, 8, when=END)  # at the end: the next period's
    bus = await tenant(platform, nc, org)
    free = {"price": 0, "collect": False}
    first = await bus.ok(RENEW, period(user, **free))
    second = await bus.ok(RENEW, period(user, start=END, end=END + timedelta(days=10), **free))
    assert [line["quantity"] for line in first["invoice"]["lineItems"]] == [2 + 4]
    assert [line["quantity"] for line in second["invoice"]["lineItems"]] == [8]
    assert first["invoice"]["id"] != second["invoice"]["id"]


async def test_items_and_prorations_make_their_own_lines(http, org, platform, nc):
    user = new_user()
    billed = await make_meter(http, org, "tokens")
    other = await make_meter(http, org, "storage")
    await make_rule(http, org, meterId=billed, unitPrice=3)
    await make_rule(http, org, meterId=billed, planId="pro", unitPrice=5)  # the plan's own
    await make_rule(http, org, meterId=other, unitPrice=7)
    await use(http, org, billed, user, 10)
    await use(http, org, other, user, 10)
    bus = await tenant(platform, nc, org)
    renewed = await bus.ok(RENEW, period(
        user, collect=False,
        items=[{"priceId": "price_support", "quantity": 2, "unitAmount": 300,
                "description": "Priority support"},
               {"meterId": billed, "billingMode": "metered"},
               {"priceId": "price_free", "quantity": 5}],  # no unit amount: no line
        prorations=[{"id": "li_proration_1700000000", "description": "Proration: Basic -> Pro",
                     "planId": "pro", "planName": "Pro", "amount": 1500,
                     "periodStart": zulu(START + timedelta(days=5)), "periodEnd": zulu(END)}]))
    invoice = renewed["invoice"]
    assert [(line["id"], line["type"], line["amount"]) for line in invoice["lineItems"]] == [
        ("li_plan_pro", "subscription", 2000),
        ("li_item_1", "subscription", 600),
        (f"li_usage_{billed}", "usage", 50),  # only the metered item's meter, plan's price
        ("li_proration_1700000000", "proration", 1500)]
    assert invoice["lineItems"][1]["description"] == "Priority support"
    assert invoice["lineItems"][3]["periodStart"] == zulu(START + timedelta(days=5))
    assert (invoice["subtotal"], invoice["status"], invoice["attemptCount"]) == (
        4150, "open", 0)
    assert renewed["collection"] is None  # asked not to collect


async def test_a_bad_renewal_is_refused_and_stores_nothing(http, org, platform, nc, pool):
    user = new_user()
    bus = await tenant(platform, nc, org)
    for changed, message in (
            ({"subscriptionId": ""}, "subscriptionId is required"),
            ({"userId": " "}, "userId is required"),
            ({"periodEnd": zulu(START)}, "periodEnd must be after periodStart"),
            ({"price": -1}, "price must be non-negative"),
            ({"currency": "u$d"}, "invalid currency"),
            ({"items": [{"billingMode": "metered"}]}, "items: a metered item needs a meterId"),
            ({"items": [{"billingMode": "weekly"}]},
             "items: billingMode must be licensed or metered")):
        assert await bus.error(RENEW, {**period(user), **changed}) == (400, message)
    assert (await bus.ask(RENEW, {**period(user), "periodStart": "yesterday"})
            )["error"]["status"] == 400
    assert await pool.fetchval("select count(*) from invoicing.invoices where user_id = $1",
                               user) == 0


# ---- once per period -----------------------------------------------------------------------


async def test_concurrent_renewals_of_a_period_make_one_invoice_and_one_collection(
        http, org, platform, nc, pool):  # §11.11 103
    user = new_user()
    await deposit(http, org, user, 10_000)
    bus = await tenant(platform, nc, org)
    answers = await asyncio.gather(*(bus.ok(RENEW, period(user)) for _ in range(6)))
    assert sorted(a["created"] for a in answers) == [False] * 5 + [True]
    assert len({a["invoice"]["id"] for a in answers}) == 1
    invoice_id = answers[0]["invoice"]["id"]
    assert await pool.fetchval("select count(*) from invoicing.invoices where user_id = $1",
                               user) == 1
    assert await attempts(pool, invoice_id) == 1
    assert await balance(http, org, user) == 8000
    status, invoice, _ = await fetch(http, org, invoice_id)
    assert (status, invoice["status"], invoice["amountPaid"]) == (200, "paid", 2000)
    # Another subscription of the user, the same dates: an invoice of its own.
    other = await bus.ok(RENEW, period(user, subscription="sub_other"))
    assert other["created"] and other["invoice"]["id"] != invoice_id


async def test_renewals_opened_together_are_numbered_in_turn_and_fail_alone(
        http, org, platform, pool):
    """Renewals arriving together share a transaction: a period twice in the batch is made
    once, the numbers follow on, and a renewal the database refuses fails alone."""
    state = service(platform, "invoicing").ctx.state
    scope = Scope(org_id=await org_id_of(platform, org), org_name="", livemode=False,
                  actor=Actor(kind="service", role="platform"), request_id="req_together")
    lines = [LineItem(id="li_plan_pro", type="subscription", description="Pro subscription",
                      amount=2000, currency="usd", periodStart=zulu(START),
                      periodEnd=zulu(END))]

    def draft(subscription: str, user: str) -> Draft:
        return Draft(scope, Period(subscription, user, "usd", START, END), lines, True)

    drafts = [draft(f"sub_together{n}", new_user()) for n in range(3)]
    bad = draft("sub_together_bad", "bad\x00user")  # text PostgreSQL refuses
    opened = await asyncio.gather(*(state.renewals.open(d) for d in [*drafts, bad, drafts[0]]),
                                  return_exceptions=True)
    made, refused, again = opened[:3], opened[3], opened[4]
    assert [o.created for o in made] == [True] * 3
    numbers = [o.invoice.number for o in made]
    assert numbers == list(range(numbers[0], numbers[0] + 3))
    assert [(o.invoice.status, o.attempt.number, o.attempt.due) for o in made] == [
        ("open", 1, 2000)] * 3
    assert isinstance(refused, Exception)
    assert (again.created, again.invoice.id, again.attempt) == (False, made[0].invoice.id, None)
    assert await pool.fetchval("select count(*) from invoicing.invoices"
                               " where subscription_id like 'sub_together%'") == 3
    # Their attempts end together too; an attempt of no invoice fails alone.
    nothing = Attempt(invoice_id="inv_none", number=1, due=0)
    settled = await asyncio.gather(*(state.settled_renewals.settle(Collected(
        scope, o.invoice.id, o.attempt)) for o in made), state.settled_renewals.settle(
        Collected(scope, "inv_none", nothing)), return_exceptions=True)
    assert [(s.invoice.status, s.collection.success) for s in settled[:3]] == [
        ("open", False)] * 3
    assert isinstance(settled[3], Exception)
    assert await pool.fetchval(
        "select count(*) from invoicing.collection_attempts a join invoicing.invoices i"
        " on i.id = a.invoice_id where i.subscription_id like 'sub_together%'"
        " and a.state = 'failed'") == 3


async def test_a_period_invoiced_meanwhile_is_answered_and_leaves_no_gap_in_the_numbers(
        http, org, platform, pool):
    """Another replica invoiced a period of the batch meanwhile: its invoice is the answer,
    and the batch's own invoices take the next numbers, none skipped."""
    state = service(platform, "invoicing").ctx.state
    org_id = await org_id_of(platform, org)
    scope = Scope(org_id=org_id, org_name="", livemode=False,
                  actor=Actor(kind="service", role="platform"), request_id="req_meanwhile")
    lines = [LineItem(id="li_plan_pro", type="subscription", description="Pro subscription",
                      amount=2000, currency="usd", periodStart=zulu(START),
                      periodEnd=zulu(END))]
    taken_user = new_user()
    taken = await pool.fetchval(
        "insert into invoicing.invoices (org_id, livemode, id, user_id, subscription_id,"
        " origin, period_start, period_end, currency, status)"
        " values ($1, false, 'inv_meanwhile_' || $2, $2, 'sub_meanwhile0', 'renewal', $3, $4,"
        " 'usd', 'open') returning id", org_id, taken_user, START, END)
    opened = await asyncio.gather(*(state.renewals.open(Draft(
        scope, Period(f"sub_meanwhile{n}", user, "usd", START, END), lines, False))
        for n, user in enumerate([taken_user, new_user(), new_user()])))
    assert [(o.created, o.invoice.id == taken) for o in opened] == [
        (False, True), (True, False), (True, False)]
    last = await pool.fetchval("select last from invoicing.numbers where org_id = $1"
                               " and livemode = false and kind = 'invoice'", org_id)
    assert [o.invoice.number for o in opened[1:]] == [last - 1, last]
    # Announced as made: a draft first (unnumbered), then finalized with its number.
    made = opened[1].invoice
    assert await events_of(pool, made.id) == ["invoice.created", "invoice.finalized"]
    draft = await event_data(pool, made.id, "invoice.created")
    final = await event_data(pool, made.id, "invoice.finalized")
    assert (draft["status"], draft["number"], draft.get("numberStr", "")) == ("draft", 0, "")
    assert (final["status"], final["number"], final["numberStr"]) == (
        "open", made.number, made.numberStr)
    assert {k: v for k, v in draft.items() if k not in ("status", "number", "numberStr")} == {
        k: v for k, v in final.items() if k not in ("status", "number", "numberStr")}


async def test_a_period_renewed_again_is_answered_while_metering_does_not_answer(
        http, org, platform, nc, pool):
    user = new_user()
    bus = await tenant(platform, nc, org)
    first = await bus.ok(RENEW, period(user, collect=False))
    async with service_down(platform, "metering"):
        again = await bus.ok(RENEW, period(user, collect=False))
        assert (again["created"], again["invoice"]["id"]) == (False, first["invoice"]["id"])
        other = await bus.ask(RENEW, period(user, subscription="sub_new", collect=False))
        assert other["error"]["status"] == 503, other
    assert await pool.fetchval("select count(*) from invoicing.invoices where user_id = $1",
                               user) == 1


async def test_a_manual_invoice_naming_the_subscription_does_not_take_the_period(
        http, org, platform, nc):  # §10 storage notes
    user = new_user()
    manual = await open_invoice(http, org, 100, user)
    assert manual["subscriptionId"] == ""
    bus = await tenant(platform, nc, org)
    renewed = await bus.ok(RENEW, period(user, collect=False))
    assert renewed["created"] is True


async def test_a_renewal_cut_short_is_finished_by_its_own_attempt(http, org, platform, nc,
                                                                 pool):
    """The ledger does not answer during the first collection: the invoice exists with its
    attempt 1 unfinished; renewing again collects nothing; resuming attempt 1 takes the
    money once."""
    user = new_user()
    await deposit(http, org, user, 5000)
    bus = await tenant(platform, nc, org)
    async with service_down(platform, "ledger"):
        reply = await bus.ask(RENEW, period(user))
    assert reply["error"]["status"] == 503, reply
    again = await bus.ok(RENEW, period(user))
    invoice_id = again["invoice"]["id"]
    assert (again["created"], again["invoice"]["status"], again["collection"]) == (
        False, "open", {"success": False})
    # Resumed by a retry, or by the recovery job if it took the attempt first.
    retried = await bus.ask(RETRY, {"id": invoice_id})
    assert "result" in retried or retried["error"]["status"] == 409, retried
    resumed = await eventually(lambda: invoice_now(http, org, invoice_id),
                               lambda invoice: invoice["status"] == "paid", timeout=10)
    assert resumed["attemptCount"] == 1
    assert await attempts(pool, invoice_id) == 1
    assert await balance(http, org, user) == 3000


# ---- dunning: retry and give up ------------------------------------------------------------


async def test_a_retry_takes_only_what_is_still_due(http, org, platform, nc, pool):  # §9.10
    user = new_user()
    await grant(http, org, user, 600)
    bus = await tenant(platform, nc, org)
    first = await bus.ok(RENEW, period(user))
    invoice_id = first["invoice"]["id"]
    assert (first["collection"]["creditUsed"], first["invoice"]["amountPaid"]) == (600, 600)
    still_short = await bus.ok(RETRY, {"id": invoice_id})
    assert still_short["collection"] == {
        "success": False, "error": "insufficient funds: 1400 cents remaining after credits"
                                   " and balance"}
    await deposit(http, org, user, 5000)
    retried = await bus.ok(RETRY, {"id": invoice_id})
    assert retried["collection"] == {"success": True, "balanceUsed": 1400,
                                     "amountCharged": 1400}
    assert {k: retried["invoice"][k] for k in ("status", "amountPaid", "creditApplied",
                                               "attemptCount", "paymentMethod")} == {
        "status": "paid", "amountPaid": 2000, "creditApplied": 600, "attemptCount": 3,
        "paymentMethod": "balance"}
    assert await balance(http, org, user) == 3600
    assert await bus.error(RETRY, {"id": invoice_id}) == (
        409, "invoice must be open to collect, current status: paid")
    assert await bus.error(RETRY, {"id": "inv_nope"}) == (404, "invoice not found")


async def test_a_retry_while_an_attempt_runs_is_refused(http, org, platform, nc, pool):
    user = new_user()
    bus = await tenant(platform, nc, org)
    invoice_id = (await bus.ok(RENEW, period(user, collect=False)))["invoice"]["id"]
    org_id = bus.org_id
    await pool.execute(
        "insert into invoicing.collection_attempts (org_id, livemode, invoice_id, attempt,"
        " lease_until, due) values ($1, false, $2, 1, now() + interval '1 minute', 2000)",
        org_id, invoice_id)
    assert await bus.error(RETRY, {"id": invoice_id}) == (
        409, "invoice payment already in progress")
    assert await bus.error(GIVE_UP, {"id": invoice_id}) == (
        409, "invoice payment already in progress")


async def test_giving_up_makes_an_open_invoice_uncollectible(http, org, platform, nc, pool):
    user = new_user()
    bus = await tenant(platform, nc, org)
    invoice_id = (await bus.ok(RENEW, period(user)))["invoice"]["id"]
    given_up = await bus.ok(GIVE_UP, {"id": invoice_id})
    assert (given_up["status"], given_up["amountRemaining"]) == ("uncollectible", 2000)
    assert (await events_of(pool, invoice_id))[-1] == "invoice.marked_uncollectible"
    assert await bus.error(GIVE_UP, {"id": invoice_id}) == (
        409, "can only mark open invoices uncollectible, current status: uncollectible")
    assert await bus.error(RETRY, {"id": invoice_id}) == (
        409, "invoice must be open to collect, current status: uncollectible")
    # A renewal of the period asked again does not make it collectible again.
    again = await bus.ok(RENEW, period(user))
    assert (again["created"], again["invoice"]["status"]) == (False, "uncollectible")
    settled = await open_invoice(http, org, 0)
    await paid(http, org, settled["id"])
    assert await bus.error(GIVE_UP, {"id": settled["id"]}) == (
        409, "can only mark open invoices uncollectible, current status: paid")
    assert await bus.error(GIVE_UP, {"id": "inv_nope"}) == (404, "invoice not found")


async def test_a_voided_period_invoice_tells_the_subscription(http, org, platform, nc, pool):
    bus = await tenant(platform, nc, org)
    invoice_id = (await bus.ok(RENEW, period(new_user())))["invoice"]["id"]
    status, voided, _ = await act(http, org, invoice_id, "void")
    assert (status, voided["status"]) == (200, "void"), voided
    data = await event_data(pool, invoice_id, "invoice.voided")
    assert (data["subscriptionId"], data["periodStart"], data["periodEnd"]) == (
        "sub_pro", zulu(START), zulu(END))



# ---- the upcoming invoice of a subscription (§4.5 Δ) ---------------------------------------


async def test_the_upcoming_invoice_of_a_subscription_is_its_next_renewal(http, org, platform,
                                                                          nc, pool, make_org):
    user = new_user()
    status, sub, _ = await post(http, "/subscriptions", {
        "userId": user, "planId": "team", "quantity": 3, "trialPeriodDays": 0}, org.auth())
    assert status == 201, sub
    meter = await make_meter(http, org, "api_calls", name="API Calls")
    await make_rule(http, org, meterId=meter, unitPrice=2)
    started = datetime.fromisoformat(sub["currentPeriodStart"])
    await use(http, org, meter, user, 100, when=started + timedelta(seconds=1))
    await use(http, org, meter, user, 900, when=started - timedelta(seconds=1))  # before it
    await grant(http, org, user, 1000)
    upcoming = await upcoming_of(http, org, user, sub["id"])
    assert [(line["id"], line["amount"], line.get("quantity"), line["periodStart"],
             line["periodEnd"]) for line in upcoming["lineItems"]] == [
        ("li_plan_team", 7500, 3, sub["currentPeriodStart"], sub["currentPeriodEnd"]),
        (f"li_usage_{meter}", 200, 100, sub["currentPeriodStart"], sub["currentPeriodEnd"])]
    assert {k: upcoming[k] for k in ("userId", "subtotal", "creditApplied", "amountDue",
                                     "currency")} == {
        "userId": user, "subtotal": 7700, "creditApplied": 1000, "amountDue": 6700,
        "currency": "usd"}
    # Nothing consumed, nothing invoiced.
    assert await remaining(http, org, user) == [1000]
    assert await pool.fetchval("select count(*) from invoicing.invoices where user_id = $1",
                               user) == 0
    # Without the subscription: the reference's answer, all usage and no plan fee.
    plain = await upcoming_of(http, org, user)
    assert [line["quantity"] for line in plain["lineItems"]] == [1000]
    # Another user's subscription, another organization's, or none: not found.
    for who, tenant_org, sub_id in ((new_user(), org, sub["id"]),
                                    (user, await make_org(), sub["id"]),
                                    (user, org, "sub_nope")):
        status, body, _ = await get(http, "/invoices/upcoming", tenant_org.auth(), userId=who,
                                    subscriptionId=sub_id)
        assert (status, body["error"]["message"]) == (404, "subscription not found")


async def upcoming_of(http, org, user: str, subscription: str = "") -> dict:
    query = {"subscriptionId": subscription} if subscription else {}
    status, answer, _ = await get(http, "/invoices/upcoming", org.auth(), userId=user, **query)
    assert status == 200, answer
    return answer


# ---- many periods in one request (a billing cycle's batch) ---------------------------------


async def test_periods_asked_in_one_request_each_get_their_own_answer(http, org, platform, nc,
                                                                      pool):
    paying, broke = new_user(), new_user()
    await deposit(http, org, paying, 5000)
    bus = await tenant(platform, nc, org)
    before = await bus.ok(RENEW, period(paying, "sub_before"))
    answers = await bus.ok(RENEW_MANY, {"periods": [
        period(paying, "sub_new"), period(paying, "sub_before"),
        period(paying, "sub_bad", end=START), period(broke, "sub_unpaid")]})
    new, again, bad, unpaid = answers["renewed"]
    assert new["result"]["created"] is True and new["result"]["collection"]["success"]
    assert new["result"]["invoice"]["status"] == "paid"
    # Invoiced before: that invoice, nothing collected again.
    assert again["result"]["created"] is False
    assert again["result"]["invoice"]["id"] == before["invoice"]["id"]
    assert (bad["error"]["status"], bad["error"]["message"]) == (
        400, "periodEnd must be after periodStart")
    assert unpaid["result"]["invoice"]["status"] == "open"
    assert unpaid["result"]["collection"]["success"] is False
    assert await balance(http, org, paying) == 1000  # two periods of 2000, each once
    assert [await attempts(pool, r["result"]["invoice"]["id"])
            for r in (new, again, unpaid)] == [1, 1, 1]
