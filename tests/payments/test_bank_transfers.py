"""Bank-transfer instructions and reconciliation (payments.md §2.7, §4.7, §4.8, §8.4, §8.5,
§9 77–80): masking and references without I/O, then through the gateway — a transfer
credits the customer once however often, or however concurrently, it is matched; both
reconciliation paths; a ledger that does not answer leaves the credit owed, finished once;
organizations and modes apart; bad input refused with nothing stored."""

from __future__ import annotations

import asyncio

import pytest

from contracts.payouts import InstructionCreateParams
from services.payments.bank_transfers import domain
from tests.conftest import bearer, iam_token
from tests.support import (
    balance,
    events_of,
    eventually,
    get,
    new_user,
    post,
    refused,
    service_down,
)

PATHS = ("/reconciliation/match", "/bank-transfer-instructions/reconciliation/match")

# ---- the rules, without I/O ---------------------------------------------------------------


@pytest.mark.parametrize(("number", "masked"), [  # §8.4
    ("000123456789", "****6789"), ("12345", "****2345"), ("1234", "1234"), ("12", "12"),
    ("", ""), ("ÄÖÜß12345", "****2345")])
def test_masking(number, masked):
    assert domain.mask(number) == masked


def test_references():
    made = {domain.new_reference() for _ in range(200)}
    assert len(made) == 200
    assert all(len(r) == 8 and set(r) <= set(domain.REFERENCE_ALPHABET) for r in made)
    assert domain.reference("  a1b2c3d4 ") == "A1B2C3D4"


def test_what_an_instruction_needs():  # §9 77
    def new(body):
        return domain.new_instruction(InstructionCreateParams(**body))

    full = {"customerId": "cus_1", "type": "wire", "bankName": "Chase",
            "accountNumber": "000123456789"}
    for missing, message in (("customerId", "customerId is required"),
                             ("type", "type is required (ach, wire, sepa)"),
                             ("bankName", "bankName is required"),
                             ("accountNumber", "accountNumber is required")):
        assert refused(new, {**full, missing: " "}) == (400, message)
    for kind in ("swift", "ACH"):
        assert refused(new, {**full, "type": kind}) == (
            400, "type must be one of: ach, wire, sepa")
    assert refused(new, {**full, "currency": "usdollar"}) == (400, "invalid currency")
    made = new({**full, "currency": "USD", "routingNumber": "021000021",
                "iban": "DE89370400440532013000"})
    assert (made.account_number, made.routing_number, made.iban, made.currency) == (
        "****6789", "****0021", "****3000", "usd")


# ---- through the gateway ------------------------------------------------------------------

WIRE = {"type": "wire", "bankName": "Chase", "accountNumber": "000123456789"}


async def instruct(http, org, customer, key="sk_test", **body):
    status, made, _ = await post(http, "/bank-transfer-instructions",
                                 {"customerId": customer, **WIRE, **body}, org.auth(key))
    assert status == 201, made
    return made


async def match(http, org, body, key="sk_test", path=PATHS[0], headers=None):
    return await post(http, path, body, {**org.auth(key), **(headers or {})})


async def test_an_instruction(http, org, pool):  # §9 78, 79
    customer = new_user()
    made = await instruct(http, org, customer, currency="USD", accountHolder="Acme Inc",
                          routingNumber="021000021", bic="CHASUS33")
    assert {k: made[k] for k in ("customerId", "currency", "type", "bankName",
                                 "accountNumber", "status", "accountHolder", "routingNumber",
                                 "bic", "livemode")} == {
        "customerId": customer, "currency": "usd", "type": "wire", "bankName": "Chase",
        "accountNumber": "****6789", "status": "active", "accountHolder": "Acme Inc",
        "routingNumber": "****0021", "bic": "CHASUS33", "livemode": False}
    assert made["id"].startswith("bti_") and len(made["reference"]) == 8
    assert made["createdAt"].endswith("Z") and made["updatedAt"].endswith("Z")
    assert "iban" not in made and "metadata" not in made
    status, got, _ = await get(http, f"/bank-transfer-instructions/{made['id']}", org.auth())
    assert (status, got) == (200, made)
    status, listed, _ = await get(http, "/bank-transfer-instructions", org.auth(),
                                  customerId=customer)
    assert (status, listed) == (200, {"instructions": [made], "count": 1})
    status, body, _ = await get(http, "/bank-transfer-instructions/bti_nope", org.auth())
    assert (status, body["error"]["message"]) == (404, "bank transfer instruction not found")
    assert await events_of(pool, made["id"]) == ["bank_transfer_instruction.created"]
    # Nothing of the account number is kept beyond its last four digits.
    assert await pool.fetchval("select count(*) from payments.bank_transfer_instructions"
                               " where account_number like '%12345%'") == 0


