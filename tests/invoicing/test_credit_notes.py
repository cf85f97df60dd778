"""Credit notes through the gateway (metering-invoicing.md §6, §11.9): numbering, amounts from
lines, never more than the invoice (open: what is still due; in all: its total), a note on an
open invoice lowers what is due, on a paid one credits the customer balance; voiding takes
that back once; bad input (4xx, nothing stored); other organizations and modes (404)."""

from __future__ import annotations

import asyncio

import pytest

from contracts.errors import Failure
from services.invoicing.credit_notes import domain
from services.invoicing.credit_notes.domain import number_str
from tests.invoicing.test_collection import customer_balance, deposit, open_invoice, paid
from tests.invoicing.test_invoices import draft, events_of, fetch
from tests.support import get, new_user, post


async def issue(http, org, body, key="sk_test"):
    return await post(http, "/credit-notes", body, org.auth(key))


async def issued(http, org, body):
    status, note, _ = await issue(http, org, body)
    assert status == 201, note
    return note


async def void(http, org, note_id, key="sk_test"):
    return await post(http, f"/credit-notes/{note_id}/void", None, org.auth(key))


def error(reply):
    return reply[0], reply[1]["error"]["message"]


async def test_the_first_note_of_an_organization(http, make_org, pool):  # 78, 81
    org = await make_org()
    invoice = await open_invoice(http, org, 8000)
    note = await issued(http, org, {"invoiceId": invoice["id"], "amount": 5000,
                                    "reason": "duplicate", "memo": "sorry"})
    assert {k: note[k] for k in ("number", "status", "customerId", "currency", "amount",
                                 "reason", "memo", "invoiceId")} == {
        "number": "CN-0001", "status": "issued", "customerId": invoice["userId"],
        "currency": "usd", "amount": 5000, "reason": "duplicate", "memo": "sorry",
        "invoiceId": invoice["id"]}
    assert note["created"].endswith("Z")
    status, got, _ = await get(http, f"/credit-notes/{note['id']}", org.auth())
    assert (status, got) == (200, note)
    assert (await void(http, org, note["id"]))[0] == 200
    second = await issued(http, org, {"invoiceId": invoice["id"], "amount": 100})
    assert second["number"] == "CN-0002"  # void notes keep their numbers
    assert "credit_note.created" in [r["type"] for r in await pool.fetch(
        "select type from invoicing.outbox where"
        " convert_from(payload, 'utf8')::jsonb->>'objectId' = $1", note["id"])]


async def test_the_amount_from_lines_and_out_of_band(http, org):  # 79
    invoice = await open_invoice(http, org, 9000)
    note = await issued(http, org, {"invoiceId": invoice["id"], "outOfBandAmount": 300,
                                    "lineItems": [{"amount": 100}, {"amount": 200}]})
    assert (note["amount"], note["outOfBandAmount"], len(note["lineItems"])) == (600, 300, 2)
    note = await issued(http, org, {"invoiceId": invoice["id"], "amount": 5000,
                                    "lineItems": [{"amount": 100}]})
    assert note["amount"] == 5000


async def test_a_note_on_an_open_invoice_lowers_what_is_due(http, org, pool):
    invoice = await open_invoice(http, org, 5000)
    note = await issued(http, org, {"invoiceId": invoice["id"], "amount": 1200})
    _, after, _ = await fetch(http, org, invoice["id"])
    assert (after["amountDue"], after["amountRemaining"]) == (3800, 3800)
    assert (await void(http, org, note["id"]))[0] == 200
    _, after, _ = await fetch(http, org, invoice["id"])
    assert after["amountDue"] == 5000
    assert (await events_of(pool, invoice["id"]))[-2:] == ["invoice.updated", "invoice.updated"]


async def test_a_note_on_a_paid_invoice_credits_the_customer(http, org):
    user = new_user()
    await deposit(http, org, user, 3000)
    invoice = await open_invoice(http, org, 3000, user)
    await paid(http, org, invoice["id"])
    note = await issued(http, org, {"invoiceId": invoice["id"], "amount": 1000})
    assert note["creditBalanceTransaction"].startswith("cbtxn_")
    assert await customer_balance(http, org, user) == 1000
    status, txns, _ = await get(http, "/balance-transactions", org.auth(), customerId=user)
    assert [(t["type"], t["amount"], t["creditNoteId"]) for t in txns] == [
        ("credit_note", 1000, note["id"])]
    assert (await void(http, org, note["id"]))[0] == 200
    assert error(await void(http, org, note["id"])) == (
        409, "can only void issued credit notes, current: void")  # 82
    assert await customer_balance(http, org, user) == 0


async def test_notes_never_exceed_the_invoice(http, org):  # 85
    invoice = await open_invoice(http, org, 5000)
    await issued(http, org, {"invoiceId": invoice["id"], "amount": 3000})
    assert error(await issue(http, org, {"invoiceId": invoice["id"], "amount": 3000})) == (
        400, "credit note total exceeds invoice total")
    # Part paid: no more than what is still due.
    user = new_user()
    await deposit(http, org, user, 4000)
    partly = await open_invoice(http, org, 5000, user)
    await paid(http, org, partly["id"])
    assert error(await issue(http, org, {"invoiceId": partly["id"], "amount": 1001})) == (
        400, "credit note total exceeds invoice total")
    await issued(http, org, {"invoiceId": partly["id"], "amount": 1000})


