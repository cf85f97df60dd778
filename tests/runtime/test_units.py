"""Pure pieces, tested without I/O (and the migration lock, against the real database)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from contracts import Actor
from contracts.errors import Failure
from contracts.ids import ALPHABET, base62, new_id, rfc3339, rfc3339_seconds
from contracts.ledger import DepositParams, UsageRecordParams
from contracts.limits import Page
from services.gateway.auth import provisionable
from services.gateway.http import ApiError, decode_body
from services.gateway.pipeline import pin_user as _pin_user
from services.gateway.routes import ROUTES, ZAP_METHODS
from services.ledger.balances import domain
from services.runtime import db
from services.runtime.batching import SharedLoads

NOW = datetime(2026, 4, 19, 10, 0, tzinfo=UTC)


def test_deposit_movement_credits_the_user_from_the_platform():
    m = domain.deposit(DepositParams(user="hanzo/a", amount=500, currency=" USD ",
                                     expiresIn=30), NOW)
    assert (m.debit, m.credit, m.currency) == ("platform:deposits", "user:hanzo/a", "usd")
    assert m.balance_delta == 500 and m.notes == "Deposit: 500 cents usd"
    assert m.expires_at == NOW + timedelta(days=30)
    assert domain.deposit(DepositParams(user="a", amount=1, expiresIn=-1), NOW).expires_at is None


@pytest.mark.parametrize(("params", "message"), [
    (DepositParams(amount=5), "user is required"),
    (DepositParams(user="a", amount=0), "amount must be positive"),
    (DepositParams(user="a", amount=5, currency="u"), "invalid currency"),
])
def test_deposit_validation(params, message):
    with pytest.raises(Failure) as refused:
        domain.deposit(params, NOW)
    assert refused.value.error.message == message and refused.value.error.status == 400


def test_usage_debit_moves_money_to_usage_revenue():
    m = domain.usage_debit(UsageRecordParams(user="a", amount=25, model="m", totalTokens=9))
    assert (m.debit, m.credit, m.tags) == ("user:a", "platform:usage", "api-usage")
    assert m.balance_delta == -25 and m.notes == "API usage: m (9 tokens)"
    assert domain.usage_debit(UsageRecordParams(user="a", amount=0)) is None
    assert domain.usage_debit(UsageRecordParams(user="a", amount=-3)) is None


def test_available_never_goes_below_zero():
    assert domain.available(100, 300) == 0
    assert domain.available(1000, 100) == 900
    assert domain.available(-40, 0) == 0


def test_minting_needs_the_mint_right():
    with pytest.raises(Failure) as refused:
        domain.require_mint(Actor(kind="iam", role="admin"))
    assert refused.value.error.status == 403
    domain.require_mint(Actor(kind="api_key", role="admin", may_mint=True))


def test_paging_is_lenient_and_capped():
    page = Page(default=100, maximum=1000)
    assert page.apply(0, -5) == (100, 0)
    assert page.apply(5000, 3) == (1000, 3)
    assert page.apply(2, 1) == (2, 1)


def test_ids_are_22_base62_characters_and_time_ordered():
    first, second = new_id(), new_id()
    assert len(first) == 22 and first.isalnum() and first != second
    earlier = new_id()
    import time

    time.sleep(0.002)
    assert new_id() > earlier


def test_base62_digits_are_the_lowest_ones_most_significant_first():
    assert [base62(n, w) for n, w in ((0, 3), (61, 1), (62, 2), (3843, 3), (62**5, 5))] == [
        "000", "z", "10", "0zz", "00000"]
    n = 0x0123456789ABCDEF0123456789ABCDEF
    for width in range(23):  # even and odd widths: the same digits one at a time gives
        digits, m = "", n
        for _ in range(width):
            m, r = divmod(m, 62)
            digits = ALPHABET[r] + digits
        assert base62(n, width) == digits


def test_timestamps_render_like_go():
    assert rfc3339(datetime(2026, 4, 19, 10, 0, 0, 123450, tzinfo=UTC)) == (
        "2026-04-19T10:00:00.12345Z")
    assert rfc3339(datetime(2026, 4, 19, 10, 0, tzinfo=UTC)) == "2026-04-19T10:00:00Z"
    assert rfc3339(None) == "0001-01-01T00:00:00Z"
    assert rfc3339_seconds(datetime(2026, 4, 19, 10, 0, 0, 999, tzinfo=UTC)) == (
        "2026-04-19T10:00:00Z")


def test_body_keys_fold_case_insensitively_only_when_needed():
    assert decode_body(DepositParams, b'{"User":"X","AMOUNT":5,"extra":1}') == DepositParams(
        user="X", amount=5)
    assert decode_body(DepositParams, b"null") == DepositParams()
    for raw in (b"", b"[]", b'{"amount": "5"}', b'{"amount": 1.0}', b"{"):
        with pytest.raises(ApiError):
            decode_body(DepositParams, raw)


def test_end_users_are_pinned_to_themselves():
    route = next(r for r in ROUTES if r.path == "/billing/transactions")
    from contracts.ledger import TransactionListParams

    user = Actor(kind="iam", role="user", user_id="acme/alice")
    assert _pin_user(route, TransactionListParams(), user).user == "acme/alice"
    assert _pin_user(route, TransactionListParams(user=" ACME/Alice "), user).user == (
        "acme/alice")
    with pytest.raises(ApiError) as refused:
        _pin_user(route, TransactionListParams(user="acme/bob"), user)
    assert refused.value.status == 403
    admin = Actor(kind="api_key", role="admin")
    assert _pin_user(route, TransactionListParams(user="Acme/Bob"), admin).user == "acme/bob"
    assert _pin_user(route, TransactionListParams(), admin).user == ""


def test_zap_methods_reuse_rest_routes():
    assert ZAP_METHODS["billing.deposit"].access == "mint"
    assert {r.endpoint for r in ZAP_METHODS.values()} <= {r.endpoint for r in ROUTES}


@pytest.mark.parametrize(("name", "ok"), [
    ("acme", True), ("acme-corp.eu_1", True), ("sk_live_abc", False), ("pk_test", False),
    ("hk-123", False), ("a b", False), ("", False), ("x" * 64, False),
    ("eyJhbGciOi.eyJzdWIi.sig", False),
])
def test_only_plain_org_names_are_provisioned(name, ok):
    assert provisionable(name) is ok


async def test_replicas_migrating_at_once_apply_each_file_once(database_url, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_counter.sql").write_text(
        "create table racecheck.counter (n int); insert into racecheck.counter values (1);")
    conns = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*[db.migrate(c, "racecheck", folder) for c in conns])
        applied = [v for r in results for v in r]
        assert applied.count("racecheck/001_counter") == 1
        assert await conns[0].fetchval("select count(*) from racecheck.counter") == 1
    finally:
        for c in conns:
            await c.close()


# ---- micro-batching -----------------------------------------------------------------------


async def test_a_serial_batcher_runs_one_batch_at_a_time_and_queues_the_rest():
    from services.runtime.batching import MicroBatcher

    batches: list[list[int]] = []
    release = asyncio.Event()

    async def run(keys: list[int]) -> list[int]:
        batches.append(keys)
        await release.wait()
        return [k * 10 for k in keys]

    batcher = MicroBatcher(run, serial=True)
    first = [asyncio.ensure_future(batcher(k)) for k in (1, 2)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(batcher(k)) for k in (3, 4, 5)]
    await asyncio.sleep(0.01)
    assert batches == [[1, 2]]  # the others wait for the batch in flight
    release.set()
    assert await asyncio.gather(*first, *later) == [10, 20, 30, 40, 50]
    assert batches == [[1, 2], [3, 4, 5]]


async def test_one_bad_item_fails_alone_and_its_batch_is_written_again_without_it():
    from services.runtime.batching import MicroBatcher, each_alone_on_failure

    written: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        if 13 in items:
            raise Failure("invalid_request", 400, "unlucky")
        written.append(items)
        return items

    batcher = MicroBatcher(each_alone_on_failure(write))
    results = await asyncio.gather(*(batcher(k) for k in (1, 13, 2)), return_exceptions=True)
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], Failure) and results[1].error.message == "unlucky"
    assert written == [[1], [2]]
    # Alone in its batch, the failure is its own.
    with pytest.raises(Failure):
        await batcher(13)


async def test_concurrent_misses_share_one_load_and_one_leaving_stops_nobody():
    loads = SharedLoads()
    started, release = [], asyncio.Event()

    async def load(value: str) -> str:
        started.append(value)
        await release.wait()
        return value

    first = asyncio.create_task(loads("k", lambda: load("a")))
    leaving = asyncio.create_task(loads("k", lambda: load("b")))
    other_key = asyncio.create_task(loads("j", lambda: load("c")))
    await asyncio.sleep(0)
    leaving.cancel()
    release.set()
    assert (await first, await other_key) == ("a", "c")
    assert started == ["a", "c"]  # the second asker of "k" waited for the first's load
    assert await loads("k", lambda: load("d")) == "d"  # ended: the next miss loads again


async def test_a_shared_load_that_fails_fails_every_asker_and_is_not_kept():
    loads = SharedLoads()

    async def unknown() -> str:
        await asyncio.sleep(0)
        raise LookupError("no such organization")

    results = await asyncio.gather(loads("k", unknown), loads("k", unknown),
                                   return_exceptions=True)
    assert [type(r) for r in results] == [LookupError, LookupError]
    assert await loads("k", lambda: asyncio.sleep(0, "found")) == "found"
