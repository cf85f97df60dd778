"""IAM (OIDC) JWT validation: key sources, claim checks and attack tokens."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from services.gateway import iam
from services.gateway.iam import (
    IamConfig,
    IamError,
    IamPrincipal,
    IamVerifier,
    looks_like_iam_jwt,
)

ISSUER = "https://iam.example.test"
CLIENT_ID = "billing-gateway"
RSA_KID = "rsa-1"
EC_KID = "ec-1"


# -- keys and tokens -----------------------------------------------------------

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ROTATED_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key: Any, kid: str, alg: str | None) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(private_key, rsa.RSAPrivateKey) else ECAlgorithm
    jwk: dict[str, Any] = algorithm.to_jwk(private_key.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig")
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def default_jwks() -> dict[str, Any]:
    return {
        "keys": [
            public_jwk(RSA_KEY, RSA_KID, "RS256"),
            public_jwk(EC_KEY, EC_KID, "ES256"),
        ]
    }


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": "user-admin-123",
        "email": "admin@test.com",
        "owner": "test-org",
        "name": "admin-user",
        "roles": ["admin"],
        "isAdmin": True,
        "iat": now,
        "exp": now + 3600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    payload: dict[str, Any],
    key: Any = RSA_KEY,
    alg: str = "RS256",
    kid: str | None = RSA_KID,
) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(signature)}"


def hmac_with_public_pem(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """The classic alg-confusion token: HMAC keyed with the public key PEM."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def es384_signed_by_p256_key(payload: dict[str, Any]) -> str:
    """An ES384 header over a P-256 signature (PyJWT refuses to make one)."""
    header = {"alg": "ES384", "kid": EC_KID}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    r, s = decode_dss_signature(EC_KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA384())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


async def assert_rejected(
    verifier: IamVerifier, token: str, status: int = 401, message: str = "invalid IAM token"
) -> None:
    with pytest.raises(IamError) as excinfo:
        await verifier.verify(token)
    assert (excinfo.value.status, excinfo.value.message) == (status, message)


# -- fixtures ------------------------------------------------------------------


@pytest.fixture
def jwks_file(tmp_path: Any) -> Callable[[dict[str, Any]], str]:
    def write(document: dict[str, Any]) -> str:
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps(document))
        return str(path)

    return write


@pytest.fixture
async def file_verifier(jwks_file: Callable[[dict[str, Any]], str]) -> AsyncIterator[IamVerifier]:
    config = IamConfig.from_env(
        {
            "IAM_ISSUER": ISSUER,
            "IAM_CLIENT_ID": CLIENT_ID,
            "IAM_JWKS_FILE": jwks_file(default_jwks()),
            "PLATFORM_ADMIN_ORGS": "platform-org, ops-org",
        }
    )
    verifier = IamVerifier(config)
    await verifier.start()
    yield verifier
    await verifier.close()


class JwksServer:
    """A local IAM: OIDC discovery plus a JWKS endpoint that counts requests."""

    def __init__(self, discovery: bool = True) -> None:
        self.jwks: dict[str, Any] = default_jwks()
        self.jwks_requests = 0
        self.fail = False
        app = web.Application()
        app.router.add_get("/keys", self._keys)
        app.router.add_get("/.well-known/jwks", self._keys)
        if discovery:
            app.router.add_get("/.well-known/openid-configuration", self._discovery)
        self.server = TestServer(app, host="127.0.0.1", port=0)

    async def _keys(self, request: web.Request) -> web.Response:
        self.jwks_requests += 1
        if self.fail:
            return web.Response(status=500)
        return web.json_response(self.jwks)

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.issuer, "jwks_uri": self.url("/keys")})

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    @property
    def issuer(self) -> str:
        return self.url("/").rstrip("/")


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    await server.server.start_server()
    yield server
    await server.server.close()


@pytest.fixture
async def uri_verifier(jwks_server: JwksServer) -> AsyncIterator[IamVerifier]:
    config = IamConfig.from_env(
        {"IAM_ISSUER": ISSUER, "IAM_CLIENT_ID": CLIENT_ID, "IAM_JWKS_URI": jwks_server.url("/keys")}
    )
    verifier = IamVerifier(config)
    await verifier.start()
    yield verifier
    await verifier.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- config --------------------------------------------------------------------


