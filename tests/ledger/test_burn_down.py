"""Credit grants and burn-down: the pure domain (ledger.md §2.3, §5, §6.3, §6.7, §8 D and E,
§9.5), property tests of the burn-down plan, and burns on the bus against the real database
(locking, idempotency, isolation by org, mode and currency)."""

from __future__ import annotations

import asyncio
import string
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import Actor
from contracts import credits as endpoints
from contracts.credits import (
    CreditBurnParams,
    CreditGrantCreateParams,
    CreditGrantListParams,
    CreditGrantVoidParams,
)
from services.gateway import store as gateway_store
from services.ledger.credits import domain as credits
from services.ledger.credits.domain import BurnPlan, Grant
from tests import support
from tests.support import refused

NOW = datetime(2026, 4, 19, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def grant(id: str, remaining: int, **kw) -> Grant:
    kw.setdefault("effective_at", NOW - HOUR)
    kw.setdefault("created_at", kw["effective_at"])
    return Grant(id=id, remaining=remaining, amount=max(remaining, 1), **kw)


def remaining_after(grants: list[Grant], plan: BurnPlan) -> dict[str, int]:
    return {g.id: g.remaining for g in credits.apply_burn(grants, plan)}


# ---- §8 D: the grant model ------------------------------------------------------------


@pytest.mark.parametrize(("case", "g", "active"), [
    ("D.1", grant("a", 500, expires_at=NOW + DAY), True),
    ("D.2", grant("a", 500, voided=True), False),
    ("D.3", grant("a", 0), False),
    ("D.4", grant("a", -10), False),
    ("D.5", grant("a", 500, effective_at=NOW + DAY), False),
    ("D.6", grant("a", 500, effective_at=NOW - 2 * DAY, expires_at=NOW - HOUR), False),
    ("D.7", grant("a", 500), True),
    ("D.8", grant("a", 500, effective_at=NOW - timedelta(milliseconds=1)), True),
    ("D.9", grant("a", 0, effective_at=NOW + DAY, expires_at=NOW - HOUR, voided=True), False),
    ("effective exactly now", grant("a", 1, effective_at=NOW), True),
    ("expiring exactly now", grant("a", 1, expires_at=NOW), True),
])
def test_active_predicate(case, g, active):
    assert credits.is_active(g, NOW) is active, case


def test_meter_eligibility():
    # D.10
    assert credits.eligible(grant("a", 1), "any-meter")
    assert credits.eligible(grant("a", 1, eligibility=()), "any-meter")
    # D.11
    assert credits.eligible(grant("a", 1, eligibility=("meter-a", "meter-b", "meter-c")),
                            "meter-b")
    assert not credits.eligible(grant("a", 1, eligibility=("meter-a", "meter-b")), "meter-c")
    # D.12
    assert credits.eligible(grant("a", 1, eligibility=("meter-x",)), "meter-x")
    assert not credits.eligible(grant("a", 1, eligibility=("meter-x",)), "meter-y")
    assert not credits.eligible(grant("a", 1, eligibility=("meter-a",)), "")
    # The burn filter: an empty meter id filters nothing (the reference's burn, kept).
    assert credits.usable_for(grant("a", 1, eligibility=("meter-a",)), "")


# ---- §8 E and §6.3: burn-down ---------------------------------------------------------


def test_e1_priority_first():
    grants = [grant("A", 500, expires_at=NOW + 30 * DAY), grant("B", 1000, priority=1)]
    plan = credits.burn_down(grants, 700, "usd", "", NOW)
    assert plan == BurnPlan(0, (("A", 500), ("B", 200)))
    assert remaining_after(grants, plan) == {"A": 0, "B": 800}
    assert credits.burn_down(grants, 700, "usd", "", NOW).remaining == 0  # preview, §6.3.1


def test_e2_soonest_expiry_first_and_never_expiring_last():
    grants = [grant("E", 300), grant("D", 300, expires_at=NOW + 10 * DAY),
              grant("C", 300, expires_at=NOW + 2 * DAY)]
    plan = credits.burn_down(grants, 450, "usd", "", NOW)
    assert plan.remaining == 0
    assert remaining_after(grants, plan) == {"C": 0, "D": 150, "E": 300}
    plan = credits.burn_down(grants, 1000, "usd", "", NOW)
    assert plan.remaining == 100
    assert remaining_after(grants, plan) == {"C": 0, "D": 0, "E": 0}


def test_e3_meter_scoped_grants():
    grants = [grant("F", 1000, eligibility=("m1",)), grant("G", 200, priority=1)]
    plan = credits.burn_down(grants, 800, "usd", "m2", NOW)
    assert plan.remaining == 600
    assert remaining_after(grants, plan) == {"F": 1000, "G": 0}
    plan = credits.burn_down(grants, 800, "usd", "", NOW)
    assert plan.remaining == 0 and remaining_after(grants, plan) == {"F": 200, "G": 200}
    # §9.5 fixed: a preview for meter m2 applies the same eligibility, so it reports 600
    # (the reference's preview said 0). Without a meter it is 0, as before.
    assert credits.burn_down(grants, 800, "usd", "m2", NOW).remaining == 600
    assert credits.burn_down(grants, 800, "usd", "", NOW).remaining == 0


def test_e4_more_than_available_and_nothing_to_burn():
    grants = [grant("A", 1000), grant("B", 500, priority=1)]
    plan = credits.burn_down(grants, 2000, "usd", "", NOW)
    assert plan.remaining == 500 and remaining_after(grants, plan) == {"A": 0, "B": 0}
    assert credits.burn_down(grants, 0, "usd", "", NOW) == BurnPlan(0, ())
    # The reference returns a negative amount untouched, and burns nothing.
    assert credits.burn_down(grants, -5, "usd", "", NOW) == BurnPlan(-5, ())


def test_e5_planning_never_changes_the_grants():
    grants = [grant("A", 300), grant("B", 300, priority=1)]
    before = list(grants)
    credits.burn_down(grants, 450, "usd", "", NOW)
    assert grants == before


def test_burns_only_the_asked_currency():
    # §6.3 example 4, fixed: the EUR grant is not spent on a USD amount.
    grants = [grant("H", 100, priority=-5, currency="eur"), grant("I", 400)]
    plan = credits.burn_down(grants, 300, "usd", "", NOW)
    assert plan == BurnPlan(0, (("I", 300),))
    assert credits.burn_down(grants, 300, "eur", "", NOW) == BurnPlan(200, (("H", 100),))


def test_voided_and_expired_grants_are_not_counted():
    # §6.3 example 5.
    grants = [grant("J", 1000, voided=True),
              grant("K", 1000, effective_at=NOW - 2 * DAY, expires_at=NOW - HOUR)]
    assert credits.burn_down(grants, 50, "usd", "", NOW) == BurnPlan(50, ())


def test_equal_grants_burn_in_a_stable_order():
    # §5.1 [FIX]: ties go by effectiveAt, createdAt, then id.
    early = NOW - 2 * HOUR
    grants = [grant("b", 10), grant("a", 10), grant("z", 10, effective_at=early),
              grant("c", 10, effective_at=NOW - HOUR, created_at=early)]
    order = [g.id for g in credits.burnable(grants, "usd", "", NOW)]
    assert order == ["z", "c", "a", "b"]
    assert [g.id for g in credits.burnable(reversed(grants), "usd", "", NOW)] == order


# ---- reads ----------------------------------------------------------------------------


def test_balances_sum_active_grants_per_currency_sorted():
    grants = [grant("a", 100, currency="usd"), grant("b", 50, currency="eur"),
              grant("c", 25, currency="usd"), grant("d", 999, voided=True),
              grant("e", 7, expires_at=NOW - HOUR, effective_at=NOW - DAY)]
    assert credits.balances(grants, NOW) == [("eur", 50), ("usd", 125)]
    assert credits.balances([], NOW) == []


def test_breakdown_groups_one_currency_by_tag():
    soon, later = NOW + DAY, NOW + 30 * DAY
    grants = [grant("a", 500, tags="starter", expires_at=later),
              grant("b", 100, tags="starter", expires_at=soon),
              grant("c", 1000, tags="promo"), grant("d", 200),
              grant("e", 900, tags="promo", currency="eur"),
              grant("f", 50, tags="promo", voided=True)]
    groups = credits.breakdown(grants, "usd", NOW)
    assert {t: (g.cents, g.expires_at) for t, g in groups.items()} == {
        "starter": (600, soon), "promo": (1000, None), "other": (200, None)}
    eur = credits.breakdown(grants, "eur", NOW)
    assert {t: g.cents for t, g in eur.items()} == {"promo": 900}


# ---- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(("params", "message"), [
    (CreditGrantCreateParams(name="Bad Grant", amountCents=100), "userId is required"),
    (CreditGrantCreateParams(userId="   ", amountCents=100), "userId is required"),
    (CreditGrantCreateParams(amountCents=0), "userId is required"),  # order: userId first
    (CreditGrantCreateParams(userId="hanzo/alice", amountCents=0),
     "amountCents must be positive"),
    (CreditGrantCreateParams(userId="hanzo/alice", amountCents=-5, expiresIn="bad"),
     "amountCents must be positive"),
    (CreditGrantCreateParams(userId="hanzo/alice", amountCents=1, expiresIn="not-a-duration"),
     "invalid expiresIn duration"),
    (CreditGrantCreateParams(userId="hanzo/alice", amountCents=1, expiresIn="7d"),
     "invalid expiresIn duration"),
    (CreditGrantCreateParams(userId="hanzo/alice", amountCents=1, expiresIn="2562048h"),
     "invalid expiresIn duration"),
    (CreditGrantCreateParams(userId="hanzo/alice", amountCents=1, currency="US Dollar"),
     "invalid currency"),
])
def test_grant_validation(params, message):
    assert refused(credits.new_grant, params, NOW) == (400, message)


