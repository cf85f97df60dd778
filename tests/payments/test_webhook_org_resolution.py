"""Whose a provider webhook is when its URL names no organization (payments.md §5.5 (2)):
the organization whose provider settings name the event's account (Stripe's Connect
`account`, Square's `merchant_id`) in the event's mode, verified with the webhook secret
that organization stored only (never the platform's); else the platform's organization.
A claim is proven on save by the organization's own credentials of that provider and mode
(the fake Stripe and Square know whose account each key is). One organization per account
and mode; removing the settings removes the claim."""

from __future__ import annotations

import json
import secrets

import pytest

from services.payments.webhooks_in import domain
from tests.payments.test_stripe_adapter import fixture
from tests.payments.test_webhooks_in import (
    PLATFORM_SECRET,
    PLATFORM_SQUARE_KEY,
    fake_providers,
    intent,
    processing_intent,
    square_header,
    stripe_event,
    stripe_header,
)
from tests.support import add_payment_method, new_user, org_id_of, post, request


@pytest.fixture(scope="module")
async def providers(platform, settings):
    async with fake_providers(platform, settings) as fakes:
        yield fakes


@pytest.fixture
def stripe_api(providers):
    return providers[0]


@pytest.fixture
def square_api(providers):
    return providers[1]


@pytest.fixture
async def platform_org_id(platform, make_org, settings) -> str:
    return await org_id_of(platform, await make_org(settings.service_org))


def new_account() -> str:
    return f"acct_{secrets.token_hex(6)}"


async def claim_stripe(http, org, account: str, secret: str, secret_key: str):
    """The organization's Stripe settings in the secret key's mode, naming the account."""
    settings = {"secretKey": secret_key, "accountId": account} | (
        {"webhookSecret": secret} if secret else {})
    return await post(http, "/provider-settings", {"stripe": settings},
                      org.auth("sk_live" if secret_key.startswith("sk_live_") else "sk_test"))


async def connected(http, make_org, stripe_api, account: str, secret: str,
                    livemode: bool = False):
    """An organization claiming the account in the mode with a key of the account's."""
    org = await make_org()
    status, body, _ = await claim_stripe(http, org, account, secret,
                                         stripe_api.new_key(account, livemode))
    assert status == 200, body
    return org


async def settings_of(http, org) -> dict:
    status, body, _ = await request(http, "GET", "/api/v1/billing/provider-settings",
                                    org.auth())
    assert status == 200, body
    return body


async def claimants(pool, account: str) -> list:
    return [tuple(r) for r in await pool.fetch(
        "select org_id, livemode from payments.provider_accounts where account_id = $1",
        account)]


async def to_platform_url(http, body: bytes, headers: dict, provider: str = "stripe"):
    return await post(http, f"/webhooks/{provider}", None, headers, raw=body)


async def stored_as(pool, event_id: str) -> list[tuple[str, bool, str]]:
    """(organization, mode, status) of each stored copy of a provider event."""
    rows = await pool.fetch("select org_id, livemode, status from payments.webhook_events_in"
                            " where event_id = $1", event_id)
    return [tuple(r) for r in rows]


def event_id(body: bytes) -> str:
    return json.loads(body)["id"]


def test_the_account_is_read_from_the_body_only_when_it_is_one():
    assert domain.account_in("stripe", b'{"id":"evt_1","account":"acct_1"}') == "acct_1"
    assert domain.account_in("square", b'{"merchant_id":"M1","account":"acct_1"}') == "M1"
    for body in (b'{"id":"evt_1"}', b"not json", b'{"account":7}', b"[1]"):
        assert domain.account_in("stripe", body) == ""


