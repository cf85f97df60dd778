"""The gateway's HTTP edges: ZAP envelope, request ids, CORS and cache headers, health,
unknown routes, bus failures and tracing."""

from __future__ import annotations

import time

import pytest
from nats.errors import NoRespondersError

from contracts import Actor, Scope
from services.gateway.app import Gateway
from services.gateway.errors import translate
from tests.conftest import SPANS
from tests.support import post, scope

ZAP = "/api/v1/billing/zap"


async def zap(http, org, payload, raw: bytes | None = None):
    status, body, _ = await post(http, "/zap", payload, org.auth(), raw=raw)
    return status, body


async def test_zap_methods_share_the_rest_semantics(http, org):
    status, body = await zap(http, org, {"method": "billing.deposit", "id": "d1",
                                         "params": {"user": "Hanzo/Zap", "amount": 500,
                                                    "expiresIn": 2}})
    assert status == 200 and body["id"] == "d1"
    assert body["result"]["user"] == "hanzo/zap" and "expiresAt" in body["result"]
    status, body = await zap(http, org, {"method": "billing.recordUsage", "id": "u1",
                                         "params": {"user": "hanzo/zap", "amount": 20}})
    assert body["result"]["type"] == "withdraw"
    # K.1
    status, body = await zap(http, org, {"method": "billing.getBalance", "id": "req-1",
                                         "params": {"user": "hanzo/zap"}})
    assert body == {"id": "req-1", "result": {"user": "hanzo/zap", "currency": "usd",
                                              "balance": 480, "holds": 0, "available": 480}}
    status, body = await zap(http, org, {"method": "billing.getBalanceAll", "id": 9,
                                         "params": {"user": "hanzo/zap"}})
    assert body["id"] == 9 and body["result"]["balances"][0]["balance"] == 480
    status, body = await zap(http, org, {"method": "billing.getUsage", "id": "g",
                                         "params": {"user": "hanzo/zap"}})
    assert body["result"]["count"] == 1


async def test_zap_envelope_errors(http, org):
    # K.2: missing method.
    assert await zap(http, org, {"id": "x"}) == (
        400, {"id": "x", "error": {"code": -32600, "message": "method is required"}})
    # K.3: unknown method.
    assert await zap(http, org, {"method": "billing.nope", "id": "n"}) == (
        200, {"id": "n", "error": {"code": -32601, "message": "method not found: billing.nope"}})
    # K.4: no params.
    status, body = await zap(http, org, {"method": "billing.getBalance", "id": "1"})
    assert status == 200 and body["error"]["code"] == -32602
    assert body["error"]["message"].startswith("invalid params:")
    # K.5: validation is -32602; a skipped usage record is a result.
    status, body = await zap(http, org, {"method": "billing.deposit", "id": "2",
                                         "params": {"user": "a", "amount": 0}})
    assert body["error"] == {"code": -32602, "message": "amount must be positive"}
    status, body = await zap(http, org, {"method": "billing.recordUsage", "id": "3",
                                         "params": {"user": "hanzo/a", "amount": 0}})
    assert body["result"] == {"user": "hanzo/a", "amount": 0, "status": "skipped"}
    status, body = await zap(http, org, {"method": "billing.getBalance", "id": "4",
                                         "params": {"user": ""}})
    assert body["error"]["code"] == -32602
    status, body = await zap(http, org, {"method": "billing.getBalance", "id": "5",
                                         "params": {"user": 5}})
    assert body["error"]["code"] == -32602
    # K.6: unparsable bodies.
    status, body = await zap(http, org, None, raw=b"{")
    assert status == 400 and body["id"] == "" and body["error"]["code"] == -32700
    assert body["error"]["message"].startswith("parse error:")
    status, body = await zap(http, org, None, raw=b'{"method": "x", "id": true}')
    assert status == 400 and body["error"]["code"] == -32700


async def test_zap_deposit_is_a_mint(http, org):
    async with http.post(ZAP, headers=org.auth("pk_test"), json={
            "method": "billing.getBalance", "id": "p", "params": {"user": "a"}}) as r:
        assert r.status == 403  # the ZAP route itself is admin-only
    from tests.conftest import bearer, iam_token

    admin = bearer(iam_token(owner=org.name, name="boss", isAdmin=True))
    async with http.post(ZAP, headers=admin, json={
            "method": "billing.deposit", "id": "m", "params": {"user": "a", "amount": 5}}) as r:
        body = await r.json()
    assert body == {"id": "m", "error": {"code": -32000,
                                         "message": "Token doesn't support this scope"}}


