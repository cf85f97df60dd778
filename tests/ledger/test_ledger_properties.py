"""Property-based tests of the ledger's money invariants over random operation sequences,
run against the real database through the same store functions the handlers use."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.errors import Failure
from contracts.ledger import DepositParams, RefundParams, UsageRecordParams, WithdrawParams
from services.ledger.balances import domain, store
from services.runtime import db

ORG = "org_properties"

operations = st.lists(st.one_of(
    st.tuples(st.just("deposit"), st.integers(1, 1000)),
    st.tuples(st.just("expiring_deposit"), st.integers(1, 1000)),
    st.tuples(st.just("usage"), st.integers(1, 700)),
    st.tuples(st.just("withdraw"), st.integers(1, 700)),
    st.tuples(st.just("refund"), st.integers(1, 300)),
    st.tuples(st.just("expire"), st.just(0)),
), min_size=1, max_size=25)


async def _apply(conn: asyncpg.Connection, user: str, ops: list[tuple[str, int]]) -> None:
    usage_ids: list[str] = []
    now = datetime.now(UTC)
    for op, amount in ops:
        try:
            async with conn.transaction():
                if op == "deposit":
                    await store.post(conn, ORG, False, domain.deposit(
                        DepositParams(user=user, amount=amount), now))
                elif op == "expiring_deposit":
                    await store.post(conn, ORG, False, domain.deposit(
                        DepositParams(user=user, amount=amount, expiresIn=1), now))
                elif op == "usage":
                    tx_id, _ = await store.post(conn, ORG, False, domain.usage_debit(
                        UsageRecordParams(user=user, amount=amount)))
                    usage_ids.append(tx_id)
                elif op == "withdraw":
                    await store.post_funded(conn, ORG, False, domain.withdrawal(
                        WithdrawParams(user=user, amount=amount)))
                elif op == "refund" and usage_ids:
                    params = RefundParams(user=user, amount=amount,
                                          originalTransactionId=usage_ids[-1])
                    original = await store.refundable(conn, ORG, False, usage_ids[-1])
                    await store.post(conn, ORG, False, domain.refund(params, original))
                elif op == "expire":
                    # Expired as of this transaction, after every debit so far (as a real
                    # expiry is), so that `verify_lots` can replay the history.
                    await conn.execute(
                        "update ledger.lots set expires_at = now()"
                        " where org_id = $1 and user_id = $2 and expires_at > now()",
                        ORG, user)
                    await store.lock_balance(conn, ORG, False, user, "usd")
                    await store.lapse_due_lots(conn, ORG, False, user, "usd")
        except Failure as refused:
            # Refusals are business outcomes (402 no funds, 409 refund too large), not bugs.
            assert refused.error.status in (402, 409), refused.error
        await _check(conn, user)
    # Replaying the entries gives back every lot's unspent money (`billing ledger verify`).
    assert [lot for account, lot in await store.verify_lots(conn) if account[2] == user] == []


async def _check(conn: asyncpg.Connection, user: str) -> None:
    stored = await conn.fetchrow(
        "select balance, expiring from ledger.balances where org_id = $1 and user_id = $2",
        ORG, user)
    if stored is None:
        return
    computed = await conn.fetchval(
        "select coalesce(sum(case when credit_account = 'user:' || user_id then amount"
        " else -amount end), 0)::bigint from ledger.transactions"
        " where org_id = $1 and user_id = $2", ORG, user)
    open_lots = await conn.fetchval(
        "select coalesce(sum(remaining), 0)::bigint from ledger.lots"
        " where org_id = $1 and user_id = $2", ORG, user)
    platform_side = await conn.fetchval(
        "select coalesce(sum(case when debit_account = 'user:' || user_id then amount"
        " else -amount end), 0)::bigint from ledger.transactions"
        " where org_id = $1 and user_id = $2", ORG, user)
    assert stored["balance"] == computed  # the stored balance is the entries' sum
    assert computed + platform_side == 0  # the platform's side mirrors it: zero-sum
    assert stored["expiring"] == open_lots
    assert open_lots <= max(stored["balance"], 0)  # only money still held can lapse


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_every_operation_sequence_keeps_the_books_balanced(platform, database_url, ops):
    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        await db.init_connection(conn)
        try:
            await _apply(conn, f"prop/{secrets.token_hex(6)}", ops)
        finally:
            await conn.close()

    asyncio.run(run())


@settings(max_examples=200, deadline=None)
@given(amount=st.integers(1, 10_000), balance_after=st.integers(-20_000, 20_000))
def test_a_lot_never_holds_more_than_the_deposit_or_the_balance(amount, balance_after):
    remaining = domain.lot_remaining(amount, balance_after)
    assert 0 <= remaining <= amount
    assert remaining <= max(balance_after, 0)