def test_new_grant_defaults_and_expiry():
    g = credits.new_grant(CreditGrantCreateParams(
        userId=" Hanzo/Alice ", amountCents=500, currency=" USD", expiresIn="720h",
        priority=-3, eligibility=["m1"], tags="starter"), NOW)
    assert (g.user_id, g.amount, g.remaining, g.currency, g.priority) == (
        "hanzo/alice", 500, 500, "usd", -3)
    assert (g.effective_at, g.created_at, g.expires_at) == (NOW, NOW, NOW + 30 * DAY)
    assert g.eligibility == ("m1",) and not g.voided
    plain = credits.new_grant(CreditGrantCreateParams(userId="a", amountCents=1), NOW)
    assert plain.expires_at is None and plain.currency == "usd" and plain.eligibility == ()
    # Zero and negative durations are accepted: the grant is born expired.
    born_expired = credits.new_grant(CreditGrantCreateParams(
        userId="a", amountCents=1, expiresIn="-1h"), NOW)
    assert born_expired.expires_at == NOW - HOUR
    assert not credits.is_active(born_expired, NOW)


def test_void_and_burner_rules():
    assert refused(credits.require_grant_id, "") == (404, "credit grant not found")
    assert refused(credits.require_voidable, None) == (404, "credit grant not found")
    assert refused(credits.require_voidable, True) == (400, "grant is already voided")
    credits.require_voidable(False)
    alice = Actor(kind="iam", role="user", user_id="hanzo/alice")
    credits.require_burner(alice, "hanzo/alice")
    assert refused(credits.require_burner, alice, "hanzo/bob")[0] == 403
    pk = Actor(kind="api_key", role="publishable")
    assert refused(credits.require_burner, pk, "hanzo/alice")[0] == 403
    credits.require_burner(Actor(kind="service", role="platform"), "hanzo/bob")