async def test_an_account_is_one_organizations_in_each_mode(http, make_org, stripe_api,
                                                           square_api):
    account = new_account()
    key, live_key = stripe_api.new_key(account), stripe_api.new_key(account, livemode=True)
    first, second = await make_org(), await make_org()
    status, body, _ = await claim_stripe(http, first, "acct_not valid", "whsec_first", key)
    assert (status, body["error"]["message"]) == (
        400, "stripe.accountId must be acct_ followed by letters and digits")
    status, body, _ = await post(http, "/provider-settings", {"square": {
        "accessToken": square_api.token, "locationId": square_api.location_id,
        "merchantId": "M-1"}}, first.auth())
    assert (status, body["error"]["message"]) == (400, "square.merchantId must be letters and digits")

    status, body, _ = await claim_stripe(http, first, account, "whsec_first", key)
    assert (status, body["stripe"]["accountId"]) == (200, account)
    # Two organizations holding the account's keys: the first to claim it has it.
    status, body, _ = await claim_stripe(http, second, account, "whsec_second", key)
    assert (status, body["error"]["message"]) == (
        409, f"stripe account {account} is already another organization's in test mode")
    assert (await settings_of(http, second))["stripe"] is None  # refused whole
    # The other mode is another claim.
    status, body, _ = await claim_stripe(http, second, account, "whsec_second", live_key)
    assert (status, body["livemode"], body["stripe"]["accountId"]) == (200, True, account)
    # Given up ("" removes it), the account can be claimed again.
    status, body, _ = await post(http, "/provider-settings", {"stripe": {"accountId": ""}},
                                 first.auth())
    assert (status, body["stripe"]["accountId"], body["stripe"]["webhookSecretSet"]) == (
        200, "", True)
    status, _, _ = await claim_stripe(http, second, account, "whsec_second", key)
    assert status == 200


async def test_a_stripe_claim_is_proven_by_the_organizations_own_key(
        http, make_org, pool, platform, stripe_api):
    its_own, squatted = new_account(), new_account()
    owner_key = stripe_api.new_key(squatted)
    squatter = await make_org()
    status, body, _ = await claim_stripe(http, squatter, squatted, "",
                                         stripe_api.new_key(its_own))
    assert (status, body["error"]["message"], body["error"]["param"]) == (
        400, f"the stripe credentials of test mode do not belong to account {squatted}",
        "stripe.accountId")
    assert (await settings_of(http, squatter))["stripe"] is None
    assert await claimants(pool, squatted) == []
    # Its real owner is not kept out.
    owner = await make_org()
    status, body, _ = await claim_stripe(http, owner, squatted, "whsec_owner", owner_key)
    assert (status, body["stripe"]["accountId"]) == (200, squatted)
    assert await claimants(pool, squatted) == [(await org_id_of(platform, owner), False)]
    # A Connect platform's key speaks for the accounts connected to it.
    platform_account, connected_account = new_account(), new_account()
    platform_key = stripe_api.new_key(platform_account)
    stripe_api.new_key(connected_account, platform=platform_account)
    status, body, _ = await claim_stripe(http, await make_org(), connected_account, "",
                                         platform_key)
    assert (status, body["stripe"]["accountId"]) == (200, connected_account)
    assert [r.path for r in stripe_api.requests[-2:]] == [
        "/v1/account", f"/v1/accounts/{connected_account}"]


async def test_a_claim_needs_the_organizations_credentials_of_that_mode(
        http, make_org, pool, platform, stripe_api):
    account, org = new_account(), await make_org()
    status, body, _ = await post(http, "/provider-settings", {"stripe": {"accountId": account}},
                                 org.auth())
    assert (status, body["error"]["message"]) == (
        400, "stripe.accountId needs stripe.secretKey: the organization's own key of test"
             " mode proves the account is its")
    status, body, _ = await post(http, "/provider-settings", {"square": {"merchantId": "M1"}},
                                 org.auth())
    assert (status, body["error"]["message"]) == (
        400, "square.merchantId needs square.accessToken: the organization's own token of test"
             " mode proves the merchant is its")
    # Its test key is no proof in live mode, where it has none.
    status, _, _ = await claim_stripe(http, org, account, "", stripe_api.new_key(account))
    assert status == 200
    status, body, _ = await post(http, "/provider-settings", {"stripe": {"accountId": account}},
                                 org.auth("sk_live"))
    assert (status, body["error"]["message"]) == (
        400, "stripe.accountId needs stripe.secretKey: the organization's own key of live"
             " mode proves the account is its")
    assert await claimants(pool, account) == [(await org_id_of(platform, org), False)]


