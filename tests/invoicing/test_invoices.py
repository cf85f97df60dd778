"""Invoices through the gateway (metering-invoicing.md §5.0–§5.9, §9.6, §11.7): drafts and
their lines, discounts, finalize and void, the state machine's 409s, lists, bad input (4xx,
nothing stored), other organizations and modes (404), the events in the outbox, and what
payments asks before refunding an invoice."""

from __future__ import annotations

import asyncio

import pytest

from contracts.invoicing import INVOICE_PAYMENT_GET
from tests.support import Bus, eventually, get, new_user, org_id_of, post, request


async def create(http, org, body, key="sk_test"):
    status, invoice, _ = await post(http, "/invoices", body, org.auth(key))
    assert status == 201, invoice
    return invoice


async def draft(http, org, *amounts, key="sk_test", **fields):
    return await create(http, org, {"userId": new_user(), **fields, "lineItems": [
        {"id": f"l{i}", "description": f"Line {i}", "amount": a}
        for i, a in enumerate(amounts)]}, key)


async def act(http, org, invoice_id, action, body=None, key="sk_test", **kw):
    return await post(http, f"/invoices/{invoice_id}/{action}", body, org.auth(key), **kw)


async def add(http, org, invoice_id, body):
    return await act(http, org, invoice_id, "line-items", body)


async def remove(http, org, invoice_id, item_id):
    return await request(http, "DELETE", f"/api/v1/billing/invoices/{invoice_id}/line-items/"
                         f"{item_id}", org.auth())


async def fetch(http, org, invoice_id, key="sk_test"):
    return await get(http, f"/invoices/{invoice_id}", org.auth(key))


def error(reply):
    return reply[0], reply[1]["error"]["message"]


async def events_of(pool, invoice_id):
    return [r["type"] for r in await pool.fetch(
        "select type from invoicing.outbox"
        " where convert_from(payload, 'utf8')::jsonb->>'objectId' = $1 order by seq",
        invoice_id)]


# ---- §11.7 ---------------------------------------------------------------------------------


async def test_a_draft_with_lines(http, org):  # 48
    invoice = await create(http, org, {"userId": "Hanzo/Alice ", "lineItems": [
        {"id": "a", "amount": 1500}, {"id": "b", "amount": 500}]})
    assert {k: invoice[k] for k in ("userId", "status", "subtotal", "currency", "number",
                                     "numberStr", "amountDue", "tax", "discount")} == {
        "userId": "hanzo/alice", "status": "draft", "subtotal": 2000, "currency": "usd",
        "number": 0, "numberStr": "", "amountDue": 2000, "tax": 0, "discount": 0}
    assert [(line["id"], line["type"], line["currency"], line["periodStart"])
            for line in invoice["lineItems"]] == [
        ("a", "one_off", "usd", "0001-01-01T00:00:00Z"),
        ("b", "one_off", "usd", "0001-01-01T00:00:00Z")]
    # §5.0: these keys always; the dates of later steps only once set.
    assert {"id", "customerEmail", "subscriptionId", "periodStart", "periodEnd",
            "creditApplied", "amountPaid", "paymentMethod", "paymentRef", "attemptCount",
            "lineItems", "createdAt", "updatedAt"} <= set(invoice)
    assert not {"dueDate", "paidAt", "voidedAt"} & set(invoice)
    status, got, _ = await fetch(http, org, invoice["id"])
    assert (status, got) == (200, invoice)


async def test_user_is_required_and_currency_is_lower_cased(http, org):  # 49
    status, body, _ = await post(http, "/invoices", {"currency": "usd"}, org.auth())
    assert (status, body["error"]["message"], body["error"]["param"]) == (
        400, "userId is required", "userId")
    invoice = await create(http, org, {"userId": new_user(), "currency": "EUR"})
    assert (invoice["currency"], invoice["lineItems"], invoice["subtotal"]) == ("eur", [], 0)


