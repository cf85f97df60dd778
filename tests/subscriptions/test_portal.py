"""The customer portal through the gateway (subscriptions.md §3.5, §5.10 case 89, §7 S3, R5,
D9): the four views composed from subscriptions, invoicing and payments; bad input; the
admin class; a service down is a 503, not an empty answer; portal links (expiry, tampering)
and the portal session's calls, which reach their own customer's records only."""

from __future__ import annotations

import time
from datetime import datetime

from contracts.ledger import UsageItem
from contracts.portal import PortalLink
from services.gateway.portal_html import View, money, page, usage_since
from services.gateway.portal_page import SESSION_COOKIE, Grant, Signer
from tests.conftest import PEPPER, bearer, iam_token
from tests.support import (
    API,
    add_payment_method,
    get,
    new_user,
    org_id_of,
    post,
    request,
    service_down,
)


async def subscribe(http, org, user, plan="pro", key="sk_test"):
    status, sub, _ = await post(http, "/subscriptions", {"userId": user, "planId": plan},
                                org.auth(key))
    assert status == 201, sub
    return sub


async def invoice_for(http, org, user, amount, finalize=False):
    status, invoice, _ = await post(http, "/invoices", {"userId": user, "lineItems": [
        {"id": "a", "description": "Seats", "amount": amount}]}, org.auth())
    assert status == 201, invoice
    if finalize:
        status, invoice, _ = await post(http, f"/invoices/{invoice['id']}/finalize", None,
                                        org.auth())
        assert status == 200, invoice
    return invoice


async def view(http, org, name, key="sk_test", **query):
    return await get(http, f"/portal/{name}", org.auth(key), **query)


# ---- the views -----------------------------------------------------------------------------


async def test_overview_of_a_new_customer(http, org, pool):  # 89
    status, body, _ = await view(http, org, "overview")
    assert (status, body["error"]["message"]) == (400, "customerId is required")
    user = new_user()
    status, body, _ = await view(http, org, "overview", customerId=user)
    assert (status, body) == (200, {"customerId": user, "balance": 0, "currency": "usd",
                                    "activeSubscriptions": 0, "paymentMethods": 0})
    # §7 R5: read-only, no balance record was created.
    assert await pool.fetchval("select count(*) from invoicing.customer_balances"
                               " where customer_id = $1", user) == 0


async def test_overview_counts(http, org):
    user = new_user()
    await subscribe(http, org, user)
    canceled = await subscribe(http, org, user, "developer")
    await post(http, f"/subscriptions/{canceled['id']}/cancel", {"atPeriodEnd": False},
               org.auth())
    await subscribe(http, org, new_user())  # someone else's
    first = await add_payment_method(http, org, user)
    await add_payment_method(http, org, user, "tok_mastercard")
    await request(http, "DELETE", f"{API}/payment-methods/{first['id']}", org.auth())
    status, body, _ = await post(http, "/customer-balance/adjustments", {
        "customerId": user, "amount": 750, "currency": "usd"}, org.auth())
    assert status == 200, body
    status, body, _ = await view(http, org, "overview", customerId=f" {user.upper()} ")
    assert (status, body) == (200, {"customerId": user, "balance": 750, "currency": "usd",
                                    "activeSubscriptions": 1, "paymentMethods": 1})
    # Another mode of the same organization sees none of it.
    status, body, _ = await view(http, org, "overview", "sk_live", customerId=user)
    assert (body["balance"], body["activeSubscriptions"], body["paymentMethods"]) == (0, 0, 0)