def test_config_from_env() -> None:
    config = IamConfig.from_env(
        {
            "IAM_ISSUER": ISSUER,
            "IAM_CLIENT_ID": CLIENT_ID,
            "IAM_ACCEPTED_ISSUERS": " https://a.test , https://b.test/,",
            "IAM_ACCEPTED_AUDIENCES": "aud-1,aud-2",
            "PLATFORM_ADMIN_ORGS": "platform-org",
        }
    )
    assert config.accepted_issuers == ("https://a.test", "https://b.test/")
    assert config.accepted_audiences == ("aud-1", "aud-2")
    assert config.platform_admin_orgs == ("platform-org",)
    assert config.enabled


def test_config_enabled_by_any_key_source() -> None:
    assert not IamConfig.from_env({}).enabled
    assert not IamConfig.from_env({"IAM_CLIENT_ID": CLIENT_ID}).enabled
    assert IamConfig.from_env({"IAM_JWKS_FILE": "/tmp/jwks.json"}).enabled
    assert IamConfig.from_env({"IAM_JWKS_URI": "https://iam/keys"}).enabled
    assert IamConfig.from_env({"IAM_ISSUER": ISSUER}).enabled
    assert IamConfig.from_env({}).platform_admin_orgs == ()


# -- looks_like_iam_jwt --------------------------------------------------------


def test_looks_like_iam_jwt() -> None:
    assert looks_like_iam_jwt(sign(claims()))
    assert looks_like_iam_jwt(sign(claims(), key=EC_KEY, alg="ES256", kid=EC_KID))
    assert not looks_like_iam_jwt(jwt.encode({"sub": "k"}, "secret" * 11, algorithm="HS256"))
    assert not looks_like_iam_jwt(jwt.encode({"sub": "k"}, "secret" * 11, algorithm="HS512"))
    assert not looks_like_iam_jwt("not-a-jwt")
    assert not looks_like_iam_jwt("sk_test_abc")
    assert not looks_like_iam_jwt("a.b")
    assert not looks_like_iam_jwt("!!!.???.###")


def test_alg_none_and_unknown_algs_look_like_iam_tokens() -> None:
    # They must be rejected by IAM validation, not handed to another auth path.
    assert looks_like_iam_jwt(raw_token({"alg": "none"}, claims(), b""))
    assert looks_like_iam_jwt(raw_token({"alg": "EdDSA"}, claims(), b"sig"))
    assert looks_like_iam_jwt(raw_token({"typ": "JWT"}, claims(), b"sig"))


# -- principal -----------------------------------------------------------------


async def test_valid_token_principal(file_verifier: IamVerifier) -> None:
    principal = await file_verifier.verify(sign(claims()))
    assert principal == IamPrincipal(
        org_name="test-org",
        user_id="test-org/admin-user",
        subject="user-admin-123",
        email="admin@test.com",
        tier=None,
        roles=("admin",),
        role="admin",
    )


async def test_ec_token_accepted(file_verifier: IamVerifier) -> None:
    principal = await file_verifier.verify(sign(claims(), key=EC_KEY, alg="ES256", kid=EC_KID))
    assert principal.user_id == "test-org/admin-user"


@pytest.mark.parametrize(
    ("overrides", "role"),
    [
        ({"isAdmin": False, "roles": ["owner"]}, "admin"),
        ({"isAdmin": None, "roles": ["member"]}, "user"),
        ({"isAdmin": False, "roles": [{"name": "admin"}]}, "admin"),
        ({"isAdmin": False, "roles": [{"name": "member"}, {"id": 3}]}, "user"),
        ({"isAdmin": True, "roles": []}, "admin"),
        ({"isAdmin": "true", "roles": None}, "user"),  # only a real boolean counts
        ({"isAdmin": True, "owner": "platform-org"}, "platform"),
        ({"isAdmin": False, "owner": "platform-org", "roles": ["admin"]}, "admin"),
    ],
)
async def test_roles(file_verifier: IamVerifier, overrides: dict[str, Any], role: str) -> None:
    principal = await file_verifier.verify(sign(claims(**overrides)))
    assert principal.role == role


async def test_role_objects_are_reduced_to_names(file_verifier: IamVerifier) -> None:
    token = sign(claims(roles=[{"name": "admin", "owner": "test-org"}, {"name": "billing"}]))
    assert (await file_verifier.verify(token)).roles == ("admin", "billing")