async def test_lines_without_ids_get_them_and_repeated_ids_are_refused(http, org):
    invoice = await create(http, org, {"userId": new_user(), "lineItems": [
        {"amount": 100}, {"id": "x", "amount": 200, "type": "usage", "meterId": "m1"},
        {"amount": 300}]})
    assert [line["id"] for line in invoice["lineItems"]] == [
        f"li_{invoice['id']}_1", "x", f"li_{invoice['id']}_2"]
    status, added, _ = await add(http, org, invoice["id"], {"description": "d", "amount": 1})
    assert added["lineItems"][-1]["id"] == f"li_{invoice['id']}_3"
    status, body, _ = await post(http, "/invoices", {"userId": new_user(), "lineItems": [
        {"id": "x", "amount": 1}, {"id": "x", "amount": 2}]}, org.auth())
    assert (status, body["error"]["message"]) == (400, "duplicate line item id")


async def test_finalize_numbers_the_invoice_and_only_once(http, org):  # 50
    invoice = await draft(http, org, 1500, 500)
    status, opened, _ = await act(http, org, invoice["id"], "finalize")
    assert status == 200, opened
    assert (opened["status"], opened["amountDue"], opened["number"], opened["numberStr"]) == (
        "open", 2000, 1, "INV-0001")
    assert error(await act(http, org, invoice["id"], "finalize")) == (
        409, "can only finalize draft invoices, current status: open")


async def test_adding_lines(http, org):  # 51, 52, 53
    invoice = await draft(http, org)
    iid = invoice["id"]
    status, body, _ = await add(http, org, iid, {"description": "Setup", "quantity": 3,
                                                 "unitPrice": 500})
    assert status == 200, body
    line = body["lineItems"][-1]
    assert (line["amount"], line["type"], line["id"], line["quantity"], line["unitPrice"],
            body["subtotal"], body["amountDue"]) == (1500, "one_off", f"li_{iid}_1", 3, 500,
                                                     1500, 1500)
    _, body, _ = await add(http, org, iid, {"description": "calls", "meterId": "mtr_1",
                                            "amount": 10})
    assert body["lineItems"][-1]["type"] == "usage"
    _, body, _ = await add(http, org, iid, {"description": "plan", "meterId": "mtr_1",
                                            "planId": "pro", "amount": 10})
    assert body["lineItems"][-1]["type"] == "subscription"
    _, body, _ = await add(http, org, iid, {"description": "x", "amount": 700, "quantity": 3,
                                            "unitPrice": 500})
    assert (body["lineItems"][-1]["amount"], body["subtotal"]) == (700, 2220)
    _, body, _ = await add(http, org, iid, {"description": "refund", "amount": -3000})
    assert (body["subtotal"], body["amountDue"]) == (-780, 0)  # §9.6: never below 0


async def test_edits_of_an_open_invoice_are_refused(http, org):  # 54, 55, 59
    invoice = await draft(http, org, 1000)
    iid = invoice["id"]
    assert error(await add(http, org, iid, {"amount": 5})) == (400, "description is required")
    await act(http, org, iid, "finalize")
    assert error(await add(http, org, iid, {"description": "late", "amount": 5})) == (
        409, "can only add line items to draft invoices")
    assert error(await remove(http, org, iid, "l0")) == (
        409, "can only remove line items from draft invoices")
    assert error(await act(http, org, iid, "apply-discount", {"discountAmount": 5})) == (
        409, "can only apply discounts to draft invoices")
    _, after, _ = await fetch(http, org, iid)
    assert (after["subtotal"], len(after["lineItems"]), after["discount"]) == (1000, 1, 0)


async def test_removing_lines_never_reuses_an_id(http, org):  # 55, 56
    invoice = await draft(http, org)
    iid = invoice["id"]
    for name in ("X", "Y"):
        await add(http, org, iid, {"description": name, "amount": 100})
    assert error(await remove(http, org, iid, "li_nope")) == (404, "line item not found")
    status, body, _ = await remove(http, org, iid, f"li_{iid}_1")
    assert (status, [line["description"] for line in body["lineItems"]]) == (200, ["Y"])
    _, body, _ = await add(http, org, iid, {"description": "Z", "amount": 100})
    assert body["lineItems"][-1]["id"] == f"li_{iid}_3"
    _, body, _ = await remove(http, org, iid, f"li_{iid}_2")
    assert ([line["description"] for line in body["lineItems"]], body["subtotal"]) == (
        ["Z"], 100)


