"""Tax on invoices (metering-invoicing.md §5.10, §9.7, §11.7 examples 60–61): the rates an
organization charges, stacked country then state, `round_half_up(base × rate)` on the
discounted subtotal, country and state in any case, the address kept so later edits of the
draft are taxed again."""

from __future__ import annotations

from decimal import Decimal

import pytest

from contracts.invoicing import DiscountParams, TaxRateCreateParams
from services.invoicing.invoices import domain
from tests.support import get, new_user, post, refused

US = domain.Rate("r_us", "US", "", Decimal("0.01"), "US Misc")
CA = domain.Rate("r_ca", "US", "CA", Decimal("0.0725"), "CA State")


def amounts(rates, subtotal, discount=0, country="US", state=""):
    where = domain.address(country, state, "", "")
    return [t.amount for t in domain.tax_lines(rates, where, subtotal, discount)]


# ---- §9.7, pure --------------------------------------------------------------------------


def test_rates_stack_country_first():  # examples 1, 2
    lines = domain.tax_lines([CA, US], domain.address("US", "CA", "", ""), 10000, 0)
    assert [(t.amount, t.jurisdiction, t.description, t.rate, t.inclusive) for t in lines] == [
        (100, "US", "US Misc", 0.01, False), (725, "US-CA", "CA State", 0.0725, False)]
    assert amounts([US, CA], 10000, state="NY") == [100]
    assert domain.tax_percent(825, 10000) == Decimal("8.25")


@pytest.mark.parametrize(("subtotal", "rate", "tax"), [
    (1000, "0.0875", 88),  # 87.5 rounds half up (the reference truncated: 87)
    (100, "0.29", 29),  # exact: the reference's double product was 28.999999999999996
    (999, "0.0825", 82),  # 82.4175
    (-1001, "0.1", 0),  # a negative subtotal is no tax base (the reference: -100)
])
def test_rounding(subtotal, rate, tax):  # examples 4, 6
    assert amounts([domain.Rate("r", "US", "", Decimal(rate), "t")], subtotal) == [tax]


def test_tax_is_charged_after_the_discount():  # example 5
    assert amounts([domain.Rate("r", "US", "", Decimal("0.1"), "t")], 10000, 2000) == [800]


def test_country_and_state_in_any_case():  # example 3
    assert amounts([US, CA], 10000, country=" us", state="ca") == [100, 725]
    assert refused(domain.address, " ", "CA", "", "") == (
        400, "country query parameter is required for tax calculation")


def test_a_rate_must_be_a_fraction():
    for rate in ("-0.1", "1.5", "NaN"):
        assert refused(domain.new_tax_rate, TaxRateCreateParams(
            country="US", rate=Decimal(rate), name="x")) == (
            400, "rate must be a fraction between 0 and 1")
    assert refused(domain.new_tax_rate, TaxRateCreateParams(rate=Decimal("0.1"), name="x")) == (
        400, "country is required")
    assert refused(domain.new_tax_rate, TaxRateCreateParams(country="US", rate=Decimal("0.1"))
                   ) == (400, "name is required")
    assert domain.discount(DiscountParams(discountAmount=5), -300) == (0, "")


# ---- through the gateway -----------------------------------------------------------------


async def rates(http, org, *made, key="sk_test"):
    for country, state, rate, name in made:
        status, body, _ = await post(http, "/tax-rates", {
            "country": country, "state": state, "rate": rate, "name": name}, org.auth(key))
        assert status == 201, body


async def invoice(http, org, *amounts):
    status, body, _ = await post(http, "/invoices", {"userId": new_user(), "lineItems": [
        {"id": f"l{i}", "amount": a} for i, a in enumerate(amounts)]}, org.auth())
    assert status == 201, body
    return body["id"]


async def tax(http, org, invoice_id, **address):
    return await post(http, f"/invoices/{invoice_id}/calculate-tax", None, org.auth(),
                      params=address)


@pytest.fixture
async def taxed_org(http, org):
    await rates(http, org, ("US", "", 0.01, "US Misc"), ("us", "ca", "0.0725", "CA State"))
    return org


