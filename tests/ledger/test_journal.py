"""The journal: the double-entry ledger of ledger.md §2.9 with the defects of §9.7 and §9.16
fixed. Pure tests of the rules, then every §8 H case on the bus against the real database
(tenants t1 and t2 are organizations), the fixes, isolation by org and mode, idempotency,
hold expiry and concurrency, and a property test of the books over random entry sequences.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import Actor
from contracts import journal as endpoints
from contracts.ids import rfc3339
from contracts.journal import (
    JournalAccountCreateParams,
    JournalAccountEnsureParams,
    JournalAccountGetParams,
    JournalBalanceGetParams,
    JournalDisputeParams,
    JournalEntryGetParams,
    JournalEntryListParams,
    JournalEntryPostParams,
    JournalHoldCaptureParams,
    JournalHoldCreateParams,
    JournalHoldIdParams,
    JournalPaymentParams,
    JournalPayoutParams,
    JournalPostingParams,
    JournalRefundParams,
)
from services.ledger.journal import domain as journal
from services.ledger.journal import handlers as journal_handlers
from services.ledger.journal.domain import Account, Draft, Entry, Hold, Leg
from tests import support
from tests.support import refused

NOW = datetime(2026, 4, 19, 10, 0, tzinfo=UTC)


def legs(*pairs) -> tuple[Leg, ...]:
    return tuple(Leg(*pair) for pair in pairs)


# ---- the rules, without I/O ---------------------------------------------------------------


@pytest.mark.parametrize(("type", "normal"), [
    ("asset", "debit"), ("expense", "debit"), ("liability", "credit"), ("equity", "credit"),
    ("revenue", "credit"),
])
def test_h23_normal_balance_defaults_from_the_type(type, normal):
    account = journal.new_account("x", type)
    assert (account.normal_balance, account.currency) == (normal, "usd")
    # An explicit normal balance wins (contra accounts).
    assert journal.new_account("x", type, "EUR", "credit").normal_balance == "credit"


@pytest.mark.parametrize(("args", "message"), [
    (("", "asset"), "name is required"),
    (("cash", "bank"), "invalid account type: must be one of asset, liability, equity, "
                       "revenue, expense"),
    (("cash", "asset", "usd", "sideways"), "invalid normalBalance: must be debit or credit"),
    (("cash", "asset", "$$"), "invalid currency"),
])
def test_account_validation(args, message):
    assert refused(journal.new_account, *args) == (400, message)


@pytest.mark.parametrize(("postings", "message"), [
    ((), journal.EMPTY_POSTINGS),  # H.3
    ((("cash", 0),), journal.EMPTY_POSTINGS),  # H.3: one zero posting
    ((("cash", 1000),), journal.EMPTY_POSTINGS),
    ((("cash", 1000), ("cust", -500)), "postings do not balance: sum=500 usd"),  # H.2
    ((("cash", 0), ("cust", 0)), "posting amount must not be zero"),
    ((("", 100), ("cust", -100)), "posting accountId is required"),
    # FIX (§9.16): the sum is zero per currency, not across currencies.
    ((("cash", 100, "usd"), ("cust", -100, "eur")), "postings do not balance: sum=-100 eur"),
    ((("cash", 100, "usd"), ("cust", -100, "usd"), ("a", 5, "eur"), ("b", -4, "eur")),
     "postings do not balance: sum=1 eur"),
])
def test_posting_validation(postings, message):
    assert refused(journal.check_postings, legs(*postings)) == (400, message)


def test_entries_balanced_in_each_currency_pass():
    journal.check_postings(legs(("cash", 100, "usd"), ("cust", -100, "usd"),
                                ("cash", 70, "eur"), ("cust", -70, "eur")))
    journal.check_postings(legs(("cash", 10000), ("cust", -9700), ("fees", -300)))  # H.24


def test_draft_defaults_and_validation_order():
    p = JournalEntryPostParams(postings=[JournalPostingParams(accountId=" a ", amount=5),
                                         JournalPostingParams(accountId="b", amount=-5,
                                                              currency=" USD ")])
    draft = journal.draft_entry(p)
    assert draft.postings == legs(("a", 5, "usd"), ("b", -5, "usd"))
    # Too few postings is reported before a bad currency.
    bad = JournalEntryPostParams(postings=[JournalPostingParams(accountId="a", currency="$")])
    assert refused(journal.draft_entry, bad) == (400, journal.EMPTY_POSTINGS)
    long_key = JournalEntryPostParams(idempotencyKey="k" * 256, postings=p.postings)
    assert refused(journal.draft_entry, long_key) == (400, "invalid idempotency key")


def test_unknown_accounts_are_named():
    draft = Draft(legs(("cash", 100), ("nonexistent", -100)))  # H.4
    known = {"cash": Account("cash", "platform:cash", "asset", "usd", "debit")}
    assert refused(journal.require_accounts, draft, known) == (
        404, "account nonexistent not found")


def test_payload_hash_ignores_metadata_key_order_only():
    a = Draft(legs(("x", 5), ("y", -5)), "k", metadata={"a": 1, "b": 2})
    assert a.payload_hash() == Draft(legs(("x", 5), ("y", -5)), "k",
                                     metadata={"b": 2, "a": 1}).payload_hash()
    assert a.payload_hash() == Draft(legs(("x", 5), ("y", -5)), "other key",
                                     metadata={"a": 1, "b": 2}).payload_hash()
    for changed in (Draft(legs(("x", 6), ("y", -6)), "k", metadata={"a": 1, "b": 2}),
                    Draft(legs(("x", 5), ("y", -5)), "k", metadata={"a": 1}),
                    Draft(legs(("x", 5), ("y", -5)), "k", "described",
                          metadata={"a": 1, "b": 2})):
        assert changed.payload_hash() != a.payload_hash()
    stored = Entry(id="e", postings=(), created_at=NOW, payload_hash=a.payload_hash())
    journal.require_same_payload(stored, a)
    assert refused(journal.require_same_payload, stored, Draft(legs(("x", 1), ("y", -1)))) \
        == (409, "idempotency key reused with different parameters")


def _named(op: journal.Operation) -> list[tuple[str, str, int]]:
    return [(leg.name, leg.type, leg.amount) for leg in op.legs]


def test_h15_h16_payment_postings():
    op = journal.payment(JournalPaymentParams(paymentIntentId="pi_pay1", amount=10000,
                                              currency="USD", customerId="cust_1", fees=250))
    assert _named(op) == [("platform:cash", "asset", 10000),
                          ("customer_balance:cust_1", "liability", -9750),
                          ("platform:fees", "revenue", -250)]
    assert (op.idempotency_key, op.payment_intent_id, op.description) == (
        "payment:pi_pay1", "pi_pay1", "Payment pi_pay1: 10000 usd (fees 250)")
    no_fee = journal.payment(JournalPaymentParams(paymentIntentId="pi_nofee", amount=5000,
                                                  customerId="cust_2"))
    assert _named(no_fee) == [("platform:cash", "asset", 5000),
                              ("customer_balance:cust_2", "liability", -5000)]
    all_fee = journal.payment(JournalPaymentParams(paymentIntentId="pi", amount=300,
                                                   customerId="c", fees=300))
    assert _named(all_fee) == [("platform:cash", "asset", 300),
                               ("platform:fees", "revenue", -300)]


@pytest.mark.parametrize(("params", "message"), [
    (JournalPaymentParams(paymentIntentId="pi", amount=0, customerId="c"),
     "amount must be positive"),  # H.17
    (JournalPaymentParams(paymentIntentId="pi", amount=-100, customerId="c"),
     "amount must be positive"),  # H.17
    (JournalPaymentParams(amount=100, customerId="c"), "paymentIntentId is required"),
    (JournalPaymentParams(paymentIntentId="pi", amount=100), "customerId is required"),
    (JournalPaymentParams(paymentIntentId="pi", amount=100, customerId="c", fees=-1),
     "fees must not be negative"),
    (JournalPaymentParams(paymentIntentId="pi", amount=100, customerId="c", fees=101),
     "fees must not exceed the amount"),
])
def test_payment_validation(params, message):
    assert refused(journal.payment, params) == (400, message)


def test_a_dispute_won_gives_the_amount_back_and_one_lost_keeps_it_out():
    won = journal.dispute(JournalDisputeParams(disputeId="disp_1", amount=5000,
                                               customerId="cust_1", outcome="won"))
    assert _named(won) == [("platform:disputes_held", "asset", -5000),
                           ("platform:cash", "asset", 5000),
                           ("customer_balance:cust_1", "liability", -5000),
                           ("platform:reserves", "liability", 5000)]
    assert won.idempotency_key == "dispute-won:disp_1"
    lost = journal.dispute(JournalDisputeParams(disputeId="disp_1", amount=5000,
                                                customerId="cust_1", outcome="lost"))
    assert _named(lost) == [("platform:reserves", "liability", 5000),
                            ("platform:disputes_held", "asset", -5000)]
    assert lost.idempotency_key == "dispute-lost:disp_1"
    for op in (won, lost):
        assert sum(leg.amount for leg in op.legs) == 0
    assert refused(journal.dispute, JournalDisputeParams(
        disputeId="d", amount=1, customerId="c", outcome="drawn")) == (
        400, "outcome must be won, lost or empty")


def test_refund_payout_and_dispute_postings():
    refund = journal.refund(JournalRefundParams(refundId="ref_1", amount=8000,
                                                customerId="cust_1"))
    assert _named(refund) == [("customer_balance:cust_1", "liability", 8000),
                              ("platform:cash", "asset", -8000)]
    assert refund.idempotency_key == "refund:ref_1"
    assert refund.description == "Refund ref_1: 8000 usd to customer cust_1"
    payout = journal.payout(JournalPayoutParams(payoutId="po_1", amount=15000,
                                                merchantId="merch_1"))
    assert _named(payout) == [("merchant_settlement:merch_1", "liability", 15000),
                              ("platform:cash", "asset", -15000)]
    assert payout.description == "Payout po_1: 15000 usd to merchant merch_1"
    # FIX (§9.16): the dispute takes the amount out of the customer's balance too.
    dispute = journal.dispute(JournalDisputeParams(disputeId="disp_1", amount=5000,
                                                   customerId="cust_1"))
    assert _named(dispute) == [("platform:disputes_held", "asset", 5000),
                               ("platform:cash", "asset", -5000),
                               ("customer_balance:cust_1", "liability", 5000),
                               ("platform:reserves", "liability", -5000)]
    assert dispute.description == "Dispute disp_1: 5000 usd from customer cust_1"
    for op in (refund, payout, dispute):
        assert sum(leg.amount for leg in op.legs) == 0
    for make, params in ((journal.refund, JournalRefundParams(refundId="r", customerId="c")),
                         (journal.payout, JournalPayoutParams(payoutId="p", merchantId="m")),
                         (journal.dispute, JournalDisputeParams(disputeId="d",
                                                                customerId="c"))):
        assert refused(make, params) == (400, "amount must be positive")


def test_available_follows_the_normal_balance():
    assert journal.available(10000, 3000, credit_normal=False) == 7000  # H.10
    assert journal.available(-10000, 3000, credit_normal=True) == -7000
    customer = journal.new_account("customer_balance:c", "liability")
    assert journal.spendable(customer, -10000, 3000) == 7000
    assert customer.customer_facing
    assert not journal.new_account("platform:cash", "asset").customer_facing
    assert not journal.new_account("platform:reserves", "liability").customer_facing


def test_hold_creation_rules():
    P = JournalHoldCreateParams
    assert refused(journal.new_hold, P(accountId="a", amount=0), NOW) == (
        400, "amount must be positive")  # H.14
    assert refused(journal.new_hold, P(accountId="a", amount=-5), NOW) == (
        400, "amount must be positive")  # §9.7: negative holds are refused
    assert refused(journal.new_hold, P(accountId="a", amount=5,
                                       expiresAt=NOW - timedelta(seconds=1)), NOW) == (
        400, "expiresAt must be in the future")
    hold = journal.new_hold(P(accountId=" a ", amount=5, currency="EUR"), NOW)
    assert (hold.account_id, hold.currency, hold.status, hold.expires_at) == (
        "a", "eur", "pending", NOW + journal.HOLD_LIFETIME)


def test_funds_check_only_for_customer_facing_accounts():
    customer = journal.new_account("customer_balance:c", "liability")
    journal.require_funds(customer, -1000, 400, 600)
    assert refused(journal.require_funds, customer, -1000, 400, 601) == (
        402, "insufficient balance: have 600 cents, need 601 cents")
    merchant = journal.new_account("merchant_settlement:m", "liability")
    assert refused(journal.require_funds, merchant, 0, 0, 1)[0] == 402
    journal.require_funds(journal.new_account("platform:cash", "asset"), 0, 0, 2000)  # H.11


def test_hold_state_machine():
    pending = Hold("h", "a", 1000, "usd", NOW + timedelta(hours=24))
    assert journal.capture_amount(pending, 0, NOW) == 1000  # ≤ 0: the whole hold
    assert journal.capture_amount(pending, 400, NOW) == 400
    assert refused(journal.capture_amount, pending, 2000, NOW) == (
        409, "capture exceeds hold")  # H.12
    assert refused(journal.capture_amount, pending, 1, NOW + timedelta(days=2)) == (
        409, "hold has expired")
    for status in ("captured", "voided", "expired"):
        done = Hold("h", "a", 1000, "usd", NOW + timedelta(hours=24), status=status)
        for target in ("captured", "voided", "expired"):
            assert refused(journal.require_transition, done, target) == (
                409, "hold is not pending")  # H.13: terminal
        assert refused(journal.capture_amount, done, 1, NOW) == (409, "hold is not pending")
    for target in ("captured", "voided", "expired"):
        journal.require_transition(pending, target)


def test_capture_postings_take_money_in_the_normal_direction():
    hold = Hold("h1", "acct", 3000, "usd", NOW, payment_intent_id="pi_123")
    cash = Account("cash", "platform:cash", "asset", "usd", "debit")
    card = Account("acct", "card:pi_123", "asset", "usd", "debit")
    draft = journal.capture_entry(hold, card, cash, 3000)
    assert draft.postings == legs(("acct", -3000), ("cash", 3000))  # the reference's legs
    assert (draft.idempotency_key, draft.description, draft.payment_intent_id) == (
        "capture:h1", "Capture hold h1 for 3000", "pi_123")
    # FIX: a customer's (credit-normal) balance is debited; the reference credited it,
    # which would have given the customer more money.
    customer = Account("acct", "customer_balance:c", "liability", "usd", "credit")
    assert journal.capture_entry(hold, customer, cash, 1000).postings == legs(
        ("acct", 1000), ("cash", -1000))


def test_only_operators_use_the_journal_and_only_minters_post():
    platform = Actor(kind="service", role="platform", may_mint=True)
    admin = Actor(kind="api_key", role="admin", may_mint=False)
    journal.require_poster(platform)
    journal.require_operator(admin)
    assert refused(journal.require_poster, admin)[0] == 403
    for role in ("user", "publishable"):
        actor = Actor(kind="iam", role=role, may_mint=True)
        assert refused(journal.require_operator, actor) == (
            403, "Token doesn't support this scope")


# ---- on the bus, against the real database --------------------------------------------------


class Tenant(support.Bus):
    """One organization (the spec's tenant) and mode, talking to the journal over NATS as
    the payments service will."""

    def mode(self, livemode: bool) -> Tenant:
        return Tenant(self.nc, self.org_id, livemode)

    async def account(self, name: str, type: str, **kw) -> str:
        created = await self.ok(endpoints.ACCOUNT_CREATE.subject,
                                JournalAccountCreateParams(name=name, type=type, **kw))
        return created["id"]

    async def account_id(self, name: str) -> str:
        found = await self.ok(endpoints.ACCOUNT_GET.subject, JournalAccountGetParams(name=name))
        return found["id"]

    def entry(self, *pairs, key: str = "", **kw) -> JournalEntryPostParams:
        return JournalEntryPostParams(idempotencyKey=key, postings=[
            JournalPostingParams(accountId=p[0], amount=p[1],
                                 currency=p[2] if len(p) > 2 else "") for p in pairs], **kw)

    async def post(self, *pairs, key: str = "", **kw) -> dict:
        return await self.ok(endpoints.ENTRY_POST.subject, self.entry(*pairs, key=key, **kw))

    async def balance(self, account_id: str, currency: str = "") -> dict:
        return await self.ok(endpoints.BALANCE_GET.subject,
                             JournalBalanceGetParams(accountId=account_id, currency=currency))

    async def posted(self, account: str, currency: str = "") -> int:
        """Posted balance by account id or (for names with a colon) by name."""
        if ":" in account:
            account = await self.account_id(account)
        return (await self.balance(account, currency))["postedBalance"]

    async def hold(self, account_id: str, amount: int, **kw) -> dict:
        return await self.ok(endpoints.HOLD_CREATE.subject,
                             JournalHoldCreateParams(accountId=account_id, amount=amount, **kw))

    async def get_hold(self, hold_id: str) -> dict:
        return await self.ok(endpoints.HOLD_GET.subject, JournalHoldIdParams(id=hold_id))

    async def capture(self, hold_id: str, amount: int = 0) -> dict:
        return await self.ask(endpoints.HOLD_CAPTURE.subject,
                              JournalHoldCaptureParams(id=hold_id, amount=amount))

    async def payment(self, pi: str, amount: int, customer: str = "cust_1", fees: int = 0,
                      currency: str = "") -> dict:
        return await self.ok(endpoints.PAYMENT_RECORD.subject, JournalPaymentParams(
            paymentIntentId=pi, amount=amount, currency=currency, customerId=customer,
            fees=fees))

    async def entries(self, **kw) -> list[dict]:
        return (await self.ok(endpoints.ENTRY_LIST.subject,
                              JournalEntryListParams(**kw)))["entries"]


class Books(Tenant):
    """§8 H's setup: cash (asset), fees (revenue), customer_balance:cust_1 (liability)."""

    cash: str
    fees: str
    cust: str


async def books(nc, org_id: str | None = None, livemode: bool = False) -> Books:
    t = Books(nc, org_id, livemode)
    t.cash = await t.account("platform:cash", "asset")
    t.fees = await t.account("platform:fees", "revenue")
    t.cust = await t.account("customer_balance:cust_1", "liability")
    return t


@pytest.fixture
async def t1(nc) -> Books:
    return await books(nc)


def status(reply: dict) -> int:
    """The reply's success status (the envelope omits the default 200)."""
    return reply.get("status", 200)


def total(entry: dict) -> dict[str, int]:
    sums: dict[str, int] = {}
    for p in entry["postings"]:
        sums[p["currency"]] = sums.get(p["currency"], 0) + p["amount"]
    return sums


# -- §8 H, in order (the fixed behaviour where a FIX changes the result) --


async def test_h1_post_assigns_ids(t1):
    reply = await t1.ask(endpoints.ENTRY_POST.subject, t1.entry((t1.cash, 1000),
                                                                (t1.cust, -1000)))
    assert status(reply) == 201
    entry = reply["result"]
    assert entry["id"].startswith("jent_") and len(entry["postings"]) == 2
    assert [p["amount"] for p in entry["postings"]] == [1000, -1000]  # in the posted order
    assert all(p["id"] and p["entryId"] == entry["id"] for p in entry["postings"])
    assert len({p["id"] for p in entry["postings"]}) == 2


async def test_h2_h3_h4_refusals_write_nothing(t1):
    assert await t1.error(endpoints.ENTRY_POST.subject, t1.entry(
        (t1.cash, 1000), (t1.cust, -500))) == (400, "postings do not balance: sum=500 usd")
    assert await t1.error(endpoints.ENTRY_POST.subject, t1.entry()) == (
        400, journal.EMPTY_POSTINGS)
    assert await t1.error(endpoints.ENTRY_POST.subject, t1.entry((t1.cash, 0))) == (
        400, journal.EMPTY_POSTINGS)
    assert await t1.error(endpoints.ENTRY_POST.subject, t1.entry(
        (t1.cash, 100), ("nonexistent", -100))) == (404, "account nonexistent not found")
    assert await t1.entries() == []
    assert await t1.posted(t1.cash) == 0


async def test_h5_fixed_same_key_same_entry_replays_another_entry_conflicts(t1):
    first = await t1.ask(endpoints.ENTRY_POST.subject,
                         t1.entry((t1.cash, 500), (t1.cust, -500), key="idem-1"))
    again = await t1.ask(endpoints.ENTRY_POST.subject,
                         t1.entry((t1.cash, 500), (t1.cust, -500), key="idem-1"))
    # The reference answered ErrDuplicateEntry with the first entry; ours replays it.
    assert (status(first), status(again)) == (201, 200)
    assert again["result"]["replayed"] is True and "replayed" not in first["result"]
    assert again["result"]["id"] == first["result"]["id"]
    assert again["result"]["postings"] == first["result"]["postings"]
    assert await t1.posted(t1.cash) == 500  # posted once
    # FIX (§9.16): the same key with another payload is refused, not silently replayed.
    assert await t1.error(endpoints.ENTRY_POST.subject, t1.entry(
        (t1.cash, 501), (t1.cust, -501), key="idem-1")) == (
        409, "idempotency key reused with different parameters")
    assert await t1.error(endpoints.ENTRY_POST.subject, t1.entry(
        (t1.cash, 500), (t1.cust, -500), key="idem-1", description="changed")) == (
        409, "idempotency key reused with different parameters")
    assert await t1.posted(t1.cash) == 500


async def test_h6_keys_are_per_tenant(nc, t1):
    t2 = await books(nc)
    a = await t1.post((t1.cash, 100), (t1.cust, -100), key="same-key")
    b = await t2.post((t2.cash, 100), (t2.cust, -100), key="same-key")
    assert a["id"] != b["id"] and "replayed" not in b


async def test_h7_balances_follow_postings(t1):
    await t1.post((t1.cash, 5000), (t1.cust, -5000))
    cash = await t1.balance(t1.cash)
    assert (cash["postedBalance"], cash["availableBalance"], cash["heldBalance"]) == (
        5000, 5000, 0)
    cust = await t1.balance(t1.cust)
    assert (cust["postedBalance"], cust["availableBalance"]) == (-5000, -5000)


async def test_h8_ten_entries(t1):
    for i in range(10):
        await t1.post((t1.cash, 100), (t1.cust, -100), key=f"ten-{i}")
    assert await t1.posted(t1.cash) == 1000


async def test_h9_new_and_unknown_accounts(t1):
    fresh = await t1.account("fresh", "asset")
    assert await t1.balance(fresh) == {
        "accountId": fresh, "currency": "usd", "postedBalance": 0, "pendingBalance": 0,
        "heldBalance": 0, "availableBalance": 0}
    assert await t1.error(endpoints.BALANCE_GET.subject,
                          JournalBalanceGetParams(accountId="nope")) == (
        404, "account nope not found")


async def test_h10_hold_and_capture_on_cash(t1):
    await t1.post((t1.cash, 10000), (t1.cust, -10000))
    expires = datetime.now(UTC) + timedelta(hours=24)
    hold = await t1.hold(t1.cash, 3000, paymentIntentId="pi_123", expiresAt=expires)
    assert hold["id"].startswith("jhold_") and hold["status"] == "pending"
    assert (hold["paymentIntentId"], hold["expiresAt"]) == ("pi_123", rfc3339(expires))
    cash = await t1.balance(t1.cash)
    assert (cash["heldBalance"], cash["availableBalance"]) == (3000, 7000)
    reply = await t1.capture(hold["id"], 3000)
    assert status(reply) == 201
    entry = reply["result"]["entry"]
    assert entry["idempotencyKey"] == f"capture:{hold['id']}"
    assert entry["description"] == f"Capture hold {hold['id']} for 3000"
    assert entry["paymentIntentId"] == "pi_123"
    assert [(p["accountId"], p["amount"]) for p in entry["postings"]] == [
        (t1.cash, -3000), (t1.cash, 3000)]  # a hold on cash itself nets to nothing
    assert reply["result"]["hold"]["status"] == "captured"
    assert reply["result"]["hold"]["capturedEntryId"] == entry["id"]
    assert (await t1.get_hold(hold["id"]))["status"] == "captured"
    cash = await t1.balance(t1.cash)
    assert (cash["postedBalance"], cash["heldBalance"], cash["availableBalance"]) == (
        10000, 0, 10000)


async def test_h11_void_releases(t1):
    hold = await t1.hold(t1.cash, 2000)  # no funds check on a platform account
    assert (await t1.balance(t1.cash))["heldBalance"] == 2000
    voided = await t1.ok(endpoints.HOLD_VOID.subject, JournalHoldIdParams(id=hold["id"]))
    assert voided["status"] == "voided"
    cash = await t1.balance(t1.cash)
    assert (cash["heldBalance"], cash["availableBalance"]) == (0, 0)


async def test_h12_capture_more_than_held(t1):
    hold = await t1.hold(t1.cash, 1000)
    reply = await t1.capture(hold["id"], 2000)
    assert (reply["error"]["status"], reply["error"]["message"]) == (
        409, "capture exceeds hold")
    assert (await t1.get_hold(hold["id"]))["status"] == "pending"
    assert (await t1.balance(t1.cash))["heldBalance"] == 1000


async def test_h13_settled_holds_are_terminal(t1):
    hold = await t1.hold(t1.cash, 500)
    assert (await t1.capture(hold["id"], 500))["status"] == 201
    assert await t1.error(endpoints.HOLD_VOID.subject, JournalHoldIdParams(id=hold["id"])) == (
        409, "hold is not pending")
    assert (await t1.capture(hold["id"]))["error"]["message"] == "hold is not pending"
    assert await t1.error(endpoints.HOLD_VOID.subject, JournalHoldIdParams(id="jhold_x")) == (
        404, "hold not found")


async def test_h14_hold_validation(t1):
    assert await t1.error(endpoints.HOLD_CREATE.subject, JournalHoldCreateParams(
        accountId=t1.cash, amount=0)) == (400, "amount must be positive")
    assert await t1.error(endpoints.HOLD_CREATE.subject, JournalHoldCreateParams(
        accountId=t1.cash, amount=-50)) == (400, "amount must be positive")  # §9.7
    assert await t1.error(endpoints.HOLD_CREATE.subject, JournalHoldCreateParams(
        accountId="missing", amount=10)) == (404, "account missing not found")
    assert (await t1.balance(t1.cash))["heldBalance"] == 0


async def test_h15_payment_with_fees(t1):
    entry = await t1.payment("pi_pay1", 10000, fees=250)
    assert entry["paymentIntentId"] == "pi_pay1" and len(entry["postings"]) == 3
    assert total(entry) == {"usd": 0}
    assert (await t1.posted(t1.cash), await t1.posted(t1.cust),
            await t1.posted(t1.fees)) == (10000, -9750, -250)


async def test_h16_payment_without_fees_creates_missing_accounts(nc):
    t = Tenant(nc)  # no accounts yet: the operation ensures them
    entry = await t.payment("pi_nofee", 5000, customer="cust_2")
    assert len(entry["postings"]) == 2 and total(entry) == {"usd": 0}
    assert await t.posted("customer_balance:cust_2") == -5000
    cust = await t.ok(endpoints.ACCOUNT_GET.subject,
                      JournalAccountGetParams(name="customer_balance:cust_2"))
    assert (cust["type"], cust["normalBalance"]) == ("liability", "credit")


async def test_h17_payment_amount_must_be_positive(t1):
    for amount in (0, -100):
        assert await t1.error(endpoints.PAYMENT_RECORD.subject, JournalPaymentParams(
            paymentIntentId="pi_bad", amount=amount, customerId="cust_1")) == (
            400, "amount must be positive")
    assert await t1.entries() == []


async def test_h18_refund(t1):
    await t1.payment("pi_ref1", 8000, fees=200)
    refund = await t1.ok(endpoints.REFUND_RECORD.subject, JournalRefundParams(
        refundId="ref_1", amount=8000, customerId="cust_1"))
    assert refund["refundId"] == "ref_1" and total(refund) == {"usd": 0}
    assert await t1.posted(t1.cash) == 0
    assert await t1.posted(t1.cust) == 200  # −7800 + 8000


async def test_h19_payout(t1):
    await t1.payment("pi_po", 20000)
    payout = await t1.ok(endpoints.PAYOUT_RECORD.subject, JournalPayoutParams(
        payoutId="po_1", amount=15000, merchantId="merch_1"))
    assert payout["payoutId"] == "po_1" and total(payout) == {"usd": 0}
    assert await t1.posted(t1.cash) == 5000
    assert await t1.posted("merchant_settlement:merch_1") == 15000


async def test_h20_fixed_dispute_moves_money_from_the_customer(t1):
    await t1.payment("pi_disp", 10000)
    dispute = await t1.ok(endpoints.DISPUTE_RECORD.subject, JournalDisputeParams(
        disputeId="disp_1", amount=5000, customerId="cust_1"))
    assert dispute["disputeId"] == "disp_1" and total(dispute) == {"usd": 0}
    assert await t1.posted(t1.cash) == 5000
    assert await t1.posted("platform:disputes_held") == 5000
    # FIX (§9.16): the customer's balance drops by the disputed amount (it was untouched),
    # parked in the reserve until the dispute is decided.
    assert await t1.posted(t1.cust) == -5000
    assert await t1.posted("platform:reserves") == -5000
    assert len(dispute["postings"]) == 4


async def test_h21_list_by_tenant_and_payment_intent(nc, t1):
    t2 = await books(nc)
    await t1.payment("pi_list1", 100)
    await t2.payment("pi_list2", 100)
    await t1.payment("pi_list3", 100)
    assert [e["paymentIntentId"] for e in await t1.entries()] == ["pi_list1", "pi_list3"]
    await t1.payment("pi_target", 100)
    await t1.payment("pi_other", 100)
    found = await t1.entries(paymentIntentId="pi_target")
    assert [e["paymentIntentId"] for e in found] == ["pi_target"]


async def test_h22_get_entry(t1):
    posted = await t1.post((t1.cash, 1), (t1.cust, -1))
    got = await t1.ok(endpoints.ENTRY_GET.subject, JournalEntryGetParams(id=posted["id"]))
    assert got == posted
    assert await t1.error(endpoints.ENTRY_GET.subject,
                          JournalEntryGetParams(id="nonexistent")) == (404, "entry not found")


async def test_h23_accounts(t1):
    await t1.account("test-acct", "asset")
    assert await t1.error(endpoints.ACCOUNT_CREATE.subject, JournalAccountCreateParams(
        name="test-acct", type="asset")) == (409, 'account "test-acct" already exists')
    for type, normal in journal.NORMAL_BALANCE.items():
        created = await t1.ok(endpoints.ACCOUNT_CREATE.subject,
                              JournalAccountCreateParams(name=f"n-{type}", type=type))
        assert created["normalBalance"] == normal
    assert await t1.error(endpoints.ACCOUNT_GET.subject,
                          JournalAccountGetParams(id="missing")) == (
        404, "account missing not found")
    # ensure_account finds by name and does not check type or currency (the reference).
    ensured = await t1.ok(endpoints.ACCOUNT_ENSURE.subject, JournalAccountEnsureParams(
        name="test-acct", type="revenue", currency="eur"))
    assert (ensured["type"], ensured["currency"]) == ("asset", "usd")


async def test_h24_three_legs(t1):
    await t1.post((t1.cash, 10000), (t1.cust, -9700), (t1.fees, -300))
    balances = [await t1.posted(a) for a in (t1.cash, t1.cust, t1.fees)]
    assert balances == [10000, -9700, -300] and sum(balances) == 0


# -- the fixes beyond §8 H --


async def test_zero_sum_is_per_currency(t1):
    assert await t1.error(endpoints.ENTRY_POST.subject, t1.entry(
        (t1.cash, 100, "usd"), (t1.cust, -100, "eur"))) == (
        400, "postings do not balance: sum=-100 eur")
    entry = await t1.post((t1.cash, 100, "usd"), (t1.cust, -100, "usd"),
                          (t1.cash, 90, "EUR"), (t1.cust, -90, "eur"))
    assert total(entry) == {"usd": 0, "eur": 0}
    assert (await t1.posted(t1.cash, "usd"), await t1.posted(t1.cash, "eur")) == (100, 90)


async def test_list_filters_by_account_and_time_in_a_stable_order(t1):
    other = await t1.account("platform:other", "asset")
    first = await t1.post((t1.cash, 1), (t1.cust, -1))
    second = await t1.post((other, 2), (t1.cust, -2))
    third = await t1.post((t1.cash, 3), (t1.fees, -3))
    ids = [e["id"] for e in await t1.entries()]
    assert ids == [first["id"], second["id"], third["id"]]  # created_at, id
    # FIX (§9.16): the account filter used to be ignored.
    assert [e["id"] for e in await t1.entries(accountId=t1.cash)] == [first["id"],
                                                                      third["id"]]
    assert [e["id"] for e in await t1.entries(accountId=other)] == [second["id"]]
    assert [e["id"] for e in await t1.entries(accountId=t1.cust, limit=1, offset=1)] == [
        second["id"]]
    after = datetime.fromisoformat(first["createdAt"])
    before = datetime.fromisoformat(third["createdAt"])
    assert [e["id"] for e in await t1.entries(createdAfter=after, createdBefore=before)] \
        == [second["id"]]  # both bounds exclusive


async def test_customer_holds_need_funds_and_capture_debits_the_customer(t1):
    await t1.payment("pi_funds", 1000)  # the customer is owed 1000
    assert await t1.error(endpoints.HOLD_CREATE.subject, JournalHoldCreateParams(
        accountId=t1.cust, amount=1001)) == (
        402, "insufficient balance: have 1000 cents, need 1001 cents")
    hold = await t1.hold(t1.cust, 600)
    cust = await t1.balance(t1.cust)
    assert (cust["postedBalance"], cust["heldBalance"], cust["availableBalance"]) == (
        -1000, 600, -400)
    assert await t1.error(endpoints.HOLD_CREATE.subject, JournalHoldCreateParams(
        accountId=t1.cust, amount=401)) == (
        402, "insufficient balance: have 400 cents, need 401 cents")
    # A partial capture takes 250 from the customer and releases the other 350.
    reply = await t1.capture(hold["id"], 250)
    assert reply["result"]["hold"]["capturedAmount"] == 250
    assert [(p["accountId"], p["amount"]) for p in reply["result"]["entry"]["postings"]] == [
        (t1.cust, 250), (t1.cash, -250)]
    cust = await t1.balance(t1.cust)
    assert (cust["postedBalance"], cust["heldBalance"], cust["availableBalance"]) == (
        -750, 0, -750)
    assert await t1.posted(t1.cash) == 750


async def test_capture_checks_cash_before_changing_anything(nc):
    t = Tenant(nc)  # no platform:cash here
    card = await t.account("card:pi_9", "asset")
    hold = await t.hold(card, 700, paymentIntentId="pi_9")
    reply = await t.capture(hold["id"])
    assert (reply["error"]["status"], reply["error"]["message"]) == (
        404, "account platform:cash not found")
    assert (await t.get_hold(hold["id"]))["status"] == "pending"  # the reference: captured
    assert (await t.balance(card))["heldBalance"] == 700
    assert await t.entries() == []
    cash = await t.account("platform:cash", "asset")
    assert (await t.capture(hold["id"]))["status"] == 201
    assert (await t.posted(card), await t.posted(cash)) == (-700, 700)
    assert (await t.balance(card))["heldBalance"] == 0


async def test_sweeper_expires_holds(t1, ledger):
    expires = datetime.now(UTC) + timedelta(seconds=2)  # room for a slow request under load
    hold = await t1.hold(t1.cash, 400, expiresAt=expires)
    lasting = await t1.hold(t1.cash, 100)
    await asyncio.sleep((expires - datetime.now(UTC)).total_seconds() + 0.2)
    # Past its expiry it cannot be captured, even before the sweeper ran.
    reply = await t1.capture(hold["id"])
    assert (reply["error"]["status"], reply["error"]["message"]) == (409, "hold has expired")
    await journal_handlers.expire_holds(ledger)  # the periodic run may have been first
    assert (await t1.get_hold(hold["id"]))["status"] == "expired"
    assert (await t1.get_hold(lasting["id"]))["status"] == "pending"
    assert (await t1.balance(t1.cash))["heldBalance"] == 100
    assert await t1.error(endpoints.HOLD_VOID.subject, JournalHoldIdParams(id=hold["id"])) == (
        409, "hold is not pending")
    await journal_handlers.expire_holds(ledger)  # sweeping again changes nothing
    assert (await t1.balance(t1.cash))["heldBalance"] == 100


async def test_concurrent_captures_of_one_hold(t1):
    await t1.post((t1.cash, 5000), (t1.cust, -5000))
    hold = await t1.hold(t1.cash, 1000, paymentIntentId="pi_race")
    replies = await asyncio.gather(*(t1.capture(hold["id"], 100 * (i + 1))
                                     for i in range(10)))
    won = [r for r in replies if "result" in r]
    assert len(won) == 1
    assert all(r["error"] == {"code": "conflict", "status": 409,
                              "message": "hold is not pending"}
               for r in replies if "error" in r)
    assert len(await t1.entries(paymentIntentId="pi_race")) == 1
    assert (await t1.balance(t1.cash))["heldBalance"] == 0


async def test_concurrent_holds_never_exceed_the_customer_balance(t1):
    await t1.payment("pi_cover", 1000)
    replies = await asyncio.gather(*(t1.ask(endpoints.HOLD_CREATE.subject,
                                            JournalHoldCreateParams(accountId=t1.cust,
                                                                    amount=300))
                                     for _ in range(10)))
    assert sum("result" in r for r in replies) == 3
    assert {r["error"]["status"] for r in replies if "error" in r} == {402}
    assert (await t1.balance(t1.cust))["heldBalance"] == 900


async def test_concurrent_posts_under_one_key_post_once(t1):
    replies = await asyncio.gather(*(t1.ask(endpoints.ENTRY_POST.subject, t1.entry(
        (t1.cash, 10), (t1.cust, -10), key="once")) for _ in range(8)))
    assert len({r["result"]["id"] for r in replies}) == 1
    assert sorted(status(r) for r in replies) == [200] * 7 + [201]
    assert await t1.posted(t1.cash) == 10


async def test_high_level_operations_replay_and_refuse_changed_parameters(t1):
    first = await t1.payment("pi_idem", 3000, fees=30)
    again = await t1.ask(endpoints.PAYMENT_RECORD.subject, JournalPaymentParams(
        paymentIntentId="pi_idem", amount=3000, customerId="cust_1", fees=30))
    assert status(again) == 200 and again["result"]["id"] == first["id"]
    assert await t1.error(endpoints.PAYMENT_RECORD.subject, JournalPaymentParams(
        paymentIntentId="pi_idem", amount=3100, customerId="cust_1", fees=30)) == (
        409, "idempotency key reused with different parameters")
    # The refused call created nothing, not even the account it would have ensured.
    assert await t1.error(endpoints.PAYMENT_RECORD.subject, JournalPaymentParams(
        paymentIntentId="pi_idem", amount=3000, customerId="someone_else", fees=30)) == (
        409, "idempotency key reused with different parameters")
    assert await t1.error(endpoints.ACCOUNT_GET.subject, JournalAccountGetParams(
        name="customer_balance:someone_else")) == (
        404, "account customer_balance:someone_else not found")
    assert await t1.posted(t1.cash) == 3000
    # The runtime's request key works too (a retried bus request).
    r1 = await t1.ask(endpoints.REFUND_RECORD.subject, JournalRefundParams(
        refundId="ref_idem", amount=100, customerId="cust_1"), key="req-1")
    r2 = await t1.ask(endpoints.REFUND_RECORD.subject, JournalRefundParams(
        refundId="ref_idem", amount=100, customerId="cust_1"), key="req-1")
    assert r1["result"]["id"] == r2["result"]["id"] and r2.get("replayed") is True
    assert await t1.posted(t1.cash) == 2900


async def test_org_and_mode_isolation(nc, t1):
    await t1.post((t1.cash, 100), (t1.cust, -100))
    hold = await t1.hold(t1.cash, 10)
    entry = (await t1.entries())[0]
    live = t1.mode(True)
    other = Tenant(nc)
    for stranger in (live, other):
        assert (await stranger.error(endpoints.ACCOUNT_GET.subject,
                                     JournalAccountGetParams(id=t1.cash)))[0] == 404
        assert (await stranger.error(endpoints.BALANCE_GET.subject,
                                     JournalBalanceGetParams(accountId=t1.cash)))[0] == 404
        assert (await stranger.error(endpoints.ENTRY_GET.subject,
                                     JournalEntryGetParams(id=entry["id"])))[0] == 404
        assert (await stranger.error(endpoints.HOLD_VOID.subject,
                                     JournalHoldIdParams(id=hold["id"])))[0] == 404
        assert (await stranger.capture(hold["id"]))["error"]["status"] == 404
        assert await stranger.entries() == []
        # Another tenant's account id cannot be posted to.
        own = await stranger.account("platform:cash", "asset")  # same name: no conflict
        assert await stranger.error(endpoints.ENTRY_POST.subject, stranger.entry(
            (own, 5), (t1.cust, -5))) == (404, f"account {t1.cust} not found")
        # Same keys and payment ids are separate books.
        replayed = await stranger.ask(endpoints.PAYMENT_RECORD.subject, JournalPaymentParams(
            paymentIntentId="pi_iso", amount=50, customerId="cust_1"))
        assert status(replayed) == 201
    await t1.payment("pi_iso", 70)
    assert await t1.posted(t1.cash) == 170
    assert (await t1.get_hold(hold["id"]))["status"] == "pending"
    assert (await t1.balance(t1.cash))["heldBalance"] == 10


async def test_access_platform_and_admin_only_and_posting_needs_mint(t1):
    user = Actor(kind="iam", role="user", user_id="acme/alice", may_mint=True)
    publishable = Actor(kind="api_key", role="publishable")
    admin = Actor(kind="api_key", role="admin", may_mint=False)
    forbidden = (403, "Token doesn't support this scope")
    for actor in (user, publishable):
        for subject, params in (
                (endpoints.ACCOUNT_CREATE.subject, JournalAccountCreateParams(name="x",
                                                                              type="asset")),
                (endpoints.BALANCE_GET.subject, JournalBalanceGetParams(accountId=t1.cash)),
                (endpoints.ENTRY_LIST.subject, JournalEntryListParams()),
                (endpoints.ENTRY_POST.subject, t1.entry((t1.cash, 1), (t1.cust, -1))),
                (endpoints.HOLD_CREATE.subject, JournalHoldCreateParams(accountId=t1.cash,
                                                                        amount=1))):
            assert await t1.error(subject, params, actor=actor) == forbidden
    # An admin without the mint right reads, keeps accounts and holds, but moves no money.
    await t1.ok(endpoints.BALANCE_GET.subject, JournalBalanceGetParams(accountId=t1.cash),
                actor=admin)
    await t1.ok(endpoints.ACCOUNT_ENSURE.subject, JournalAccountEnsureParams(
        name="platform:admin_made", type="asset"), actor=admin)
    hold = await t1.ok(endpoints.HOLD_CREATE.subject, JournalHoldCreateParams(
        accountId=t1.cash, amount=5), actor=admin)
    for subject, params in (
            (endpoints.ENTRY_POST.subject, t1.entry((t1.cash, 1), (t1.cust, -1))),
            (endpoints.PAYMENT_RECORD.subject, JournalPaymentParams(
                paymentIntentId="pi_admin", amount=1, customerId="c")),
            (endpoints.REFUND_RECORD.subject, JournalRefundParams(refundId="r", amount=1,
                                                                  customerId="c")),
            (endpoints.PAYOUT_RECORD.subject, JournalPayoutParams(payoutId="p", amount=1,
                                                                  merchantId="m")),
            (endpoints.DISPUTE_RECORD.subject, JournalDisputeParams(disputeId="d", amount=1,
                                                                    customerId="c")),
            (endpoints.HOLD_CAPTURE.subject, JournalHoldCaptureParams(id=hold["id"]))):
        assert await t1.error(subject, params, actor=admin) == forbidden
    await t1.ok(endpoints.HOLD_VOID.subject, JournalHoldIdParams(id=hold["id"]), actor=admin)
    assert await t1.entries() == []


async def test_the_database_refuses_unbalanced_entries_and_edits(t1, ledger):
    posted = await t1.post((t1.cash, 40), (t1.cust, -40))
    async with ledger.pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="postings sum to 25 in usd"):
            async with conn.transaction():
                await conn.execute(
                    "insert into ledger.journal_entries (org_id, livemode, id, payload_hash,"
                    " created_at) values ($1, false, 'jent_bad', '', now())", t1.org_id)
                await conn.execute(
                    "insert into ledger.journal_postings (org_id, livemode, id, entry_id,"
                    " line, account_id, amount, currency, created_at) values"
                    " ($1, false, 'jpst_bad1', 'jent_bad', 1, $2, 100, 'usd', now()),"
                    " ($1, false, 'jpst_bad2', 'jent_bad', 2, $3, -75, 'usd', now())",
                    t1.org_id, t1.cash, t1.cust)
        # Entries written together: the one that does not balance is named.
        with pytest.raises(asyncpg.CheckViolationError,
                           match="entry jent_bad2 postings sum to -5 in usd"):
            async with conn.transaction():
                await conn.execute(
                    "insert into ledger.journal_entries (org_id, livemode, id, payload_hash,"
                    " created_at) values ($1, false, 'jent_ok', '', now()),"
                    " ($1, false, 'jent_bad2', '', now())", t1.org_id)
                await conn.execute(
                    "insert into ledger.journal_postings (org_id, livemode, id, entry_id,"
                    " line, account_id, amount, currency, created_at) values"
                    " ($1, false, 'jpst_ok1', 'jent_ok', 1, $2, 30, 'usd', now()),"
                    " ($1, false, 'jpst_bad3', 'jent_bad2', 1, $2, 10, 'usd', now()),"
                    " ($1, false, 'jpst_ok2', 'jent_ok', 2, $3, -30, 'usd', now()),"
                    " ($1, false, 'jpst_bad4', 'jent_bad2', 2, $3, -15, 'usd', now())",
                    t1.org_id, t1.cash, t1.cust)
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("update ledger.journal_postings set amount = 1"
                               " where org_id = $1 and entry_id = $2", t1.org_id, posted["id"])
        with pytest.raises(asyncpg.CheckViolationError, match="must be >= 0"):
            await conn.execute("update ledger.journal_balances set held = -1"
                               " where org_id = $1", t1.org_id)
    assert [e["id"] for e in await t1.entries()] == [posted["id"]]


