"""An organization's provider settings through the gateway (payments.md §1.3, §11 8): per
mode, admin only, secrets write-only and sealed at rest, checked before anything is stored,
every change a billing event without secrets. How payments then use them:
test_provider_routing.py."""

from __future__ import annotations

import base64
import json

import pytest

from services.payments.provider_settings import domain
from services.runtime.encryption import SecretBox, new_key
from tests.conftest import bearer, iam_token
from tests.support import get, org_id_of, post, request

PATH = "/provider-settings"
STRIPE = {"secretKey": "sk_test_51PgafSecretKeyWxyz", "publishableKey": "pk_test_51PgafPub",
          "webhookSecret": "whsec_SigningSecret77"}
SQUARE = {"accessToken": "EAAAl-SandboxTokenQrst", "locationId": "L88917AVBK2S5",
          "webhookSignatureKey": "sq-signature-key-9"}
SECRETS = (STRIPE["secretKey"], STRIPE["webhookSecret"], SQUARE["accessToken"],
           SQUARE["webhookSignatureKey"])
NOTHING = {"livemode": False, "preferredProcessor": "", "stripe": None, "square": None,
           "updated": None}


async def write(http, org, body, key="sk_test"):
    return await post(http, PATH, body, org.auth(key))


async def read(http, org, key="sk_test"):
    status, body, _ = await get(http, PATH, org.auth(key))
    assert status == 200, body
    return body


async def remove(http, org, provider, key="sk_test"):
    return await request(http, "DELETE", f"/api/v1/billing{PATH}/{provider}", org.auth(key))


def clear_of_secrets(text: str) -> bool:
    return not any(secret in text for secret in SECRETS)


async def test_secrets_are_write_only_and_sealed_at_rest(http, org, pool, platform):
    assert await read(http, org) == NOTHING
    status, written, _ = await write(http, org, {"stripe": STRIPE, "square": SQUARE,
                                                 "preferredProcessor": "Stripe"})
    assert status == 200, written
    assert {k: written[k] for k in ("livemode", "preferredProcessor", "stripe", "square")} == {
        "livemode": False, "preferredProcessor": "stripe",
        "stripe": {"secretKeySet": True, "secretKeyLast4": "Wxyz",
                   "publishableKey": "pk_test_51PgafPub", "webhookSecretSet": True,
                   "accountId": ""},
        "square": {"accessTokenSet": True, "accessTokenLast4": "Qrst",
                   "locationId": "L88917AVBK2S5", "environment": "sandbox",
                   "webhookSignatureKeySet": True, "merchantId": ""}}
    assert written["updated"].endswith("Z")
    assert await read(http, org) == written
    assert clear_of_secrets(json.dumps(written))
    org_id = await org_id_of(platform, org)
    row = await pool.fetchrow("select t::text as text, credentials from"
                              " payments.provider_settings t where org_id = $1", org_id)
    assert clear_of_secrets(row["text"])
    for secret in SECRETS:  # nor in any encoding of the sealed bytes
        assert secret.encode() not in row["credentials"]
        assert base64.b64encode(secret.encode()) not in base64.b64encode(row["credentials"])
    events = await pool.fetch(
        "select type, convert_from(payload, 'utf8') as payload from payments.outbox"
        " where org_id = $1 order by seq", org_id)
    assert [e["type"] for e in events] == ["provider_settings.updated"]
    assert clear_of_secrets(events[0]["payload"])
    assert json.loads(events[0]["payload"])["data"] == written