async def test_discounts(http, org):  # 57, 58, §9.6
    invoice = await draft(http, org, 5000)
    iid = invoice["id"]
    _, body, _ = await act(http, org, iid, "apply-discount", {"discountAmount": 1000})
    assert (body["discount"], body["amountDue"], body["discountName"]) == (1000, 4000, "")
    _, body, _ = await act(http, org, iid, "apply-discount", {"discountAmount": 7000})
    assert (body["discount"], body["amountDue"]) == (5000, 0)
    _, body, _ = await act(http, org, iid, "apply-discount", {"discountAmount": 300,
                                                              "couponId": "SAVE"})
    assert (body["discount"], body["discountName"], body["amountDue"]) == (
        300, "coupon:SAVE", 4700)
    assert error(await act(http, org, iid, "apply-discount", {})) == (
        400, "discountAmount or couponId is required")
    assert error(await act(http, org, iid, "apply-discount", {"couponId": "SAVE"})) == (
        400, "discountAmount must be positive")
    assert error(await act(http, org, iid, "apply-discount", {"couponId": "S",
                                                             "discountAmount": -5})) == (
        400, "discountAmount must be positive")
    _, body, _ = await fetch(http, org, iid)
    assert body["discount"] == 300  # refusals changed nothing


async def test_removing_a_line_after_a_discount_keeps_the_discount(http, org):  # §9.6
    invoice = await draft(http, org, 2000, 3000)
    iid = invoice["id"]
    await act(http, org, iid, "apply-discount", {"discountAmount": 5000})
    _, body, _ = await remove(http, org, iid, "l1")
    assert (body["subtotal"], body["discount"], body["amountDue"]) == (2000, 5000, 0)


async def test_void(http, org):  # 62
    invoice = await draft(http, org, 1000)
    status, voided, _ = await act(http, org, invoice["id"], "void")
    assert (status, voided["status"]) == (200, "void")
    assert voided["voidedAt"] >= voided["createdAt"]
    assert error(await act(http, org, invoice["id"], "void")) == (
        409, "can only void draft or open invoices, current status: void")
    assert error(await act(http, org, invoice["id"], "finalize")) == (
        409, "can only finalize draft invoices, current status: void")
    opened = await draft(http, org, 700)
    await act(http, org, opened["id"], "finalize")
    status, voided, _ = await act(http, org, opened["id"], "void")
    assert (status, voided["status"], voided["numberStr"]) == (200, "void", "INV-0001")


async def test_void_refuses_a_paid_invoice(http, org, platform):  # 62
    invoice = await draft(http, org, 1000)
    await act(http, org, invoice["id"], "finalize")
    # Collection is a later piece: the row is marked paid as it will.
    await platform.gateway.pool.execute(
        "update invoicing.invoices set status = 'paid', amount_paid = 1000, paid_at = now()"
        " where id = $1", invoice["id"])
    assert error(await act(http, org, invoice["id"], "void")) == (
        409, "can only void draft or open invoices, current status: paid")
    assert error(await act(http, org, invoice["id"], "calculate-tax", params={
        "country": "US"})) == (409, "can only calculate tax for draft invoices")  # 61


async def test_lists(http, org):  # 66
    alice, bob = new_user(), new_user()
    one = await create(http, org, {"userId": alice, "subscriptionId": "sub_1"})
    two = await create(http, org, {"userId": bob})
    three = await create(http, org, {"userId": alice})
    await act(http, org, two["id"], "finalize")

    async def ids(**query):
        status, body, headers = await get(http, "/invoices", org.auth(), **query)
        assert status == 200, body
        assert body["count"] == len(body["invoices"])
        return [i["id"] for i in body["invoices"]], headers

    assert (await ids())[0] == [one["id"], two["id"], three["id"]]  # oldest first
    assert (await ids(status="open"))[0] == [two["id"]]
    assert (await ids(userId=bob.upper()))[0] == [two["id"]]
    assert (await ids(userId=alice, subscriptionId=" sub_1 "))[0] == [one["id"]]
    page, headers = await ids(limit="2", offset="1")
    assert (page, headers["X-Total-Count"], headers["X-Has-More"]) == (
        [two["id"], three["id"]], "3", "false")
    page, headers = await ids(offset="9")
    assert (page, headers["X-Total-Count"]) == ([], "3")
    assert error(await fetch(http, org, "inv_nope")) == (404, "invoice not found")


# ---- tenancy -------------------------------------------------------------------------------