async def test_a_square_claim_is_proven_by_the_organizations_own_token(
        http, make_org, pool, square_api):
    square_api.merchant_id = f"M{secrets.token_hex(6).upper()}"  # whose the token now is
    org = await make_org()
    settings = {"accessToken": square_api.token, "locationId": square_api.location_id}
    status, body, _ = await post(http, "/provider-settings", {"square": settings}, org.auth())
    assert status == 200, body
    # The stored token proves the merchant (or not) on its own.
    other = f"M{secrets.token_hex(6).upper()}"
    status, body, _ = await post(http, "/provider-settings", {"square": {"merchantId": other}},
                                 org.auth())
    assert (status, body["error"]["message"], body["error"]["param"]) == (
        400, f"the square credentials of test mode do not belong to merchant {other}",
        "square.merchantId")
    assert await claimants(pool, other) == []
    status, body, _ = await post(http, "/provider-settings", {
        "square": {"merchantId": square_api.merchant_id}}, org.auth())
    assert (status, body["square"]["merchantId"]) == (200, square_api.merchant_id)


async def test_a_provider_that_does_not_answer_leaves_the_claim_unsaved(
        http, make_org, pool, stripe_api):
    account, org = new_account(), await make_org()
    stripe_api.script += [(503, fixture("api_error"))] * 2  # the SDK retries once
    try:
        status, body, _ = await claim_stripe(http, org, account, "whsec_down",
                                             stripe_api.new_key(account))
    finally:
        stripe_api.script.clear()
    assert (status, body["error"]["message"]) == (502, "payment provider unavailable")
    assert (await settings_of(http, org))["stripe"] is None
    assert await claimants(pool, account) == []
    # A proven claim is not asked again when only its webhook secret changes.
    owner = await connected(http, make_org, stripe_api, account, "whsec_up")
    stripe_api.script.append((503, fixture("api_error")))
    try:
        status, body, _ = await post(http, "/provider-settings", {
            "stripe": {"webhookSecret": "whsec_rotated"}}, owner.auth())
        assert len(stripe_api.script) == 1  # Stripe was not asked
    finally:
        stripe_api.script.clear()
    assert (status, body["stripe"]["accountId"]) == (200, account)


async def test_a_connect_event_reaches_the_organization_that_named_its_account(
        http, make_org, platform, pool, platform_org_id, stripe_api):
    account = new_account()
    mine = await connected(http, make_org, stripe_api, account, "whsec_mine_1")
    other = await connected(http, make_org, stripe_api, new_account(), "whsec_other_1")
    my_intent = await processing_intent(http, mine, stripe_api)
    other_intent = await processing_intent(http, other, stripe_api)
    mine_id, other_id = await org_id_of(platform, mine), await org_id_of(platform, other)

    body = stripe_event("payment_intent.succeeded", {
        "id": my_intent["providerRef"], "object": "payment_intent", "status": "succeeded",
        "amount_received": 2500}, account=account, livemode=False)
    status, reply, _ = await to_platform_url(http, body, stripe_header(body, "whsec_mine_1"))
    assert (status, reply["type"]) == (200, "payment.completed")
    assert (await intent(http, mine, my_intent["id"]))["status"] == "succeeded"
    assert await stored_as(pool, event_id(body)) == [(mine_id, False, "processed")]

    # Another organization's object, in an event of my account: mine to record, not its.
    body = stripe_event("payment_intent.succeeded", {
        "id": other_intent["providerRef"], "status": "succeeded"}, account=account)
    status, _, _ = await to_platform_url(http, body, stripe_header(body, "whsec_mine_1"))
    assert status == 200
    assert (await intent(http, other, other_intent["id"]))["status"] == "processing"
    assert await stored_as(pool, event_id(body)) == [(mine_id, False, "ignored")]

    # The URL that names an organization wins over the account.
    body = stripe_event("charge.succeeded", {"id": "ch_1"}, account=account)
    status, _, _ = await post(http, f"/webhooks/stripe/{other.name}", None,
                              stripe_header(body, "whsec_other_1"), raw=body)
    assert status == 200
    assert await stored_as(pool, event_id(body)) == [(other_id, False, "ignored")]
    assert platform_org_id not in {mine_id, other_id}