async def test_the_reconciliation_scenario(http, org, pool):  # §8.5, §9 80
    customer = new_user()
    made = await instruct(http, org, customer)
    await pool.execute("update payments.bank_transfer_instructions set reference = 'A1B2C3D4'"
                       " where id = $1", made["id"])
    status, first, _ = await match(http, org, {"reference": "a1b2c3d4", "amount": 150000})
    assert status == 200, first
    transaction = first.pop("transaction")
    assert first == {"matched": True, "reference": "A1B2C3D4", "customerId": customer,
                     "amount": 150000, "currency": "usd", "transferType": "wire"}
    assert (transaction["amount"], transaction["endingBalance"], transaction["type"]) == (
        150000, 150000, "bank_transfer")
    assert transaction["id"] and transaction["created"].endswith("Z")
    assert await balance(http, org, customer) == 150000
    # Without a transferId (or a key) nothing names the transfer: a second real transfer
    # with the same reference credits again (§8.5 step 2, DO). Case and spaces do not count.
    status, second, _ = await match(http, org, {"reference": " A1B2C3D4", "amount": 150000},
                                    path=PATHS[1])
    assert (status, second["transaction"]["endingBalance"]) == (200, 300000)
    assert "duplicate" not in second
    status, body, _ = await match(http, org, {"reference": "a1b2c3d4", "amount": 0})
    assert (status, body["error"]["message"]) == (400, "amount must be positive")
    assert await balance(http, org, customer) == 300000
    # The instruction stays active; each match is announced.
    status, got, _ = await get(http, f"/bank-transfer-instructions/{made['id']}", org.auth())
    assert got["status"] == "active"
    assert await pool.fetchval(
        "select count(*) from payments.outbox where type = 'bank_transfer.reconciled'"
        " and convert_from(payload, 'utf8')::jsonb->>'customerId' = $1", customer) == 2


async def test_the_same_transfer_is_credited_once(http, org):
    customer = new_user()
    made = await instruct(http, org, customer)
    body = {"reference": made["reference"], "amount": 2500, "transferId": "bank-tx-1"}
    for path in PATHS:
        status, answer, _ = await match(http, org, body, path=path)
        assert status == 200, answer
        if path == PATHS[0]:
            first = answer
    assert first["transferId"] == "bank-tx-1" and "duplicate" not in first
    assert answer == {**first, "duplicate": True}
    assert await balance(http, org, customer) == 2500
    # Another transfer with the same reference is another credit.
    status, other, _ = await match(http, org, {**body, "transferId": "bank-tx-2"})
    assert (status, other["transaction"]["endingBalance"]) == (200, 5000)


async def test_twenty_concurrent_matches_of_one_transfer_credit_once(http, org, platform,
                                                                      nc, pool):
    customer = new_user()
    made = await instruct(http, org, customer)
    body = {"reference": made["reference"], "amount": 7000, "transferId": "bank-tx-race"}
    results = await asyncio.gather(*[match(http, org, body, path=PATHS[i % 2])
                                     for i in range(20)])
    assert [status for status, _, _ in results] == [200] * 20, results
    answers = [answer for _, answer, _ in results]
    assert sum(not a.get("duplicate") for a in answers) == 1
    assert {(a["transaction"]["id"], a["transaction"]["endingBalance"]) for a in answers} == {
        (answers[0]["transaction"]["id"], 7000)}
    assert await balance(http, org, customer) == 7000
    status, txs, _ = await get(http, "/transactions", org.auth(), user=customer)
    assert status == 200 and [t["amount"] for t in txs["transactions"]] == [7000]
    # The journal recorded the money received once, with the credit.
    assert await pool.fetchval(
        "select count(*) from ledger.journal_entries e join ledger.journal_postings p"
        " on (p.org_id, p.livemode, p.entry_id) = (e.org_id, e.livemode, e.id)"
        " join ledger.journal_accounts a on (a.org_id, a.livemode, a.id)"
        " = (p.org_id, p.livemode, p.account_id)"
        " where a.name = 'customer_balance:' || $1 and p.amount = -7000", customer) == 1


async def test_an_idempotency_key_names_the_transfer(http, org):
    customer = new_user()
    made = await instruct(http, org, customer)
    body = {"reference": made["reference"], "amount": 900}
    keyed = {"Idempotency-Key": f"wire-{made['id']}"}
    status, first, _ = await match(http, org, body, headers=keyed)
    status2, again, _ = await match(http, org, body, headers=keyed)
    assert (status, status2) == (200, 200) and again == {**first, "duplicate": True}
    status, reply, _ = await match(http, org, {**body, "amount": 901}, headers=keyed)
    assert (status, reply["error"]["message"]) == (
        422, "idempotency key reused with different parameters")
    assert await balance(http, org, customer) == 900


