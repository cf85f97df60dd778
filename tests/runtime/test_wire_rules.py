"""Shared wire rules (issue 9, item 4): a user id means the same thing to every ledger
endpoint whoever calls — the gateway (which canonicalises HTTP callers) or another service
on the bus — and a service's refusal reaches a bus caller as the same `Failure`."""

from __future__ import annotations

import asyncio
import secrets

import msgspec
import pytest

from contracts import Scope
from contracts.alerts import (
    SPEND_ALERT_CREATE,
    SPEND_ALERT_LIST,
    SpendAlertCreateParams,
    SpendAlertListParams,
)
from contracts.common import Params
from contracts.credits import (
    CREDIT_BALANCE_GET,
    CREDIT_GRANT_CREATE,
    CreditBalanceQuery,
    CreditGrantCreateParams,
)
from contracts.endpoint import Endpoint
from contracts.errors import Failure
from contracts.ids import ALPHABET
from contracts.ledger import (
    BALANCE_GET,
    DEPOSIT_CREATE,
    TRANSACTION_LIST,
    USAGE_RECORD,
    BalanceQuery,
    DepositParams,
    TransactionListParams,
    UsageRecordParams,
)
from contracts.rules import currency_of, require_user, user_id
from services.runtime.bus import Service
from services.runtime.config import Settings
from services.runtime.service import Router, ServiceSpec
from tests import support
from tests.support import bus_service


@pytest.fixture
async def bus(platform, settings):
    """A bus-only service (payments, soon): asks the ledger directly, no gateway between."""
    async with bus_service(settings) as caller:
        yield caller.ctx


def _scope(org_id: str) -> Scope:
    return support.scope(org_id, request_id="r1")


async def test_bus_callers_get_the_same_account_for_any_spelling_of_a_user(bus):
    scope = _scope(f"org_{secrets.token_hex(4)}")
    deposit = await bus.ask(DEPOSIT_CREATE, scope, DepositParams(user=" Hanzo/Alice ",
                                                                 amount=500))
    assert deposit.user == "hanzo/alice"
    await bus.ask(USAGE_RECORD, scope, UsageRecordParams(user="HANZO/alice", amount=20))
    for spelling in ("hanzo/alice", "Hanzo/Alice", " HANZO/ALICE"):
        balance = await bus.ask(BALANCE_GET, scope, BalanceQuery(user=spelling))
        assert (balance.user, balance.balance) == ("hanzo/alice", 480)
        listed = await bus.ask(TRANSACTION_LIST, scope, TransactionListParams(user=spelling))
        assert listed.count == 2 and listed.user == "hanzo/alice"


async def test_grants_and_alerts_canonicalise_like_deposits(bus):
    scope = _scope(f"org_{secrets.token_hex(4)}")
    grant = await bus.ask(CREDIT_GRANT_CREATE, scope, CreditGrantCreateParams(
        userId="Hanzo/Bob", name="promo", amountCents=300))
    assert grant.userId == "hanzo/bob"
    credit = await bus.ask(CREDIT_BALANCE_GET, scope, CreditBalanceQuery(userId=" HANZO/BOB"))
    assert [(b.currency, b.available) for b in credit.balances] == [("usd", 300)]
    alert = await bus.ask(SPEND_ALERT_CREATE, scope, SpendAlertCreateParams(
        userId="Hanzo/Bob", title="t", threshold=100))
    assert alert.userId == "hanzo/bob"
    alerts = await bus.ask(SPEND_ALERT_LIST, scope, SpendAlertListParams(user="hanzo/bob"))
    assert [a.id for a in alerts] == [alert.id]


async def test_a_refusal_reaches_a_bus_caller_as_the_same_failure(bus):
    scope = _scope(f"org_{secrets.token_hex(4)}")
    with pytest.raises(Failure) as refused:
        await bus.ask(BALANCE_GET, scope, BalanceQuery(user="  "))
    assert (refused.value.error.status, refused.value.error.message,
            refused.value.error.param) == (400, "user query parameter is required", "user")
    with pytest.raises(Failure) as refused:
        await bus.ask(DEPOSIT_CREATE, scope, DepositParams(user="a", amount=1, currency="$"))
    assert (refused.value.error.status, refused.value.error.param) == (400, "currency")


def test_one_rule_each():
    assert user_id(" Acme/Alice ") == "acme/alice" and user_id("acme/alice") == "acme/alice"
    assert require_user(" X ", "m", "userId") == "x"
    with pytest.raises(Failure) as refused:
        require_user(" ", "userId is required", "userId")
    assert refused.value.error.param == "userId"
    assert currency_of(" EUR ") == "eur" and currency_of("") == "usd"
    assert len(ALPHABET) == 62 and len(set(ALPHABET)) == 62


async def test_batched_asks_are_each_answered_as_if_sent_alone(bus):
    """Asks made together with `batched=True` travel as one message; each caller still gets
    its own result, its own refusal, its own replay under its key."""
    scope = _scope(f"org_{secrets.token_hex(4)}")
    keyed = support.scope(scope.org_id, key=f"k-{secrets.token_hex(4)}")
    first = await bus.ask(DEPOSIT_CREATE, keyed, DepositParams(user="acme/a", amount=100))
    answers = await asyncio.gather(
        bus.ask(DEPOSIT_CREATE, scope, DepositParams(user="acme/b", amount=200), batched=True),
        bus.ask(DEPOSIT_CREATE, scope, DepositParams(user="acme/c", amount=1, currency="$"),
                batched=True),
        bus.ask(DEPOSIT_CREATE, keyed, DepositParams(user="acme/a", amount=100), batched=True),
        bus.ask(BALANCE_GET, scope, BalanceQuery(user="acme/a"), batched=True),
        return_exceptions=True)
    made, refused, replayed, balance = answers
    assert (made.user, made.amount) == ("acme/b", 200)
    assert isinstance(refused, Failure) and refused.error.param == "currency"
    assert replayed.transactionId == first.transactionId  # moved once
    assert (balance.user, balance.balance) == ("acme/a", 100)


class _TextParams(Params):
    size: int = 0


class _Text(msgspec.Struct):
    text: str


async def test_batched_asks_whose_replies_are_too_large_together_are_sent_alone(settings):
    """Each reply fits on the bus, not all of them in one message: each is asked again
    alone, and answered."""
    name = f"test-{secrets.token_hex(3)}"
    text = Endpoint(f"billing.{name}.text.get", _TextParams, _Text)
    router = Router()

    @router.handler(text)
    async def get_text(ctx, scope, p: _TextParams) -> _Text:
        return _Text("x" * p.size)

    answering = Service(ServiceSpec(name, router, None),
                        Settings.from_env({"NATS_URL": settings.nats_url}))
    await answering.start()
    try:
        async with bus_service(settings) as asking:
            size = answering.broker.connection.max_payload * 2 // 3
            scope = _scope(f"org_{secrets.token_hex(4)}")
            replies = await asyncio.gather(*(asking.ctx.ask(
                text, scope, _TextParams(size=size), batched=True) for _ in range(2)))
            assert [len(r.text) for r in replies] == [size, size]
    finally:
        await answering.stop()