async def test_a_square_event_reaches_the_organization_of_its_merchant(
        http, make_org, platform, pool, platform_org_id, square_api):
    merchant, key = f"M{secrets.token_hex(6).upper()}", f"sqkey_{secrets.token_hex(4)}"
    square_api.merchant_id = merchant  # whose the token now is
    org = await make_org()
    status, body, _ = await post(http, "/provider-settings", {"square": {
        "accessToken": square_api.token, "locationId": square_api.location_id,
        "webhookSignatureKey": key, "merchantId": merchant}}, org.auth())
    assert (status, body["square"]["merchantId"]) == (200, merchant)
    user = new_user()
    method = await add_payment_method(http, org, user, "cnon:card-nonce-ok")
    _, created, _ = await post(http, "/payment-intents", {
        "customerId": user, "amount": 900, "paymentMethodId": method["id"],
        "captureMethod": "manual"}, org.auth())
    _, held, _ = await post(http, f"/payment-intents/{created['id']}/confirm", {}, org.auth())
    assert held["status"] == "requires_capture", held
    body = json.dumps({
        "merchant_id": merchant, "type": "payment.updated", "event_id": secrets.token_hex(8),
        "created_at": "2026-04-19T10:00:00Z", "data": {"type": "payment", "object": {
            "payment": {"id": held["providerRef"], "status": "COMPLETED",
                        "amount_money": {"amount": 900, "currency": "USD"}}}}}).encode()
    url = f"{http._base_url}/api/v1/billing/webhooks/square"
    # Signed with the platform's production key, it is a live event: the merchant is
    # claimed in test mode only, so it is the platform's, and the sandbox hold is left alone.
    status, _, _ = await to_platform_url(
        http, body, square_header(body, PLATFORM_SQUARE_KEY, url), "square")
    assert status == 200
    assert (await intent(http, org, held["id"]))["status"] == "requires_capture"
    live_copy = (platform_org_id, True, "ignored")
    assert await stored_as(pool, json.loads(body)["event_id"]) == [live_copy]
    status, _, _ = await to_platform_url(http, body, square_header(body, key, url), "square")
    assert status == 200
    assert (await intent(http, org, held["id"]))["status"] == "succeeded"
    assert sorted(await stored_as(pool, json.loads(body)["event_id"])) == sorted([
        live_copy, (await org_id_of(platform, org), False, "processed")])


async def test_an_unknown_account_or_none_is_the_platforms(http, pool, platform_org_id,
                                                         stripe_api):
    for extra in ({"account": new_account()}, {}):
        body = stripe_event("charge.succeeded", {"id": "ch_1"}, livemode=False, **extra)
        status, _, _ = await to_platform_url(http, body, stripe_header(body, PLATFORM_SECRET))
        assert status == 200
        assert await stored_as(pool, event_id(body)) == [(platform_org_id, False, "ignored")]


async def test_a_forged_delivery_naming_a_claimed_account_changes_nothing(
        http, make_org, pool, platform_org_id, stripe_api):
    account = new_account()
    org = await connected(http, make_org, stripe_api, account, "whsec_claimed_1")
    pending = await processing_intent(http, org, stripe_api)
    body = stripe_event("payment_intent.succeeded", {
        "id": pending["providerRef"], "status": "succeeded"}, account=account, livemode=False)
    # Neither a made-up secret nor the platform's speaks for the account's organization.
    for secret in ("whsec_forged", PLATFORM_SECRET):
        status, reply, _ = await to_platform_url(http, body, stripe_header(body, secret))
        assert (status, reply["error"]["message"]) == (401, "invalid webhook signature")
    assert await stored_as(pool, event_id(body)) == []
    assert (await intent(http, org, pending["id"]))["status"] == "processing"