async def test_request_ids_are_echoed_or_made(http, org):
    async with http.get("/api/v1/billing/balance", params={"user": "a"},
                        headers={**org.auth(), "X-Request-Id": "abc-123"}) as r:
        assert r.headers["X-Request-Id"] == "abc-123"
    async with http.get("/api/v1/billing/balance", params={"user": "a"},
                        headers={"X-Request-Id": "bad id with spaces"}) as r:
        made = r.headers["X-Request-Id"]
        body = await r.json()
    assert made != "bad id with spaces" and len(made) == 36
    assert body["error"]["requestId"] == made


async def test_every_prefix_routes_to_the_same_handlers(http, org):
    for prefix in ("/api/v1", "/v1/commerce", "/v1"):
        async with http.get(prefix + "/billing/balance", params={"user": "a"},
                            headers=org.auth()) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/json; charset=utf-8"
            assert r.headers["Cache-Control"] == "private, no-store"


async def test_unknown_routes_and_methods_are_404_envelopes(http, org):
    for method, path in [("GET", "/api/v1/billing/nope"), ("DELETE", "/api/v1/billing/balance"),
                         ("GET", "/elsewhere")]:
        async with http.request(method, path, headers=org.auth()) as r:
            assert r.status == 404
            assert r.headers["Content-Type"] == "application/json"
            body = await r.json()
            assert body["error"]["message"] == "not found"


async def test_cors(http, org):
    # conventions 24 (ours: no Allow-Credentials with `*`).
    async with http.options("/api/v1/billing/balance", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,content-type"}) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Headers"] == "authorization,content-type"
        assert r.headers["Access-Control-Allow-Methods"] == (
            "GET, POST, PUT, PATCH, DELETE, OPTIONS")
        assert r.headers["Access-Control-Max-Age"] == "86400"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in r.headers
    async with http.get("/api/v1/billing/balance", params={"user": "a"},
                        headers=org.auth()) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "Idempotent-Replayed" in r.headers["Access-Control-Expose-Headers"]


async def test_health_and_readiness(http):
    async with http.get("/healthz") as r:
        body = await r.json()
        assert r.status == 200 and body["status"] == "ok" and body["service"] == "billing-gateway"
    async with http.get("/readyz") as r:
        assert r.status == 200
        assert (await r.json())["checks"] == {"nats": True, "postgres": True}


def _scope(deadline_ms: int = 0) -> Scope:
    return scope("o", actor=Actor(kind="service", role="platform"), request_id="r",
                 deadline_ms=deadline_ms)


class _FakeRequest(dict):
    headers: dict = {}


async def test_no_responders_is_503_not_a_hang(platform):
    gateway: Gateway = platform.gateway
    started = time.monotonic()
    with pytest.raises(NoRespondersError) as refused:
        await gateway.pipeline.call("billing.nobody.here.get", _scope(), {}, _FakeRequest())
    assert translate(refused.value).status == 503 and time.monotonic() - started < 2


async def test_a_request_past_its_deadline_is_refused_by_the_service(platform):
    from contracts.ledger import BalanceQuery

    reply = await platform.gateway.pipeline.call("billing.ledger.balance.get",
                                                 _scope(deadline_ms=int(time.time() * 1000) - 1),
                                                 BalanceQuery(user="a"), _FakeRequest())
    assert reply.error is not None and reply.error.status == 503


async def test_one_trace_spans_gateway_and_service(http, org):
    SPANS.clear()
    async with http.get("/api/v1/billing/balance", params={"user": "traced"},
                        headers=org.auth()) as r:
        assert r.status == 200
    spans = SPANS.get_finished_spans()
    client = next(s for s in spans if s.name == "billing.ledger.balance.get"
                  and s.kind.name == "CLIENT")
    server = next(s for s in spans if s.name == "billing.ledger.balance.get"
                  and s.kind.name == "SERVER")
    http_span = next(s for s in spans if s.name == "GET /api/v1/billing/balance")
    assert server.context.trace_id == client.context.trace_id == http_span.context.trace_id
    assert server.parent.span_id == client.context.span_id
    assert client.parent.span_id == http_span.context.span_id