async def test_other_organizations_and_modes_see_nothing(http, org, make_org):
    invoice = await draft(http, org, 1000)
    iid = invoice["id"]
    other = await make_org()
    for who, key in ((other, "sk_test"), (org, "sk_live")):
        assert error(await fetch(http, who, iid, key)) == (404, "invoice not found")
        for action, body in (("finalize", None), ("void", None),
                             ("line-items", {"description": "x", "amount": 1}),
                             ("apply-discount", {"discountAmount": 1})):
            assert error(await act(http, who, iid, action, body, key)) == (
                404, "invoice not found")
        assert error(await act(http, who, iid, "calculate-tax", key=key,
                               params={"country": "US"})) == (404, "invoice not found")
        assert error(await request(http, "DELETE", f"/api/v1/billing/invoices/{iid}/"
                                   "line-items/l0", who.auth(key))) == (404, "invoice not found")
        status, body, _ = await get(http, "/invoices", who.auth(key))
        assert body["invoices"] == []
        status, _, _ = await request(http, "GET", f"/api/v1/billing/invoices/{iid}/pdf",
                                     who.auth(key), lenient=True)
        assert status == 404
    _, unchanged, _ = await fetch(http, org, iid)
    assert unchanged == invoice


async def test_end_users_and_publishable_keys_are_refused(http, org):
    status, body, _ = await post(http, "/invoices", {"userId": new_user()}, org.auth("pk_test"))
    assert (status, body["error"]["message"]) == (403, "Token doesn't support this scope")
    status, _, _ = await get(http, "/invoices", org.auth("pk_test"))
    assert status == 403


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "message"), [
    ({"userId": "u", "currency": "dollars!"}, "invalid currency"),
    ({"userId": "u", "lineItems": [{"amount": "5"}]}, "invalid request body"),
    ({"userId": "u", "lineItems": [{"amount": 1.5}]}, "invalid request body"),
    ({"userId": "u", "lineItems": [{"amount": 2**63}]}, "invalid request body"),
    ({"userId": "u", "lineItems": [{"type": "gift", "amount": 1}]},
     "line item type must be one of subscription, usage, one_off, proration"),
    ({"userId": "u", "lineItems": [{"amount": 2**62}, {"amount": 2**62}]},
     "amount out of range"),
    ({"userId": "u", "lineItems": [{"amount": 1}] * 101}, "lineItems: at most 100 items"),
    ({"userId": "u", "lineItems": [{"description": "d" * 1000}] * 40},
     "lineItems: at most 32768 bytes as JSON"),
    ({"userId": "u", "lineItems": [{"periodStart": "2026-01-01T00:00:00"}]},
     "invalid request body"),
    ({"userId": "u", "lineItems": [{"periodEnd": "0001-01-01T00:00:00+05:00"}]},
     "lineItems: period out of range"),
    ({"userId": "u", "metadata": {"k": "v" * 3000}}, "metadata: at most 2048 bytes as JSON"),
    ({"userId": "u" * 256}, "userId: at most 255 characters"),
])
async def test_bad_drafts_are_refused_and_nothing_is_stored(http, org, body, message):
    status, reply, _ = await post(http, "/invoices", body, org.auth())
    assert (status, reply["error"]["message"]) == (400, message), reply
    assert reply["error"]["code"] == "invalid_request"
    _, listed, _ = await get(http, "/invoices", org.auth())
    assert listed["invoices"] == []


async def test_bad_edits_are_refused_and_change_nothing(http, org):
    invoice = await draft(http, org, 2**62)
    iid = invoice["id"]
    cases = [
        ("line-items", {"description": "x", "amount": 2**62}, "amount out of range"),
        ("line-items", {"description": "x", "quantity": 2**40, "unitPrice": 2**40},
         "amount out of range"),
        ("line-items", {"description": "x", "amount": "1"}, "invalid request body"),
        ("line-items", {"description": "d" * 1001}, "description: at most 1000 characters"),
        ("apply-discount", {"discountAmount": "5"}, "invalid request body"),
        ("apply-discount", {"discountName": "n" * 256, "discountAmount": 1},
         "discountName: at most 255 characters"),
    ]
    for action, body, message in cases:
        status, reply, _ = await act(http, org, iid, action, body)
        assert (status, reply["error"]["message"]) == (400, message), (action, body)
    status, reply, _ = await post(http, f"/invoices/{iid}/line-items", None, org.auth(),
                                  raw=b"{not json")
    assert (status, reply["error"]["message"]) == (400, "invalid request body")
    _, after, _ = await fetch(http, org, iid)
    assert after == invoice