async def test_user_id_falls_back_to_subject(file_verifier: IamVerifier) -> None:
    for name in (None, ""):
        token = sign(claims(name=name, owner="Test-Org", sub="User-XYZ", email=None))
        principal = await file_verifier.verify(token)
        assert principal.user_id == "test-org/user-xyz"
        assert principal.org_name == "Test-Org"
        assert principal.subject == "User-XYZ"
        assert principal.email is None


async def test_tier_from_properties(file_verifier: IamVerifier) -> None:
    principal = await file_verifier.verify(sign(claims(properties={"tier": "enterprise"})))
    assert principal.tier == "enterprise"
    principal = await file_verifier.verify(sign(claims(properties={"other": "x"})))
    assert principal.tier is None


async def test_missing_owner(file_verifier: IamVerifier) -> None:
    await assert_rejected(
        file_verifier, sign(claims(owner=None)), message="IAM token missing owner claim"
    )
    await assert_rejected(
        file_verifier, sign(claims(owner="")), message="IAM token missing owner claim"
    )


async def test_missing_subject_rejected(file_verifier: IamVerifier) -> None:
    await assert_rejected(file_verifier, sign(claims(sub=None)))


# -- time claims ---------------------------------------------------------------


async def test_expired_token_rejected(file_verifier: IamVerifier) -> None:
    now = int(time.time())
    await assert_rejected(file_verifier, sign(claims(iat=now - 7200, exp=now - 3600)))


async def test_expiry_within_leeway_accepted(file_verifier: IamVerifier) -> None:
    now = int(time.time())
    principal = await file_verifier.verify(sign(claims(iat=now - 3600, exp=now - 30)))
    assert principal.subject == "user-admin-123"


async def test_token_without_exp_rejected(file_verifier: IamVerifier) -> None:
    await assert_rejected(file_verifier, sign(claims(exp=None)))


async def test_not_yet_valid_rejected(file_verifier: IamVerifier) -> None:
    now = int(time.time())
    await assert_rejected(file_verifier, sign(claims(nbf=now + 600)))
    await assert_rejected(file_verifier, sign(claims(iat=now + 600)))
    # Within the leeway clock skew is tolerated.
    await file_verifier.verify(sign(claims(nbf=now + 30, iat=now + 30)))


# -- issuer and audience -------------------------------------------------------


async def test_wrong_issuer_rejected(file_verifier: IamVerifier) -> None:
    await assert_rejected(file_verifier, sign(claims(iss="https://evil.example.test")))
    await assert_rejected(file_verifier, sign(claims(iss=ISSUER + "/realm")))
    await assert_rejected(file_verifier, sign(claims(iss=None)))


async def test_issuer_trailing_slash_ignored(file_verifier: IamVerifier, jwks_file: Any) -> None:
    await file_verifier.verify(sign(claims(iss=ISSUER + "/")))

    config = IamConfig(
        issuer=ISSUER + "/", client_id=CLIENT_ID, jwks_file=jwks_file(default_jwks())
    )
    verifier = IamVerifier(config)
    await verifier.start()
    try:
        await verifier.verify(sign(claims(iss=ISSUER)))
    finally:
        await verifier.close()


async def test_accepted_issuers_and_audiences(jwks_file: Any) -> None:
    config = IamConfig.from_env(
        {
            "IAM_ISSUER": ISSUER,
            "IAM_CLIENT_ID": CLIENT_ID,
            "IAM_JWKS_FILE": jwks_file(default_jwks()),
            "IAM_ACCEPTED_ISSUERS": "https://other.example.test/",
            "IAM_ACCEPTED_AUDIENCES": "cli-app",
        }
    )
    verifier = IamVerifier(config)
    await verifier.start()
    try:
        await verifier.verify(sign(claims(iss="https://other.example.test", aud="cli-app")))
        await assert_rejected(verifier, sign(claims(aud="someone-else")))
    finally:
        await verifier.close()


async def test_wrong_audience_rejected(file_verifier: IamVerifier) -> None:
    await assert_rejected(file_verifier, sign(claims(aud="another-client")))
    await assert_rejected(file_verifier, sign(claims(aud=["a", "b"])))
    await assert_rejected(file_verifier, sign(claims(aud=None)))
    await assert_rejected(file_verifier, sign(claims(aud="another-client", azp="also-wrong")))