# ---- Go durations (§6.7) --------------------------------------------------------------

NS = 1
US = 1_000
SEC = 1_000_000_000


@pytest.mark.parametrize(("text", "ns"), [
    ("720h", 720 * 3600 * SEC), ("1h30m", 5400 * SEC), ("-1h", -3600 * SEC),
    ("1.5h", 5400 * SEC), (".5h", 1800 * SEC), ("1.h", 3600 * SEC), ("0", 0), ("-0", 0),
    ("+5m", 300 * SEC), ("300ms", 300_000_000), ("1us", US), ("1µs", US), ("1μs", US),
    ("7ns", 7 * NS), ("2h45m30.5s", (2 * 3600 + 45 * 60 + 30) * SEC + 500_000_000),
    ("1.0000000001s", SEC), ("9223372036854775807ns", 2**63 - 1),
    ("-9223372036854775808ns", -(2**63)), ("2562047h", 2562047 * 3600 * SEC),
])
def test_go_durations(text, ns):
    assert credits.go_duration_ns(text) == ns


@pytest.mark.parametrize("text", [
    "7d", "", ".", "1", "1H", " 1h", "1h ", "h", ".h", "-", "+", "1e3s", "00", "1h-1m",
    "9223372036854775808ns", "2562048h", "1" * 300 + "h",
])
def test_go_durations_refused(text):
    with pytest.raises((ValueError, OverflowError)):
        credits.go_duration_ns(text)