async def test_an_update_keeps_what_it_does_not_name(http, org):
    await write(http, org, {"stripe": STRIPE, "square": SQUARE})
    status, body, _ = await write(http, org, {"stripe": {"webhookSecret": "whsec_Rotated"},
                                              "preferredProcessor": "square"})
    assert status == 200, body
    assert (body["stripe"]["secretKeyLast4"], body["stripe"]["webhookSecretSet"],
            body["preferredProcessor"]) == ("Wxyz", True, "square")
    assert body["square"]["accessTokenLast4"] == "Qrst"
    status, body, _ = await write(http, org, {"preferredProcessor": ""})
    assert (body["preferredProcessor"], body["stripe"]["secretKeyLast4"]) == ("", "Wxyz")

    status, body, _ = await remove(http, org, "stripe")
    assert (status, body["stripe"], body["square"]["locationId"]) == (200, None,
                                                                    "L88917AVBK2S5")
    status, body, _ = await remove(http, org, "stripe")
    assert (status, body["error"]["message"]) == (404, "no stripe settings")
    status, body, _ = await remove(http, org, "paypal")
    assert (status, body["error"]["message"]) == (400, "provider must be square or stripe")
    assert (await read(http, org))["square"]["accessTokenSet"] is True


@pytest.mark.parametrize(("body", "message"), [
    ({}, "nothing to change: give stripe, square or preferredProcessor"),
    ({"paypal": {"clientId": "x"}}, "nothing to change: give stripe, square or "
                                    "preferredProcessor"),
    ({"stripe": {}}, "stripe.secretKey is required"),
    ({"stripe": {"webhookSecret": "whsec_1"}}, "stripe.secretKey is required"),
    ({"stripe": {"secretKey": ""}}, "stripe.secretKey must not be empty"),
    ({"stripe": {"secretKey": "sk_live_1"}},
     "stripe.secretKey must start with sk_test_ or rk_test_"),
    ({"stripe": {"secretKey": "pk_test_1"}},
     "stripe.secretKey must start with sk_test_ or rk_test_"),
    ({"stripe": {"secretKey": "sk_test_1 2"}},
     "stripe.secretKey must be printable ASCII without spaces"),
    ({"stripe": {"secretKey": "sk_test_1\r\nX-Injected: 1"}},
     "stripe.secretKey must be printable ASCII without spaces"),
    ({"stripe": {"secretKey": "sk_test_" + "x" * 300}}, "stripe.secretKey: at most 255 characters"),
    ({"stripe": {"secretKey": "sk_test_1", "publishableKey": "pk_live_1"}},
     "stripe.publishableKey must start with pk_test_"),
    ({"stripe": {"secretKey": "sk_test_1", "webhookSecret": ""}},
     "stripe.webhookSecret must not be empty"),
    ({"stripe": {"secretKey": "sk_test_1", "webhookSecret": "secret"}},
     "stripe.webhookSecret must start with whsec_"),
    ({"stripe": {"secretkey": "sk_test_1"}}, "invalid request body"),  # a misspelt secret
    ({"stripe": "sk_test_1"}, "invalid request body"),
    ({"square": {"accessToken": "t"}}, "square.locationId is required"),
    ({"square": {"locationId": "L"}}, "square.accessToken is required"),
    ({"square": {**SQUARE, "accessToken": ""}}, "square.accessToken must not be empty"),
    ({"square": {**SQUARE, "environment": "production"}},
     "square.environment must be sandbox in test mode"),
    ({"square": {**SQUARE, "environment": "moon"}},
     "square.environment must be sandbox or production"),
    ({"square": {**SQUARE, "locationId": "x" * 256}}, "square.locationId: at most 255 characters"),
    ({"preferredProcessor": "paypal"}, "preferredProcessor must be square or stripe"),
    ({"preferredProcessor": "offline"}, "preferredProcessor must be square or stripe"),
])
async def test_invalid_settings_are_refused_and_store_nothing(http, org, body, message):
    status, reply, _ = await write(http, org, body)
    assert (status, reply["error"]["message"]) == (400, message)
    assert await read(http, org) == NOTHING


