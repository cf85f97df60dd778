"""`POST /billing/card/tokenize` (payments.md §4.9, §11 25): the reference's checks and
messages, then always 503 so that clients fall back to the provider's browser SDK; bodies
over 4 KiB refused; the card never stored, forwarded or logged."""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import bearer, iam_token
from tests.support import org_id_of, post

NUMBER, CVC = "4111 1111 1111 1111", "737"
CARD = {"number": NUMBER, "expiry_month": "04", "expiry_year": "2031", "cvc": CVC,
        "name": "Ada Lovelace", "zip": "94107"}
UNAVAILABLE = "server-side card tokenization not available; use Square Web Payments SDK"


async def tokenize(http, headers, body=None, raw=None):
    status, reply, _ = await post(http, "/card/tokenize", body, headers, raw=raw)
    return status, reply["error"]["message"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"number": ""}, "invalid card number"),
    ({"number": "4242 4242 4242"}, "invalid card number"),  # 12 without the spaces
    ({"number": "4" * 20}, "invalid card number"),
    ({"number": "4242 4242 4242 4", "expiry_month": ""},  # 13: long enough
     "expiry_month and expiry_year are required"),
    ({"expiry_year": ""}, "expiry_month and expiry_year are required"),
    ({"cvc": ""}, "cvc is required"),
])
async def test_the_references_checks_in_its_order(http, org, changes, message):
    assert await tokenize(http, org.auth(), {**CARD, **changes}) == (400, message)


async def test_a_valid_card_is_always_refused_with_503(http, org):
    assert await tokenize(http, org.auth(), CARD) == (503, UNAVAILABLE)
    # Any characters count (no Luhn check): 15 without the spaces.
    assert await tokenize(http, org.auth(), {**CARD, "number": "not a card number"}) == (
        503, UNAVAILABLE)
    user = bearer(iam_token(owner=org.name, name="alice"))  # the user group
    assert await tokenize(http, user, {k: CARD[k] for k in (
        "number", "expiry_month", "expiry_year", "cvc")}) == (503, UNAVAILABLE)
    assert await tokenize(http, org.auth("pk_test"), CARD) == (
        403, "Token doesn't support this scope")


async def test_unreadable_or_oversized_bodies_are_invalid(http, org):
    for raw in (b"", b"{", b"[]", json.dumps({**CARD, "expiry_month": 4}).encode(),
                json.dumps({**CARD, "name": "x" * 5000}).encode()):
        assert await tokenize(http, org.auth(), raw=raw) == (400, "invalid request body")
    padded = json.dumps({**CARD, "name": ""}).encode()
    padded = padded[:-1] + b" " * (4096 - len(padded)) + b"}"  # exactly 4 KiB
    assert await tokenize(http, org.auth(), raw=padded) == (503, UNAVAILABLE)
    assert await tokenize(http, org.auth(), raw=padded[:-1] + b" }") == (
        400, "invalid request body")


async def test_the_card_is_never_logged_or_stored(http, org, platform, pool, caplog):
    number = "4000 0566 5566 5556"
    with caplog.at_level(logging.DEBUG):
        for body in ({**CARD, "number": number}, {**CARD, "number": number, "cvc": ""},
                     {**CARD, "number": number, "expiry_month": 1}):
            status, _ = await tokenize(http, org.auth(), body)
            assert status in (400, 503)
    logged = "\n".join(f"{r.getMessage()} {r.args} {r.exc_text}" for r in caplog.records)
    assert number not in logged and number.replace(" ", "") not in logged
    org_id = await org_id_of(platform, org)
    tables = await pool.fetch("select table_name from information_schema.tables"
                              " where table_schema = 'payments'")
    digits = number.replace(" ", "")[-8:]
    for t in tables:  # in text, or in bytes (shown in hex)
        found = await pool.fetchval(
            f"select count(*) from payments.{t['table_name']} r"
            f" where r::text like $1 or r::text like $2",
            f"%{digits}%", f"%{digits.encode().hex()}%")
        assert found == 0, t["table_name"]
    assert await pool.fetchval("select count(*) from payments.outbox where org_id = $1",
                               org_id) == 0