async def test_a_claim_never_captures_platform_signed_events(
        http, make_org, pool, stripe_api):
    """Its claimant stored no webhook secret: the platform's does not verify for it, so the
    account's deliveries reach no one until it stores its own."""
    account = new_account()
    org = await connected(http, make_org, stripe_api, account, "")
    pending = await processing_intent(http, org, stripe_api)
    body = stripe_event("payment_intent.succeeded", {
        "id": pending["providerRef"], "status": "succeeded"}, account=account, livemode=False)
    status, reply, _ = await to_platform_url(http, body, stripe_header(body, PLATFORM_SECRET))
    assert (status, reply["error"]["message"]) == (401, "invalid webhook signature")
    assert await stored_as(pool, event_id(body)) == []
    assert (await intent(http, org, pending["id"]))["status"] == "processing"


async def test_removing_the_settings_gives_the_account_up(http, make_org, pool,
                                                          platform_org_id, stripe_api):
    account = new_account()
    org = await connected(http, make_org, stripe_api, account, "whsec_leaving_1")
    status, body, _ = await request(http, "DELETE", "/api/v1/billing/provider-settings/stripe",
                                    org.auth())
    assert (status, body["stripe"]) == (200, None)
    body = stripe_event("charge.succeeded", {"id": "ch_1"}, account=account, livemode=False)
    status, _, _ = await to_platform_url(http, body, stripe_header(body, PLATFORM_SECRET))
    assert status == 200
    assert await stored_as(pool, event_id(body)) == [(platform_org_id, False, "ignored")]
    await connected(http, make_org, stripe_api, account, "whsec_arriving_1")  # free again


async def test_each_mode_of_an_account_has_its_own_organization(
        http, make_org, platform, pool, platform_org_id, stripe_api):
    account = new_account()
    live = await connected(http, make_org, stripe_api, account, "whsec_live_owner",
                           livemode=True)
    live_id = await org_id_of(platform, live)

    live_event = stripe_event("charge.succeeded", {"id": "ch_1"}, account=account,
                              livemode=True)
    test_event = stripe_event("charge.succeeded", {"id": "ch_2"}, account=account,
                              livemode=False)
    status, _, _ = await to_platform_url(http, live_event,
                                         stripe_header(live_event, "whsec_live_owner"))
    assert status == 200
    assert await stored_as(pool, event_id(live_event)) == [(live_id, True, "ignored")]
    # Unclaimed in test mode: a test event of the account is the platform's.
    status, _, _ = await to_platform_url(http, test_event,
                                         stripe_header(test_event, PLATFORM_SECRET))
    assert status == 200
    assert await stored_as(pool, event_id(test_event)) == [(platform_org_id, False, "ignored")]

    test = await connected(http, make_org, stripe_api, account, "whsec_test_owner")
    test_id = await org_id_of(platform, test)
    test_event = stripe_event("charge.succeeded", {"id": "ch_3"}, account=account,
                              livemode=False)
    status, _, _ = await to_platform_url(http, test_event,
                                         stripe_header(test_event, "whsec_test_owner"))
    assert status == 200
    assert await stored_as(pool, event_id(test_event)) == [(test_id, False, "ignored")]
    # Each owner's secret speaks for its own mode only.
    live_event = stripe_event("charge.succeeded", {"id": "ch_4"}, account=account,
                              livemode=True)
    for secret in ("whsec_test_owner", PLATFORM_SECRET):
        status, _, _ = await to_platform_url(http, live_event,
                                             stripe_header(live_event, secret))
        assert status == 401
    assert await stored_as(pool, event_id(live_event)) == []
