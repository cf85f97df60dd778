"""The customer portal page's HTML: pure functions of what the services answered (no I/O),
every value escaped. Plain HTML with a little JavaScript and no build step: the buttons and
the card form POST to the portal session's calls (`<page>/session/...`) and reload."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from msgspec import UNSET

from contracts.invoicing import Invoice
from contracts.ledger import UsageItem
from contracts.payments import PaymentMethod
from contracts.subscriptions import Subscription

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£"}
_INTERVALS = {"monthly": "month", "month": "month", "year": "year", "yearly": "year",
              "annual": "year"}


@dataclass(frozen=True, slots=True)
class View:
    customer: str
    livemode: bool
    returnUrl: str
    subscriptions: list[Subscription]  # newest first, any status
    invoices: list[Invoice]  # newest first
    paymentMethods: list[PaymentMethod]
    usage: list[UsageItem]  # the ledger's newest usage records
    stripeKey: str  # live mode: Stripe's publishable key, if the organization set one


def money(cents: int, currency: str) -> str:
    """`$20.00`; currencies without a symbol here: `20.00 CHF`."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    amount = f"{whole:,}.{part:02d}"
    symbol = _SYMBOLS.get(currency)
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency.upper()}"


def day(timestamp: str) -> str:
    """The date of an RFC 3339 timestamp (UTC)."""
    return timestamp[:10]


def _when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def current(subscriptions: list[Subscription]) -> list[Subscription]:
    """The subscriptions that have not ended."""
    return [s for s in subscriptions if s.status != "canceled" and s.endedAt is UNSET]


def usage_since(usage: list[UsageItem], start: datetime) -> tuple[int, int]:
    """(cents, records) of the usage recorded from `start` on."""
    since = [u for u in usage if _when(u.createdAt) >= start]
    return sum(u.amount for u in since), len(since)