async def test_azp_equal_to_client_id_accepted(file_verifier: IamVerifier) -> None:
    await file_verifier.verify(sign(claims(aud=None, azp=CLIENT_ID)))
    await file_verifier.verify(sign(claims(aud="account", azp=CLIENT_ID)))


async def test_aud_array_containing_client_id_accepted(file_verifier: IamVerifier) -> None:
    await file_verifier.verify(sign(claims(aud=["account", CLIENT_ID])))


async def test_no_configured_audience_refuses_everything(jwks_file: Any) -> None:
    verifier = IamVerifier(IamConfig(issuer=ISSUER, jwks_file=jwks_file(default_jwks())))
    await verifier.start()
    try:
        await assert_rejected(verifier, sign(claims(aud="")))
        await assert_rejected(verifier, sign(claims()))
    finally:
        await verifier.close()


# -- algorithms and keys -------------------------------------------------------


async def test_alg_none_rejected(file_verifier: IamVerifier) -> None:
    await assert_rejected(file_verifier, raw_token({"alg": "none", "kid": RSA_KID}, claims(), b""))
    await assert_rejected(file_verifier, raw_token({"alg": "none"}, claims(), b""))


async def test_hs256_signed_with_public_key_rejected(file_verifier: IamVerifier) -> None:
    token = hmac_with_public_pem({"alg": "HS256", "typ": "JWT", "kid": RSA_KID}, claims())
    assert not looks_like_iam_jwt(token)  # it is routed to the API key path, not here
    await assert_rejected(file_verifier, token)


async def test_rs256_header_with_hmac_signature_rejected(file_verifier: IamVerifier) -> None:
    token = hmac_with_public_pem({"alg": "RS256", "typ": "JWT", "kid": RSA_KID}, claims())
    assert looks_like_iam_jwt(token)
    await assert_rejected(file_verifier, token)


async def test_token_alg_must_match_jwk_alg(file_verifier: IamVerifier) -> None:
    # The RSA JWK declares RS256, so a PS256 signature by the very same key fails.
    await assert_rejected(file_verifier, sign(claims(), alg="PS256"))


async def test_jwk_without_alg_accepts_any_alg_of_its_type(jwks_file: Any) -> None:
    document = {"keys": [public_jwk(RSA_KEY, RSA_KID, None), public_jwk(EC_KEY, EC_KID, None)]}
    verifier = IamVerifier(
        IamConfig(issuer=ISSUER, client_id=CLIENT_ID, jwks_file=jwks_file(document))
    )
    await verifier.start()
    try:
        await verifier.verify(sign(claims(), alg="PS256"))
        await verifier.verify(sign(claims(), alg="RS512"))
        await verifier.verify(sign(claims(), key=EC_KEY, alg="ES256", kid=EC_KID))
        # A P-256 key never verifies ES384, and an RSA key never an EC algorithm.
        await assert_rejected(verifier, es384_signed_by_p256_key(claims()))
        await assert_rejected(verifier, sign(claims(), key=EC_KEY, alg="ES256", kid=RSA_KID))
    finally:
        await verifier.close()


async def test_wrong_signing_key_rejected(file_verifier: IamVerifier) -> None:
    await assert_rejected(file_verifier, sign(claims(), key=ROTATED_RSA_KEY))


async def test_tampered_payload_rejected(file_verifier: IamVerifier) -> None:
    header, _, signature = sign(claims()).split(".")
    forged = b64url(json.dumps(claims(owner="platform-org")).encode())
    await assert_rejected(file_verifier, f"{header}.{forged}.{signature}")


async def test_garbage_tokens_rejected(file_verifier: IamVerifier) -> None:
    for token in ("not-a-jwt", "sk_test_abc", "a.b.c", ""):
        await assert_rejected(file_verifier, token)


async def test_kid_required_when_several_keys(file_verifier: IamVerifier, jwks_file: Any) -> None:
    await assert_rejected(file_verifier, sign(claims(), kid=None))

    document = {"keys": [public_jwk(RSA_KEY, RSA_KID, "RS256")]}
    verifier = IamVerifier(
        IamConfig(issuer=ISSUER, client_id=CLIENT_ID, jwks_file=jwks_file(document))
    )
    await verifier.start()
    try:
        await verifier.verify(sign(claims(), kid=None))
    finally:
        await verifier.close()


