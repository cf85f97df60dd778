"""Issue 8 item 10: nothing a client sends or stores can outgrow the bus's message limit
(NATS `max_payload`, 1 MB by default).

Field size limits (400 naming the field and the limit, nothing written), NUL refused, lists
always paged, bodies over the gateway's limit answered 413, and a reply too large for the bus
answered with a prompt error instead of a timeout.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import msgspec
import pytest

from contracts import Actor, ErrorCode
from contracts.alerts import SpendAlert
from contracts.credits import CreditGrantItem
from contracts.endpoint import Endpoint
from contracts.invoicing import (
    BALANCE_TRANSACTIONS_PAGE,
    CREDIT_NOTE_LINES_BYTES,
    CREDIT_NOTES_PAGE,
    INVOICES_PAGE,
    LINE_ITEMS_BYTES,
    BalanceTransaction,
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceList,
    LineItem,
)
from contracts.ledger import (
    DEPOSIT_CREATE,
    DepositParams,
    Params,
    TransactionItem,
    TransactionList,
    UsageItem,
    UsageList,
    UsageRecordParams,
)
from contracts.limits import (
    CREDIT_GRANTS_PAGE,
    METADATA_BYTES,
    METERS_PAGE,
    SPEND_ALERTS_PAGE,
    TRANSACTIONS_PAGE,
    USAGE_PAGE,
    Page,
)
from contracts.metering import Meter, MeterList
from services.ledger.balances import domain
from services.runtime.service import Router
from tests import support
from tests.support import API, bus_service, get, post

NATS_DEFAULT_MAX_PAYLOAD = 1024 * 1024


def refused(status: int, reply: dict, message: str, param: str | None) -> bool:
    error = reply["error"]
    return (status, error["message"], error.get("param"), error["code"]) == (
        400, message, param, "invalid_request")


# ---- field size limits -------------------------------------------------------------------


async def test_a_deposit_with_600_kb_of_notes_is_refused_and_writes_nothing(http, org):
    user = "hanzo/notes"
    status, reply, _ = await post(http, "/deposit", {"user": user, "amount": 100,
                                                    "notes": "n" * 600_000}, org.auth())
    assert refused(status, reply, "notes: at most 1000 characters", "notes")
    status, listed, _ = await get(http, "/transactions", org.auth(), user=user)
    assert (status, listed["count"]) == (200, 0)
    # At the limit it is accepted.
    status, _, _ = await post(http, "/deposit", {"user": user, "amount": 100,
                                                "notes": "n" * 1000}, org.auth())
    assert status == 201


@pytest.mark.parametrize(("metadata", "message"), [
    ({f"k{i}": i for i in range(51)}, "metadata: at most 50 keys"),
    ({"k" * 41: 1}, "metadata: at most 40 characters per key"),
    ({"k": "v" * METADATA_BYTES}, f"metadata: at most {METADATA_BYTES} bytes as JSON"),
    # jsonb stores numbers in full: ten times 1e300 comes back as over 3000 digits.
    ({f"k{i}": 1e300 for i in range(10)}, f"metadata: at most {METADATA_BYTES} bytes as JSON"),
])
async def test_deposit_metadata_is_bounded(http, org, metadata, message):
    status, reply, _ = await post(http, "/deposit", {"user": "hanzo/meta", "amount": 1,
                                                    "metadata": metadata}, org.auth())
    assert refused(status, reply, message, "metadata")


async def test_usage_and_grant_and_alert_fields_are_bounded(http, org):
    status, reply, _ = await post(http, "/usage", {"user": "hanzo/u", "amount": 1,
                                                  "requestId": "r" * 256}, org.auth())
    assert refused(status, reply, "requestId: at most 255 characters", "requestId")
    status, reply, _ = await post(http, "/credit-grants", {"userId": "hanzo/u", "amountCents": 1,
                                                          "name": "g" * 256}, org.auth())
    assert refused(status, reply, "name: at most 255 characters", "name")
    status, reply, _ = await post(http, "/credit-grants", {
        "userId": "hanzo/u", "amountCents": 1, "eligibility": ["m"] * 101}, org.auth())
    assert refused(status, reply, "eligibility: at most 100 items", "eligibility")
    status, reply, _ = await post(http, "/spend-alerts", {"userId": "hanzo/u", "threshold": 5,
                                                         "title": "t" * 300}, org.auth())
    assert refused(status, reply, "title: at most 255 characters", "title")
    # Query strings too; other malformed input keeps the reference's messages.
    status, reply, _ = await get(http, "/balance", org.auth(), user="u" * 256)
    assert refused(status, reply, "user: at most 255 characters", "user")
    status, reply, _ = await post(http, "/deposit", {"user": "x", "amount": "5"}, org.auth())
    assert refused(status, reply, "invalid request body", None)


async def test_a_meter_with_huge_dimensions_is_refused(http, org):
    body = {"name": "Big", "eventName": f"big-{secrets.token_hex(3)}",
            "dimensions": ["d" * 600_000]}
    status, reply, _ = await post(http, "/meters", body, org.auth())
    assert refused(status, reply, "dimensions[0]: at most 40 characters", "dimensions[0]")
    status, reply, _ = await post(http, "/meters", {**body, "dimensions": ["d"] * 21}, org.auth())
    assert refused(status, reply, "dimensions: at most 20 items", "dimensions")
    status, listed, _ = await get(http, "/meters", org.auth())
    assert (status, listed["count"]) == (200, 0)


async def test_zap_names_the_limit_too(http, org):
    call = {"method": "billing.deposit", "id": 7,
            "params": {"user": "hanzo/zap", "amount": 1, "tags": "t" * 101}}
    status, reply, _ = await post(http, "/zap", call, org.auth())
    assert (status, reply["error"]["message"]) == (
        200, "invalid params: tags: at most 100 characters")


async def test_a_bus_caller_gets_the_same_refusal(platform, settings):
    async with bus_service(settings) as caller:
        scope = support.scope("org_bus", org_name="bus", request_id="r1")
        reply = await caller.request(DEPOSIT_CREATE.subject, scope,
                                 {"user": "hanzo/bus", "amount": 1, "notes": "n" * 1001})
        assert reply is not None and reply.error is not None
        assert (reply.error.status, reply.error.message, reply.error.param) == (
            400, "notes: at most 1000 characters", "notes")
        reply = await caller.request(DEPOSIT_CREATE.subject, scope,
                                 {"user": "hanzo/bus", "amount": 1, "metadata": {"k": "v" * 3000}})
        assert (reply.error.status, reply.error.message, reply.error.param) == (
            400, f"metadata: at most {METADATA_BYTES} bytes as JSON", "metadata")


# ---- NUL ---------------------------------------------------------------------------------


async def test_nul_is_refused_but_an_escaped_backslash_is_not(http, org):
    user = "hanzo/nul"
    raw = b'{"user": "hanzo/nul", "amount": 5, "notes": "a\\u0000b"}'
    status, reply, _ = await post(http, "/deposit", None, org.auth(), raw=raw)
    assert refused(status, reply, "notes: must not contain NUL characters (\\u0000)", "notes")
    raw = b'{"user": "hanzo/nul", "amount": 5, "metadata": {"k\\u0000": 1}}'
    status, reply, _ = await post(http, "/deposit", None, org.auth(), raw=raw)
    assert refused(status, reply, "metadata.k\\u0000: must not contain NUL characters "
                   "(\\u0000)", "metadata.k\\u0000")
    # `\\u0000` is a backslash followed by "u0000": ordinary text.
    raw = b'{"user": "hanzo/nul", "amount": 5, "notes": "a\\\\u0000b"}'
    status, _, _ = await post(http, "/deposit", None, org.auth(), raw=raw)
    assert status == 201
    status, listed, _ = await get(http, "/transactions", org.auth(), user=user)
    assert [t["notes"] for t in listed["transactions"]] == ["a\\u0000b"]
    status, reply, _ = await get(http, "/balance", org.auth(), user="hanzo/\x00nul")
    assert refused(status, reply, "user: must not contain NUL characters (\\u0000)", "user")


# ---- lists are paged ---------------------------------------------------------------------


async def test_meters_are_paged(http, org):
    made = await asyncio.gather(*[
        post(http, "/meters", {"name": f"M{i}", "eventName": f"ev-{i}"}, org.auth())
        for i in range(METERS_PAGE.maximum + 20)])
    assert {status for status, _, _ in made} == {201}
    started = time.monotonic()
    status, page, _ = await get(http, "/meters", org.auth())
    assert time.monotonic() - started < 2
    assert (status, page["count"], len(page["meters"])) == (200, METERS_PAGE.default,
                                                            METERS_PAGE.default)
    status, page, _ = await get(http, "/meters", org.auth(), limit="100000")
    assert len(page["meters"]) == METERS_PAGE.maximum
    status, rest, _ = await get(http, "/meters", org.auth(), offset=str(METERS_PAGE.maximum))
    assert rest["count"] == 20


async def test_transactions_and_usage_are_paged(http, org):
    user = "hanzo/many"
    n = max(TRANSACTIONS_PAGE.maximum, USAGE_PAGE.maximum) + 30
    made = await asyncio.gather(*[
        post(http, "/usage", {"user": user, "amount": 1, "requestId": f"r{i}"}, org.auth())
        for i in range(n)])
    assert {status for status, _, _ in made} == {201}
    status, page, _ = await get(http, "/transactions", org.auth(), user=user, limit="100000")
    assert (status, page["count"], len(page["transactions"])) == (
        200, n, TRANSACTIONS_PAGE.maximum)
    status, page, _ = await get(http, "/usage", org.auth(), user=user)
    assert (status, page["count"], len(page["usage"])) == (200, USAGE_PAGE.default,
                                                           USAGE_PAGE.default)


def test_a_full_page_of_rows_at_every_limit_fits_in_one_bus_message():
    """Every field at its limit, written with the costliest character (a control character
    is 6 bytes in JSON): the largest page of each list still fits, with room to spare."""
    w = "\x01"
    ts = "2026-12-06T21:00:00.123456Z"
    big = 2**63 - 1
    metadata = {"k": "v" * (METADATA_BYTES - len('{"k":""}'))}
    assert len(msgspec.json.encode(metadata)) == METADATA_BYTES
    usage = domain.usage_debit(UsageRecordParams(
        user=w * 255, currency="abcdefghij", amount=big, model=w * 255, provider=w * 255,
        requestId=w * 255, status=w * 64, clientIp=w * 64, promptTokens=big,
        completionTokens=big, totalTokens=big, premium=True, stream=True))
    transactions = [
        TransactionItem(id="txn_" + "x" * 22, type="withdraw", amount=-big,
                        currency="abcdefghij", createdAt=ts, tags=w * 100, notes=w * 1000,
                        metadata={"k": w * ((METADATA_BYTES - 8) // 6)}, expiresAt=ts),
        TransactionItem(id="txn_" + "x" * 22, type="withdraw", amount=-big,
                        currency="abcdefghij", createdAt=ts, tags=usage.tags,
                        notes=usage.notes, metadata=usage.metadata, expiresAt=ts),
    ]
    usage_items = [UsageItem(t.id, t.amount, t.currency, t.notes, t.metadata or {}, ts)
                   for t in transactions]
    grant = CreditGrantItem(id="cg_" + "x" * 22, userId=w * 255, name=w * 255, amountCents=big,
                            remainingCents=big, currency="abcdefghij", priority=-big,
                            effectiveAt=ts, tags=w * 100, voided=True, active=True,
                            createdAt=ts, expiresAt=ts)
    alert = SpendAlert(id="sa_" + "x" * 22, userId=w * 255, title=w * 255, threshold=big,
                       currency="abcdefghij", triggeredAt=ts, createdAt=ts, updatedAt=ts)
    meter = Meter(id="mtr_" + "x" * 22, name=w * 255, eventName=w * 255,
                  aggregationType="unique_count", currency="abcdefghij",
                  dimensions=[w * 40] * 20, createdAt=ts)

    def reply_size(page: Page, result_of) -> int:
        return len(msgspec.json.encode({"result": result_of(page.maximum), "status": 200}))

    budget = NATS_DEFAULT_MAX_PAYLOAD * 0.9
    for row in transactions:
        assert reply_size(TRANSACTIONS_PAGE, lambda n, row=row: TransactionList(
            [row] * n, big, w * 255)) < budget
    for item in usage_items:
        assert reply_size(USAGE_PAGE, lambda n, item=item: UsageList(
            w * 255, n, [item] * n)) < budget
    assert reply_size(CREDIT_GRANTS_PAGE, lambda n: {"grants": [grant] * n, "count": n}) < budget
    assert reply_size(SPEND_ALERTS_PAGE, lambda n: [alert] * n) < budget
    assert reply_size(METERS_PAGE, lambda n: MeterList([meter] * n, n)) < budget
    line = LineItem(id=w * 255, type="proration", description="", amount=-big,
                    currency="abcdefghij", periodStart=ts, periodEnd=ts, meterId=w * 255,
                    quantity=big, unitPrice=big, planId=w * 255)
    room = LINE_ITEMS_BYTES - len(msgspec.json.encode([line]))
    lines = [msgspec.structs.replace(line, description=w * (room // 6))]
    assert LINE_ITEMS_BYTES - 6 < len(msgspec.json.encode(lines)) <= LINE_ITEMS_BYTES
    invoice = Invoice(
        id="inv_" + "x" * 22, userId=w * 255, customerEmail=w * 255, subscriptionId=w * 255,
        periodStart=ts, periodEnd=ts, subtotal=big, tax=big, discount=big, creditApplied=big,
        amountDue=big, amountPaid=big, currency="abcdefghij", status="uncollectible",
        paymentMethod=w * 255, paymentRef=w * 255, number=big, numberStr="INV-" + "9" * 19,
        attemptCount=2**31 - 1, lineItems=lines, createdAt=ts, updatedAt=ts,
        discountName=w * 255, amountRemaining=big, livemode=True, metadata=metadata,
        dueDate=ts, paidAt=ts, voidedAt=ts)
    assert reply_size(INVOICES_PAGE, lambda n: InvoiceList([invoice] * n, n)) < budget
    balance_txn = BalanceTransaction(
        id="cbtxn_" + "x" * 22, customerId=w * 255, amount=-big, currency="abcdefghij",
        type="invoice_payment", endingBalance=-big, created=ts, description=w * 1000,
        invoiceId=w * 255, creditNoteId="cn_" + "x" * 22, sourceRef=w * 300)
    assert reply_size(BALANCE_TRANSACTIONS_PAGE, lambda n: [balance_txn] * n) < budget
    note_line = CreditNoteLine(description="x", amount=-big, currency=w * 64, quantity=big,
                               unitPrice=big)
    room = CREDIT_NOTE_LINES_BYTES - len(msgspec.json.encode([note_line])) + 1
    note_lines = [msgspec.structs.replace(note_line, description=w * (room // 6))]
    assert len(msgspec.json.encode(note_lines)) <= CREDIT_NOTE_LINES_BYTES
    note = CreditNote(id="cn_" + "x" * 22, invoiceId=w * 255, customerId=w * 255,
                      number="CN-" + "9" * 19, amount=big, currency="abcdefghij",
                      status="issued", created=ts, reason=w * 64, lineItems=note_lines,
                      outOfBandAmount=big, creditBalanceTransaction="cbtxn_" + "x" * 22,
                      memo=w * 1000)
    assert reply_size(CREDIT_NOTES_PAGE, lambda n: [note] * n) < budget


# ---- the bus's message limit -------------------------------------------------------------


async def test_a_body_over_the_gateway_limit_is_413_with_the_envelope(http, org, platform):
    limit = platform.gateway.body_limit()
    assert limit < platform.gateway.nc.max_payload
    note = "n" * 900
    # A body just over the limit, and one well over the bus's limit (once a 500).
    for size in (limit + 1, 3 * NATS_DEFAULT_MAX_PAYLOAD // 2):
        body = json.dumps({"user": "hanzo/big", "amount": 1,
                           "metadata": {"pad": "p" * size}, "notes": note}).encode()
        status, reply, _ = await post(http, "/deposit", None, org.auth(), raw=body)
        assert (status, reply["error"]["message"], reply["error"]["code"]) == (
            413, "request body too large", "invalid_request")
        assert reply["error"]["requestId"]
    # The asynchronous meter-event path (once a 503 that no retry could fix).
    events = [{"meterId": "mtr_x", "userId": "u", "value": 1,
               "dimensions": {"pad": "p" * 20_000}} for _ in range(60)]
    async with http.post(API + "/meter-events", json={"events": events},
                         headers={**org.auth(), "Prefer": "respond-async"}) as r:
        assert r.status == 413
        assert (await r.json())["error"]["message"] == "request body too large"


async def test_a_body_that_grows_past_the_bus_limit_when_forwarded_is_413(http, org):
    # 4 bytes each in the body, 13 once re-encoded (`1000000000.0,`): under the body limit,
    # over the bus's once wrapped in a request (was a 500 from the failed publish).
    body = b'{"events": [{"meterId": "mtr_x", "userId": "u", "value": 1, "dimensions": ' \
           b'{"v": [' + b",".join([b"1e9"] * 200_000) + b"]}}]}"
    status, reply, _ = await post(http, "/meter-events", None, org.auth(), raw=body)
    assert (status, reply["error"]["message"]) == (413, "request body too large")


async def test_a_reply_too_large_for_the_bus_is_answered_with_an_error_at_once(settings):
    subject = f"test.limits.{secrets.token_hex(3)}.huge"
    router = Router()

    @router.handler(Endpoint(subject, Params, None))
    async def huge(ctx, scope, p):
        return {"blob": "x" * (2 * NATS_DEFAULT_MAX_PAYLOAD)}

    async with bus_service(settings, router) as server:
        scope = support.scope("org_bus", org_name="bus", request_id="r1",
                              actor=Actor(kind="service", role="platform"))
        started = time.monotonic()
        reply = await server.request(subject, scope, Params(), timeout=5)
        assert time.monotonic() - started < 2
        assert reply is not None and reply.error is not None
        assert (reply.error.status, reply.error.code) == (500, ErrorCode.REPLY_TOO_LARGE)


def test_deposit_params_refuse_oversized_metadata_when_decoded_anywhere():
    with pytest.raises(msgspec.ValidationError, match="metadata: at most"):
        msgspec.json.decode(msgspec.json.encode({"metadata": {"k": "v" * 5000}}),
                            type=DepositParams)