def test_go_duration_as_timedelta():
    assert credits.go_duration("1h30m") == timedelta(minutes=90)
    assert credits.go_duration("-1500ns") == timedelta(microseconds=-1)


# ---- properties of the burn-down plan -------------------------------------------------

_ID = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=4)


@st.composite
def grant_sets(draw) -> list[Grant]:
    ids = draw(st.lists(_ID, unique=True, max_size=8))
    out = []
    for gid in ids:
        effective = NOW - draw(st.integers(-2, 48)) * HOUR
        expiry = draw(st.none() | st.integers(-3, 72).map(lambda h: NOW + h * HOUR))
        out.append(Grant(
            id=gid, remaining=draw(st.integers(-5, 1000)),
            currency=draw(st.sampled_from(["usd", "eur"])),
            priority=draw(st.integers(-2, 2)), effective_at=effective, expires_at=expiry,
            created_at=effective + draw(st.integers(0, 3)) * HOUR,
            eligibility=tuple(draw(st.lists(st.sampled_from(["m1", "m2"]), unique=True,
                                            max_size=2))),
            voided=draw(st.booleans() if draw(st.booleans()) else st.just(False)),
        ))
    return out


_METER = st.sampled_from(["", "m1", "m2", "m3"])
_CURRENCY = st.sampled_from(["usd", "eur"])


@settings(max_examples=400, deadline=None)
@given(grant_sets(), st.integers(-100, 5000), _CURRENCY, _METER)
def test_burn_plan_properties(grants, amount, currency, meter):
    plan = credits.burn_down(grants, amount, currency, meter, NOW)
    usable = credits.burnable(grants, currency, meter, NOW)
    available = sum(g.remaining for g in usable)
    if amount <= 0:
        assert plan == BurnPlan(amount, ())
        return
    # Never burns more than is available nor more than asked; never a negative remainder.
    assert plan.remaining >= 0
    assert plan.total + plan.remaining == amount
    assert plan.total == min(amount, available)
    by_id = {g.id: g for g in grants}
    assert len({gid for gid, _ in plan.burned}) == len(plan.burned)
    for gid, take in plan.burned:
        g = by_id[gid]
        # Only active grants of this currency that serve the meter.
        assert credits.is_active(g, NOW) and g.currency == currency
        assert meter == "" or not g.eligibility or meter in g.eligibility
        assert 0 < take <= g.remaining
    # Respects the order: the burned grants are a prefix of the burn order, and every one
    # of them but the last is used up.
    assert [gid for gid, _ in plan.burned] == [g.id for g in usable[:len(plan.burned)]]
    for gid, take in plan.burned[:-1]:
        assert take == by_id[gid].remaining
    if plan.remaining > 0:
        assert len(plan.burned) == len(usable)


