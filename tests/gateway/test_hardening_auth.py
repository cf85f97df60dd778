"""Strict credential parsing, and revocation and expiry that take effect at once
(issue 9, hardening)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses

import pytest

from services import cli
from services.gateway import store
from tests.conftest import PEPPER, SERVICE_TOKENS, bearer
from tests.support import request

BALANCE = "/api/v1/billing/balance"
UNKNOWN = "Unable to retrieve organization associated with access token"


async def _get(http, headers=None, params=None, path=BALANCE):
    status, body, _ = await request(http, "GET", path, headers,
                                    params={"user": "a", **(params or {})})
    return status, body


def _error(status, body, expected):
    assert status == expected, (status, body)
    assert body["error"]["type"] == "api-error"
    return body["error"]["message"]


# ---- one credential, said once ------------------------------------------------------------


async def test_query_key_and_a_different_header_key(http, org):
    status, body = await _get(http, bearer(org.keys["sk_live"]), {"key": org.keys["sk_test"]})
    assert _error(status, body, 400) == "conflicting credentials"
    status, body = await _get(http, bearer(SERVICE_TOKENS[0]), {"token": org.keys["sk_test"]})
    assert _error(status, body, 400) == "conflicting credentials"
    status, body = await _get(http, params={"key": org.keys["sk_live"],
                                            "token": org.keys["sk_test"]})
    assert _error(status, body, 400) == "conflicting credentials"


async def test_the_same_key_in_the_query_and_the_header(http, org):
    key = org.keys["sk_test"]
    status, _ = await _get(http, bearer(key), {"key": key})
    assert status == 200


async def test_two_authorization_headers(http, org):
    headers = [("Authorization", f"Bearer {org.keys['sk_test']}"),
               ("Authorization", f"Bearer {org.keys['sk_live']}")]
    async with http.get(BALANCE, headers=headers, params={"user": "a"}) as r:
        status, body = r.status, await r.json()
    assert _error(status, body, 400) == "more than one Authorization header"


@pytest.mark.parametrize("scheme", ["Token", "Digest", "ApiKey", "Bearer2"])
async def test_schemes_other_than_bearer(http, org, scheme):
    status, body = await _get(http, {"Authorization": f"{scheme} {org.keys['sk_test']}"})
    assert _error(status, body, 401) == "unsupported authorization scheme"


async def test_bearer_basic_and_bare_keys_still_work(http, org):
    key = org.keys["sk_test"]
    basic = base64.b64encode(f"{key}:".encode()).decode()
    for header in (f"Bearer {key}", f"bearer {key}", f"Basic {basic}", key):
        status, _ = await _get(http, {"Authorization": header})
        assert status == 200, header


@pytest.mark.parametrize("mode", ["", "prod", "livemode", "true", "test,live"])
async def test_unknown_billing_mode(http, mode):
    headers = {**bearer(SERVICE_TOKENS[0]), "X-Billing-Mode": mode}
    status, body = await _get(http, headers)
    assert _error(status, body, 400) == "X-Billing-Mode must be live or test"


async def test_billing_mode_sent_twice(http):
    headers = [("Authorization", f"Bearer {SERVICE_TOKENS[0]}"), ("X-Billing-Mode", "test"),
               ("X-Billing-Mode", "test")]
    async with http.get(BALANCE, headers=headers, params={"user": "a"}) as r:
        status, body = r.status, await r.json()
    assert _error(status, body, 400) == "more than one X-Billing-Mode header"


@pytest.mark.parametrize("mode", ["live", "test", "Test", "LIVE"])
async def test_known_billing_modes(http, mode):
    status, _ = await _get(http, {**bearer(SERVICE_TOKENS[0]), "X-Billing-Mode": mode})
    assert status == 200


# ---- revocation and expiry ----------------------------------------------------------------


async def _until_refused(http, key, seconds=1.0):
    """The first refusal within `seconds`, polling."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        status, body = await _get(http, bearer(key))
        if status != 200 or asyncio.get_running_loop().time() > deadline:
            return status, body
        await asyncio.sleep(0.05)


async def test_cli_revocation_without_a_bus_reaches_the_gateway(http, platform, settings,
                                                                 make_org, capsys):
    org = await make_org()
    key = org.keys["sk_live"]
    assert (await _get(http, bearer(key)))[0] == 200  # cached now
    key_id = await platform.gateway.pool.fetchval(
        "select id from gateway.api_keys where hash = $1", store.hash_key(PEPPER, key))
    no_bus = dataclasses.replace(settings, nats_url="")
    await cli._keys(no_bus, argparse.Namespace(keys_command="revoke", id=key_id))
    assert f"revoked {key_id}" in capsys.readouterr().out
    status, body = await _until_refused(http, key)
    assert _error(status, body, 401) == UNKNOWN


async def test_a_cached_key_expires_on_time(http, platform, make_org):
    org = await make_org()
    key = org.keys["sk_test"]
    await platform.gateway.pool.execute(
        "update gateway.api_keys set expires_at = now() + interval '1 second'"
        " where hash = $1", store.hash_key(PEPPER, key))
    assert (await _get(http, bearer(key)))[0] == 200  # cached, with its expiry
    await asyncio.sleep(1.1)
    status, body = await _get(http, bearer(key))
    assert _error(status, body, 401) == UNKNOWN


async def test_an_expiry_set_while_cached_applies_at_once(http, platform, make_org):
    org = await make_org()
    key = org.keys["sk_test"]
    assert (await _get(http, bearer(key)))[0] == 200  # cached without an expiry
    await platform.gateway.pool.execute(
        "update gateway.api_keys set expires_at = now() where hash = $1",
        store.hash_key(PEPPER, key))
    status, body = await _until_refused(http, key)
    assert _error(status, body, 401) == UNKNOWN


async def test_revocation_still_reaches_the_gateway_after_its_listener_is_lost(
        http, platform, make_org):
    auth = platform.gateway.auth
    lost = auth._listener.get_server_pid()
    await platform.gateway.pool.execute("select pg_terminate_backend($1)", lost)
    for _ in range(100):  # listening again on another connection
        if auth._listener is not None and auth._listener.get_server_pid() != lost:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the gateway does not listen again")
    org = await make_org()
    key = org.keys["sk_test"]
    assert (await _get(http, bearer(key)))[0] == 200
    await platform.gateway.pool.execute(
        "update gateway.api_keys set revoked_at = now() where hash = $1",
        store.hash_key(PEPPER, key))
    status, body = await _until_refused(http, key)
    assert _error(status, body, 401) == UNKNOWN