async def test_a_credit_the_ledger_did_not_answer_is_finished_once(http, org, platform):
    customer = new_user()
    made = await instruct(http, org, customer)
    body = {"reference": made["reference"], "amount": 1200, "transferId": "bank-tx-down"}
    async with service_down(platform, "ledger"):
        status, reply, _ = await match(http, org, body)
        assert (status, reply["error"]["message"]) == (503, (
            "transfer matched; the balance credit is pending, retry to see it"))
    # The posting job (or the same match again) credits it, once.
    status, again, _ = await eventually(lambda: match(http, org, body),
                                        lambda r: r[0] == 200, timeout=20)
    assert (status, again["duplicate"], again["transaction"]["endingBalance"]) == (
        200, True, 1200)
    assert await eventually(lambda: balance(http, org, customer), lambda b: b == 1200) == 1200
    status, after, _ = await match(http, org, body)
    assert after == again and await balance(http, org, customer) == 1200


async def test_what_cannot_be_matched(http, org, pool):
    customer = new_user()
    made = await instruct(http, org, customer, currency="eur")
    status, body, _ = await match(http, org, {"reference": made["reference"], "amount": 100})
    assert (status, body["error"]["message"]) == (
        400, "currency does not match instruction currency eur")
    status, body, _ = await match(http, org, {"reference": "ZZZZZZZZ", "amount": 100})
    assert (status, body["error"]["message"]) == (404, "no active instruction found for reference")
    await pool.execute("update payments.bank_transfer_instructions set status = 'expired'"
                       " where id = $1", made["id"])
    status, body, _ = await match(http, org, {"reference": made["reference"], "amount": 100,
                                              "currency": "eur"})
    assert (status, body["error"]["message"]) == (404, "no active instruction found for reference")
    assert await pool.fetchval("select count(*) from payments.bank_transfer_matches"
                               " where instruction_id = $1", made["id"]) == 0


async def test_bad_input_is_refused_and_nothing_is_stored(http, org, pool):
    customer = new_user()
    create_cases = [
        ({**WIRE}, "customerId is required"),
        ({"customerId": customer, **WIRE, "type": "swift"}, "type must be one of: ach, wire, sepa"),
        ({"customerId": customer, **WIRE, "bankName": 5}, "invalid request body"),
        ({"customerId": customer, **WIRE, "currency": "dollars"}, "invalid currency"),
        ({"customerId": customer, **WIRE, "accountNumber": "1" * 65},
         "accountNumber: at most 64 characters"),
        ({"customerId": customer, **WIRE, "metadata": []}, "invalid request body"),
    ]
    for body, message in create_cases:
        status, reply, _ = await post(http, "/bank-transfer-instructions", body, org.auth())
        assert (status, reply["error"]["message"]) == (400, message), body
    status, listed, _ = await get(http, "/bank-transfer-instructions", org.auth(),
                                  customerId=customer)
    assert listed == {"instructions": [], "count": 0}
    made = await instruct(http, org, customer)
    match_cases = [
        ({"amount": 100}, "reference is required"),
        ({"reference": made["reference"]}, "amount must be positive"),
        ({"reference": made["reference"], "amount": -1}, "amount must be positive"),
        ({"reference": made["reference"], "amount": "1"}, "invalid request body"),
        ({"reference": made["reference"], "amount": 1.5}, "invalid request body"),
        ({"reference": made["reference"], "amount": 1, "currency": "u$d"}, "invalid currency"),
        ({"reference": made["reference"], "amount": 1, "transferId": "t" * 256},
         "transferId: at most 255 characters"),
    ]
    for path in PATHS:
        for body, message in match_cases:
            status, reply, _ = await match(http, org, body, path=path)
            assert (status, reply["error"]["message"]) == (400, message), body
        for raw in (b"{", b"", b"[]"):
            status, reply, _ = await post(http, path, None, org.auth(), raw=raw)
            assert (status, reply["error"]["message"]) == (400, "invalid request body")
    assert await pool.fetchval("select count(*) from payments.bank_transfer_matches"
                               " where customer_id = $1", customer) == 0
    assert await balance(http, org, customer) == 0


async def test_organizations_and_modes_are_apart(http, org, make_org):
    customer = new_user()
    made = await instruct(http, org, customer)
    other = await make_org()
    for auth_org, key in ((other, "sk_test"), (org, "sk_live")):
        status, body, _ = await get(http, f"/bank-transfer-instructions/{made['id']}",
                                    auth_org.auth(key))
        assert (status, body["error"]["message"]) == (404, "bank transfer instruction not found")
        status, listed, _ = await get(http, "/bank-transfer-instructions", auth_org.auth(key))
        assert listed == {"instructions": [], "count": 0}
        status, body, _ = await match(http, auth_org, {"reference": made["reference"],
                                                       "amount": 100}, key)
        assert (status, body["error"]["message"]) == (404, "no active instruction found for "
                                                           "reference")
    assert await balance(http, org, customer) == 0


async def test_reconciliation_mints_minters_only(http, org):
    made = await instruct(http, org, new_user())
    user = bearer(iam_token(owner=org.name, name="alice"))
    for headers in (user, org.auth("pk_test")):
        for path in PATHS:
            status, _, _ = await post(http, path, {"reference": made["reference"],
                                                   "amount": 100}, headers)
            assert status == 403
        status, _, _ = await get(http, "/bank-transfer-instructions", headers)
        assert status == 403
