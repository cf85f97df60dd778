"""The customer portal page in a real browser: Debian's Chromium (`/usr/bin/chromium`, which
.ci/run installs) driven by Playwright for Python, headless. A customer opens the portal link
an admin made; the page shows their plan, period, usage, invoice and payment methods; a card
added on the page is theirs; cancel and reactivate clicked on the page are what the API
answers afterwards. Nothing is installed here: without Chromium or Playwright the test says why and
skips."""

from __future__ import annotations

import os
import shutil
from urllib.parse import urljoin

import pytest

from tests.subscriptions.test_portal import invoice_for, link_for, subscribe
from tests.support import add_payment_method, get, new_user, post

CHROMIUM = "/usr/bin/chromium"

playwright_api = pytest.importorskip("playwright.async_api",
                                     reason="playwright is not installed (test extras)")


@pytest.fixture(scope="module")
def chromium() -> str:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        reason = f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)"
        print(reason)
        pytest.skip(reason)
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


async def subscription(http, org, sub_id):
    status, body, _ = await get(http, f"/subscriptions/{sub_id}", org.auth())
    assert status == 200, body
    return body


async def test_portal_page_in_chromium(http, org, chromium, tmp_path):
    user = new_user()
    sub = await subscribe(http, org, user)
    invoice = await invoice_for(http, org, user, 2500, finalize=True)
    await add_payment_method(http, org, user, "4242424242424242")
    for path, body in (("/deposit", {"user": user, "amount": 1000}),
                       ("/usage", {"user": user, "amount": 250, "requestId": new_user()})):
        status, reply, _ = await post(http, path, body, org.auth())
        assert status == 201, reply
    link = await link_for(http, org, user)

    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = await browser.new_page()
            page.on("dialog", lambda dialog: dialog.accept())  # "Cancel at period end?"
            response = await page.goto(link.url)
            assert response.status == 200
            assert "link=" not in page.url  # the token left the address bar

            card = page.locator(f'[data-subscription-id="{sub["id"]}"]')
            assert await card.locator(".plan-name").inner_text() == "Pro"
            assert await card.locator(".plan-price").inner_text() == "$20.00 / month"
            assert await card.locator(".period-start").inner_text() == (
                sub["currentPeriodStart"][:10])
            assert await card.locator(".period-end").inner_text() == sub["currentPeriodEnd"][:10]
            row = page.locator(f'[data-invoice-id="{invoice["id"]}"]')
            assert await row.locator(".invoice-amount").inner_text() == "$25.00"
            assert await row.locator(".invoice-number").inner_text() == invoice["numberStr"]
            assert await page.locator(".payment-method").all_inner_texts() == [
                "visa ending in 4242"]
            assert await page.locator(".usage-amount").inner_text() == "$2.50"

            # A card added on the page (test mode: the offline provider vaults it).
            await page.fill("#card-number", "5555 5555 5555 4444")
            async with page.expect_navigation():
                await page.click("#add-card button")
            assert await page.locator(".payment-method").all_inner_texts() == [
                "mastercard ending in 4444", "visa ending in 4242"]

            async with page.expect_navigation():
                await card.locator("button.cancel").click()
            assert (await subscription(http, org, sub["id"]))["cancelAtPeriodEnd"] is True
            assert "Cancels on" in await card.inner_text()
            await page.screenshot(path=str(tmp_path / "portal.png"), full_page=True)

            async with page.expect_navigation():
                await card.locator("button.reactivate").click()
            assert (await subscription(http, org, sub["id"]))["cancelAtPeriodEnd"] is False
            assert await card.locator("button.cancel").count() == 1

            # The invoice's PDF, served to this session.
            href = await row.locator(".invoice-pdf").get_attribute("href")
            pdf = await page.request.get(urljoin(page.url, href))
            assert (pdf.status, pdf.headers["content-type"]) == (200, "application/pdf")
        finally:
            await browser.close()