@settings(max_examples=300, deadline=None)
@given(grant_sets(), st.integers(1, 3000), st.integers(1, 3000), _CURRENCY, _METER)
def test_preview_matches_burn_and_burns_compose(grants, a, b, currency, meter):
    copy = list(grants)
    preview = credits.burn_down(copy, a, currency, meter, NOW)
    burn = credits.burn_down(grants, a, currency, meter, NOW)
    assert preview == burn and copy == grants  # planning has no effect
    after = credits.apply_burn(grants, burn)
    usable_before = sum(g.remaining for g in credits.burnable(grants, currency, meter, NOW))
    usable_after = sum(g.remaining for g in credits.burnable(after, currency, meter, NOW))
    assert usable_after == usable_before - burn.total
    assert all(g.remaining >= 0 for g, o in zip(after, grants, strict=True)
               if o.remaining >= 0)
    # Burning a then b takes exactly what burning a + b at once takes, grant by grant.
    second = credits.burn_down(after, b, currency, meter, NOW)
    together = credits.burn_down(grants, a + b, currency, meter, NOW)
    assert Counter(dict(burn.burned)) + Counter(dict(second.burned)) == Counter(
        dict(together.burned))
    assert burn.remaining + second.remaining == together.remaining


# ---- burns on the bus, against the real database --------------------------------------


class Bus(support.Bus):
    """Talks to the ledger service over NATS, as invoicing will."""

    async def grant(self, user: str, amount: int, **kw) -> str:
        created = await self.ok(endpoints.CREDIT_GRANT_CREATE.subject,
                                CreditGrantCreateParams(userId=user, amountCents=amount,
                                                        **kw))
        return created["id"]

    async def remaining(self, user: str) -> dict[str, int]:
        listed = await self.ok(endpoints.CREDIT_GRANT_LIST.subject,
                               CreditGrantListParams(userId=user))
        return {g["id"]: g["remainingCents"] for g in listed["grants"]}

    async def burn(self, user: str, amount: int, *, meter: str = "", currency: str = "",
                   key: str | None = None, preview: bool = False) -> dict:
        subject = (endpoints.CREDIT_GRANT_PREVIEW.subject if preview
                   else endpoints.CREDIT_GRANT_BURN.subject)
        return await self.ok(subject, CreditBurnParams(
            userId=user, amount=amount, currency=currency, meterId=meter), key)


@pytest.fixture
async def bus(nc, platform, make_org) -> Bus:
    org = await make_org()
    found = await gateway_store.org_by_name(platform.gateway.pool, org.name)
    return Bus(nc, found.id)


def burned(result: dict) -> list[tuple[str, int]]:
    return [(b["grantId"], b["amount"]) for b in result["burned"]]


async def test_worked_examples_on_the_bus(bus):
    # §6.3 example 3 (and E.3) against the database: preview first, then the real burn;
    # for meter m2 only G serves, then with no meter F covers the rest.
    f = await bus.grant("hanzo/alice", 1000, eligibility=["m1"])
    g = await bus.grant("hanzo/alice", 200, priority=1)
    for meter, left, spent in (("m2", 600, [(g, 200)]), ("", 0, [(f, 800)])):
        before = await bus.remaining("hanzo/alice")
        preview = await bus.burn("hanzo/alice", 800, meter=meter, preview=True)
        assert await bus.remaining("hanzo/alice") == before  # previews write nothing
        real = await bus.burn("hanzo/alice", 800, meter=meter)
        assert preview["remaining"] == left and burned(preview) == spent
        assert real == preview  # the same selection and plan, on the same state
    assert await bus.remaining("hanzo/alice") == {f: 200, g: 0}
    # §8 E.4: burn 0 writes nothing.
    snapshot = await bus.remaining("hanzo/alice")
    assert await bus.burn("hanzo/alice", 0) == {"remaining": 0, "burned": []}
    assert await bus.remaining("hanzo/alice") == snapshot