# -- property: any sequence of entries keeps the books balanced --

ACCOUNTS = (("platform:cash", "asset"), ("platform:fees", "revenue"),
            ("customer_balance:p", "liability"), ("platform:expenses", "expense"))
CURRENCIES = ("usd", "eur")
_amount = st.integers(-5000, -1) | st.integers(1, 5000)  # never zero


@st.composite
def balanced_legs(draw) -> list[tuple[int, int, str]]:
    """(account index, amount, currency) legs summing to zero in each currency."""
    out = []
    for currency in draw(st.lists(st.sampled_from(CURRENCIES), min_size=1, max_size=2,
                                  unique=True)):
        legs_ = [(draw(st.integers(0, 3)), draw(_amount), currency)
                 for _ in range(draw(st.integers(1, 3)))]
        rest = -sum(amount for _, amount, _ in legs_)
        if rest:
            legs_.append((draw(st.integers(0, 3)), rest, currency))
        out += legs_
    return out


operations = st.lists(st.one_of(
    st.tuples(st.just("post"), balanced_legs()),
    st.tuples(st.just("unbalanced"), st.lists(
        st.tuples(st.integers(0, 3), _amount, st.just("usd")), min_size=2, max_size=3)),
    st.tuples(st.just("replay"), st.booleans()),
    st.tuples(st.just("hold"), st.tuples(st.integers(0, 3), st.integers(1, 3000),
                                         st.sampled_from(CURRENCIES))),
    st.tuples(st.just("capture"), st.integers(0, 3000)),
    st.tuples(st.just("void"), st.none()),
), min_size=1, max_size=14)