async def test_a_draft_holds_at_most_100_lines(http, org):
    invoice = await create(http, org, {"userId": new_user(),
                                       "lineItems": [{"amount": 1}] * 100})
    assert error(await add(http, org, invoice["id"], {"description": "one more"})) == (
        400, "an invoice holds at most 100 line items")


# ---- events, idempotency, concurrency ------------------------------------------------------


async def test_every_change_is_an_event_in_the_outbox(http, org, platform):
    invoice = await draft(http, org, 1000)
    iid = invoice["id"]
    await add(http, org, iid, {"description": "more", "amount": 5})
    await act(http, org, iid, "finalize")
    await act(http, org, iid, "void")
    await act(http, org, iid, "void")  # refused: no event
    pool = platform.gateway.pool
    assert await events_of(pool, iid) == ["invoice.created", "invoice.updated",
                                          "invoice.finalized", "invoice.voided"]
    row = await pool.fetchrow(
        "select org_id, livemode, convert_from(payload, 'utf8')::jsonb as event"
        " from invoicing.outbox where convert_from(payload, 'utf8')::jsonb->>'objectId' = $1"
        " and type = 'invoice.finalized'", iid)
    event = row["event"]
    assert (event["objectType"], event["customerId"], event["livemode"],
            event["data"]["numberStr"], event["data"]["status"]) == (
        "invoice", invoice["userId"], False, "INV-0001", "open")
    assert event["orgId"] == await org_id_of(platform, org)


async def test_the_events_reach_the_event_log_through_jetstream(http, org):
    invoice = await draft(http, org, 1000)
    await act(http, org, invoice["id"], "finalize")

    async def logged():
        status, body, _ = await get(http, "/events", org.auth(), objectId=invoice["id"])
        assert status == 200, body
        return body

    body = await eventually(logged, lambda body: len(body) >= 2)
    assert [(e["type"], e["data"]["status"]) for e in body] == [
        ("invoice.finalized", "open"), ("invoice.created", "draft")]
    assert body[0]["customerId"] == invoice["userId"]


async def test_a_retried_create_makes_one_invoice(http, org):
    body = {"userId": new_user(), "lineItems": [{"amount": 100}]}
    headers = {**org.auth(), "Idempotency-Key": "create-once"}
    first = await post(http, "/invoices", body, headers)
    again = await post(http, "/invoices", body, headers)
    assert (first[0], again[0], again[1]["id"]) == (201, 201, first[1]["id"])
    assert again[2]["Idempotent-Replayed"] == "true"
    _, listed, _ = await get(http, "/invoices", org.auth(), userId=body["userId"])
    assert listed["count"] == 1


async def test_concurrent_edits_of_one_draft_all_count(http, org):
    invoice = await draft(http, org)
    replies = await asyncio.gather(*[
        add(http, org, invoice["id"], {"description": f"d{i}", "amount": 10})
        for i in range(20)])
    assert {status for status, _, _ in replies} == {200}
    _, after, _ = await fetch(http, org, invoice["id"])
    assert (after["subtotal"], len({line["id"] for line in after["lineItems"]})) == (200, 20)


# ---- what payments asks --------------------------------------------------------------------


async def test_payments_learns_which_invoices_it_may_refund(http, org, nc, platform):
    bus = Bus(nc, await org_id_of(platform, org))
    invoice = await draft(http, org, 1000)
    assert await bus.error(INVOICE_PAYMENT_GET.subject, {"invoiceId": "inv_nope"}) == (
        404, "invoice not found")
    assert await bus.error(INVOICE_PAYMENT_GET.subject, {"invoiceId": invoice["id"]}) == (
        400, "can only refund paid invoices, current: draft")
    # Through payments, as a client asks it (payments.md §9 65).
    status, body, _ = await post(http, "/refunds", {"invoiceId": invoice["id"]}, org.auth())
    assert (status, body["error"]["message"]) == (
        400, "can only refund paid invoices, current: draft")
    await platform.gateway.pool.execute(
        "update invoicing.invoices set status = 'paid', payment_intent_id = 'pi_1'"
        " where id = $1", invoice["id"])
    assert await bus.ok(INVOICE_PAYMENT_GET.subject, {"invoiceId": invoice["id"]}) == {
        "paymentIntentId": "pi_1"}