async def test_invoices_subscriptions_and_payment_methods(http, org):
    user = new_user()
    sub = await subscribe(http, org, user)
    draft = await invoice_for(http, org, user, 1500)
    final = await invoice_for(http, org, user, 2500, finalize=True)
    await invoice_for(http, org, new_user(), 999)
    method = await add_payment_method(http, org, user)

    status, invoices, headers = await view(http, org, "invoices", customerId=user)
    assert status == 200, invoices
    assert invoices == [
        {"id": final["id"], "number": final["numberStr"], "status": "open",
         "amountDue": 2500, "currency": "usd", "created": final["createdAt"]},
        {"id": draft["id"], "number": "", "status": "draft", "amountDue": 1500,
         "currency": "usd", "created": draft["createdAt"]}]
    assert final["numberStr"] and headers["X-Total-Count"] == "2"
    status, page, headers = await view(http, org, "invoices", customerId=user, limit=1,
                                       offset=1)
    assert ([i["id"] for i in page], headers["X-Has-More"]) == ([draft["id"]], "false")

    status, subs, _ = await view(http, org, "subscriptions", customerId=user)
    assert (status, subs) == (200, [{
        "id": sub["id"], "planId": "pro", "status": "active",
        "periodStart": sub["currentPeriodStart"], "periodEnd": sub["currentPeriodEnd"],
        "created": sub["createdAt"]}])

    status, methods, _ = await view(http, org, "payment-methods", customerId=user)
    assert (status, methods) == (200, [method])
    for name in ("invoices", "subscriptions", "payment-methods"):
        status, body, _ = await view(http, org, name, customerId=new_user())
        assert (status, body) == (200, []), name
        status, body, _ = await view(http, org, name)
        assert (status, body["error"]["message"]) == (400, "customerId is required"), name


async def test_another_organization_sees_nothing(http, org, make_org):
    user = new_user()
    await subscribe(http, org, user)
    await invoice_for(http, org, user, 100)
    await add_payment_method(http, org, user)
    other = await make_org()
    for name in ("invoices", "subscriptions", "payment-methods"):
        assert (await view(http, other, name, customerId=user))[:2] == (200, [])
    status, body, _ = await view(http, other, "overview", customerId=user)
    assert (body["activeSubscriptions"], body["paymentMethods"]) == (0, 0)


async def test_views_are_the_admin_class(http, org):  # §7 S3
    end_user = bearer(iam_token(owner=org.name, name="alice"))
    for name in ("overview", "invoices", "subscriptions", "payment-methods"):
        for auth in (end_user, org.auth("pk_test")):
            status, body, _ = await get(http, f"/portal/{name}", auth,
                                        customerId=f"{org.name}/alice")
            assert (status, body["error"]["message"]) == (
                403, "Token doesn't support this scope"), name


async def test_a_service_down_is_not_an_empty_answer(http, org, platform):  # §7 D9
    user = new_user()
    await add_payment_method(http, org, user)
    async with service_down(platform, "payments"):
        for name in ("payment-methods", "overview"):
            status, body, _ = await view(http, org, name, customerId=user)
            assert (status, body["error"]["code"]) == (503, "unavailable"), name
    status, body, _ = await view(http, org, "payment-methods", customerId=user)
    assert status == 200 and len(body) == 1


# ---- portal links and sessions --------------------------------------------------------------


async def link_for(http, org, user, key="sk_test", **extra) -> PortalLink:
    status, body, _ = await post(http, "/portal/links", {"customerId": user, **extra},
                                 org.auth(key))
    assert status == 200, body
    return PortalLink(**body)


async def open_link(http, url: str) -> tuple[int, str]:
    """GET the link as a browser would, not following the redirect: (status, session)."""
    path = url.split("://", 1)[1].split("/", 1)[1]
    async with http.get("/" + path, allow_redirects=False) as r:
        cookie = r.cookies.get(SESSION_COOKIE)
        return r.status, cookie.value if cookie else ""