async def _check_books(pool, org_id: str, expected: dict[tuple[str, str], int]) -> None:
    unbalanced = await pool.fetch(
        "select entry_id, currency from ledger.journal_postings where org_id = $1"
        " group by entry_id, currency having sum(amount) <> 0", org_id)
    assert unbalanced == []
    rows = await pool.fetch(
        "select b.account_id, b.currency, b.posted, b.held, b.available, b.credit_normal,"
        " (select coalesce(sum(p.amount), 0) from ledger.journal_postings p"
        "   where p.org_id = b.org_id and p.livemode = b.livemode"
        "     and p.account_id = b.account_id and p.currency = b.currency)::bigint as summed,"
        " (select coalesce(sum(h.amount), 0) from ledger.journal_holds h"
        "   where h.org_id = b.org_id and h.livemode = b.livemode and h.status = 'pending'"
        "     and h.account_id = b.account_id and h.currency = b.currency)::bigint as pending"
        " from ledger.journal_balances b where b.org_id = $1", org_id)
    for r in rows:
        assert r["posted"] == r["summed"]  # the stored balance is the sum of its postings
        assert r["held"] == r["pending"]  # and holds the sum of its pending holds
        assert r["available"] == journal.available(r["posted"], r["held"], r["credit_normal"])
        assert r["posted"] == expected.get((r["account_id"], r["currency"]), 0)
    stored = {(r["account_id"], r["currency"]) for r in rows}
    assert {k for k, v in expected.items() if v} <= stored
    assert await pool.fetchval("select count(*) from ledger.journal_postings p"
                               " where p.org_id = $1 and not exists ("
                               "  select 1 from ledger.journal_balances b"
                               "  where b.org_id = p.org_id and b.livemode = p.livemode"
                               "  and b.account_id = p.account_id"
                               "  and b.currency = p.currency)", org_id) == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
