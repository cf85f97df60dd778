"""The billing cycle through the gateway and on the bus (metering-invoicing.md §8, §9.8–§9.10,
§11.11 examples 94–105; subscriptions.md §1.3.3, §2.5, §3.1.7): due periods billed and
collected once, whoever runs the cycle and however often, also after a runner died; dunning
on a simulated clock; renew.

Time travel: a subscription's current period is moved into the past with SQL (its anchor
with it), and a dunning retry is made due by moving `next_attempt_at` back."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

from contracts.ids import new_id, rfc3339
from services.runtime.scopes import service_scope
from services.subscriptions.cycle import handlers as cycle
from services.subscriptions.cycle import runner
from services.subscriptions.subscriptions.domain import add_months
from tests.conftest import SERVICE_TOKENS, bearer
from tests.invoicing.test_collection import deposit
from tests.invoicing.test_preview import grant, make_rule, use
from tests.support import (
    API,
    eventually,
    get,
    make_meter,
    new_user,
    org_id_of,
    post,
    request,
    service,
)


def subscriptions(platform):
    return service(platform, "subscriptions")


async def subscribe(http, org, user, plan="pro", **fields):
    status, sub, _ = await post(http, "/subscriptions", {"userId": user, "planId": plan,
                                                         **fields}, org.auth())
    assert status == 201, sub
    return sub


async def make_due(pool, sub_id, ago=timedelta(minutes=1), periods=1):
    """The subscription's current period ended `ago` ago; it started `periods` periods
    (months) after its anchor."""
    end = datetime.now(UTC) - ago
    start = add_months(end, -1)
    await pool.execute(
        "update subscriptions.subscriptions set period_start = $2, period_end = $3,"
        " billing_anchor = $4, start_at = $4 where id = $1",
        sub_id, start, end, add_months(end, -periods))
    return start, end


async def fetch(http, org, sub_id):
    status, sub, _ = await get(http, f"/subscriptions/{sub_id}", org.auth())
    assert status == 200, sub
    return sub


async def invoices_of(pool, sub_id):
    return await pool.fetch("select * from invoicing.invoices where subscription_id = $1"
                            " order by period_start", sub_id)


async def attempts(pool, sub_id):
    return await pool.fetchval(
        "select count(*) from invoicing.collection_attempts a join invoicing.invoices i"
        " on i.id = a.invoice_id where i.subscription_id = $1", sub_id)


async def run(http, org, path="/cycle/run", body=None, headers=None):
    status, body, _ = await post(http, path, body, headers or org.auth())
    assert status == 200, body
    return body


async def retry_now(pool, sub_id):
    """The next dunning attempt is due."""
    await pool.execute("update subscriptions.period_renewals set next_attempt_at = now()"
                       " - interval '1 second' where subscription_id = $1"
                       " and state = 'past_due'", sub_id)


async def claim(pool, sub_id):
    return await pool.fetchrow("select * from subscriptions.period_renewals"
                               " where subscription_id = $1 order by period_start desc", sub_id)


# ---- §11.11 examples -------------------------------------------------------------------------


async def test_a_due_period_is_billed_collected_and_advanced(http, org, pool):  # 94
    user = new_user()
    sub = await subscribe(http, org, user)
    start, end = await make_due(pool, sub["id"])
    await deposit(http, org, user, 5000)
    body = await run(http, org)
    [invoice] = await invoices_of(pool, sub["id"])
    assert body == {"processed": 1, "results": [
        {"userId": user, "subscriptionId": sub["id"], "invoiceId": invoice["id"],
         "success": True}]}
    assert (invoice["status"], invoice["amount_paid"], invoice["period_start"],
            invoice["period_end"]) == ("paid", 2000, start, end)
    after = await fetch(http, org, sub["id"])
    assert after["status"] == "active"
    assert after["currentPeriodStart"] == rfc3339(end)
    assert after["currentPeriodEnd"] == rfc3339(add_months(start, 2))
    current = await pool.fetchval("select current_invoice_id from subscriptions.subscriptions"
                                  " where id = $1", sub["id"])
    assert current == invoice["id"]
    assert await run(http, org) == {"processed": 0, "results": []}  # 97


async def test_a_failed_collection_is_past_due_and_not_invoiced_again(http, org, pool):  # 95
    user = new_user()
    sub = await subscribe(http, org, user)
    await make_due(pool, sub["id"])
    body = await run(http, org)
    [invoice] = await invoices_of(pool, sub["id"])
    [row] = body["results"]
    assert (row["success"], row["invoiceId"]) == (False, invoice["id"])
    assert row["error"].startswith("insufficient funds")
    assert (await fetch(http, org, sub["id"]))["status"] == "past_due"
    assert await run(http, org) == {"processed": 0, "results": []}
    assert len(await invoices_of(pool, sub["id"])) == 1
    assert await attempts(pool, sub["id"]) == 1


async def test_run_user_refuses_bad_bodies_and_runs_one_user(http, org, pool):  # 96
    status, body, _ = await post(http, "/cycle/run-user", {}, org.auth())
    assert (status, body["error"]["message"]) == (400, "userId is required")
    status, body, _ = await post(http, "/cycle/run-user", None, org.auth(), raw=b"x")
    assert (status, body["error"]["message"]) == (400, "invalid request body")
    alice, bob = new_user(), new_user()
    subs = [await subscribe(http, org, u) for u in (alice, bob)]
    for s in subs:
        await make_due(pool, s["id"])
    body = await run(http, org, "/cycle/run-user", {"userId": alice.upper()})
    assert (body["user"], body["processed"]) == (alice, 1)
    assert body["results"][0]["subscriptionId"] == subs[0]["id"]
    assert await invoices_of(pool, subs[1]["id"]) == []


async def test_run_all_is_the_platforms_and_names_orgs_with_work(http, org, make_org,
                                                                 pool, platform):  # 98
    quiet = await make_org()
    for user in (new_user(), new_user()):
        await make_due(pool, (await subscribe(http, org, user))["id"])
    status, body, _ = await post(http, "/cycle/run-all", None, org.auth())
    assert status == 403, body
    platform_caller = {**bearer(SERVICE_TOKENS[0]), "X-IAM-Org": quiet.name,
                       "X-Billing-Mode": "test"}
    body = await run(http, org, "/cycle/run-all", headers=platform_caller)
    ours = [o for o in body["results"] if o["orgId"] == await org_id_of(platform, org)]
    assert [(o["processed"], len(o["results"])) for o in ours] == [(2, 2)]
    assert not [o for o in body["results"] if o["orgId"] == await org_id_of(platform, quiet)]
    assert body["orgs"] == len(body["results"])
    assert body["totalProcessed"] == sum(o["processed"] for o in body["results"])


async def test_cancel_at_period_end_bills_the_last_period_then_ends(http, org, pool):  # 102
    user = new_user()
    sub = await subscribe(http, org, user)
    status, _, _ = await post(http, f"/subscriptions/{sub['id']}/cancel",
                              {"atPeriodEnd": True}, org.auth())
    assert status == 200
    _, end = await make_due(pool, sub["id"])
    await deposit(http, org, user, 5000)
    body = await run(http, org)
    assert body["results"][0]["success"] is True
    after = await fetch(http, org, sub["id"])
    assert (after["status"], after["endedAt"]) == ("canceled", rfc3339(end))
    assert after["currentPeriodEnd"] == rfc3339(end)  # not advanced
    assert await run(http, org) == {"processed": 0, "results": []}
    assert len(await invoices_of(pool, sub["id"])) == 1


async def test_seats_bill_quantity_times_price(http, org, pool):  # 104
    user = new_user()
    sub = await subscribe(http, org, user, plan="team", quantity=3)
    await make_due(pool, sub["id"])
    await deposit(http, org, user, 10_000)
    await run(http, org)
    [invoice] = await invoices_of(pool, sub["id"])
    [line] = invoice["line_items"]
    assert (line["amount"], line["quantity"], line["unitPrice"]) == (7500, 3, 2500)
    assert invoice["status"] == "paid"


async def test_usage_items_and_prorations_are_billed_with_the_plan(http, org, pool):  # §9.8 1
    user = new_user()
    sub = await subscribe(http, org, user)
    status, changed, _ = await request(http, "PATCH", f"{API}/subscriptions/{sub['id']}",
                                       org.auth(), {"quantity": 2, "prorate": True})
    assert status == 200, changed
    proration = changed["prorationItem"]
    _, end = await make_due(pool, sub["id"])
    meter = await make_meter(http, org, "api_calls", name="API Calls")
    await make_rule(http, org, meterId=meter, unitPrice=2)
    await use(http, org, meter, user, 500, 400, 300, when=end - timedelta(days=2))
    status, item, _ = await post(http, "/subscription-items", {
        "subscriptionId": sub["id"], "meterId": meter, "billingMode": "metered"}, org.auth())
    assert status == 201, item
    await grant(http, org, user, 1000)
    await deposit(http, org, user, 10_000)
    body = await run(http, org)
    assert body["results"][0]["success"] is True, body
    [invoice] = await invoices_of(pool, sub["id"])
    lines = {line["type"]: line for line in invoice["line_items"]}
    assert lines["subscription"]["amount"] == 4000
    assert (lines["usage"]["quantity"], lines["usage"]["amount"]) == (1200, 2400)
    assert lines["proration"]["amount"] == proration["amount"]
    assert (invoice["status"], invoice["credit_applied"]) == ("paid", 1000)
    pending = await pool.fetchrow("select status, invoice_id from"
                                  " subscriptions.pending_invoice_items where id = $1",
                                  proration["id"])
    assert tuple(pending) == ("invoiced", invoice["id"])


async def test_catch_up_bills_each_missed_period_once(http, org, pool):  # §8.3 step 6
    user = new_user()
    sub = await subscribe(http, org, user)
    await make_due(pool, sub["id"], ago=timedelta(days=70), periods=1)
    await deposit(http, org, user, 10_000)
    body = await run(http, org)
    invoices = await invoices_of(pool, sub["id"])
    assert body["processed"] == len(invoices) == 3, (body, await pool.fetch("select * from subscriptions.period_renewals where subscription_id = $1", sub["id"]), await pool.fetchrow("select period_start, period_end, billing_anchor, status from subscriptions.subscriptions where id = $1", sub["id"]))
    assert [r["invoiceId"] for r in body["results"]] == [i["id"] for i in invoices]
    assert [i["period_end"] for i in invoices[:-1]] == [i["period_start"]
                                                          for i in invoices[1:]]
    after = await fetch(http, org, sub["id"])
    assert after["currentPeriodStart"] == rfc3339(invoices[-1]["period_end"])


async def test_catch_up_stops_at_twelve_periods_a_run(http, org, pool):
    user = new_user()
    sub = await subscribe(http, org, user)
    await make_due(pool, sub["id"], ago=timedelta(days=400))  # 14 periods have ended
    await deposit(http, org, user, 100_000)
    first = await run(http, org)
    assert first["processed"] == 12
    second = await run(http, org)
    invoices = await invoices_of(pool, sub["id"])
    assert [r["invoiceId"] for r in first["results"] + second["results"]] == [
        i["id"] for i in invoices]
    assert len(invoices) == 14 and {i["status"] for i in invoices} == {"paid"}
    assert [i["period_end"] for i in invoices[:-1]] == [i["period_start"]
                                                          for i in invoices[1:]]


async def test_a_trial_that_ended_becomes_active_unbilled(http, org, pool):  # §9.8 ex. 4
    user = new_user()
    sub = await subscribe(http, org, user, trialPeriodDays=14)
    assert sub["status"] == "trialing"
    await pool.execute("update subscriptions.subscriptions set trial_end = now()"
                       " - interval '1 day' where id = $1", sub["id"])
    assert await run(http, org) == {"processed": 0, "results": []}
    after = await fetch(http, org, sub["id"])
    assert after["status"] == "active"
    assert after["currentPeriodStart"] == sub["currentPeriodStart"]
    assert await invoices_of(pool, sub["id"]) == []


# ---- renew (§3.1.7, example 105) -----------------------------------------------------------


async def test_renew_of_a_period_not_due_bills_nothing(http, org, pool):  # 105
    sub = await subscribe(http, org, new_user())
    status, body, _ = await post(http, f"/subscriptions/{sub['id']}/renew", None, org.auth())
    assert status == 200, body
    assert "invoice" not in body
    assert body["collection"] == {"success": False,
                                  "error": "subscription period is not due for renewal"}
    assert body["subscription"]["id"] == sub["id"]
    assert await invoices_of(pool, sub["id"]) == []


async def test_renew_bills_the_due_period_once(http, org, pool):
    user = new_user()
    sub = await subscribe(http, org, user)
    await make_due(pool, sub["id"])
    await deposit(http, org, user, 5000)
    status, body, _ = await post(http, f"/subscriptions/{sub['id']}/renew", None, org.auth())
    assert status == 200, body
    assert body["collection"]["success"] is True
    assert body["collection"]["balanceUsed"] == 2000
    assert body["invoice"]["status"] == "paid"
    assert body["subscription"]["status"] == "active"
    again = (await post(http, f"/subscriptions/{sub['id']}/renew", None, org.auth()))[1]
    assert "invoice" not in again  # the next period is not due
    assert len(await invoices_of(pool, sub["id"])) == 1


async def test_renew_of_a_past_due_period_answers_its_invoice(http, org, pool):
    sub = await subscribe(http, org, new_user())
    await make_due(pool, sub["id"])
    await run(http, org)
    status, body, _ = await post(http, f"/subscriptions/{sub['id']}/renew", None, org.auth())
    assert status == 200, body
    [invoice] = await invoices_of(pool, sub["id"])
    assert body["invoice"]["id"] == invoice["id"]
    assert body["collection"]["success"] is False
    assert await attempts(pool, sub["id"]) == 1


async def test_renew_of_another_orgs_subscription_is_404(http, org, make_org):
    sub = await subscribe(http, org, new_user())
    other = await make_org()
    status, body, _ = await post(http, f"/subscriptions/{sub['id']}/renew", None, other.auth())
    assert (status, body["error"]["message"]) == (404, "subscription not found")
    status, body, _ = await post(http, f"/subscriptions/{sub['id']}/renew", None,
                                 org.auth("sk_live"))
    assert status == 404


async def test_cycle_runs_need_the_right_to_mint(http, org):
    for path in ("/cycle/run", "/cycle/run-user"):
        status, _, _ = await post(http, path, {"userId": "a/b"}, org.auth("pk_test"))
        assert status == 403


# ---- exactly once (§8.3, example 103; issue 13 races) --------------------------------------


async def test_two_runners_over_a_thousand_due_subscriptions_bill_each_once(
        http, org, pool, platform):  # 103
    org_id = await org_id_of(platform, org)
    user_ids = [new_user() for _ in range(1000)]
    await clone_due(http, org, pool, user_ids)
    ctx = subscriptions(platform).ctx
    scope = service_scope(org_id, False)
    at = datetime.now(UTC)
    first, second = await asyncio.gather(runner.run(ctx, scope, "", at),
                                         runner.run(ctx, scope, "", at))
    # Every period was worked on, by both runners between them. A period whose asking
    # failed (on a loaded machine: a timeout) is released and asked again, maybe by the
    # other runner, and invoicing answers with the invoice it made: the counts below are
    # what "once" means.
    assert {r.subscriptionId for r in first + second} == {
        r["id"] for r in await pool.fetch(
            "select id from subscriptions.subscriptions where org_id = $1", org_id)}
    assert first and second
    counts = await pool.fetch(
        "select subscription_id, count(*) as n from invoicing.invoices where org_id = $1"
        " group by subscription_id", org_id)
    assert len(counts) == 1000 and {r["n"] for r in counts} == {1}
    collected = await pool.fetchval(
        "select count(*) from invoicing.collection_attempts a join invoicing.invoices i"
        " on i.id = a.invoice_id where i.org_id = $1", org_id)
    assert collected == 1000


async def clone_due(http, org, pool, user_ids):
    """Due subscriptions of plan Pro, one per user, made as the first one was."""
    template = await subscribe(http, org, user_ids[0])
    await make_due(pool, template["id"])
    await pool.execute(
        "insert into subscriptions.subscriptions (org_id, livemode, id, user_id, plan_id,"
        " plan_slug, plan_category, plan_snapshot, status, quantity, period_start,"
        " period_end, billing_anchor, start_at, provider_type)"
        " select s.org_id, s.livemode, 'sub_' || md5(u.user_id), u.user_id, s.plan_id,"
        " s.plan_slug, s.plan_category, s.plan_snapshot, s.status, s.quantity,"
        " s.period_start, s.period_end, s.billing_anchor, s.start_at, s.provider_type"
        " from subscriptions.subscriptions s, unnest($2::text[]) as u(user_id)"
        " where s.id = $1", template["id"], user_ids[1:])


async def test_renew_racing_the_cycle_bills_once(http, org, pool, platform):
    users = [new_user() for _ in range(20)]
    subs = [await subscribe(http, org, u) for u in users]
    for u, s in zip(users, subs, strict=True):
        await make_due(pool, s["id"])
        await deposit(http, org, u, 5000)
    renewals = [post(http, f"/subscriptions/{s['id']}/renew", None, org.auth()) for s in subs]
    answers = await asyncio.gather(run(http, org), *renewals)
    assert all(status in (200, 409) for status, _, _ in answers[1:]), answers
    for s in subs:
        assert len(await invoices_of(pool, s["id"])) == 1
        assert await attempts(pool, s["id"]) == 1
        assert (await fetch(http, org, s["id"]))["status"] == "active"


async def test_a_runner_that_died_after_claiming_is_resumed_once(http, org, pool, platform):
    user = new_user()
    sub = await subscribe(http, org, user)
    await make_due(pool, sub["id"])
    await deposit(http, org, user, 5000)
    ctx, scope = subscriptions(platform).ctx, service_scope(
        await org_id_of(platform, org), False)
    at = datetime.now(UTC)
    # It claimed, invoicing billed and collected, and it died before settling.
    _, [period] = await runner.take(ctx, scope, "", at, new_id("run_"), set())
    await runner.ask(ctx, scope, period, runner.domain.Dunning(), at)
    assert period.collection.success
    assert await run(http, org) == {"processed": 0, "results": []}  # its lease holds
    await pool.execute("update subscriptions.period_renewals set lease_until = now()"
                       " - interval '1 second' where subscription_id = $1", sub["id"])
    body = await run(http, org)
    [invoice] = await invoices_of(pool, sub["id"])
    assert body["results"] == [{"userId": user, "subscriptionId": sub["id"],
                                "invoiceId": invoice["id"], "success": True}]
    assert await attempts(pool, sub["id"]) == 1
    assert (await fetch(http, org, sub["id"]))["status"] == "active"
    assert (await claim(pool, sub["id"]))["state"] == "settled"


async def test_a_run_killed_mid_flight_completes_on_the_next_run(http, org, pool, platform):
    users = [new_user() for _ in range(30)]
    for u in users:
        await make_due(pool, (await subscribe(http, org, u))["id"])
        await deposit(http, org, u, 5000)
    org_id = await org_id_of(platform, org)
    ctx, scope = subscriptions(platform).ctx, service_scope(org_id, False)
    task = asyncio.create_task(runner.run(ctx, scope, "", datetime.now(UTC)))
    await eventually(lambda: pool.fetchval(
        "select count(*) from invoicing.invoices where org_id = $1", org_id), lambda n: n > 0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await pool.execute("update subscriptions.period_renewals set lease_until = now()"
                       " - interval '1 second' where org_id = $1 and state = 'renewing'",
                       org_id)
    await run(http, org)
    # A collection the dead runner left running ends in invoicing; its invoice.paid moves
    # the subscription on if the run saw it unfinished.
    counts = await eventually(lambda: pool.fetch(
        "select i.subscription_id, count(*) as n, bool_and(i.status = 'paid') as paid,"
        " bool_and(s.status = 'active' and s.period_end > now()) as active"
        " from invoicing.invoices i join subscriptions.subscriptions s"
        " on s.id = i.subscription_id where i.org_id = $1 group by 1", org_id),
        lambda rows: all(r["paid"] and r["active"] for r in rows), timeout=15)
    assert len(counts) == 30
    assert all(r["n"] == 1 and r["paid"] and r["active"] for r in counts), counts


async def test_the_scheduler_bills_every_org_with_due_periods(http, make_org, pool, platform):
    orgs = [await make_org(), await make_org()]
    subs = []
    for o in orgs:
        user = new_user()
        subs.append((o, (await subscribe(http, o, user))["id"]))
        await make_due(pool, subs[-1][1])
        await deposit(http, o, user, 5000)
    await cycle.run_due(subscriptions(platform).ctx)
    for o, sub_id in subs:
        assert [i["status"] for i in await invoices_of(pool, sub_id)] == ["paid"]
        assert (await fetch(http, o, sub_id))["status"] == "active"


# ---- dunning on a simulated clock (§9.10, example 101) -------------------------------------


async def test_dunning_retries_then_recovers_when_funded(http, org, pool):
    user = new_user()
    sub = await subscribe(http, org, user)
    start, end = await make_due(pool, sub["id"])
    await run(http, org)
    first = await claim(pool, sub["id"])
    assert (first["state"], first["attempts"]) == ("past_due", 1)
    assert first["next_attempt_at"] == first["first_failed_at"] + timedelta(hours=24)
    await retry_now(pool, sub["id"])
    body = await run(http, org)
    assert [r["success"] for r in body["results"]] == [False]
    assert (await claim(pool, sub["id"]))["attempts"] == 2
    assert (await fetch(http, org, sub["id"]))["status"] == "past_due"
    await deposit(http, org, user, 5000)
    await retry_now(pool, sub["id"])
    body = await run(http, org)
    [invoice] = await invoices_of(pool, sub["id"])
    assert body["results"] == [{"userId": user, "subscriptionId": sub["id"],
                                "invoiceId": invoice["id"], "success": True}]
    after = await fetch(http, org, sub["id"])
    assert (after["status"], after["currentPeriodStart"]) == ("active", rfc3339(end))
    assert (await claim(pool, sub["id"]))["state"] == "settled"
    assert await run(http, org) == {"processed": 0, "results": []}


async def test_dunning_to_the_end_leaves_the_subscription_unpaid(http, org, pool):
    sub = await subscribe(http, org, new_user())
    await make_due(pool, sub["id"])
    await run(http, org)
    for _ in range(7):
        await retry_now(pool, sub["id"])
        await run(http, org)
    [invoice] = await invoices_of(pool, sub["id"])
    assert invoice["status"] == "uncollectible"
    assert await attempts(pool, sub["id"]) == 8
    assert (await fetch(http, org, sub["id"]))["status"] == "unpaid"
    assert (await claim(pool, sub["id"]))["outcome"] == "uncollectible"
    await retry_now(pool, sub["id"])
    assert await run(http, org) == {"processed": 0, "results": []}


async def test_dunning_can_end_canceled(http, org, pool, platform):
    service_ = subscriptions(platform)
    settings = service_.ctx.settings
    service_.ctx.settings = dataclasses.replace(settings, env={
        **settings.env, "BILLING_DUNNING_RETRY_HOURS": "1", "BILLING_DUNNING_FINAL_STATE":
        "canceled"})
    try:
        sub = await subscribe(http, org, new_user())
        _, end = await make_due(pool, sub["id"])
        await run(http, org)
        await retry_now(pool, sub["id"])
        await run(http, org)
    finally:
        service_.ctx.settings = settings
    after = await fetch(http, org, sub["id"])
    assert (after["status"], after["endedAt"]) == ("canceled", rfc3339(end))
    assert await attempts(pool, sub["id"]) == 2


async def test_paying_the_invoice_outside_the_cycle_ends_dunning(http, org, pool):  # 101
    user = new_user()
    sub = await subscribe(http, org, user)
    _, end = await make_due(pool, sub["id"])
    await run(http, org)
    [invoice] = await invoices_of(pool, sub["id"])
    await deposit(http, org, user, 5000)
    status, body, _ = await post(http, f"/invoices/{invoice['id']}/pay", None, org.auth())
    assert status == 200 and body["collection"]["success"], body
    after = await eventually(lambda: fetch(http, org, sub["id"]),
                             lambda s: s["status"] == "active", timeout=10)
    assert (after["status"], after["currentPeriodStart"]) == ("active", rfc3339(end))
    await retry_now(pool, sub["id"])
    assert await run(http, org) == {"processed": 0, "results": []}
    assert await attempts(pool, sub["id"]) == 2


async def test_voiding_the_invoice_forgives_the_period(http, org, pool):  # Q3
    sub = await subscribe(http, org, new_user())
    _, end = await make_due(pool, sub["id"])
    await run(http, org)
    [invoice] = await invoices_of(pool, sub["id"])
    status, body, _ = await post(http, f"/invoices/{invoice['id']}/void", None, org.auth())
    assert status == 200, body
    after = await eventually(lambda: fetch(http, org, sub["id"]),
                             lambda s: s["status"] == "active", timeout=10)
    assert after["currentPeriodStart"] == rfc3339(end)
    assert (await claim(pool, sub["id"]))["outcome"] == "void"