async def test_only_rsa_and_ec_signature_keys_used(jwks_file: Any) -> None:
    document = {
        "keys": [
            {"kty": "oct", "kid": "hmac", "k": b64url(b"secret" * 11), "alg": "HS256"},
            {**public_jwk(ROTATED_RSA_KEY, "enc", None), "use": "enc"},
            public_jwk(RSA_KEY, RSA_KID, "RS256"),
        ]
    }
    verifier = IamVerifier(
        IamConfig(issuer=ISSUER, client_id=CLIENT_ID, jwks_file=jwks_file(document))
    )
    await verifier.start()
    try:
        await verifier.verify(sign(claims()))
        await assert_rejected(
            verifier, jwt.encode(claims(), b"secret" * 11, "HS256", {"kid": "hmac"})
        )
        await assert_rejected(verifier, sign(claims(), key=ROTATED_RSA_KEY, kid="enc"))
    finally:
        await verifier.close()


# -- key sources and availability ----------------------------------------------


async def test_jwks_uri(uri_verifier: IamVerifier, jwks_server: JwksServer) -> None:
    assert jwks_server.jwks_requests == 1
    assert (await uri_verifier.verify(sign(claims()))).role == "admin"
    assert jwks_server.jwks_requests == 1  # no network on the hot path


async def test_unknown_kid_refetches_at_most_once_per_minute(
    uri_verifier: IamVerifier, jwks_server: JwksServer
) -> None:
    assert jwks_server.jwks_requests == 1
    await assert_rejected(uri_verifier, sign(claims(), key=ROTATED_RSA_KEY, kid="unknown-1"))
    assert jwks_server.jwks_requests == 2
    await assert_rejected(uri_verifier, sign(claims(), key=ROTATED_RSA_KEY, kid="unknown-2"))
    await assert_rejected(uri_verifier, sign(claims(), key=ROTATED_RSA_KEY, kid="unknown-1"))
    assert jwks_server.jwks_requests == 2


async def test_unknown_kid_picks_up_rotated_key(
    uri_verifier: IamVerifier, jwks_server: JwksServer
) -> None:
    jwks_server.jwks["keys"].append(public_jwk(ROTATED_RSA_KEY, "rsa-2", "RS256"))
    principal = await uri_verifier.verify(sign(claims(), key=ROTATED_RSA_KEY, kid="rsa-2"))
    assert principal.subject == "user-admin-123"
    assert jwks_server.jwks_requests == 2


async def test_oidc_discovery_from_issuer(jwks_server: JwksServer) -> None:
    config = IamConfig.from_env({"IAM_ISSUER": jwks_server.issuer, "IAM_CLIENT_ID": CLIENT_ID})
    verifier = IamVerifier(config)
    await verifier.start()
    try:
        principal = await verifier.verify(sign(claims(iss=jwks_server.issuer)))
        assert principal.user_id == "test-org/admin-user"
        assert jwks_server.jwks_requests == 1
    finally:
        await verifier.close()


async def test_discovery_falls_back_to_well_known_jwks() -> None:
    server = JwksServer(discovery=False)
    await server.server.start_server()
    verifier = IamVerifier(IamConfig(issuer=server.issuer + "/", client_id=CLIENT_ID))
    try:
        await verifier.start()
        await verifier.verify(sign(claims(iss=server.issuer)))
        assert server.jwks_requests == 1
    finally:
        await verifier.close()
        await server.server.close()


async def test_jwks_file_takes_priority_over_uri(jwks_server: JwksServer, jwks_file: Any) -> None:
    document = {"keys": [public_jwk(ROTATED_RSA_KEY, "file-key", "RS256")]}
    config = IamConfig(
        issuer=jwks_server.issuer,
        client_id=CLIENT_ID,
        jwks_file=jwks_file(document),
        jwks_uri=jwks_server.url("/keys"),
    )
    verifier = IamVerifier(config)
    await verifier.start()
    try:
        await verifier.verify(
            sign(claims(iss=jwks_server.issuer), key=ROTATED_RSA_KEY, kid="file-key")
        )
        assert jwks_server.jwks_requests == 0
    finally:
        await verifier.close()


