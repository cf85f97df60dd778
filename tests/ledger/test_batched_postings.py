"""The ledger's batched postings: top-up credits and journal operations from payments, and
invoicing's wallet withdrawals, that arrive together share one transaction, and each keeps
its own outcome — credited, posted or withdrawn once however often it is sent (in one batch
or again later), refused alone when it is the one that cannot be written, and not written
twice when a batch's commit went through unacknowledged."""

from __future__ import annotations

import asyncio
import secrets
from types import SimpleNamespace

import msgspec

from contracts import Actor
from contracts.common import INT64_MAX
from contracts.errors import Failure
from contracts.journal import PAYMENT_RECORD, JournalPaymentParams
from contracts.ledger import (
    BALANCE_GET,
    DEPOSIT_CREATE,
    TOPUP_CREDIT,
    WITHDRAW_AVAILABLE,
    BalanceQuery,
    DepositParams,
    TopupCreditParams,
    WithdrawParams,
)
from services.ledger.balances import store
from services.ledger.balances.topups import TopupCredit, TopupCreditor, topup_credit
from services.ledger.balances.withdrawals import AvailableWithdrawer, withdrawal
from services.ledger.journal import domain as journal
from services.ledger.journal.recorder import JournalRecorder, KnownAccounts, Recording
from tests.runtime.test_integrity_keys import _CommitsThenFails
from tests.support import Bus, scope


def credit(user: str, amount: int, n: int = 0) -> TopupCreditParams:
    topup_id = f"tu_{secrets.token_hex(6)}_{n}"
    return TopupCreditParams(topupId=topup_id, user=user, amount=amount, provider="offline",
                             providerRef=f"ch_{n}", paymentIntentId="pi_" + topup_id[3:])


def topup(bus: Bus, p: TopupCreditParams) -> TopupCredit:
    """The credit as the handler hands it to the batch."""
    return topup_credit(scope(bus.org_id), p)


async def journaled(ledger, bus: Bus, sent: list[TopupCreditParams]) -> int:
    """How many journal entries record the payments of these top-ups."""
    return await ledger.pool.fetchval(
        "select count(*) from ledger.journal_entries where org_id = $1"
        " and payment_intent_id = any($2::text[])", bus.org_id,
        [p.paymentIntentId for p in sent])


async def credits_of(ledger, bus: Bus, user: str) -> list[int]:
    return [r["amount"] for r in await ledger.pool.fetch(
        "select amount from ledger.transactions where org_id = $1 and user_id = $2"
        " and tags = 'topup' order by amount", bus.org_id, user)]


def in_sequence(results: list[dict], before: int = 0) -> bool:
    """Each credit's balance is the one before it plus its amount, in some order, from
    `before`."""
    for r in sorted(results, key=lambda r: r["balance"]):
        if r["balance"] - r["amount"] != before:
            return False
        before = r["balance"]
    return True


async def test_credits_sent_together_are_each_credited_once(nc, ledger):
    bus, user = Bus(nc), "acme/together"
    sent = [credit(user, 100 * (n + 1), n) for n in range(4)]
    first = await asyncio.gather(*(bus.ok(TOPUP_CREDIT.subject, c) for c in sent))
    assert in_sequence(first) and max(r["balance"] for r in first) == 1000
    assert len({r["transactionId"] for r in first}) == 4
    # Sent again (a retry, the posting job): the same answers, nothing credited twice.
    again = await asyncio.gather(*(bus.ok(TOPUP_CREDIT.subject, c) for c in sent))
    assert again == first
    assert await credits_of(ledger, bus, user) == [100, 200, 300, 400]
    # Each credit recorded its payment in the journal with it, once.
    assert await journaled(ledger, bus, sent) == 4


async def test_a_credit_sent_twice_in_one_batch_is_credited_once(nc, ledger):
    bus, user = Bus(nc), "acme/twice"
    twice, other = credit(user, 300), credit(user, 50)
    replies = await asyncio.gather(*(bus.ask(TOPUP_CREDIT.subject, c)
                                     for c in (twice, twice, other)))
    assert replies[0]["result"] == replies[1]["result"]
    assert await credits_of(ledger, bus, user) == [50, 300]