def session(cookie: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={cookie}"}


async def portal_call(http, cookie, path, body=None, method="POST"):
    return await request(http, method, f"{API}/portal/session{path}", session(cookie), body)


async def test_links_open_a_session_for_their_customer_only(http, org):
    alice, bob = new_user(), new_user()
    alices = await subscribe(http, org, alice)
    bobs = await subscribe(http, org, bob)
    bobs_invoice = await invoice_for(http, org, bob, 700, finalize=True)
    link = await link_for(http, org, alice, returnUrl="https://example.com/account")
    assert "/api/v1/billing/portal?link=" in link.url
    assert 3590 <= (_epoch(link.expiresAt) - time.time()) <= 3600
    status, cookie = await open_link(http, link.url)
    assert status == 303 and cookie

    async with http.get(f"{API}/portal", headers=session(cookie)) as r:
        page = await r.text()
        assert r.status == 200 and r.content_type == "text/html"
        assert r.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert alices["id"] in page and bobs["id"] not in page
    assert 'href="https://example.com/account"' in page

    # Alice's session acts on Alice's subscription ...
    status, body, _ = await portal_call(http, cookie, f"/subscriptions/{alices['id']}/cancel")
    assert (status, body["cancelAtPeriodEnd"]) == (200, True)
    status, body, _ = await portal_call(http, cookie,
                                        f"/subscriptions/{alices['id']}/reactivate")
    assert (status, body["cancelAtPeriodEnd"]) == (200, False)
    # ... and never on Bob's: as if it did not exist.
    for action in ("cancel", "reactivate"):
        status, body, _ = await portal_call(http, cookie, f"/subscriptions/{bobs['id']}/{action}")
        assert (status, body["error"]["message"]) == (404, "subscription not found")
    status, body, _ = await portal_call(http, cookie, f"/invoices/{bobs_invoice['id']}/pdf",
                                        method="GET")
    assert (status, body["error"]["message"]) == (404, "invoice not found")
    status, bob_now, _ = await get(http, f"/subscriptions/{bobs['id']}", org.auth())
    assert bob_now["cancelAtPeriodEnd"] is False

    # A card added in the portal is Alice's.
    status, method, _ = await portal_call(http, cookie, "/payment-methods",
                                          {"token": "4242424242424242", "customerId": bob})
    assert (status, method["customerId"], method["name"]) == (201, alice, "visa ending in 4242")
    status, body, _ = await portal_call(http, cookie, "/payment-methods", {"token": " "})
    assert (status, body["error"]["message"]) == (400, "token is required")
    status, body, _ = await portal_call(http, cookie, "/payment-methods", {"token": "tok_"
                                        "chargeDeclinedInsufficientFunds"})
    assert status == 402, body
    assert [m["id"] for m in (await view(http, org, "payment-methods", customerId=alice))[1]
            ] == [method["id"]]


async def test_invoice_pdf_for_the_sessions_customer(http, org):
    user = new_user()
    invoice = await invoice_for(http, org, user, 4200, finalize=True)
    _, cookie = await open_link(http, (await link_for(http, org, user)).url)
    async with http.get(f"{API}/portal/session/invoices/{invoice['id']}/pdf",
                        headers=session(cookie)) as r:
        assert (r.status, r.content_type) == (200, "application/pdf")
        assert (await r.read()).startswith(b"%PDF")


async def test_link_expiry_and_tampering(http, org, platform):
    user = new_user()
    sub = await subscribe(http, org, user)
    link = await link_for(http, org, user)
    token = link.url.split("link=", 1)[1]
    payload, mac = token.split(".")
    org_id = await org_id_of(platform, org)
    signer = Signer(PEPPER)
    expired = signer.sign("link", Grant(org_id, org.name, False, user, int(time.time()) - 1))
    forged = Signer("another pepper").sign("link", Grant(org_id, org.name, False, user,
                                                         int(time.time()) + 60))
    other_customer = signer.sign("link", Grant(org_id, org.name, False, new_user(),
                                               int(time.time()) + 60)).split(".")[0]
    cases = {expired: "portal link expired", forged: "invalid portal link",
             f"{other_customer}.{mac}": "invalid portal link",  # the payload changed
             f"{payload}.{mac[:-2]}": "invalid portal link", payload: "invalid portal link",
             "not-a-token": "invalid portal link"}
    for bad, message in cases.items():
        status, body, _ = await get(http, "/portal", {}, link=bad)
        assert (status, body["error"]["message"]) == (401, message), bad
    # A link is not a session, nor a session a link.
    _, cookie = await open_link(http, link.url)
    status, body, _ = await portal_call(http, token, f"/subscriptions/{sub['id']}/cancel")
    assert (status, body["error"]["message"]) == (401, "portal session required")
    status, body, _ = await get(http, "/portal", {}, link=cookie)
    assert (status, body["error"]["message"]) == (401, "invalid portal link")
    stale = signer.sign("session", Grant(org_id, org.name, False, user, int(time.time()) - 1))
    status, body, _ = await portal_call(http, stale, f"/subscriptions/{sub['id']}/cancel")
    assert (status, body["error"]["message"]) == (401, "portal session expired")
    status, body, _ = await request(http, "POST",
                                    f"{API}/portal/session/subscriptions/{sub['id']}/cancel")
    assert (status, body["error"]["message"]) == (401, "portal session required")
    # Without a session the page offers to sign in.
    async with http.get(f"{API}/portal", headers=session(stale)) as r:
        text = await r.text()
        assert r.status == 200 and 'id="sign-in"' in text and "portal session expired" in text


async def test_link_bad_input(http, org):
    cases = [({}, "customerId is required"),
             ({"customerId": new_user(), "returnUrl": "javascript:alert(1)"},
              "returnUrl must be an http or https URL")]
    for body, message in cases:
        status, reply, _ = await post(http, "/portal/links", body, org.auth())
        assert (status, reply["error"]["message"]) == (400, message), body
    status, reply, _ = await post(http, "/portal/links", None, org.auth(), raw=b"[")
    assert (status, reply["error"]["message"]) == (400, "invalid request body")
    end_user = bearer(iam_token(owner=org.name, name="alice"))
    status, reply, _ = await post(http, "/portal/links", {"customerId": new_user()}, end_user)
    assert (status, reply["error"]["message"]) == (403, "Token doesn't support this scope")


async def test_iam_sign_in(http, org, make_org):
    owner = (await make_org()).name
    user = f"{owner}/alice"
    token = iam_token(owner=owner, name="alice")
    service = {"Authorization": "Bearer svc-token-one", "X-IAM-Org-Id": owner}
    status, sub, _ = await post(http, "/subscriptions", {"userId": user, "planId": "pro"},
                                service)
    assert status == 201, sub
    async with http.post(f"{API}/portal/session", json={"token": token}) as r:
        assert r.status == 204
        cookie = r.cookies[SESSION_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Lax"
        assert cookie["path"] == "/api/v1/billing/portal"
    async with http.get(f"{API}/portal", headers=session(cookie.value)) as r:
        page = await r.text()
    assert sub["id"] in page and "Test mode" not in page
    async with http.post(f"{API}/portal/session/sign-out", headers=session(cookie.value)) as r:
        assert r.status == 204 and r.cookies[SESSION_COOKIE].value == ""
    # Live mode without a provider: no card form, a message instead.
    assert 'id="card-number"' not in page and "no payment provider is configured" in page
    for bad in ("", "not.a.jwt", iam_token(owner=owner, name="alice", exp=1_000_000_000)):
        status, body, _ = await post(http, "/portal/session", {"token": bad}, {},
                                     prefix="/api/v1/billing")
        assert (status, body["error"]["message"]) == (401, "invalid IAM token"), bad


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


# ---- the page's HTML (pure) -----------------------------------------------------------------


def test_money_and_usage_this_period():
    assert [money(c, cur) for c, cur in ((2000, "usd"), (5, "eur"), (-123456, "gbp"),
                                         (100050, "chf"))] == [
        "$20.00", "€0.05", "-£1,234.56", "1,000.50 CHF"]
    usage = [UsageItem(f"t{i}", amount, "usd", "", {}, at) for i, (amount, at) in enumerate((
        (100, "2026-01-31T23:59:59.999Z"), (250, "2026-02-01T00:00:00Z"),
        (50, "2026-02-10T12:00:00.5Z")))]
    assert usage_since(usage, datetime.fromisoformat("2026-02-01T00:00:00Z")) == (300, 2)


def test_the_page_escapes_what_it_shows():
    view = View(customer="acme/<script>", livemode=False, returnUrl='https://x/"a"',
                subscriptions=[], invoices=[], paymentMethods=[], usage=[], stripeKey="")
    html = page("/api/v1/billing/portal", view)
    assert html.count("<script>") == 1  # the page's own
    assert "acme/&lt;script&gt;" in html and 'href="https://x/&quot;a&quot;"' in html
    assert "No active subscription." in html and 'id="card-number"' in html


async def test_live_mode_offers_the_providers_card_element(http, org):
    user = new_user()
    link = await link_for(http, org, user, key="sk_live")
    _, cookie = await open_link(http, link.url)
    async with http.get(f"{API}/portal", headers=session(cookie)) as r:
        page_html = await r.text()
    assert "Test mode" not in page_html and 'id="card-number"' not in page_html
    assert "no payment provider is configured" in page_html
    status, body, _ = await post(http, "/provider-settings",
                                 {"stripe": {"secretKey": "sk_live_51PortalSecret",
                                             "publishableKey": "pk_live_51Portal"}},
                                 org.auth("sk_live"))
    assert status == 200, body
    async with http.get(f"{API}/portal", headers=session(cookie)) as r:
        page_html = await r.text()
    assert 'data-stripe-key="pk_live_51Portal"' in page_html
    assert '<script src="https://js.stripe.com/v3/"></script>' in page_html
