"""Authentication and authorization through the gateway (conventions §10.2–§10.3, §8)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.gateway import store
from tests.conftest import IAM_KEY, IAM_KID, SERVICE_TOKENS, bearer, iam_token
from tests.support import request

BALANCE = "/api/v1/billing/balance"
DEPOSIT = "/api/v1/billing/deposit"
TRANSACTIONS = "/api/v1/billing/transactions"
UNKNOWN = "Unable to retrieve organization associated with access token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_no_credential(http):
    status, body, _ = await request(http, "GET", BALANCE, params={"user": "hanzo/alice"})
    assert (status, body["error"]["message"]) == (401, "No access token provided.")
    assert body["error"]["type"] == "api-error"


@pytest.mark.parametrize("key", ["abc", "sk_test_doesnotexist0000000000000000",
                                 "svc-token-three"])
async def test_unknown_keys(http, key):
    status, body, _ = await request(http, "GET", BALANCE, bearer(key), params={"user": "a"})
    assert (status, body["error"]["message"]) == (401, UNKNOWN)


async def test_key_in_every_accepted_place(http, org):
    key = org.keys["sk_test"]
    basic = base64.b64encode(f"{key}:".encode()).decode()
    for headers, params in [
        ({"Authorization": key}, {}),  # bare header (the reference's test suite)
        # `Token <key>` is refused since issue 9 (tests/gateway/test_hardening_auth.py)
        ({"Authorization": f"Basic {basic}"}, {}),
        ({}, {"key": key}),
        ({}, {"token": key}),
    ]:
        status, _, _ = await request(http, "GET", BALANCE, headers, params={"user": "a", **params})
        assert status == 200, (headers, params)


async def test_revoked_and_expired_keys_are_refused(http, platform, make_org):
    org = await make_org()
    pool = platform.gateway.pool
    for which in ("sk_live", "sk_test"):  # used once, so the gateway has them cached
        status, _, _ = await request(http, "GET", BALANCE, org.auth(which), params={"user": "a"})
        assert status == 200
    key_hash = await store.revoke_key(pool, (await pool.fetchval(
        "select id from gateway.api_keys where hash = $1",
        store.hash_key("test-pepper", org.keys["sk_live"]))))
    platform.gateway.auth.forget_key(key_hash)
    status, body, _ = await request(http, "GET", BALANCE, org.auth("sk_live"), params={"user": "a"})
    assert (status, body["error"]["message"]) == (401, UNKNOWN)
    await pool.execute("update gateway.api_keys set expires_at = now() - interval '1 minute'"
                       " where hash = $1", store.hash_key("test-pepper", org.keys["sk_test"]))
    platform.gateway.auth.forget_key(store.hash_key("test-pepper", org.keys["sk_test"]))
    status, _, _ = await request(http, "GET", BALANCE, org.auth("sk_test"), params={"user": "a"})
    assert status == 401


async def test_disabled_organization_is_refused(http, platform, make_org):
    org = await make_org()
    await platform.gateway.pool.execute("update gateway.orgs set enabled = false where name = $1",
                                        org.name)
    status, body, _ = await request(http, "GET", BALANCE, org.auth("pk_test"), params={"user": "a"})
    assert (status, body["error"]["message"]) == (403, "organization disabled")


async def test_publishable_keys_are_refused_on_admin_and_user_routes(http, org):
    # conventions 17 and 18 (ours).
    for method, path, kw in [("POST", DEPOSIT, {"json": {"user": "hanzo/a", "amount": 1}}),
                             ("GET", BALANCE, {"params": {"user": "hanzo/a"}}),
                             ("GET", TRANSACTIONS, {"params": {"user": "hanzo/a"}})]:
        status, body, _ = await request(http, method, path, org.auth("pk_live"), **kw)
        assert (status, body["error"]["message"]) == (403, "Token doesn't support this scope")


async def test_service_token_acts_in_the_named_org(http, make_org):
    org = await make_org()
    headers = {**bearer(SERVICE_TOKENS[1]), "X-IAM-Org-Id": org.name}
    status, _, _ = await request(http, "POST", DEPOSIT, headers,
                                 json={"user": "hanzo/s", "amount": 9})
    assert status == 201
    status, body, _ = await request(http, "GET", BALANCE, org.auth("sk_live"),
                                    params={"user": "hanzo/s"})
    assert body["balance"] == 9  # service tokens act in live mode
    test_mode = {**headers, "X-Billing-Mode": "test"}
    status, body, _ = await request(http, "GET", BALANCE, test_mode, params={"user": "hanzo/s"})
    assert body["balance"] == 0


async def test_service_token_provisions_valid_org_names_only(http, platform):
    # conventions 22 (ours).
    headers = {**bearer(SERVICE_TOKENS[0]), "X-IAM-Org": "brand-new-org"}
    status, _, _ = await request(http, "GET", BALANCE, headers, params={"user": "a"})
    assert status == 200
    assert await store.org_by_name(platform.gateway.pool, "brand-new-org") is not None
    for bad in ("sk_live_looks_like_a_key", "has space", "a.b.c", "-leading"):
        headers = {**bearer(SERVICE_TOKENS[0]), "X-IAM-Org-Id": bad}
        status, body, _ = await request(http, "GET", BALANCE, headers, params={"user": "a"})
        assert (status, body["error"]["message"]) == (401, UNKNOWN), bad


async def test_iam_user_is_live_and_scoped_to_themselves(http, platform):
    token = iam_token(owner="scoped", name="Alice")
    svc = {**bearer(SERVICE_TOKENS[0]), "X-IAM-Org-Id": "scoped"}
    await request(http, "POST", DEPOSIT, svc, json={"user": "scoped/alice", "amount": 40})
    await request(http, "POST", DEPOSIT, svc, json={"user": "scoped/bob", "amount": 50})
    # Defaults to the caller, and may name themselves in any case.
    for params in ({}, {"user": "SCOPED/Alice"}):
        status, body, _ = await request(http, "GET", TRANSACTIONS, bearer(token), params=params)
        assert status == 200 and body["user"] == "scoped/alice" and body["count"] == 1
    status, body, _ = await request(http, "GET", TRANSACTIONS, bearer(token),
                                    params={"user": "scoped/bob"})
    assert (status, body["error"]["message"]) == (403, "cannot access another user's account")


async def test_iam_end_users_are_refused_admin_and_mint_routes(http):
    token = iam_token(owner="scoped", name="alice", roles=["member"])
    status, body, _ = await request(http, "GET", BALANCE, bearer(token),
                                    params={"user": "scoped/alice"})
    assert (status, body["error"]["message"]) == (403, "Token doesn't support this scope")
    admin = iam_token(owner="scoped", name="root", isAdmin=True)
    status, _, _ = await request(http, "GET", BALANCE, bearer(admin),
                                 params={"user": "scoped/alice"})
    assert status == 200
    # An org admin from IAM is still an end user of money: no minting.
    status, body, _ = await request(http, "POST", DEPOSIT, bearer(admin),
                                    json={"user": "scoped/root", "amount": 1})
    assert status == 403


async def test_platform_admins_may_mint(http):
    token = iam_token(owner="platform-admins", name="ops", isAdmin=True)
    status, _, _ = await request(http, "POST", DEPOSIT, bearer(token),
                                 json={"user": "platform-admins/x", "amount": 1})
    assert status == 201


def _forged_tokens() -> dict[str, str]:
    header = {"alg": "none", "kid": IAM_KID, "typ": "JWT"}
    claims = {"iss": "https://iam.billing.test", "aud": "billing-tests", "owner": "acme",
              "name": "mallory", "sub": "m", "isAdmin": True, "exp": 4102444800}
    alg_none = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."
    public_pem = IAM_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    # The classic confusion attack: HMAC "signed" with the public key, header claiming RS256.
    rs_header = _b64(json.dumps({"alg": "RS256", "kid": IAM_KID}).encode())
    payload = _b64(json.dumps(claims).encode())
    mac = hmac.new(public_pem, f"{rs_header}.{payload}".encode(), hashlib.sha256).digest()
    confused = f"{rs_header}.{payload}.{_b64(mac)}"
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "alg none": alg_none,
        "hmac with the public key": confused,
        "unknown kid": iam_token(kid="someone-else", key=other_key, isAdmin=True),
        "wrong signer": iam_token(key=other_key, isAdmin=True),
        "expired": iam_token(exp=1_000_000_000),
        "no exp": iam_token(exp=None),
        "wrong issuer": iam_token(iss="https://evil.example"),
        "wrong audience": iam_token(aud="wrong-client-id"),
        "not a jwt": "not-a-valid-jwt.x.y",
    }


@pytest.mark.parametrize("case", list(_forged_tokens()))
async def test_bad_iam_tokens_fail_closed(http, case):
    token = _forged_tokens()[case]
    status, body, _ = await request(http, "GET", BALANCE, bearer(token), params={"user": "acme/x"})
    assert status == 401, body


async def test_hs256_signed_with_public_key_is_treated_as_an_unknown_key(http):
    public_pem = IAM_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    token = jwt.encode({"owner": "acme", "isAdmin": True}, public_pem.decode(),
                       algorithm="HS256") if False else _hs256(public_pem)
    status, body, _ = await request(http, "GET", BALANCE, bearer(token), params={"user": "acme/x"})
    assert (status, body["error"]["message"]) == (401, UNKNOWN)


def _hs256(secret: bytes) -> str:
    header = _b64(json.dumps({"alg": "HS256", "kid": IAM_KID}).encode())
    payload = _b64(json.dumps({"owner": "acme", "isAdmin": True, "exp": 4102444800}).encode())
    sig = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(sig)}"


async def test_iam_token_without_owner(http):
    status, body, _ = await request(http, "GET", TRANSACTIONS, bearer(iam_token(owner=None)))
    assert (status, body["error"]["message"]) == (401, "IAM token missing owner claim")


async def test_iam_first_sight_provisions_the_org(http, platform):
    # conventions 11.
    token = iam_token(owner="nonexistent-org", name="first")
    status, _, _ = await request(http, "GET", TRANSACTIONS, bearer(token))
    assert status == 200
    assert await store.org_by_name(platform.gateway.pool, "nonexistent-org") is not None