async def test_tax_lines_and_totals(http, taxed_org):  # §11.7 example 60 with §9.7 1–3
    org = taxed_org
    iid = await invoice(http, org, 10000)
    status, body, _ = await tax(http, org, iid, country="US", state="CA", postalCode="94105",
                                city="San Francisco")
    assert status == 200, body
    assert [(t["amount"], t["jurisdiction"], t["rate"]) for t in body["taxLines"]] == [
        (100, "US", 0.01), (725, "US-CA", 0.0725)]
    assert (body["totalTax"], body["invoice"]["tax"], body["invoice"]["amountDue"]) == (
        825, 825, 10825)
    _, body, _ = await tax(http, org, iid, country="us", state="ny")
    assert ([t["amount"] for t in body["taxLines"]], body["invoice"]["amountDue"]) == (
        [100], 10100)
    _, body, _ = await tax(http, org, iid, country="FR")  # no rate there
    assert (body["taxLines"], body["totalTax"], body["invoice"]["amountDue"]) == ([], 0, 10000)


async def test_later_edits_are_taxed_again(http, taxed_org):  # §5.10 Δ, example 5
    org = taxed_org
    iid = await invoice(http, org, 10000)
    await tax(http, org, iid, country="US", state="CA")
    _, body, _ = await post(http, f"/invoices/{iid}/apply-discount", {"discountAmount": 2000},
                            org.auth())
    assert (body["tax"], body["amountDue"]) == (660, 8660)  # 80 + 580 on 8000
    _, body, _ = await post(http, f"/invoices/{iid}/line-items", {
        "description": "more", "amount": 2000}, org.auth())
    assert (body["subtotal"], body["tax"], body["amountDue"]) == (12000, 825, 10825)
    _, body, _ = await post(http, f"/invoices/{iid}/finalize", None, org.auth())
    assert (body["status"], body["tax"], body["amountDue"]) == ("open", 825, 10825)


async def test_missing_country_and_unknown_invoice(http, taxed_org):
    org = taxed_org
    iid = await invoice(http, org, 100)
    status, body, _ = await tax(http, org, iid, state="CA")
    assert (status, body["error"]["message"]) == (
        400, "country query parameter is required for tax calculation")
    status, body, _ = await tax(http, org, "inv_nope", country="US")
    assert (status, body["error"]["message"]) == (404, "invoice not found")
    _, got, _ = await get(http, f"/invoices/{iid}", org.auth())
    assert got["tax"] == 0


async def test_tax_rates_belong_to_their_organization_and_mode(http, taxed_org, make_org):
    org = taxed_org
    status, body, _ = await get(http, "/tax-rates", org.auth())
    assert (status, [(r["jurisdiction"], r["rate"], r["name"]) for r in body["taxRates"]]) == (
        200, [("US", 0.01, "US Misc"), ("US-CA", 0.0725, "CA State")])
    # Live mode and another organization charge none of them.
    for who, key in ((org, "sk_live"), (await make_org(), "sk_test")):
        _, body, _ = await get(http, "/tax-rates", who.auth(key))
        assert body["taxRates"] == []
    status, live_invoice, _ = await post(http, "/invoices", {
        "userId": new_user(), "lineItems": [{"amount": 10000}]}, org.auth("sk_live"))
    _, body, _ = await post(http, f"/invoices/{live_invoice['id']}/calculate-tax", None,
                            org.auth("sk_live"), params={"country": "US", "state": "CA"})
    assert body["totalTax"] == 0


@pytest.mark.parametrize(("body", "message"), [
    ({"country": "US", "rate": 1.5, "name": "x"}, "rate must be a fraction between 0 and 1"),
    ({"country": "US", "rate": "abc", "name": "x"}, "invalid request body"),
    ({"country": "US", "rate": "1E-20000", "name": "x"}, "rate: at most 10 decimal places"),
    ({"country": "U S", "rate": 0.1, "name": "x"}, "country must be a code of letters and digits"),
    ({"rate": 0.1, "name": "x"}, "country is required"),
    ({"country": "US", "rate": 0.1}, "name is required"),
])
async def test_bad_tax_rates_are_refused(http, org, body, message):
    status, reply, _ = await post(http, "/tax-rates", body, org.auth())
    assert (status, reply["error"]["message"]) == (400, message)
    _, listed, _ = await get(http, "/tax-rates", org.auth())
    assert listed["taxRates"] == []
