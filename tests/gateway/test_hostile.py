"""Hostile input on every route: truncated JSON (with unknown fields too), arrays, 2^63 and
1e309, deep nesting, a 10 MB body, invalid UTF-8, NUL characters, very long ids, NaN.

Every answer is below 500; every non-2xx answer is the error envelope (ZAP: its own, and
never a server error, -32000); a write answers 4xx; and nothing is stored for the org (row
counts of every ledger, metering and invoicing table, before and after).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import msgspec
import pytest

from services.gateway.routes import ROUTES, ZAP_ROUTE

USER = "hostile/alice"
BIG = 2**63
LONG = "x" * 4000  # under aiohttp's 8190-byte request line, far over every id limit
_NESTED = "[" * 100_000 + "]" * 100_000


def _fields(route) -> list[msgspec.inspect.Field]:
    return list(msgspec.inspect.type_info(route.params).fields)


def _ints(route) -> list[str]:
    return [f.encode_name for f in _fields(route) if isinstance(f.type, msgspec.inspect.IntType)]


def _strs(route) -> list[str]:
    return [f.encode_name for f in _fields(route) if isinstance(f.type, msgspec.inspect.StrType)]


def _base(route) -> dict:
    """A body that would otherwise be plausible, so the hostile part is what is refused."""
    base = {}
    names = {f.encode_name for f in _fields(route)}
    for name, value in (("user", USER), ("userId", USER), ("currency", "usd"),
                        ("amount", 5), ("amountCents", 5), ("threshold", 5)):
        if name in names:
            base[name] = value
    return base


def _json(route, **override) -> bytes:
    return json.dumps({**_base(route), **override}).encode()


def _body_cases(route) -> dict[str, bytes]:
    strs = _strs(route) or ["user"]
    # Without an integer field, the numbers go to a string field: an unknown field would
    # simply be ignored (a read such as the invoice preview rightly answers 200, and a
    # draft invoice needs nothing but its customer).
    ints = _ints(route) or strs[:1]
    names = {f.encode_name for f in _fields(route)}
    nest_in = next((n for n in ("metadata", "dimensions", "events", "params") if n in names),
                   strs[0])
    return {
        "truncated": _json(route)[:-1],
        "truncated-unknown-field": b'{"zzz": 1, "user": "a/b", "amount": 5',
        "array": b"[" + _json(route) + b"]",
        "2^63": _json(route, **{n: BIG for n in ints}),
        "-2^63-1": _json(route, **{n: -BIG - 1 for n in ints}),
        "1e309": _json(route)[:-1] + b", " + b", ".join(
            f'"{n}": 1e309'.encode() for n in ints) + b"}",
        "deep-nesting-field": _json(route)[:-1] + f', "{nest_in}": {_NESTED}}}'.encode(),
        "deep-nesting-top": _NESTED.encode(),
        "10MB": b'{"notes": "' + b"x" * 10_000_000 + b'"}',
        "invalid-utf8": _json(route)[:-1] + b', "' + strs[0].encode() + b'": "\xff\xfe"}',
        "nul-escaped": _json(route, **{n: "a\u0000b" for n in strs}),
        "nul-raw": _json(route)[:-1] + b', "' + strs[0].encode() + b'": "a\x00b"}',
        "nul-in-key": _json(route)[:-1] + b', "us\\u0000er": 1}',
        "long-ids": _json(route, **{n: LONG * 25 for n in strs}),
        "nan-after-unknown-field": b'{"zzz": 1, "amount": NaN}',
    }


def _query_cases(route) -> dict[str, str]:
    base = {k: v for k, v in _base(route).items() if isinstance(v, str)}
    ints = _ints(route)
    strs = [n for n in _strs(route) if n not in route.path]
    long = "x" * (7000 // max(len(strs), 1))  # the request line stays under 8190 bytes
    cases = {
        "nul": {**base, **{n: "a\x00b" for n in strs}},
        "long-ids": {**base, **{n: long for n in strs}},
        "url-over-8190": {**base, (strs or ["user"])[0]: "x" * 9000},
        "invalid-utf8": None,  # raw percent-escapes, below
    }
    if ints:
        cases["2^63"] = {**base, **{n: str(BIG) for n in ints}}
        cases["-2^63-1"] = {**base, **{n: str(-BIG - 1) for n in ints}}
        cases["1e309"] = {**base, **{n: "1e309" for n in ints}}
    out = {}
    for name, values in cases.items():
        if values is None:
            out[name] = "&".join(f"{n}=%FF%FEx" for n in strs or ["user"])
        else:
            out[name] = "&".join(f"{k}={quote(v, safe='')}" for k, v in values.items())
    return out


def _path_ids() -> dict[str, str]:
    return {"id-nul": "a%00b", "id-long": LONG, "id-invalid-utf8": "%FF%FE", "id-dots": "..%2F.."}


# Routes that read nothing of the request, so nothing hostile reaches anything: the
# account-management stubs always answer 501 (subscriptions.md §3.6), signing out of the
# portal always clears the session.
INPUT_UNREAD = {"POST /billing/accounts", "POST /billing/accounts/{id}/members",
                "PATCH /billing/accounts/{id}/members/{memberId}",
                "DELETE /billing/accounts/{id}/members/{memberId}",
                "POST /billing/portal/session/sign-out"}


def _cases():
    for route in ROUTES:
        if not _fields(route) and "{" not in route.path:
            continue  # no input at all (`POST /billing/cycle/run`): nothing to be hostile in
        name = f"{route.method} {route.path}"
        if name in INPUT_UNREAD:
            continue
        paths = {"": route.path.replace("{id}", "hostile-id")}
        if "{id}" in route.path:
            paths.update({k: route.path.replace("{id}", v) for k, v in _path_ids().items()})
        for pcase, path in paths.items():
            if route.source == "body":
                items = _body_cases(route).items() if not pcase else [
                    (pcase, _json(route))]
                for case, body in items:
                    yield name, case, route, path, "", body
            else:
                items = _query_cases(route).items() if not pcase else [(pcase, "")]
                for case, query in items:
                    yield name, case, route, path, query, b""
    deposit = next(r for r in ROUTES if r.name == "POST /billing/deposit")
    for case, body in _body_cases(deposit).items():  # ZAP's deposit params
        yield "POST /billing/zap (params)", case, ZAP_ROUTE, ZAP_ROUTE.path, "", (
            b'{"method": "billing.deposit", "id": "1", "params": ' + body + b"}")
    for case, body in _body_cases(deposit).items():  # the call itself
        yield "POST /billing/zap", case, ZAP_ROUTE, ZAP_ROUTE.path, "", body
    params = b', "params": {"user": "hostile/alice", "amount": 5}}'
    yield ("POST /billing/zap", "nul-in-method", ZAP_ROUTE, ZAP_ROUTE.path, "",
           b'{"method": "billing.deposit\\u0000", "id": "1"' + params)
    yield ("POST /billing/zap", "nul-in-id", ZAP_ROUTE, ZAP_ROUTE.path, "",
           b'{"method": "billing.deposit", "id": "a\\u0000b"' + params)


def _params():
    for name, case, route, path, query, body in _cases():
        yield pytest.param(route, path, query, body, id=f"{name} {case}")


@pytest.fixture(scope="module")
async def hostile_org(make_org, platform):
    org = await make_org()
    org_id = await platform.gateway.pool.fetchval(
        "select id from gateway.orgs where name = $1", org.name)
    return org, org_id


async def _stored(pool, org_id) -> dict[str, int]:
    """Rows of every ledger, metering and invoicing table that belong to the org."""
    tables = await pool.fetch(
        "select table_schema, table_name from information_schema.columns"
        " where table_schema in ('ledger', 'metering', 'invoicing')"
        " and column_name = 'org_id'")
    counts = {}
    for t in tables:
        table = f"{t['table_schema']}.{t['table_name']}"
        counts[table] = await pool.fetchval(
            f"select count(*) from {table} where org_id::text = $1", str(org_id))
    return counts


@pytest.mark.parametrize(("route", "path", "query", "body"), list(_params()))
async def test_hostile_input_is_refused_with_the_envelope_and_stores_nothing(
        http, platform, hostile_org, route, path, query, body):
    org, org_id = hostile_org
    before = await _stored(platform.gateway.pool, org_id)
    assert {"ledger.transactions", "metering.events"} <= set(before)
    url = "/api/v1" + path + (f"?{query}" if query else "")
    headers = {**org.auth(), "Content-Type": "application/json"}
    async with http.request(route.method, url, headers=headers, data=body or None) as r:
        status, raw = r.status, await r.read()
    assert status < 500, (status, raw[:300])
    if route is ZAP_ROUTE:
        answer = json.loads(raw)
        if status == 200 and "error" not in answer:
            pytest.fail(f"ZAP accepted hostile input: {raw[:300]!r}")
        assert status in (200, 400, 413) and answer.get("error"), raw[:300]
        if status != 413:
            assert answer["error"]["code"] != -32000, raw[:300]  # a server error
    elif status >= 300:
        error = json.loads(raw)["error"]
        assert error["type"] == "api-error" and error["message"], raw[:300]
    if route.method != "GET" and route is not ZAP_ROUTE:
        assert 400 <= status < 500, (status, raw[:300])
    assert await _stored(platform.gateway.pool, org_id) == before