async def test_a_credit_that_cannot_be_written_fails_alone(nc, ledger):
    bus, full, other = Bus(nc), "acme/full", "acme/other"
    await bus.ok(DEPOSIT_CREATE.subject, DepositParams(user=full, amount=INT64_MAX - 10))
    creditor = TopupCreditor(SimpleNamespace(pool=ledger.pool, keys=ledger.keys))
    too_much, fine = credit(full, 100), [credit(other, 7, n) for n in range(2)]
    first, refused, second = await asyncio.gather(*(  # one batch
        creditor.credit(topup(bus, c)) for c in (fine[0], too_much, fine[1])),
        return_exceptions=True)
    assert isinstance(refused, Failure) and refused.error.message == "amount is too large"
    assert [msgspec.json.decode(r)["result"]["amount"] for r in (first, second)] == [7, 7]
    assert await credits_of(ledger, bus, full) == []
    assert await credits_of(ledger, bus, other) == [7, 7]
    # A refusal is not kept under the top-up's key: sent again, it is tried again.
    assert await bus.error(TOPUP_CREDIT.subject, too_much) == (400, "amount is too large")


async def test_credits_committed_before_a_failure_are_not_credited_again(nc, ledger):
    faulty = _CommitsThenFails(ledger.pool)
    creditor = TopupCreditor(SimpleNamespace(pool=faulty, keys=ledger.keys))
    bus, user = Bus(nc), "acme/lost-ack"
    faulty.faults = 0  # a first credit: the customer's journal accounts are known from then on,
    await creditor.credit(topup(bus, credit(user, 5)))  # so a batch is one statement
    faulty.faults = 1
    sent = [credit(user, 10), credit(user, 20)]
    replies = await asyncio.gather(*(creditor.credit(topup(bus, c)) for c in sent))
    assert faulty.faults == 0  # the commit went through, then the connection "failed"
    results = [msgspec.json.decode(r)["result"] for r in replies]
    assert in_sequence(results, before=5) and max(r["balance"] for r in results) == 35
    assert await credits_of(ledger, bus, user) == [5, 10, 20]
    assert await journaled(ledger, bus, sent) == 2


def payment(pi: str, amount: int, customer: str = "cust_1") -> JournalPaymentParams:
    return JournalPaymentParams(paymentIntentId=pi, amount=amount, customerId=customer)


async def cash(ledger, bus: Bus) -> int:
    return await ledger.pool.fetchval(
        "select coalesce(sum(b.posted), 0) from ledger.journal_balances b"
        " join ledger.journal_accounts a on (a.org_id, a.livemode, a.id)"
        " = (b.org_id, b.livemode, b.account_id)"
        " where b.org_id = $1 and a.name = 'platform:cash'", bus.org_id)


async def test_a_payment_journaled_on_its_own_before_is_not_journaled_again(nc, ledger):
    # As an older payments did: the journal's payment first, the credit after it.
    bus, user = Bus(nc), "acme/journaled-before"
    sent = credit(user, 500)
    await bus.ok(PAYMENT_RECORD.subject, payment(sent.paymentIntentId, 500, user))
    await bus.ok(TOPUP_CREDIT.subject, sent)
    assert await credits_of(ledger, bus, user) == [500]
    assert await journaled(ledger, bus, [sent]) == 1
    assert await cash(ledger, bus) == 500


