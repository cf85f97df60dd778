"""Issue 8, ledger money at the edges: a lot is sized after due lots lapse (item 1) and
`billing ledger verify` replays lots; system tags are the ledger's own (item 3); balances
and the sums endpoints return stay within int64 (item 11); overflows answer 400, not 500."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from contracts import journal as endpoints
from services.ledger.balances import domain, store
from services.ledger.balances.handlers import lapse_expired_deposits
from tests.support import (
    add_payment_method,
    balance,
    get,
    ledger_verify,
    new_user,
    post,
    service,
)

INT64_MAX = 2**63 - 1


async def transactions(http, org, user) -> list[dict]:
    status, body, _ = await get(http, "/transactions", org.auth(), user=user)
    assert status == 200, body
    return body["transactions"]


def refused(status: int, body: dict, param: str) -> bool:
    return status == 400 and body["error"]["param"] == param


async def expire_soonest(platform, user) -> None:
    """Bring the user's lots forward in time, together, until the soonest-expiring one is
    due now: the order they are consumed in stays, and so does every debit's view of them,
    so the history stays one the ledger could have written (`verify_lots` replays it)."""
    await platform.gateway.pool.execute("""
        with unexpired as (select * from ledger.lots where user_id = $1 and expires_at > now())
        update ledger.lots l
        set expires_at = l.expires_at - (select min(expires_at) - now() from unexpired)
        from unexpired u where l.org_id = u.org_id and l.livemode = u.livemode and l.id = u.id
        """, user)


async def sweep(platform) -> None:
    await lapse_expired_deposits(service(platform, "ledger"))


async def lot_excesses(platform, user) -> list[domain.LotExcess]:
    async with platform.gateway.pool.acquire() as conn:
        return [lot for account, lot in await store.verify_lots(conn) if account[2] == user]


# ---- item 1: spent money lapses once ---------------------------------------------------


async def test_a_deposit_paying_debt_after_an_expiry_does_not_lapse_twice(http, org, platform):
    user = new_user()
    await post(http, "/deposit", {"user": user, "amount": 100, "expiresIn": 7}, org.auth())
    await expire_soonest(platform, user)  # expires unspent; the sweeper has not run yet
    status, _, _ = await post(http, "/usage", {"user": user, "amount": 100,
                                               "requestId": secrets.token_hex(4)}, org.auth())
    assert status == 201
    assert await balance(http, org, user) == -100
    # The customer pays the debt with a new expiring deposit: all of it went to the debt.
    status, _, _ = await post(http, "/deposit", {"user": user, "amount": 100, "expiresIn": 7},
                              org.auth())
    assert status == 201
    assert await balance(http, org, user) == 0
    await sweep(platform)
    assert await balance(http, org, user) == 0
    await expire_soonest(platform, user)
    await sweep(platform)
    assert await balance(http, org, user) == 0
    lapsed = [t["amount"] for t in await transactions(http, org, user) if t.get("tags") == "expiry"]
    assert lapsed == [100]  # the first lot's 100, once
    assert await lot_excesses(platform, user) == []


async def test_a_starter_credit_after_an_expiry_is_sized_without_it(http, org, platform):
    user = new_user()
    await add_payment_method(http, org, user)
    await post(http, "/deposit", {"user": user, "amount": 300, "expiresIn": 7}, org.auth())
    await expire_soonest(platform, user)
    await post(http, "/usage", {"user": user, "amount": 300}, org.auth())
    status, _, _ = await post(http, "/credit", {"user": user}, org.auth())
    assert status == 201
    # The 300 lapsed first (-300), the 500 paid it off: 200 left, and that is what may lapse.
    assert await balance(http, org, user) == 200
    await expire_soonest(platform, user)
    await sweep(platform)
    assert await balance(http, org, user) == 0
    assert await lot_excesses(platform, user) == []


def test_the_lot_replay_sees_the_lot_sized_from_an_expired_balance():
    """The issue's sequence as the unfixed ledger stored it: verify reports the new lot."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    day = timedelta(days=1)
    history = [
        domain.LotEntry("A", t0, 100, lot_expires_at=t0 + day, lot_remaining=0),
        domain.LotEntry("use", t0 + 2 * day, -100),  # A expired, not consumed
        domain.LotEntry("B", t0 + 3 * day, 100, lot_expires_at=t0 + 9 * day,
                        lot_remaining=100),  # sized while A still counted
        domain.LotEntry("lapseA", t0 + 4 * day, -100, lapses="A"),
    ]
    assert domain.lot_excess(history) == [domain.LotExcess("B", unspent=100, expected=0)]
    # The same history as the fixed ledger stores it: A lapses before B opens, B holds 0.
    fixed = [history[0], history[1],
             domain.LotEntry("lapseA", t0 + 3 * day, -100, lapses="A"),
             domain.LotEntry("B", t0 + 3 * day, 100, lot_expires_at=t0 + 9 * day)]
    assert domain.lot_excess(fixed) == []