async def test_concurrent_notes_never_exceed_the_invoice(http, org):
    invoice = await open_invoice(http, org, 5000)
    replies = await asyncio.gather(*(issue(http, org, {"invoiceId": invoice["id"],
                                                       "amount": 2000}) for _ in range(4)))
    assert sorted(status for status, _, _ in replies) == [201, 201, 400, 400]
    assert len({body["number"] for status, body, _ in replies if status == 201}) == 2
    _, after, _ = await fetch(http, org, invoice["id"])
    assert after["amountDue"] == 1000


async def test_bad_notes_store_nothing(http, org):  # 80, 85
    invoice = await open_invoice(http, org, 5000)
    drafted = await draft(http, org, 5000)
    cases = [({}, (400, "invoiceId is required")),
             ({"invoiceId": "inv_nope", "amount": 5}, (404, "invoice not found")),
             ({"invoiceId": drafted["id"], "amount": 5},
              (400, "credit notes can only be issued for open or paid invoices")),
             ({"invoiceId": invoice["id"]}, (400, "credit note amount must be positive")),
             ({"invoiceId": invoice["id"], "lineItems": [{"amount": -5}]},
              (400, "credit note amount must be positive")),
             ({"invoiceId": invoice["id"], "lineItems": [
                 {"amount": 1, "description": "d" * 1000}] * 20},
              (400, "lineItems: at most 16384 bytes as JSON"))]
    for body, expected in cases:
        assert error(await issue(http, org, body)) == expected, body
    status, listed, _ = await get(http, "/credit-notes", org.auth(), invoiceId=invoice["id"])
    assert (status, listed) == (200, [])
    assert error(await void(http, org, "cn_nope")) == (404, "credit note not found")  # 82


async def test_lists_filter_newest_first(http, make_org):
    org = await make_org()
    a, b = await open_invoice(http, org, 5000), await open_invoice(http, org, 5000)
    first = await issued(http, org, {"invoiceId": a["id"], "amount": 10})
    second = await issued(http, org, {"invoiceId": a["id"], "amount": 20})
    other = await issued(http, org, {"invoiceId": b["id"], "amount": 30})
    _, listed, _ = await get(http, "/credit-notes", org.auth(), invoiceId=a["id"])
    assert [n["id"] for n in listed] == [second["id"], first["id"]]
    _, listed, _ = await get(http, "/credit-notes", org.auth(), customerId=b["userId"])
    assert [n["id"] for n in listed] == [other["id"]]
    _, listed, _ = await get(http, "/credit-notes", org.auth())
    assert len(listed) == 3


async def test_other_organizations_and_modes_see_nothing(http, org, make_org):
    invoice = await open_invoice(http, org, 5000)
    note = await issued(http, org, {"invoiceId": invoice["id"], "amount": 10})
    other = await make_org()
    for who, key in ((other, "sk_test"), (org, "sk_live")):
        assert error(await void(http, who, note["id"], key)) == (404, "credit note not found")
        status, _, _ = await get(http, f"/credit-notes/{note['id']}", who.auth(key))
        assert status == 404
        assert error(await issue(http, who, {"invoiceId": invoice["id"], "amount": 1}, key)) == (
            404, "invoice not found")


def test_numbers_as_the_reference_formats_them():  # 83
    assert [number_str(n) for n in (1, 42, 9999, 12345, 0, -1, 1000000)] == [
        "CN-0001", "CN-0042", "CN-9999", "CN-12345", "CN-0000", "CN--001", "CN-1000000"]


async def test_no_note_while_the_invoice_is_being_collected(http, org, pool):
    """What is due never changes under a running attempt (it would take more than due)."""
    invoice = await open_invoice(http, org, 5000)
    org_id = await pool.fetchval("select org_id from invoicing.invoices where id = $1",
                                 invoice["id"])
    await pool.execute(
        "insert into invoicing.collection_attempts (org_id, livemode, invoice_id, attempt,"
        " due, lease_until) values ($1, false, $2, 1, 5000, now() + interval '1 minute')",
        org_id, invoice["id"])
    assert error(await issue(http, org, {"invoiceId": invoice["id"], "amount": 10})) == (
        409, "invoice payment already in progress")
    _, after, _ = await fetch(http, org, invoice["id"])
    assert after["amountDue"] == 5000


def test_where_a_note_goes_and_when_it_is_refused():
    open_invoice_ = domain.Invoice(status="open", total=5000, due_left=2000, credited=0)
    assert domain.applied_to(open_invoice_, 2000) == "invoice"
    paid = domain.Invoice(status="paid", total=5000, due_left=0, credited=3000)
    assert domain.applied_to(paid, 2000) == "customer_balance"
    for invoice, credit in ((open_invoice_, 2001), (paid, 2001)):
        with pytest.raises(Failure) as refused:
            domain.applied_to(invoice, credit)
        assert refused.value.error.message == "credit note total exceeds invoice total"