async def test_payments_recorded_together_keep_their_own_outcomes(nc, ledger):
    bus = Bus(nc)
    posted = await bus.ok(PAYMENT_RECORD.subject, payment("pi_before", 1000))
    recorder = JournalRecorder(SimpleNamespace(pool=ledger.pool))
    outcomes = await asyncio.gather(*(  # one batch
        recorder.record(Recording(scope(bus.org_id), journal.payment(p))) for p in (
            payment("pi_a", 100), payment("pi_b", 200, "cust_2"), payment("pi_b", 200, "cust_2"),
            payment("pi_before", 1000), payment("pi_before", 999))), return_exceptions=True)
    (a, a_replayed), (b, b_replayed), (b_again, b_again_replayed) = outcomes[:3]
    assert (a_replayed, b_replayed) == (False, False)
    assert b_again.id == b.id and b_again_replayed  # posted once
    assert outcomes[3][0].id == posted["id"] and outcomes[3][1]
    assert isinstance(outcomes[4], Failure) and outcomes[4].error.status == 409
    assert await cash(ledger, bus) == 1300
    # The same payments sent again: nothing posted twice.
    again = await asyncio.gather(*(bus.ok(PAYMENT_RECORD.subject, p) for p in (
        payment("pi_a", 100), payment("pi_b", 200, "cust_2"))))
    assert [e["id"] for e in again] == [a.id, b.id]
    assert await cash(ledger, bus) == 1300


async def test_payments_committed_before_a_failure_are_not_posted_again(nc, ledger):
    faulty = _CommitsThenFails(ledger.pool)
    recorder = JournalRecorder(SimpleNamespace(pool=faulty))
    bus = Bus(nc)
    sent = [Recording(scope(bus.org_id), journal.payment(payment(f"pi_{n}", 10 * n)))
            for n in (1, 2)]
    outcomes = await asyncio.gather(*(recorder.record(r) for r in sent))
    assert faulty.faults == 0
    # Written again alone, each finds its own entry and replays it.
    assert [(entry.payment_intent_id, replayed) for entry, replayed in outcomes] == [
        ("pi_1", True), ("pi_2", True)]
    assert await ledger.pool.fetchval(
        "select count(*) from ledger.journal_entries where org_id = $1", bus.org_id) == 2
    assert await cash(ledger, bus) == 30


async def test_accounts_are_known_once_their_batch_commits(nc, ledger):
    # Together the two payments take the cash account past int64: their batch rolls back,
    # with the customers' accounts it created; written alone, the first creates its
    # customer's account again (an account known from the rolled-back batch would not
    # exist) and the second is refused.
    bus = Bus(nc)
    accounts = KnownAccounts()
    recorder = JournalRecorder(SimpleNamespace(pool=ledger.pool), accounts)
    half = INT64_MAX // 2 + 1
    outcomes = await asyncio.gather(*(
        recorder.record(Recording(scope(bus.org_id), journal.payment(p))) for p in (
            payment("pi_first", half, "cust_first"), payment("pi_second", half, "cust_second"))),
        return_exceptions=True)
    (entry, replayed), refused = outcomes
    assert entry.payment_intent_id == "pi_first" and not replayed
    assert isinstance(refused, Failure)
    assert await cash(ledger, bus) == half
    known = {name for org, _, name in accounts.view() if org == bus.org_id}
    assert known == {journal.CASH, journal.customer_account("cust_first")}  # committed
    # Known accounts are posted to without being looked up.
    entry, _ = await recorder.record(Recording(scope(bus.org_id), journal.payment(
        payment("pi_third", 5, "cust_first"))))
    assert await cash(ledger, bus) == half + 5


# ---- invoicing's wallet withdrawals: what is available, up to the amount ----------------


def wallet(user: str, amount: int) -> WithdrawParams:
    return WithdrawParams(user=user, amount=amount, notes="Invoice payment")


async def withdrawn_of(ledger, bus: Bus, user: str) -> list[int]:
    return [r["amount"] for r in await ledger.pool.fetch(
        "select amount from ledger.transactions where org_id = $1 and user_id = $2"
        " and type = 'withdraw' order by amount", bus.org_id, user)]


