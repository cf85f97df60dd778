"""Hostile inputs that used to answer 500 (issue 9, hardening): each is now a 4xx error
envelope, and nothing is stored."""

from __future__ import annotations

import secrets

import msgspec
import pytest

from tests.conftest import SERVICE_TOKENS, bearer
from tests.support import request

API = "/api/v1"
ADMIN = bearer(SERVICE_TOKENS[0])  # role platform: every route is open to it
LISTS = ["/billing/transactions", "/billing/usage", "/billing/credit-grants",
         "/billing/spend-alerts", "/billing/meters"]
USER_PARAMS = {"user": "acme/alice", "userId": "acme/alice"}


async def _call(http, method, path, **kw):
    headers = {**ADMIN, **kw.pop("headers", {})}
    return await request(http, method, API + path, headers, lenient=True, **kw)


def _refused(status, body, expected=400):
    assert status == expected, (status, body)
    assert body["error"]["type"] == "api-error", body
    return body["error"]


# ---- NUL characters ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/billing/balance", "/billing/transactions",
                                  "/billing/credit-grants", "/billing/meter-events/summary",
                                  "/dns/usage/summary"])
async def test_nul_in_a_query_value(http, path):
    status, body, _ = await _call(http, "GET", path + "?user=a%00b&userId=a%00b")
    error = _refused(status, body)
    assert "NUL" in error["message"]


@pytest.mark.parametrize("method,path", [
    ("GET", "/billing/meters/met%00x"),
    ("POST", "/billing/credit-grants/grant%00x/void"),
    ("PATCH", "/billing/spend-alerts/alert%00x"),
    ("DELETE", "/billing/spend-alerts/alert%00x"),
])
async def test_nul_in_a_path_id(http, method, path):
    status, body, _ = await _call(http, method, path + "?userId=acme/alice",
                                  json={"userId": "acme/alice"} if method != "GET" else None)
    error = _refused(status, body)
    assert "NUL" in error["message"]


@pytest.mark.parametrize("method,params", [
    ("billing.getBalance", {"user": "a\x00b"}),
    ("billing.getBalance", {"user": "a", "currency": "us\x00d"}),
    ("billing.getUsage", {"user": "a", "currency": "\x00"}),
    ("billing.recordUsage", {"user": "a", "amount": 1, "model": "m\x00"}),
    ("billing.recordUsage", {"user": "a", "amount": 1, "metadata": {"k\x00": 1}}),
    ("billing.deposit", {"user": "a", "amount": 1, "notes": "\x00"}),
    ("billing.deposit", {"user": "a", "amount": 1, "metadata": {"k": ["\x00"]}}),
    ("billing.deposit", {"user": "a", "amount": 1, "Notes": "\x00", "unknown": 1}),
])
async def test_nul_in_zap_params_is_invalid_params(http, method, params):
    status, body, _ = await _call(http, "POST", "/billing/zap", json={
        "id": 1, "method": method, "params": params})
    assert status == 200
    assert body["error"]["code"] == -32602, body
    assert "NUL" in body["error"]["message"]


async def test_nul_in_a_zap_query_value(http):
    status, body, _ = await _call(http, "POST", "/billing/zap?user=%00", json={
        "id": 1, "method": "billing.getBalance", "params": {"user": "a"}})
    assert status < 500, body


# ---- paging bounds ----------------------------------------------------------------------


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("query", [
    {"offset": str(2**63)}, {"offset": str(2**64)}, {"offset": str(2**63 - 1)},
    {"offset": "-" + str(2**63 + 1)}, {"limit": str(2**63)}, {"limit": "-" + str(2**63 + 5)},
    {"limit": "-1", "offset": "-1"}, {"limit": str(10**40)},
])
async def test_huge_paging_values(http, path, query):
    status, body, _ = await _call(http, "GET", path, params={**USER_PARAMS, **query})
    assert status == 200, (status, body)


# ---- dates ------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    {"periodEnd": "9999-12-31"},
    {"periodStart": "0001-01-01T00:00:00+23:59"},
    {"periodEnd": "0001-01-01T00:00:00+23:59"},
    {"periodStart": "9999-12-31T23:59:59-23:59"},
    {"periodStart": "0001-01-01", "periodEnd": "9999-12-31"},
])
async def test_far_dates_on_the_summary(http, query):
    status, meter, _ = await _call(http, "POST", "/billing/meters", json={
        "name": "far dates", "eventName": f"far.{secrets.token_hex(4)}", "aggregationType": "sum"})
    assert status in (200, 201), meter
    status, body, _ = await _call(http, "GET", "/billing/meter-events/summary", params={
        "meterId": meter["id"], "userId": "acme/alice", **query})
    if "+23:59" in str(query) or "-23:59" in str(query):  # before year 1 / after 9999 in UTC
        assert "format" in _refused(status, body)["message"]
    else:
        assert status == 200, body