async def test_burn_order_and_remainder_in_the_database(bus):
    # §6.3 examples 1 and 2: priority, then soonest expiry, never-expiring last.
    c = await bus.grant("hanzo/bo", 300, expiresIn="48h")
    e = await bus.grant("hanzo/bo", 300)
    d = await bus.grant("hanzo/bo", 300, expiresIn="240h")
    late = await bus.grant("hanzo/bo", 100, priority=1, expiresIn="1h")
    result = await bus.burn("HANZO/Bo ", 450)  # bus callers get the same canonical user
    assert result == {"remaining": 0, "burned": [{"grantId": c, "amount": 300},
                                                 {"grantId": d, "amount": 150}]}
    result = await bus.burn("hanzo/bo", 1000)
    assert result["remaining"] == 1000 - 150 - 300 - 100
    assert burned(result) == [(d, 150), (e, 300), (late, 100)]
    assert set((await bus.remaining("hanzo/bo")).values()) == {0}


async def test_currency_mode_and_org_isolation(bus, nc, platform, make_org):
    usd = await bus.grant("hanzo/iso", 500)
    await bus.grant("hanzo/iso", 700, currency="eur")
    live = Bus(nc, bus.org_id, livemode=True)
    assert await live.burn("hanzo/iso", 100) == {"remaining": 100, "burned": []}
    other_org = await make_org()
    other = Bus(nc, (await gateway_store.org_by_name(platform.gateway.pool,
                                                     other_org.name)).id)
    assert await other.burn("hanzo/iso", 100) == {"remaining": 100, "burned": []}
    # A USD burn never touches the EUR grant, even when USD runs out.
    result = await bus.burn("hanzo/iso", 600, currency="USD")
    assert result == {"remaining": 100, "burned": [{"grantId": usd, "amount": 500}]}
    eur = await bus.burn("hanzo/iso", 100, currency="eur")
    assert eur["remaining"] == 0
    # Voiding from another org or mode finds nothing.
    for stranger in (live, other):
        reply = await stranger.ask(endpoints.CREDIT_GRANT_VOID.subject,
                                   CreditGrantVoidParams(id=usd))
        assert reply["error"]["status"] == 404


async def test_voided_grants_are_not_burned(bus):
    gid = await bus.grant("hanzo/void", 500)
    assert (await bus.ok(endpoints.CREDIT_GRANT_VOID.subject,
                         CreditGrantVoidParams(id=gid))) == {"id": gid, "voided": True}
    assert await bus.burn("hanzo/void", 50) == {"remaining": 50, "burned": []}


async def test_concurrent_burns_never_spend_a_grant_twice(bus):
    # 20 burns of 100 race for 1500 of credit (one grant for every meter, one for m1 only);
    # the row locks serialise them, so exactly 1500 is spent and no grant goes negative.
    wide = await bus.grant("hanzo/race", 1000)
    narrow = await bus.grant("hanzo/race", 500, eligibility=["m1"], priority=-1)
    results = await asyncio.gather(*(
        bus.burn("hanzo/race", 100, meter="m1" if i % 2 else "", key=f"race-{i}")
        for i in range(20)))
    spent = Counter()
    for r in results:
        assert sum(b["amount"] for b in r["burned"]) + r["remaining"] == 100
        for gid, amount in burned(r):
            spent[gid] += amount
    assert spent == {narrow: 500, wide: 1000}
    assert sum(r["remaining"] for r in results) == 2000 - 1500
    assert await bus.remaining("hanzo/race") == {wide: 0, narrow: 0}