async def test_random_entry_sequences_keep_the_books_balanced(nc, ledger, ops):
    t = Tenant(nc)
    ids = [(await t.ok(endpoints.ACCOUNT_ENSURE.subject, JournalAccountEnsureParams(
        name=name, type=type)))["id"] for name, type in ACCOUNTS]
    expected: dict[tuple[str, str], int] = {}
    sent: list[JournalEntryPostParams] = []
    holds: list[str] = []

    def book(entry: dict) -> None:
        for p in entry["postings"]:
            key = (p["accountId"], p["currency"])
            expected[key] = expected.get(key, 0) + p["amount"]

    for op, arg in ops:
        if op == "post":
            params = t.entry(*((ids[i], amount, cur) for i, amount, cur in arg),
                             key=f"k{len(sent)}")
            reply = await t.ask(endpoints.ENTRY_POST.subject, params)
            assert status(reply) == 201, reply
            book(reply["result"])
            sent.append(params)
        elif op == "unbalanced":
            legs_ = [(ids[i], amount, cur) for i, amount, cur in arg]
            reply = await t.ask(endpoints.ENTRY_POST.subject, t.entry(*legs_))
            if sum(amount for _, amount, _ in legs_):
                assert reply["error"]["status"] == 400
            else:
                book(reply["result"])
        elif op == "replay" and sent:
            params = sent[-1]
            if arg:  # the same entry again: replayed, nothing booked
                reply = await t.ask(endpoints.ENTRY_POST.subject, params)
                assert status(reply) == 200 and reply["result"]["replayed"], reply
            else:  # another entry under the same key: refused
                changed = msgspec.structs.replace(params, description="changed")
                reply = await t.ask(endpoints.ENTRY_POST.subject, changed)
                assert reply["error"]["status"] == 409
        elif op == "hold":
            index, amount, currency = arg
            reply = await t.ask(endpoints.HOLD_CREATE.subject, JournalHoldCreateParams(
                accountId=ids[index], amount=amount, currency=currency))
            if "result" in reply:
                holds.append(reply["result"]["id"])
            else:  # only the customer's balance is funds-checked
                assert reply["error"]["status"] == 402 and index == 2
        elif op == "capture" and holds:
            reply = await t.capture(holds[-1], arg)
            if "result" in reply:
                book(reply["result"]["entry"])
            else:
                assert reply["error"]["status"] == 409
        elif op == "void" and holds:
            reply = await t.ask(endpoints.HOLD_VOID.subject, JournalHoldIdParams(id=holds[-1]))
            assert "result" in reply or reply["error"]["status"] == 409
    await _check_books(ledger.pool, t.org_id, expected)
