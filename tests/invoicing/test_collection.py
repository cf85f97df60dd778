"""Paying invoices through the gateway (metering-invoicing.md §5.5, §5.6, §9.5, §11.8): the
waterfall credit grants → customer balance → wallet → card on file, each attempt recorded on
the invoice; partial attempts leave the remainder due and the next one takes only that;
concurrent pays collect once; a declined card leaves what was taken applied; voiding gives
each source back what it gave, once; the books stay balanced."""

from __future__ import annotations

import asyncio

from contracts.invoicing import INVOICE_PAYMENT_GET, Collection
from services.invoicing.collection import domain
from services.invoicing.collection.domain import Attempt
from services.invoicing.customer_balance.domain import payable
from tests.invoicing.test_invoices import act, draft, events_of, fetch
from tests.invoicing.test_preview import grant, remaining
from tests.support import (
    Bus,
    add_payment_method,
    balance,
    eventually,
    get,
    ledger_verify,
    new_user,
    org_id_of,
    post,
    service_down,
)


async def open_invoice(http, org, amount, user=None):
    invoice = await draft(http, org, amount, **({"userId": user} if user else {}))
    status, opened, _ = await act(http, org, invoice["id"], "finalize")
    assert status == 200, opened
    return opened


async def pay(http, org, invoice_id, key="sk_test", headers=None):
    return await post(http, f"/invoices/{invoice_id}/pay", None,
                      {**org.auth(key), **(headers or {})})


async def paid(http, org, invoice_id):
    status, body, _ = await pay(http, org, invoice_id)
    assert status == 200, body
    return body["invoice"], body["collection"]


async def settled(http, org, invoice_id):
    """The invoice once the attempt left behind has ended: resumed by this pay, or by the
    recovery job if it took the attempt first."""
    status, body, _ = await pay(http, org, invoice_id)
    if status == 200:
        return body["invoice"]
    assert status == 409, body
    return await eventually(lambda: invoice_now(http, org, invoice_id),
                            lambda invoice: invoice["status"] == "paid", timeout=10)


async def invoice_now(http, org, invoice_id):
    status, invoice, _ = await fetch(http, org, invoice_id)
    assert status == 200, invoice
    return invoice


async def deposit(http, org, user, amount):
    status, body, _ = await post(http, "/deposit", {"user": user, "amount": amount},
                                 org.auth())
    assert status == 201, body


async def credit_balance(http, org, user, amount):
    status, body, _ = await post(http, "/customer-balance/adjustments",
                                 {"customerId": user, "amount": amount}, org.auth())
    assert status == 200, body


async def card_on_file(http, org, user, token="tok_visa"):
    """A saved payment method made the customer's default."""
    method = await add_payment_method(http, org, user, token=token)
    status, body, _ = await post(http, f"/customers/{user}/default-payment-method",
                                 {"paymentMethodId": method["id"]}, org.auth())
    assert status == 200, body


async def customer_balance(http, org, user):
    status, body, _ = await get(http, "/customer-balance", org.auth(), customerId=user)
    assert status == 200, body
    return body["balance"]


async def test_credits_cover_everything(http, org, pool):  # 70, 74
    user = new_user()
    await grant(http, org, user, 5000)
    invoice = await open_invoice(http, org, 1000, user)
    after, collection = await paid(http, org, invoice["id"])
    assert collection == {"success": True, "creditUsed": 1000, "amountCharged": 1000}
    assert {k: after[k] for k in ("status", "paymentMethod", "creditApplied", "amountPaid",
                                  "attemptCount", "amountRemaining")} == {
        "status": "paid", "paymentMethod": "credit", "creditApplied": 1000,
        "amountPaid": 1000, "attemptCount": 1, "amountRemaining": 0}
    assert "paidAt" in after
    assert await remaining(http, org, user) == [4000]
    assert (await events_of(pool, invoice["id"]))[-1] == "invoice.paid"


async def test_nothing_due_is_paid_at_once(http, org):  # 69
    invoice = await open_invoice(http, org, 0)
    after, collection = await paid(http, org, invoice["id"])
    assert collection == {"success": True}
    assert (after["status"], after["paymentMethod"]) == ("paid", "balance")