async def test_concurrent_burns_of_one_user_in_two_orders_do_not_deadlock(bus):
    # Burns for different meters lock overlapping sets, always in the same order.
    ids = [await bus.grant("hanzo/dl", 50, eligibility=["m1", "m2"], priority=p)
           for p in range(5)]
    results = await asyncio.gather(*(
        bus.burn("hanzo/dl", 30, meter=("m1", "m2", "")[i % 3]) for i in range(12)))
    assert sum(sum(a for _, a in burned(r)) for r in results) == 250
    assert set((await bus.remaining("hanzo/dl")).values()) == {0}
    assert len(ids) == 5


async def test_a_burn_is_idempotent_under_its_key(bus):
    gid = await bus.grant("hanzo/idem", 500)
    first = await bus.burn("hanzo/idem", 200, key="invoice-1-attempt-1")
    again = await bus.burn("hanzo/idem", 200, key="invoice-1-attempt-1")
    assert first == again == {"remaining": 0, "burned": [{"grantId": gid, "amount": 200}]}
    assert await bus.remaining("hanzo/idem") == {gid: 300}
    # The same key sent concurrently still burns once.
    results = await asyncio.gather(*(bus.ask(endpoints.CREDIT_GRANT_BURN.subject,
                                             CreditBurnParams(userId="hanzo/idem", amount=100),
                                             "invoice-2") for _ in range(5)),
                                   return_exceptions=False)
    assert all("result" in r or r["error"]["status"] == 409 for r in results)
    assert await bus.remaining("hanzo/idem") == {gid: 200}


async def test_previews_asked_together_each_answer_their_own_customer_and_meter(bus):
    # A billing cycle previews dozens of customers' credit at once (one query between them).
    f = await bus.grant("hanzo/carol", 1000, eligibility=["m1"])
    g = await bus.grant("hanzo/carol", 200, priority=1)
    h = await bus.grant("hanzo/dave", 300)
    e = await bus.grant("hanzo/dave", 50, currency="eur")
    asked = [("hanzo/carol", "m2", ""), ("hanzo/carol", "", ""), ("hanzo/dave", "m1", ""),
             ("hanzo/dave", "", "eur"), ("hanzo/erin", "", "")]
    previews = await asyncio.gather(*(bus.burn(user, 800, meter=meter, currency=currency,
                                               preview=True)
                                      for user, meter, currency in asked))
    assert [(p["remaining"], burned(p)) for p in previews] == [
        (600, [(g, 200)]), (0, [(f, 800)]), (500, [(h, 300)]), (750, [(e, 50)]),
        (800, [])]


async def test_burn_validation_and_the_sinks_own_fence(bus):
    reply = await bus.ask(endpoints.CREDIT_GRANT_BURN.subject, CreditBurnParams(amount=5))
    assert (reply["error"]["status"], reply["error"]["message"]) == (400, "userId is required")
    reply = await bus.ask(endpoints.CREDIT_GRANT_PREVIEW.subject,
                          CreditBurnParams(userId="a", amount=5, currency="$$"))
    assert reply["error"]["message"] == "invalid currency"
    gid = await bus.grant("hanzo/bob", 100)
    alice = Actor(kind="iam", role="user", user_id="hanzo/alice")
    reply = await bus.ask(endpoints.CREDIT_GRANT_BURN.subject,
                          CreditBurnParams(userId="hanzo/bob", amount=5), actor=alice)
    assert reply["error"]["status"] == 403
    assert await bus.remaining("hanzo/bob") == {gid: 100}
    # A grant create is a mint at the sink too, whatever the gateway let through.
    reply = await bus.ask(endpoints.CREDIT_GRANT_CREATE.subject,
                          CreditGrantCreateParams(userId="hanzo/alice", amountCents=1),
                          actor=Actor(kind="api_key", role="admin", may_mint=False))
    assert reply["error"]["status"] == 403