@pytest.mark.parametrize("field", ["createdAfter", "createdBefore"])
def test_far_dates_on_journal_params(field):
    """Bus-only params: an instant outside UTC's years is refused while decoding (a named
    400 on the bus), not at the database."""
    from contracts.journal import JournalEntryListParams, JournalHoldCreateParams
    from contracts.limits import limit_exceeded

    for struct, name in ((JournalEntryListParams, field), (JournalHoldCreateParams, "expiresAt")):
        raw = msgspec.json.encode({name: "0001-01-01T00:00:00+23:59"})
        with pytest.raises(msgspec.ValidationError) as refused:
            msgspec.json.decode(raw, type=struct)
        assert limit_exceeded(refused.value) == (f"{name}: out of range", name)


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"])
async def test_far_dates_on_meter_events_and_dns(http, ts):
    status, body, _ = await _call(http, "POST", "/billing/meter-events", json={"events": [
        {"meterId": "met_x", "userId": "acme/alice", "value": 1, "timestamp": ts}]})
    assert status < 500, (status, body)
    status, body, _ = await _call(http, "POST", "/dns/usage", json={
        "zone": "a.com", "user": "acme/alice", "queries": 1, "timestamp": ts})
    assert status < 500, (status, body)


@pytest.mark.parametrize("expires", ["2562047788015215h", "9223372036854775807ns",
                                     "106751991d", "300000000h"])
async def test_far_future_grant_expiry(http, expires):
    status, body, _ = await _call(http, "POST", "/billing/credit-grants", json={
        "userId": "acme/alice", "name": "x", "amountCents": 5, "expiresIn": expires})
    assert status < 500, (status, body)


# ---- deep nesting -----------------------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000


NESTED_40 = '{"b":' * 40 + "1" + "}" * 40


@pytest.mark.parametrize("path,body", [
    ("/billing/deposit", '{"user":"acme/alice","amount":5,"metadata":{"a":' + DEEP + "}}"),
    ("/billing/meter-events", '{"events":[{"meterId":"m","userId":"acme/alice","value":1,'
                              '"dimensions":{"a":' + DEEP + "}}]}"),
    ("/billing/deposit", '{"user":"acme/alice","Amount":5,"metadata":{"a":' + DEEP + "}}"),
    ("/billing/deposit", '{"user":"acme/alice","amount":5,"unknown":' + DEEP + "}"),
    ("/billing/deposit", '{"user":"acme/alice","amount":5,"metadata":{"a":' + NESTED_40 + "}}"),
    ("/billing/meter-events", '{"events":[{"meterId":"m","userId":"acme/alice","value":1,'
                              '"dimensions":{"a":' + NESTED_40 + "}}]}"),
])
async def test_deep_nesting_is_refused(http, path, body):
    status, reply, _ = await _call(http, "POST", path, data=body,
                                   headers={"Content-Type": "application/json"})
    error = _refused(status, reply)
    if NESTED_40 in body:  # parsed fine, refused by the depth rule for free-form values
        assert "at most 32 levels of nesting" in error["message"], error


async def test_deep_nesting_in_zap_params(http):
    raw = ('{"id":1,"method":"billing.recordUsage","params":{"user":"a","metadata":{"a":'
           + DEEP + "}}}")
    status, body, _ = await _call(http, "POST", "/billing/zap", data=raw,
                                  headers={"Content-Type": "application/json"})
    assert status in (200, 400), (status, body)
    assert body["error"]["code"] in (-32700, -32602), body


async def test_moderate_nesting_is_still_accepted(http):
    body = '{"user":"acme/nest","amount":5,"metadata":{"a":' + "[" * 20 + "]" * 20 + "}}"
    status, reply, _ = await _call(http, "POST", "/billing/deposit", data=body,
                                   headers={"Content-Type": "application/json"})
    assert status == 201, reply


# ---- NaN and friends after an unknown field ---------------------------------------------


@pytest.mark.parametrize("body", [
    '{"User":"acme/alice","amount":NaN}',
    '{"unknown":1,"user":"acme/alice","amount":5,"metadata":{"a":NaN}}',
    '{"unknown":1,"user":"acme/alice","amount":5,"metadata":{"a":Infinity}}',
    '{"unknown":1,"user":"acme/alice","amount":5,"metadata":{"a":-Infinity}}',
    '{"unknown":1,"user":"acme/alice","amount":5,"metadata":{"a":1e400}}',
    '{"unknown":NaN,"user":"acme/alice","amount":5}',
    '{"user":"a/b", "amount": 5',
    '{"user":"a/b", "unknown": 1, "amount": 5',
])
async def test_nan_and_truncation_after_an_unknown_field(http, body):
    status, reply, _ = await _call(http, "POST", "/billing/deposit", data=body,
                                   headers={"Content-Type": "application/json"})
    _refused(status, reply)
    status, reply, _ = await _call(http, "POST", "/billing/credit-grants", data=body,
                                   headers={"Content-Type": "application/json"})
    _refused(status, reply)


# ---- ZAP --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["billing.getBalance", "billing.getUsage",
                                    "billing.recordUsage", "billing.deposit"])
@pytest.mark.parametrize("params", [{"user": "", "amount": 5}, {"amount": 5}, None])
async def test_zap_empty_user(http, method, params):
    status, body, _ = await _call(http, "POST", "/billing/zap", json={
        "id": 7, "method": method, "params": params})
    assert status == 200
    assert body == {"id": 7, "error": {"code": -32602, "message": "user is required"}}


@pytest.mark.parametrize("offset", [2**63, 2**64 - 1])
async def test_zap_usage_with_a_huge_offset(http, offset):
    status, body, _ = await _call(http, "POST", "/billing/zap", json={
        "id": 1, "method": "billing.getUsage", "params": {"user": "a", "offset": offset}})
    assert status == 200 and body["result"]["usage"] == [], body