def page(base: str, view: View) -> str:
    live = current(view.subscriptions)
    start = (_when(live[0].currentPeriodStart) if live
             else datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    currency = live[0].plan.currency if live else "usd"
    spent, records = usage_since(view.usage, start)
    back = (f'<a class="back" href="{escape(view.returnUrl)}">Back</a>'
            if view.returnUrl else "")
    mode = "" if view.livemode else '<span class="mode">Test mode</span>'
    return _document("Billing", base, f"""
<header><h1>Billing {mode}</h1><p class="customer">{escape(view.customer)}</p>{back}
<button type="button" data-action="/session/sign-out" class="link">Sign out</button></header>
<section id="subscriptions"><h2>Plan</h2>
{"".join(_subscription(s) for s in live) or '<p class="none">No active subscription.</p>'}
</section>
<section id="usage"><h2>Usage this period</h2>
<p><span class="usage-amount">{money(spent, currency)}</span> in
<span class="usage-records">{records}</span> usage records
since {escape(day(start.isoformat()))}.</p>
</section>
<section id="invoices"><h2>Invoices</h2>
{_invoices(base, view.invoices)}
</section>
<section id="payment-methods"><h2>Payment methods</h2>
{_methods(view.paymentMethods)}
{_add_card(view)}
</section>""")


def _subscription(s: Subscription) -> str:
    interval = _INTERVALS.get(s.plan.interval, s.plan.interval)
    seats = f' × <span class="quantity">{s.quantity}</span> seats' if s.quantity > 1 else ""
    if s.cancelAtPeriodEnd:
        action = (f'<p class="notice">Cancels on {escape(day(s.currentPeriodEnd))}.</p>'
                  f'<button type="button" class="reactivate" data-action='
                  f'"/session/subscriptions/{escape(s.id)}/reactivate">Keep subscription</button>')
    else:
        action = (f'<button type="button" class="cancel" data-action='
                  f'"/session/subscriptions/{escape(s.id)}/cancel"'
                  f' data-confirm="Cancel at the end of the current period?">'
                  f'Cancel subscription</button>')
    return f"""<div class="subscription" data-subscription-id="{escape(s.id)}">
<p class="plan"><span class="plan-name">{escape(s.plan.name)}</span>
<span class="plan-price">{money(s.plan.price, s.plan.currency)} / {escape(interval)}</span>
{seats}</p>
<p>Status: <span class="status">{escape(s.status)}</span></p>
<p>Current period: <span class="period-start">{escape(day(s.currentPeriodStart))}</span> to
<span class="period-end">{escape(day(s.currentPeriodEnd))}</span></p>
{action}
</div>"""


def _invoices(base: str, invoices: list[Invoice]) -> str:
    if not invoices:
        return '<p class="none">No invoices yet.</p>'
    rows = "".join(
        f"""<tr class="invoice" data-invoice-id="{escape(i.id)}">
<td class="invoice-number">{escape(i.numberStr or "Draft")}</td>
<td class="invoice-date">{escape(day(i.createdAt))}</td>
<td class="invoice-status">{escape(i.status)}</td>
<td class="invoice-amount">{money(i.amountDue, i.currency)}</td>
<td><a class="invoice-pdf" href="{escape(base)}/session/invoices/{escape(i.id)}/pdf"
 target="_blank" rel="noopener">PDF</a></td></tr>"""
        for i in invoices)
    return ("<table><thead><tr><th>Number</th><th>Date</th><th>Status</th><th>Amount</th>"
            f"<th></th></tr></thead><tbody>{rows}</tbody></table>")


def _methods(methods: list[PaymentMethod]) -> str:
    if not methods:
        return '<p class="none">No payment methods.</p>'
    items = "".join(
        f'<li class="payment-method" data-payment-method-id="{escape(m.id)}">'
        f'{escape(m.name if m.name is not UNSET else m.type)}'
        f'{" <em>(default)</em>" if m.isDefault else ""}</li>' for m in methods)
    return f"<ul>{items}</ul>"


def _add_card(view: View) -> str:
    if not view.livemode:  # the offline provider vaults test card numbers and tokens
        return """<form id="add-card"><label>Card number (test mode: e.g. 4242424242424242)
<input id="card-number" name="token" autocomplete="off" required></label>
<button type="submit">Add card</button></form>"""
    if view.stripeKey:
        return f"""<form id="add-card" data-stripe-key="{escape(view.stripeKey)}">
<div id="card-element"></div><button type="submit">Add card</button></form>
<script src="https://js.stripe.com/v3/"></script>"""
    return ('<p class="none">Adding a card here is not available: no payment provider is '
            'configured for the portal.</p>')


def sign_in(base: str, notice: str) -> str:
    message = f'<p class="notice">{escape(notice)}.</p>' if notice else ""
    return _document("Sign in", base, f"""
<header><h1>Billing</h1></header>
<section><h2>Sign in</h2>{message}
<p>Open the billing link you were given, or sign in with your access token.</p>
<form id="sign-in"><label>Access token <textarea id="token" name="token" rows="4"
 required></textarea></label><button type="submit">Sign in</button></form>
</section>""")


def _document(title: str, base: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_STYLE}</style></head>
<body data-base="{escape(base)}">{body}
<p id="message" role="status"></p>
<script>{_SCRIPT}</script></body></html>"""


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;
color:#1a1a1a}
header{display:flex;gap:1rem;align-items:baseline;flex-wrap:wrap}
section{border-top:1px solid #ddd;padding:.5rem 0 1rem}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25rem .5rem}
.mode{font-size:.8rem;background:#fde68a;padding:.1rem .4rem;border-radius:.3rem}
.none,.customer{color:#666}.notice{color:#92400e}#message{color:#b91c1c}
button.link{background:none;border:none;color:#2563eb;cursor:pointer}
"""

# Every button names its call in `data-action`; forms post their one field. A refusal is
# shown as the service said it; success reloads the page, which shows the new state.
_SCRIPT = """
const base = document.body.dataset.base;
const show = (text) => { document.getElementById("message").textContent = text; };
async function call(path, body) {
  const r = await fetch(base + path, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body || {})});
  if (!r.ok) {
    let text = "Request failed (" + r.status + ")";
    try { text = (await r.json()).error.message; } catch (e) {}
    throw new Error(text);
  }
}
async function act(control, path, body) {
  control.disabled = true;
  try { await call(path, body); location.reload(); }
  catch (e) { show(e.message); control.disabled = false; }
}
document.querySelectorAll("[data-action]").forEach((b) => b.addEventListener("click", () => {
  if (!b.dataset.confirm || confirm(b.dataset.confirm)) act(b, b.dataset.action);
}));
const signIn = document.getElementById("sign-in");
if (signIn) signIn.addEventListener("submit", (e) => {
  e.preventDefault();
  act(signIn.querySelector("button"), "/session", {token: signIn.token.value.trim()});
});
const addCard = document.getElementById("add-card");
if (addCard && addCard.dataset.stripeKey) {
  const stripe = Stripe(addCard.dataset.stripeKey);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  addCard.addEventListener("submit", async (e) => {
    e.preventDefault();
    const made = await stripe.createPaymentMethod({type: "card", card});
    if (made.error) { show(made.error.message); return; }
    act(addCard.querySelector("button"), "/session/payment-methods",
        {token: made.paymentMethod.id});
  });
} else if (addCard) addCard.addEventListener("submit", (e) => {
  e.preventDefault();
  act(addCard.querySelector("button"), "/session/payment-methods",
      {token: addCard.token.value.replace(/\\s+/g, "")});
});
"""