def test_the_lot_replay_consumes_soonest_expiring_first_among_unexpired():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    day = timedelta(days=1)

    def history(late_remaining: int, soon_remaining: int) -> list[domain.LotEntry]:
        return [
            domain.LotEntry("late", t0, 100, lot_expires_at=t0 + 9 * day,
                            lot_remaining=late_remaining),
            domain.LotEntry("soon", t0, 100, lot_expires_at=t0 + 5 * day,
                            lot_remaining=soon_remaining),
            domain.LotEntry("w1", t0 + day, -150),  # soon 100, then late 50
            domain.LotEntry("w2", t0 + 6 * day, -10),  # soon has expired: late 10
        ]

    assert domain.lot_excess(history(40, 0)) == []
    assert domain.lot_excess(history(50, 0)) == [domain.LotExcess("late", 50, 40)]
    assert domain.lot_excess(history(40, 1)) == [domain.LotExcess("soon", 1, 0)]


async def _healthy_history(http, org, platform, user) -> None:
    """Deposits with and without expiry, usage, a withdrawal, a refund, an expiry swept, a
    deposit into debt."""
    auth = org.auth()
    await post(http, "/deposit", {"user": user, "amount": 1000}, auth)
    await post(http, "/deposit", {"user": user, "amount": 500, "expiresIn": 30}, auth)
    await post(http, "/deposit", {"user": user, "amount": 300, "expiresIn": 7}, auth)
    _, used, _ = await post(http, "/usage", {"user": user, "amount": 100}, auth)  # the 7-day lot
    await post(http, "/withdraw", {"user": user, "amount": 50}, auth)  # the 7-day lot
    await post(http, "/refund", {"user": user, "amount": 50,
                                 "originalTransactionId": used["transactionId"]}, auth)
    await expire_soonest(platform, user)  # the 7-day lot's 150 is due
    await sweep(platform)
    await post(http, "/usage", {"user": user, "amount": 2000}, auth)  # the 30-day lot, then debt
    await post(http, "/deposit", {"user": user, "amount": 600, "expiresIn": 3}, auth)


async def test_verify_reports_a_lot_holding_more_than_its_entries_allow(
        http, org, platform, database_url):
    user = new_user()
    await _healthy_history(http, org, platform, user)
    assert await balance(http, org, user) == 1800 - 100 - 50 + 50 - 150 - 2000 + 600
    assert await lot_excesses(platform, user) == []
    verify = partial(ledger_verify, database_url)

    clean = await asyncio.to_thread(verify)
    assert f"user={user}" not in clean.stdout, clean.stdout
    # The lot and the account's expiring total bumped together: the balance check agrees,
    # only the replay can tell the lot holds money its entries spent.
    pool = platform.gateway.pool
    lot_id = await pool.fetchval(
        "select id from ledger.lots where user_id = $1 order by expires_at desc limit 1", user)
    bump = """
        with lot as (update ledger.lots set remaining = remaining + $2 where id = $1
                     returning user_id, currency, org_id, livemode)
        update ledger.balances b set expiring = expiring + $2 from lot
        where (b.org_id, b.livemode, b.user_id, b.currency)
            = (lot.org_id, lot.livemode, lot.user_id, lot.currency)"""
    await pool.execute(bump, lot_id, 30)
    try:
        tampered = await asyncio.to_thread(verify)
        assert tampered.returncode == 1
        lines = [line for line in tampered.stdout.splitlines() if f"user={user}" in line]
        assert len(lines) == 1 and lines[0].startswith("MISMATCH lot "), tampered.stdout
        assert lines[0].endswith(f"lot={lot_id} unspent stored=30 computed=0")
    finally:
        await pool.execute(bump, lot_id, -30)