async def test_withdrawals_sent_together_take_what_is_available_once(nc, ledger):
    bus, user = Bus(nc), "acme/wallet"
    await bus.ok(DEPOSIT_CREATE.subject, DepositParams(user=user, amount=1000))
    keys = [f"invoice:in_{n}:a1:wallet" for n in range(4)]
    first = await asyncio.gather(*(bus.ask(WITHDRAW_AVAILABLE.subject, wallet(user, 300), k)
                                   for k in keys))
    # Three invoices take what they ask, the fourth what was left.
    assert sorted(r["result"]["amount"] for r in first) == [100, 300, 300, 300]
    # Asked again (a resumed collection): the same answers, nothing withdrawn twice; a new
    # key finds the wallet empty.
    again = await asyncio.gather(*(bus.ask(WITHDRAW_AVAILABLE.subject, wallet(user, 300), k)
                                   for k in keys))
    assert [r["result"] for r in again] == [r["result"] for r in first]
    assert all(r["replayed"] for r in again)
    assert await bus.error(WITHDRAW_AVAILABLE.subject, wallet(user, 300), "k-empty") == (
        402, "insufficient balance: have 0 cents, need 300 cents")
    assert await withdrawn_of(ledger, bus, user) == [100, 300, 300, 300]
    assert (await bus.ok(BALANCE_GET.subject, BalanceQuery(user=user)))["balance"] == 0


async def test_a_withdrawal_sent_twice_in_one_batch_moves_money_once(nc, ledger):
    bus, user = Bus(nc), "acme/wallet-twice"
    await bus.ok(DEPOSIT_CREATE.subject, DepositParams(user=user, amount=1000))
    replies = await asyncio.gather(*(bus.ok(WITHDRAW_AVAILABLE.subject, wallet(user, 400), k)
                                     for k in ("k1", "k1", "k2")))
    assert replies[0] == replies[1]
    assert await withdrawn_of(ledger, bus, user) == [400, 400]


async def test_a_withdrawal_needs_a_key_and_the_platform(nc, ledger):
    bus, user = Bus(nc), "acme/wallet-rules"
    await bus.ok(DEPOSIT_CREATE.subject, DepositParams(user=user, amount=1000))
    assert (await bus.error(WITHDRAW_AVAILABLE.subject, wallet(user, 100)))[0] == 400
    customer = Actor(kind="api_key", role="user", user_id=user)
    assert (await bus.error(WITHDRAW_AVAILABLE.subject, wallet(user, 100), "k",
                            actor=customer))[0] == 403
    assert await withdrawn_of(ledger, bus, user) == []


async def test_a_withdrawal_takes_expiring_money_soonest_first_and_the_books_verify(
        nc, ledger):
    bus, user = Bus(nc), "acme/wallet-expiring"
    await bus.ok(DEPOSIT_CREATE.subject, DepositParams(user=user, amount=500, expiresIn=30))
    await bus.ok(DEPOSIT_CREATE.subject, DepositParams(user=user, amount=500))
    taken = await bus.ok(WITHDRAW_AVAILABLE.subject, wallet(user, 700), "k-expiring")
    assert taken["amount"] == 700
    remaining, expiring = await ledger.pool.fetchrow(
        "select (select sum(remaining) from ledger.lots where org_id = $1 and user_id = $2),"
        " (select expiring from ledger.balances where org_id = $1 and user_id = $2)",
        bus.org_id, user)
    assert remaining == expiring == 0  # the expiring 500 went first
    async with ledger.pool.acquire() as conn:
        assert [r for r in await store.verify(conn) if r["user_id"] == user] == []
        assert [lot for account, lot in await store.verify_lots(conn)
                if account[2] == user] == []


async def test_withdrawals_committed_before_a_failure_are_not_withdrawn_again(nc, ledger):
    faulty = _CommitsThenFails(ledger.pool)
    withdrawer = AvailableWithdrawer(SimpleNamespace(pool=faulty, keys=ledger.keys))
    bus, user = Bus(nc), "acme/wallet-lost-ack"
    await bus.ok(DEPOSIT_CREATE.subject, DepositParams(user=user, amount=1000))
    replies = await asyncio.gather(*(
        withdrawer.withdraw(withdrawal(scope(bus.org_id, key=k), wallet(user, 300)))
        for k in ("k1", "k2")))
    assert faulty.faults == 0  # the commit went through, then the connection "failed"
    assert [msgspec.json.decode(r)["result"]["amount"] for r in replies] == [300, 300]
    assert await withdrawn_of(ledger, bus, user) == [300, 300]