async def test_unreachable_key_source_is_503() -> None:
    port = closed_port()
    config = IamConfig.from_env(
        {
            "IAM_ISSUER": ISSUER,
            "IAM_CLIENT_ID": CLIENT_ID,
            "IAM_JWKS_URI": f"http://127.0.0.1:{port}/keys",
        }
    )
    verifier = IamVerifier(config)
    await verifier.start()  # must not raise
    try:
        await assert_rejected(
            verifier,
            sign(claims()),
            status=503,
            message="IAM authentication service is unavailable",
        )
    finally:
        await verifier.close()


async def test_not_started_or_disabled_is_503(jwks_file: Any) -> None:
    verifier = IamVerifier(
        IamConfig(issuer=ISSUER, client_id=CLIENT_ID, jwks_file=jwks_file(default_jwks()))
    )
    await assert_rejected(
        verifier, sign(claims()), status=503, message="IAM authentication service is unavailable"
    )
    disabled = IamVerifier(IamConfig.from_env({}))
    await disabled.start()
    await assert_rejected(
        disabled, sign(claims()), status=503, message="IAM authentication service is unavailable"
    )
    await disabled.close()


async def test_invalid_jwks_file_is_503(jwks_file: Any) -> None:
    for document in ({"keys": []}, {"nope": 1}, {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}):
        verifier = IamVerifier(
            IamConfig(issuer=ISSUER, client_id=CLIENT_ID, jwks_file=jwks_file(document))
        )
        await verifier.start()
        await assert_rejected(
            verifier,
            sign(claims()),
            status=503,
            message="IAM authentication service is unavailable",
        )
        await verifier.close()


async def test_stale_keys_kept_for_24_hours(
    uri_verifier: IamVerifier, jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    jwks_server.fail = True
    assert not await uri_verifier._refresh()
    await uri_verifier.verify(sign(claims()))  # last good key set still used

    real_monotonic = time.monotonic
    monkeypatch.setattr(iam.time, "monotonic", lambda: real_monotonic() + 23 * 3600)
    await uri_verifier.verify(sign(claims()))

    monkeypatch.setattr(iam.time, "monotonic", lambda: real_monotonic() + 25 * 3600)
    await assert_rejected(
        uri_verifier,
        sign(claims()),
        status=503,
        message="IAM authentication service is unavailable",
    )


async def test_background_refresh(jwks_server: JwksServer) -> None:
    config = dataclasses.replace(
        IamConfig(issuer=ISSUER, client_id=CLIENT_ID, jwks_uri=jwks_server.url("/keys")),
        refresh_interval=0.05,
    )
    verifier = IamVerifier(config)
    await verifier.start()
    try:
        jwks_server.jwks = {"keys": [public_jwk(ROTATED_RSA_KEY, "rsa-2", "RS256")]}
        for _ in range(100):
            if jwks_server.jwks_requests >= 3:
                break
            await asyncio.sleep(0.02)
        assert jwks_server.jwks_requests >= 3
        await verifier.verify(sign(claims(), key=ROTATED_RSA_KEY, kid="rsa-2"))
        await assert_rejected(verifier, sign(claims()))  # the old key was rotated out
    finally:
        await verifier.close()
    requests = jwks_server.jwks_requests
    await asyncio.sleep(0.15)
    assert jwks_server.jwks_requests == requests  # close() stopped the refresh task


async def test_concurrent_unknown_kid_requests_share_one_refetch(
    uri_verifier: IamVerifier, jwks_server: JwksServer
) -> None:
    jwks_server.jwks["keys"].append(public_jwk(ROTATED_RSA_KEY, "rsa-2", "RS256"))
    token = sign(claims(), key=ROTATED_RSA_KEY, kid="rsa-2")
    principals = await asyncio.gather(*(uri_verifier.verify(token) for _ in range(5)))
    assert {p.subject for p in principals} == {"user-admin-123"}
    assert jwks_server.jwks_requests == 2


async def test_tokens_and_keys_never_logged(
    uri_verifier: IamVerifier, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="services.gateway.iam")
    bad = sign(claims(), key=ROTATED_RSA_KEY, kid="unknown")
    good = sign(claims())
    await assert_rejected(uri_verifier, bad)
    await assert_rejected(uri_verifier, sign(claims(aud="x")))
    await uri_verifier.verify(good)
    jwks_server.fail = True
    await uri_verifier._refresh()
    modulus = jwks_server.jwks["keys"][0]["n"]
    for record in caplog.records:
        text = record.getMessage()
        assert bad.split(".")[2] not in text and good.split(".")[2] not in text
        assert modulus not in text