async def test_each_mode_has_its_own_settings(http, org):
    await write(http, org, {"stripe": STRIPE})
    live = await read(http, org, "sk_live")
    assert live == {**NOTHING, "livemode": True}  # test keys never serve live mode
    status, body, _ = await write(http, org, {"stripe": STRIPE}, "sk_live")
    assert (status, body["error"]["message"]) == (
        400, "stripe.secretKey must start with sk_live_ or rk_live_")
    status, body, _ = await write(http, org, {"square": {**SQUARE, "environment": "sandbox"}},
                                  "sk_live")
    assert (status, body["error"]["message"]) == (
        400, "square.environment must be production in live mode")
    status, body, _ = await write(http, org, {"stripe": {"secretKey": "rk_live_Restricted1"},
                                              "square": SQUARE}, "sk_live")
    assert status == 200, body
    assert (body["livemode"], body["square"]["environment"],
            body["stripe"]["secretKeyLast4"]) == (True, "production", "ted1")
    assert (await read(http, org))["stripe"]["secretKeyLast4"] == "Wxyz"  # test: unchanged
    assert (await read(http, org))["square"] is None


async def test_settings_are_for_administrators_of_their_organization(http, org, make_org):
    user = bearer(iam_token(owner=org.name, name="alice"))
    for method, body in (("GET", None), ("POST", {"stripe": STRIPE})):
        status, reply, _ = await request(http, method, f"/api/v1/billing{PATH}", user, body)
        assert (status, reply["error"]["message"]) == (403, "Token doesn't support this scope")
        status, _, _ = await request(http, method, f"/api/v1/billing{PATH}",
                                     org.auth("pk_test"), body)
        assert status == 403
    status, _, _ = await request(http, "DELETE", f"/api/v1/billing{PATH}/stripe", user)
    assert status == 403
    await write(http, org, {"stripe": STRIPE})
    admin = bearer(iam_token(owner=org.name, name="bob", roles=["admin"]))
    status, live, _ = await get(http, PATH, admin)  # an IAM admin: live mode
    assert (status, live["livemode"], live["stripe"]) == (200, True, None)
    other = await make_org()
    assert await read(http, other) == NOTHING


async def test_without_a_secrets_key_credentials_are_neither_stored_nor_read(
        http, org, payments_service):
    state = payments_service.ctx.state
    key = state.secrets
    state.secrets = None
    try:
        status, body, _ = await write(http, org, {"stripe": STRIPE})
        assert (status, body["error"]["message"]) == (503, domain.NO_KEY_TO_STORE)
        status, body, _ = await write(http, org, {"preferredProcessor": "square"})
        assert (status, body["preferredProcessor"]) == (200, "square")  # no secret in it
    finally:
        state.secrets = key
    await write(http, org, {"stripe": STRIPE})
    for box, message in ((None, domain.NO_KEY_TO_READ),
                         (SecretBox.from_setting(new_key()), domain.WRONG_KEY)):
        state.secrets = box
        try:
            status, body, _ = await get(http, PATH, org.auth())
            assert (status, body["error"]["message"]) == (503, message)
            # Nor is the organization's payment sent through the platform's accounts.
            status, body, _ = await post(http, "/payment-methods",
                                         {"customerId": "acme/alice", "providerRef": "tok_visa"},
                                         org.auth())
            assert (status, body["error"]["message"]) == (503, message)
        finally:
            state.secrets = key


async def test_sealed_settings_open_only_for_their_own_organization_and_mode(
        http, org, make_org, pool, platform):
    await write(http, org, {"stripe": STRIPE})
    other = await make_org()
    await write(http, other, {"preferredProcessor": "stripe"})
    # Someone with access to the database copies one organization's sealed settings to
    # another's row: they do not open there.
    await pool.execute(
        "update payments.provider_settings t set credentials = s.credentials,"
        " key_id = s.key_id, version = t.version + 1 from payments.provider_settings s"
        " where s.org_id = $1 and not s.livemode and t.org_id = $2 and not t.livemode",
        await org_id_of(platform, org), await org_id_of(platform, other))
    status, body, _ = await get(http, PATH, other.auth())
    assert (status, body["error"]["message"]) == (503, domain.WRONG_KEY)
