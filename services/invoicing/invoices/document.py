"""The PDF of an invoice (`GET /billing/invoices/:id/pdf`), laid out with fpdf2: seller,
customer, number, dates, lines, discount, tax, credits and the amount due. Pure: an invoice
in, the file's bytes out.

The text is set in the PDF standard Helvetica, which every reader has and which needs no
font file, so its characters are Latin-1: any other character prints as `?`."""

from __future__ import annotations

from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos

from contracts.invoicing import Invoice, TaxLine

_FONT = "Helvetica"
_ZERO_TIME = "0001-01-01T00:00:00Z"
# Minor units per major unit where it is not 100 (ISO 4217).
_NO_DECIMALS = frozenset({"bif", "clp", "djf", "gnf", "isk", "jpy", "kmf", "krw", "mga",
                          "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"})
_THREE_DECIMALS = frozenset({"bhd", "iqd", "jod", "kwd", "lyd", "omr", "tnd"})


def money(amount: int, currency: str) -> str:
    """`1234, usd` → `12.34 USD`; exact (integers only), whatever the currency's decimals."""
    digits = 0 if currency in _NO_DECIMALS else 3 if currency in _THREE_DECIMALS else 2
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    if digits:
        whole, part = divmod(amount, 10**digits)
        text = f"{whole:,}.{part:0{digits}d}"
    else:
        text = f"{amount:,}"
    return f"{sign}{text} {currency.upper()}"


def _day(timestamp: str) -> str:
    return timestamp[:10]


def _text(value: str) -> str:
    """What Helvetica can print (see the module's docstring)."""
    return value.encode("latin-1", "replace").decode("latin-1")


def render(invoice: Invoice, seller: str, tax_lines: list[TaxLine]) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(_text(f"Invoice {invoice.numberStr or invoice.id}"))
    pdf.set_creator("billing")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    currency = invoice.currency

    def line(text: str, size: int = 10, style: str = "", align: Align = Align.L) -> None:
        pdf.set_font(_FONT, style, size)
        pdf.cell(0, size * 0.55, _text(text), align=align, new_x=XPos.LMARGIN,
                 new_y=YPos.NEXT)

    line(seller, 16, "B")
    line("INVOICE" if invoice.status != "draft" else "DRAFT INVOICE", 12, "B", Align.R)
    line(f"Number: {invoice.numberStr or '(assigned when finalized)'}", align=Align.R)
    line(f"Status: {invoice.status}", align=Align.R)
    line(f"Issued: {_day(invoice.createdAt)}", align=Align.R)
    for label, value in (("Due", invoice.dueDate), ("Paid", invoice.paidAt),
                         ("Voided", invoice.voidedAt)):
        if isinstance(value, str):
            line(f"{label}: {_day(value)}", align=Align.R)
    if invoice.periodStart != _ZERO_TIME:
        line(f"Period: {_day(invoice.periodStart)} to {_day(invoice.periodEnd)}",
             align=Align.R)
    pdf.ln(4)
    line("Bill to", 10, "B")
    line(invoice.userId)
    if invoice.customerEmail:
        line(invoice.customerEmail)
    pdf.ln(6)

    pdf.set_font(_FONT, "", 10)
    with pdf.table(col_widths=(90, 20, 35, 35), text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
                   line_height=6) as table:
        table.row(["Description", "Qty", "Unit price", "Amount"])
        for item in invoice.lineItems:
            table.row([_text(item.description or item.type),
                       str(item.quantity) if item.quantity else "",
                       money(item.unitPrice, currency) if item.unitPrice else "",
                       money(item.amount, currency)])
    pdf.ln(4)

    def total(label: str, amount: int, style: str = "") -> None:
        pdf.set_font(_FONT, style, 10)
        pdf.cell(pdf.epw - 35, 6, _text(label), align=Align.R)
        pdf.cell(35, 6, money(amount, currency), align=Align.R, new_x=XPos.LMARGIN,
                 new_y=YPos.NEXT)

    total("Subtotal", invoice.subtotal)
    if invoice.discount:
        name = f" ({invoice.discountName})" if invoice.discountName else ""
        total(f"Discount{name}", -invoice.discount)
    for tax in tax_lines:
        total(f"Tax {tax.description} {tax.jurisdiction} ({tax.rate * 100:g}%)", tax.amount)
    if invoice.tax and not tax_lines:
        total("Tax", invoice.tax)
    if invoice.creditApplied:
        total("Credits applied", -invoice.creditApplied)
    if invoice.amountPaid:
        total("Amount paid", -invoice.amountPaid)
    total("Amount due", invoice.amountRemaining, "B")
    return bytes(pdf.output())