# ---- item 3: system tags are the ledger's own ------------------------------------------


async def test_an_expiry_tag_cannot_skip_lot_consumption(http, org):
    user = new_user()
    await post(http, "/deposit", {"user": user, "amount": 100, "expiresIn": 7}, org.auth())
    status, body, _ = await post(http, "/withdraw", {"user": user, "amount": 100,
                                                     "tags": "expiry"}, org.auth())
    assert refused(status, body, "tags"), body
    status, body, _ = await post(http, "/deposit", {"user": user, "amount": 1, "tags": " Expiry"},
                                 org.auth())
    assert refused(status, body, "tags"), body
    assert await balance(http, org, user) == 100
    assert len(await transactions(http, org, user)) == 1


async def test_a_starter_credit_tag_cannot_block_the_users_own_claim(http, org):
    user = new_user()
    await add_payment_method(http, org, user)
    for _ in range(2):  # the second used to hit the unique index: 500
        status, body, _ = await post(http, "/deposit", {"user": user, "amount": 1,
                                                        "tags": "starter-credit"}, org.auth())
        assert refused(status, body, "tags"), body
    status, body, _ = await post(http, "/credit", {"user": user}, org.auth())
    assert status == 201 and body["amount"] == 500
    assert await balance(http, org, user) == 500


async def test_an_api_usage_tag_cannot_make_a_withdrawal_refundable(http, org):
    user = new_user()
    await post(http, "/deposit", {"user": user, "amount": 100}, org.auth())
    status, body, _ = await post(http, "/withdraw", {"user": user, "amount": 100,
                                                     "tags": "api-usage"}, org.auth())
    assert refused(status, body, "tags"), body
    for tags in ("refund", "api-usage"):
        status, body, _ = await post(http, "/deposit", {"user": user, "amount": 1, "tags": tags},
                                     org.auth())
        assert refused(status, body, "tags"), body
    # Client tags of its own are kept as they are.
    status, body, _ = await post(http, "/withdraw", {"user": user, "amount": 10,
                                                     "tags": "payout"}, org.auth())
    assert status == 201 and body["tags"] == "payout"
    status, body, _ = await post(http, "/refund", {"user": user, "amount": 10,
                                                   "originalTransactionId": body["transactionId"]},
                                 org.auth())
    assert status == 404
    assert await balance(http, org, user) == 90


# ---- item 11 and the overflows: int64 everywhere, 400 not 500 --------------------------


async def test_credit_grants_never_sum_past_int64(http, org):
    user = new_user()
    replies = [await post(http, "/credit-grants", {"userId": user, "amountCents": INT64_MAX},
                          org.auth()) for _ in range(3)]
    assert replies[0][0] == 201
    for status, body, _ in replies[1:]:
        assert refused(status, body, "amountCents"), body
    status, body, _ = await post(http, "/credit-grants", {"userId": user, "amountCents": 1,
                                                          "currency": "eur"}, org.auth())
    assert status == 201  # another currency is another balance
    status, body, _ = await get(http, "/credit-balance", org.auth(), userId=user)
    assert status == 200
    assert body["balances"] == [{"currency": "eur", "available": 1},
                                {"currency": "usd", "available": INT64_MAX}]
    status, body, _ = await get(http, "/credit-balance/breakdown", org.auth(), userId=user)
    assert status == 200 and body["total"] == {"cents": INT64_MAX}
    status, body, _ = await get(http, "/credit-grants", org.auth(), userId=user)
    assert body["count"] == 2


