"""The PDF of an invoice (`GET /billing/invoices/:id/pdf`): a real PDF, rendered to PNG by
Poppler (`pdftoppm`, Debian's poppler-utils) and read back (`pdftotext`): one A4 page with
the seller, the customer, the number, the dates, the lines, discount, tax, credits and the
amount due."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from services.invoicing.invoices.document import money
from tests.support import API, new_user, post, request


@pytest.fixture(scope="module")
def poppler() -> None:
    """pdftoppm and pdftotext, installed with apt when missing and possible."""
    if shutil.which("pdftoppm") is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "poppler-utils"],
                       capture_output=True, timeout=300,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if shutil.which("pdftoppm") is None or shutil.which("pdftotext") is None:
        reason = "poppler-utils (pdftoppm, pdftotext) is not installed and apt cannot add it"
        print(reason)
        pytest.skip(reason)


async def pdf_of(http, org, invoice_id, key="sk_test"):
    async with http.get(f"{API}/invoices/{invoice_id}/pdf", headers=org.auth(key)) as r:
        return r.status, r.headers, await r.read()


def pages(pdf: bytes, tmp_path: Path) -> tuple[list[Image.Image], str]:
    """The pages as 50 dpi images, and the text."""
    source = tmp_path / "invoice.pdf"
    source.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "50", str(source), str(tmp_path / "page")],
                   check=True, timeout=60)
    text = subprocess.run(["pdftotext", "-layout", str(source), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    return [Image.open(p) for p in sorted(tmp_path.glob("page*.png"))], text


def inked(image: Image.Image) -> float:
    """The share of the page that is not white."""
    grey = image.convert("L")
    dark = sum(grey.histogram()[:200])
    return dark / (grey.width * grey.height)


async def test_the_pdf_shows_the_whole_invoice(http, org, tmp_path, poppler):
    await post(http, "/tax-rates", {"country": "US", "state": "CA", "rate": "0.0725",
                                    "name": "CA State"}, org.auth())
    user = new_user()
    status, invoice, _ = await post(http, "/invoices", {
        "userId": user, "customerEmail": "alice@example.com", "lineItems": [
            {"id": "a", "description": "Pro plan", "amount": 4900, "type": "subscription"},
            {"id": "b", "description": "API calls (Zürich)", "quantity": 1200,
             "unitPrice": 2, "amount": 2400, "type": "usage"}]}, org.auth())
    assert status == 201, invoice
    iid = invoice["id"]
    await post(http, f"/invoices/{iid}/apply-discount", {"discountAmount": 300,
                                                         "discountName": "Launch"}, org.auth())
    await post(http, f"/invoices/{iid}/calculate-tax", None, org.auth(),
               params={"country": "US", "state": "CA"})
    status, final, _ = await post(http, f"/invoices/{iid}/finalize", None, org.auth())
    assert (status, final["amountDue"]) == (200, 7000 + 508)  # 7300 − 300 + 7.25 % of 7000

    status, headers, pdf = await pdf_of(http, org, iid)
    assert status == 200
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"] == 'inline; filename="INV-0001.pdf"'
    assert pdf.startswith(b"%PDF-")
    images, text = pages(pdf, tmp_path)
    assert len(images) == 1
    width, height = images[0].size
    assert abs(width / height - 210 / 297) < 0.01  # A4, portrait
    assert 0.01 < inked(images[0]) < 0.5  # printed on, not a black page
    words = " ".join(text.split())
    for shown in (org.name, user, "alice@example.com", "INV-0001", "Status: open",
                  f"Issued: {final['createdAt'][:10]}", "Pro plan", "49.00 USD",
                  "API calls (Zürich)", "1200", "0.02 USD", "24.00 USD", "Subtotal 73.00 USD",
                  "Discount (Launch) -3.00 USD", "CA State US-CA (7.25%) 5.08 USD",
                  "Amount due 75.08 USD"):
        assert shown in words, (shown, words)


async def test_a_draft_says_so_and_long_invoices_take_more_pages(http, org, tmp_path, poppler):
    status, invoice, _ = await post(http, "/invoices", {"userId": new_user(), "lineItems": [
        {"description": f"Line {i} ✓", "amount": 100} for i in range(100)]}, org.auth())
    status, _, pdf = await pdf_of(http, org, invoice["id"])
    assert status == 200
    images, text = pages(pdf, tmp_path)
    assert len(images) >= 3
    assert "DRAFT INVOICE" in text and "(assigned when finalized)" in text
    assert "Line 99 ?" in text  # outside Latin-1: a question mark, never a failure
    assert "Amount due 100.00 USD" in " ".join(text.split())


async def test_unknown_invoices_have_no_pdf(http, org):
    status, body, headers = await request(http, "GET", f"{API}/invoices/inv_nope/pdf",
                                          org.auth(), lenient=True)
    assert (status, body["error"]["message"]) == (404, "invoice not found")
    assert headers["Content-Type"].startswith("application/json")
    status, _, _ = await request(http, "GET", f"{API}/invoices/inv_nope/pdf",
                                 org.auth("pk_test"), lenient=True)
    assert status == 403


def test_money_in_each_currency_s_minor_unit():
    assert [money(*a) for a in ((123456, "usd"), (-5, "eur"), (1500, "jpy"), (1234, "kwd"))] == [
        "1,234.56 USD", "-0.05 EUR", "1,500 JPY", "1.234 KWD"]