async def test_only_open_invoices_are_collected(http, org):  # 68
    invoice = await draft(http, org, 500)
    status, body, _ = await pay(http, org, invoice["id"])
    assert (status, body["error"]["message"]) == (
        409, "invoice must be open to collect, current status: draft")
    opened = await open_invoice(http, org, 0)
    await paid(http, org, opened["id"])
    status, body, _ = await pay(http, org, opened["id"])
    assert (status, body["error"]["message"]) == (
        409, "invoice must be open to collect, current status: paid")
    status, body, _ = await pay(http, org, "inv_nope")
    assert (status, body["error"]["message"]) == (404, "invoice not found")


async def test_the_waterfall_in_order(http, org):  # 4, 75
    user = new_user()
    await grant(http, org, user, 1000)
    await credit_balance(http, org, user, 500)
    await deposit(http, org, user, 5000)
    invoice = await open_invoice(http, org, 4400, user)
    after, collection = await paid(http, org, invoice["id"])
    assert collection == {"success": True, "creditUsed": 1000, "customerBalanceUsed": 500,
                          "balanceUsed": 2900, "amountCharged": 4400}
    assert (after["status"], after["paymentMethod"], after["creditApplied"]) == (
        "paid", "balance", 1000)
    assert await balance(http, org, user) == 2100
    assert await customer_balance(http, org, user) == 0


async def test_a_partial_attempt_then_the_remainder_only(http, org, pool, database_url):  # 76
    user = new_user()
    await grant(http, org, user, 600)
    invoice = await open_invoice(http, org, 1000, user)
    after, collection = await paid(http, org, invoice["id"])
    assert collection == {"success": False, "creditUsed": 600, "amountCharged": 600,
                          "error": "insufficient funds: 400 cents remaining after credits"
                                   " and balance"}
    assert {k: after[k] for k in ("status", "amountPaid", "creditApplied", "attemptCount",
                                  "amountRemaining")} == {
        "status": "open", "amountPaid": 600, "creditApplied": 600, "attemptCount": 1,
        "amountRemaining": 400}
    await deposit(http, org, user, 1000)
    after, collection = await paid(http, org, invoice["id"])
    assert collection == {"success": True, "balanceUsed": 400, "amountCharged": 400}
    assert {k: after[k] for k in ("status", "amountPaid", "creditApplied", "attemptCount",
                                  "paymentMethod")} == {
        "status": "paid", "amountPaid": 1000, "creditApplied": 600, "attemptCount": 2,
        "paymentMethod": "balance"}
    assert await balance(http, org, user) == 600
    assert (await events_of(pool, invoice["id"]))[-2:] == ["invoice.payment_failed",
                                                           "invoice.paid"]
    assert ledger_verify(database_url).returncode == 0


async def test_concurrent_pays_collect_once(http, org, database_url):
    user = new_user()
    await deposit(http, org, user, 10_000)
    await credit_balance(http, org, user, 1000)
    invoice = await open_invoice(http, org, 3000, user)
    replies = await asyncio.gather(*(pay(http, org, invoice["id"]) for _ in range(6)))
    successes = [body for status, body, _ in replies if status == 200]
    assert len(successes) == 1, replies
    assert {(status, body["error"]["message"]) for status, body, _ in replies
            if status != 200} <= {(409, "invoice payment already in progress"),
                                  (409, "invoice must be open to collect, current status: paid")}
    lost = (10_000 - await balance(http, org, user)) + (
        1000 - await customer_balance(http, org, user))
    assert lost == 3000
    assert (await fetch(http, org, invoice["id"]))[1]["amountPaid"] == 3000
    assert ledger_verify(database_url).returncode == 0


async def test_two_invoices_never_overdraw_one_customer_balance(http, org):
    """The balance's row lock: two invoices paid at once take 1000 in all, never more."""
    user = new_user()
    await credit_balance(http, org, user, 1000)
    invoices = [await open_invoice(http, org, 800, user) for _ in range(2)]
    replies = await asyncio.gather(*(paid(http, org, i["id"]) for i in invoices))
    assert sorted(c.get("customerBalanceUsed", 0) for _, c in replies) == [200, 800]
    assert await customer_balance(http, org, user) == 0