async def test_concurrent_credit_grants_never_sum_past_int64(http, org):
    user = new_user()
    replies = await asyncio.gather(*[
        post(http, "/credit-grants", {"userId": user, "amountCents": INT64_MAX // 2 + 1},
             org.auth()) for _ in range(4)])
    assert sorted(status for status, _, _ in replies) == [201, 400, 400, 400]
    status, body, _ = await get(http, "/credit-balance", org.auth(), userId=user)
    assert body["balances"] == [{"currency": "usd", "available": INT64_MAX // 2 + 1}]


async def test_a_deposit_past_int64_is_refused_and_writes_nothing(http, org):
    user = new_user()
    status, _, _ = await post(http, "/deposit", {"user": user, "amount": INT64_MAX}, org.auth())
    assert status == 201
    for body in ({"user": user, "amount": 1}, {"user": user, "amount": 1, "expiresIn": 7}):
        status, reply, _ = await post(http, "/deposit", body, org.auth())
        assert refused(status, reply, "amount"), reply
    assert await balance(http, org, user) == INT64_MAX
    assert len(await transactions(http, org, user)) == 1


@pytest.mark.parametrize("days", [3_000_000, 2**62, INT64_MAX])
async def test_a_huge_expires_in_is_refused_and_writes_nothing(http, org, days):
    user = new_user()
    status, body, _ = await post(http, "/deposit", {"user": user, "amount": 5, "expiresIn": days},
                                 org.auth())
    assert refused(status, body, "expiresIn"), body
    assert await balance(http, org, user) == 0
    assert await transactions(http, org, user) == []


async def test_the_expiring_total_never_overflows(http, org, platform):
    """An expired lot of 2^63-1 still unswept, spent debt, and a new expiring 2^63-1 used to
    overflow `expiring` (500); the expired lot now lapses first, so the new lot holds 0."""
    user = new_user()
    status, _, _ = await post(http, "/deposit", {"user": user, "amount": INT64_MAX,
                                                 "expiresIn": 7}, org.auth())
    assert status == 201
    await expire_soonest(platform, user)
    status, _, _ = await post(http, "/usage", {"user": user, "amount": INT64_MAX}, org.auth())
    assert status == 201
    status, body, _ = await post(http, "/deposit", {"user": user, "amount": INT64_MAX,
                                                    "expiresIn": 7}, org.auth())
    assert status == 201, body
    assert await balance(http, org, user) == 0
    assert await lot_excesses(platform, user) == []


async def test_journal_balances_never_pass_int64(nc):
    """The journal is reached over the bus (the payments service's side), as in its tests."""
    from tests.ledger.test_journal import books

    t = await books(nc)
    await t.post((t.cash, INT64_MAX), (t.cust, -INT64_MAX))
    # Past int64 across entries (the stored balance) and within one entry (two legs).
    for legs in ([(t.cash, 1), (t.cust, -1)],
                 [(t.fees, INT64_MAX), (t.fees, 1), (t.cash, -INT64_MAX), (t.cash, -1)]):
        reply = await t.ask(endpoints.ENTRY_POST.subject, t.entry(*legs))
        assert reply["error"]["status"] == 400, reply
        assert reply["error"]["param"] == "amount"
    assert await t.posted(t.cash) == INT64_MAX
    assert await t.posted(t.fees) == 0
    assert len(await t.entries()) == 1


async def test_usage_past_int64_in_a_month_is_still_debited(http, org):
    """The month's spend (spend alerts) and the day's usage (the free tier's allowance)
    saturate at int64 instead of overflowing: the debit after them used to be refused, and
    the tier read failed."""
    user = new_user()
    await post(http, "/deposit", {"user": user, "amount": INT64_MAX}, org.auth())
    status, _, _ = await post(http, "/usage", {"user": user, "amount": INT64_MAX}, org.auth())
    assert status == 201
    await post(http, "/deposit", {"user": user, "amount": INT64_MAX}, org.auth())
    status, body, _ = await post(http, "/usage", {"user": user, "amount": 1}, org.auth())
    assert status == 201, body
    assert await balance(http, org, user) == INT64_MAX - 1
    status, body, _ = await get(http, "/tier", org.auth(), user=user)
    assert status == 200, body
    assert body["balance"] == {"currency": "usd", "prepaidAvailable": INT64_MAX - 1,
                               "dailyRemaining": 0, "effectiveAvailable": INT64_MAX - 1}


async def test_tier_effective_balance_stays_within_int64(http, org):
    """Prepaid plus the free tier's daily allowance: at the int64 maximum it stays there."""
    user = new_user()
    await post(http, "/deposit", {"user": user, "amount": INT64_MAX}, org.auth())
    status, body, _ = await get(http, "/tier", org.auth(), user=user)
    assert status == 200, body
    assert body["balance"]["prepaidAvailable"] == INT64_MAX
    assert body["balance"]["dailyRemaining"] > 0
    assert body["balance"]["effectiveAvailable"] == INT64_MAX