async def test_a_pay_retried_with_its_key_is_answered_again(http, org):
    user = new_user()
    await deposit(http, org, user, 800)
    invoice = await open_invoice(http, org, 500, user)
    key = {"Idempotency-Key": f"pay-{invoice['id']}"}
    first = await pay(http, org, invoice["id"], headers=key)
    again = await pay(http, org, invoice["id"], headers=key)
    assert first[0] == again[0] == 200 and first[1] == again[1]
    assert await balance(http, org, user) == 300


async def test_the_card_on_file_pays_the_remainder(http, org, nc, platform):  # 6
    user = new_user()
    await deposit(http, org, user, 300)
    await card_on_file(http, org, user)
    invoice = await open_invoice(http, org, 1000, user)
    after, collection = await paid(http, org, invoice["id"])
    assert collection.get("providerUsed"), collection
    assert (collection["success"], collection["balanceUsed"], collection["providerUsed"]) == (
        True, 300, 700)
    assert (after["status"], after["paymentMethod"]) == ("paid", "card")
    assert after["paymentRef"] == collection.get("providerRef", "")
    # What payments refunds for the invoice: the intent that collected it.
    bus = Bus(nc, await org_id_of(platform, org))
    answer = await bus.ask(INVOICE_PAYMENT_GET.subject, {"invoiceId": invoice["id"]})
    assert answer["result"]["paymentIntentId"].startswith("pi_")
    # Refunding the invoice refunds what the card paid (payments.md §4.4).
    status, refund, _ = await post(http, "/refunds", {"invoiceId": invoice["id"]}, org.auth())
    assert (status // 100, refund["amount"]) == (2, 700), refund


async def test_a_declined_card_keeps_what_was_taken(http, org, pool):  # 6
    user = new_user()
    await deposit(http, org, user, 300)
    await card_on_file(http, org, user, token="tok_4000000000000341")
    invoice = await open_invoice(http, org, 1000, user)
    after, collection = await paid(http, org, invoice["id"])
    assert (collection["success"], collection["balanceUsed"], collection["amountCharged"]) == (
        False, 300, 300)
    assert collection["error"]
    assert (after["status"], after["amountPaid"], after["amountRemaining"]) == ("open", 300, 700)
    assert (await events_of(pool, invoice["id"]))[-1] == "invoice.payment_failed"
    await deposit(http, org, user, 1000)
    after, collection = await paid(http, org, invoice["id"])
    assert (collection["balanceUsed"], after["status"], after["amountPaid"]) == (
        700, "paid", 1000)
    assert await balance(http, org, user) == 300


async def test_void_gives_each_source_back_once(http, org, pool, database_url):  # 77
    user = new_user()
    await grant(http, org, user, 600)
    await credit_balance(http, org, user, 150)
    await deposit(http, org, user, 250)
    invoice = await open_invoice(http, org, 2000, user)
    _, collection = await paid(http, org, invoice["id"])
    assert collection["amountCharged"] == 1000
    status, voided, _ = await act(http, org, invoice["id"], "void")
    assert (status, voided["status"]) == (200, "void"), voided
    assert sum(await remaining(http, org, user)) == 600
    assert await customer_balance(http, org, user) == 150
    assert await balance(http, org, user) == 250
    status, _, _ = await act(http, org, invoice["id"], "void")
    assert status == 409
    assert sum(await remaining(http, org, user)) == 600
    assert await balance(http, org, user) == 250
    assert (await events_of(pool, invoice["id"]))[-1] == "invoice.voided"
    assert ledger_verify(database_url).returncode == 0


async def test_other_organizations_and_modes_cannot_pay(http, org, make_org):
    other = await make_org()
    invoice = await open_invoice(http, org, 100)
    for who, key in ((other, "sk_test"), (org, "sk_live")):
        status, body, _ = await pay(http, who, invoice["id"], key=key)
        assert (status, body["error"]["message"]) == (404, "invoice not found")
    assert (await fetch(http, org, invoice["id"]))[1]["attemptCount"] == 0


async def test_meter_grants_pay_their_usage_lines_only(http, org):  # §9.4 Δ
    user = new_user()
    status, body, _ = await post(http, "/credit-grants", {
        "userId": user, "name": "GPU", "amountCents": 1000, "eligibility": ["mtr_gpu"]},
        org.auth())
    assert status == 201, body
    await grant(http, org, user, 200)
    status, invoice, _ = await post(http, "/invoices", {"userId": user, "lineItems": [
        {"type": "usage", "meterId": "mtr_gpu", "description": "GPU", "amount": 300},
        {"description": "Support", "amount": 500}]}, org.auth())
    assert status == 201, invoice
    await act(http, org, invoice["id"], "finalize")
    after, collection = await paid(http, org, invoice["id"])
    assert (collection["creditUsed"], after["amountRemaining"]) == (500, 300)
    # A second attempt: the GPU line is paid, so the GPU grant pays nothing more.
    after, collection = await paid(http, org, invoice["id"])
    assert (collection.get("creditUsed", 0), after["amountRemaining"]) == (0, 300)
    assert sorted(await remaining(http, org, user)) == [0, 700]
    status, _, _ = await act(http, org, invoice["id"], "void")
    assert status == 200
    # Back as it was burnt: 200 for every meter, 300 for the GPU meter only.
    _, listed, _ = await get(http, "/credit-grants", org.auth(), userId=user)
    returned = sorted((g["remainingCents"], g["name"]) for g in listed["grants"]
                      if g["name"].startswith("Credit returned"))
    assert [cents for cents, _ in returned] == [200, 300]


async def test_a_pay_while_the_ledger_is_down_resumes_later(http, org, platform, pool):
    user = new_user()
    await grant(http, org, user, 400)
    await deposit(http, org, user, 1000)
    invoice = await open_invoice(http, org, 1000, user)
    async with service_down(platform, "ledger"):
        status, body, _ = await pay(http, org, invoice["id"])
        assert (status, body["error"]["code"]) == (503, "unavailable")
    # The attempt left unfinished is resumed: the same keys, nothing taken twice.
    after = await settled(http, org, invoice["id"])
    assert (after["amountPaid"], after["creditApplied"], after["attemptCount"]) == (1000, 400, 1)
    assert await balance(http, org, user) == 400
    assert await remaining(http, org, user) == [0]


async def test_payments_down_leaves_the_remainder_for_the_next_attempt(http, org, platform):
    user = new_user()
    await deposit(http, org, user, 300)
    await card_on_file(http, org, user)
    invoice = await open_invoice(http, org, 1000, user)
    async with service_down(platform, "payments"):
        after, collection = await paid(http, org, invoice["id"])
    assert (collection["success"], collection["balanceUsed"]) == (False, 300)
    assert after["amountRemaining"] == 700
    after, collection = await paid(http, org, invoice["id"])
    assert (collection.get("balanceUsed", 0), collection["providerUsed"]) == (0, 700)
    assert (after["status"], after["amountPaid"], after["attemptCount"]) == ("paid", 1000, 2)
    assert await balance(http, org, user) == 0


async def test_a_collector_that_died_is_taken_over_after_its_lease(http, org, pool):
    """An attempt whose collector stopped after the customer-balance leg: a pay within its
    lease is refused; once the lease has passed, it resumes from the wallet leg."""
    user = new_user()
    await credit_balance(http, org, user, 200)
    await deposit(http, org, user, 1000)
    invoice = await open_invoice(http, org, 1000, user)
    org_id, _ = await pool.fetchrow("select org_id, livemode from invoicing.invoices"
                                    " where id = $1", invoice["id"])
    await pool.execute(
        "insert into invoicing.collection_attempts (org_id, livemode, invoice_id, attempt,"
        " due, credit_used, balance_used, lease_until) values ($1, false, $2, 1, 1000, 0, 200,"
        " now() + interval '1 minute')", org_id, invoice["id"])
    status, body, _ = await pay(http, org, invoice["id"])
    assert (status, body["error"]["message"]) == (409, "invoice payment already in progress")
    status, _, _ = await act(http, org, invoice["id"], "void")
    assert status == 409
    await pool.execute("update invoicing.collection_attempts set lease_until = now()"
                       " where invoice_id = $1", invoice["id"])
    after = await settled(http, org, invoice["id"])
    assert (after["amountPaid"], after["attemptCount"]) == (1000, 1)
    assert await balance(http, org, user) == 200


async def test_the_recovery_job_ends_an_attempt_left_behind(http, org, pool):
    """No pay comes: the job resumes the attempt once its lease has passed (§9.5)."""
    user = new_user()
    await deposit(http, org, user, 1000)
    invoice = await open_invoice(http, org, 700, user)
    org_id = await pool.fetchval("select org_id from invoicing.invoices where id = $1",
                                 invoice["id"])
    await pool.execute(
        "insert into invoicing.collection_attempts (org_id, livemode, invoice_id, attempt,"
        " due, lease_until) values ($1, false, $2, 1, 700, now())", org_id, invoice["id"])
    after = await eventually(lambda: invoice_now(http, org, invoice["id"]),
                             lambda invoice: invoice["status"] == "paid", timeout=10)
    assert (after["amountPaid"], after["attemptCount"]) == (700, 1)
    assert await balance(http, org, user) == 300
    assert (await events_of(pool, invoice["id"]))[-1] == "invoice.paid"


async def test_a_resumed_attempt_asks_what_it_asked_before(http, org, pool):
    """A collector stopped after planning a withdrawal of 1000: a grant given meanwhile
    does not change what the resumed attempt takes (never more than was due)."""
    user = new_user()
    await deposit(http, org, user, 1500)
    invoice = await open_invoice(http, org, 1000, user)
    org_id = await pool.fetchval("select org_id from invoicing.invoices where id = $1",
                                 invoice["id"])
    await pool.execute(
        "insert into invoicing.collection_attempts (org_id, livemode, invoice_id, attempt,"
        " due, credit_used, balance_used, wallet_planned, lease_until)"
        " values ($1, false, $2, 1, 1000, 0, 0, 1000, now())", org_id, invoice["id"])
    await grant(http, org, user, 500)
    after = await settled(http, org, invoice["id"])
    assert (after["amountPaid"], after["creditApplied"]) == (1000, 0)
    assert await balance(http, org, user) == 500
    assert await remaining(http, org, user) == [500]


# ---- the rules, without I/O ------------------------------------------------------------------


def test_an_attempt_adds_up():  # 75
    a = Attempt("inv_1", 1, 1000, credit_used=500, balance_used=0, wallet_used=300,
                card_used=200)
    assert domain.result(a) == Collection(success=True, creditUsed=500, balanceUsed=300,
                                          providerUsed=200, amountCharged=1000)
    short = Attempt("inv_1", 1, 1000, credit_used=600, balance_used=0, wallet_used=0)
    assert domain.result(short).error == (
        "insufficient funds: 400 cents remaining after credits and balance")


def test_what_a_finished_attempt_changes():  # 2, 6, 74
    credit = Attempt("inv_1", 1, 100, credit_used=100)
    changes = domain.finished(credit, 100, 0, 0, "now")
    assert (changes["status"], changes["payment_method"], changes["amount_paid"]) == (
        "paid", "credit", 100)
    second = Attempt("inv_1", 2, 400, credit_used=0, wallet_used=400)
    changes = domain.finished(second, 1000, 600, 600, "now")
    assert (changes["payment_method"], changes["credit_applied"], changes["attempt_count"]) == (
        "balance", 600, 2)
    card = Attempt("inv_1", 1, 1000, wallet_used=300, card_used=700, card_ref="ch_1")
    changes = domain.finished(card, 1000, 0, 0, "now")
    assert (changes["payment_method"], changes["payment_ref"]) == ("card", "ch_1")
    partial = domain.finished(Attempt("inv_1", 1, 1000, credit_used=600), 1000, 0, 0, "now")
    assert "status" not in partial and partial["amount_paid"] == 600


def test_a_meters_grants_are_capped_by_its_lines():
    lines = [{"meterId": "gpu", "amount": 300}, {"amount": 500},
             {"meterId": "gpu", "amount": 200}, {"meterId": "api", "amount": -50}]
    assert domain.meter_caps(lines, {}) == {"gpu": 500}
    assert domain.meter_caps(lines, {"gpu": 450}) == {"gpu": 50}
    assert domain.meter_caps(lines, {"gpu": 900}) == {"gpu": 0}


def test_the_customer_balance_pays_only_credit_held():
    assert [payable(b, 500) for b in (-100, 0, 200, 900)] == [0, 0, 200, 500]
