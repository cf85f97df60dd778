"""The subscription rules, pure (subscriptions.md §2.1–§2.4, §5.1, §5.3–§5.6): starting with
and without a trial, anchored period arithmetic (examples and properties: month ends, leap
years, annual; periods contiguous and never drifting), plan changes and their proration,
cancel and reactivate."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.errors import Failure
from services.subscriptions.subscriptions import domain
from services.subscriptions.subscriptions.domain import (
    ACTIVE,
    CANCELED,
    PAST_DUE,
    TRIALING,
    UNPAID,
    PlanTerms,
    add_months,
    next_period,
    period_end,
)

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def plan(id="plan_pro", name="Pro", price=2000, interval="month", count=1, trial=0, **kw):
    return PlanTerms(id=id, name=name, price=price, currency="usd", interval=interval,
                     interval_count=count, trial_period_days=trial, **kw)


def started(p=None, now=NOW, **kw):
    return domain.start(p or plan(**kw), 1, None, now)


def refusal(fn, *args) -> str:
    with pytest.raises(Failure) as e:
        fn(*args)
    return e.value.error.message


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---- §5.1 starting, period arithmetic ------------------------------------------------------


def test_without_a_trial_it_is_active_for_one_period():  # 1, 10
    sub = started(plan("plan_full", "Full", 9900))
    assert (sub.status, sub.plan.id, sub.plan.name, sub.plan.price, sub.plan.currency) == (
        ACTIVE, "plan_full", "Full", 9900, "usd")
    assert sub.period_start == sub.start_at == sub.billing_anchor == NOW
    assert sub.period_end == add_months(NOW, 1) == at(2025, 4, 10, 12)
    assert sub.trial_start is None and sub.trial_end is None


@pytest.mark.parametrize("days", [14, 7, 1])
def test_a_trial_comes_first_and_periods_follow_it(days):  # 2, 3, 4
    sub = started(plan("plan_tp", "TrialP", 1000, trial=days))
    assert sub.status == TRIALING
    assert sub.trial_start == NOW and sub.trial_end == NOW + timedelta(days=days)
    assert sub.period_start == sub.trial_end == sub.billing_anchor
    assert sub.period_end == add_months(sub.trial_end, 1)


def test_a_yearly_trial():  # 5, §2.2 example
    sub = started(plan(price=12000, interval="year", trial=30), now=at(2025, 1, 1))
    assert sub.status == TRIALING and sub.trial_end == at(2025, 1, 31)
    assert sub.period_end == at(2026, 1, 31)


def test_a_trial_given_on_create_overrides_the_plans():
    sub = domain.start(plan(trial=14), 1, 3, NOW)
    assert sub.trial_end == NOW + timedelta(days=3)
    assert domain.start(plan(trial=14), 1, 0, NOW).status == ACTIVE


@pytest.mark.parametrize(("interval", "count", "end"), [
    ("year", 1, at(2026, 3, 10, 12)), ("year", 2, at(2027, 3, 10, 12)),  # 6
    ("month", 3, at(2025, 6, 10, 12)), ("month", 12, at(2026, 3, 10, 12)),  # 7
    ("month", 0, at(2025, 4, 10, 12)), ("month", -1, at(2025, 4, 10, 12)),  # 8
    ("weekly", 2, at(2025, 5, 10, 12)), ("weekly", 1, at(2025, 4, 10, 12)),  # 9
    ("daily", 5, at(2025, 8, 10, 12)),
    ("monthly", 1, at(2025, 4, 10, 12)), ("annual", 1, at(2026, 3, 10, 12)),  # D7
])
def test_interval_and_count(interval, count, end):
    assert started(interval=interval, count=count).period_end == end


def test_month_ends_are_clamped_to_the_anchor():  # 11, §2.1 OURS
    assert add_months(at(2025, 1, 31), 1) == at(2025, 2, 28)
    assert add_months(at(2024, 1, 31), 1) == at(2024, 2, 29)
    assert add_months(at(2024, 2, 29), 12) == at(2025, 2, 28)
    assert add_months(at(2025, 1, 15, 10), 1) == at(2025, 2, 15, 10)
    anchor = at(2025, 1, 31)
    assert [period_end(anchor, k, "month", 1) for k in range(1, 5)] == [
        at(2025, 2, 28), at(2025, 3, 31), at(2025, 4, 30), at(2025, 5, 31)]
    leap = at(2024, 2, 29)
    assert [period_end(leap, k, "year", 1) for k in range(1, 5)] == [
        at(2025, 2, 28), at(2026, 2, 28), at(2027, 2, 28), at(2028, 2, 29)]


def test_the_next_period_continues_from_the_anchor_not_the_last_end():
    sub = started(now=at(2025, 1, 31, 9))
    start, end = next_period(sub)
    assert (start, end) == (at(2025, 2, 28, 9), at(2025, 3, 31, 9))
    # A plan change to a yearly plan applies from the next period.
    yearly = replace(sub, plan=plan(interval="year"))
    assert next_period(yearly) == (at(2025, 2, 28, 9), at(2026, 2, 28, 9))


@pytest.mark.parametrize(("raw", "interval"), [
    ("", "month"), ("month", "month"), ("Monthly", "month"), ("year", "year"),
    ("yearly", "year"), ("annual", "year")])
def test_intervals_a_client_names(raw, interval):
    assert domain.requested_interval(raw) == interval


def test_an_unknown_interval_is_refused():
    assert refusal(domain.requested_interval, "weekly") == "invalid interval"


anchors = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 12, 31),
                       timezones=st.just(UTC))
intervals = st.sampled_from(["month", "monthly", "year", "annual"])


@given(anchors, intervals, st.integers(1, 3), st.integers(1, 60))
def test_period_k_keeps_the_anchor_day_clamped_and_time(anchor, interval, count, k):
    end = period_end(anchor, k, interval, count)
    step = domain.interval_months(interval, count)
    assert domain.months_between(anchor, end) == k * step
    last_day = (add_months(end.replace(day=1), 1) - timedelta(days=1)).day
    assert end.day == min(anchor.day, last_day)
    assert end.timetz() == anchor.timetz()


@given(anchors, intervals, st.integers(1, 3), st.integers(1, 40))
def test_periods_are_contiguous_and_never_drift(anchor, interval, count, periods):
    sub = domain.start(plan(interval=interval, count=count), 1, None, anchor)
    for k in range(1, periods + 1):
        assert sub.period_end == period_end(anchor, k, interval, count)
        start, end = next_period(sub)
        assert start == sub.period_end < end  # the next begins where this one ends
        sub = replace(sub, period_start=start, period_end=end)


@given(st.integers(1900, 2200), st.sampled_from([1, 3, 5, 7, 8, 10, 12]), st.integers(1, 48))
def test_a_31st_anchor_ends_every_period_on_a_months_last_day(year, month, k):
    end = period_end(at(year, month, 31), k, "month", 1)
    assert (end + timedelta(days=1)).day == 1


# ---- §5.3 cancel ---------------------------------------------------------------------------


def test_cancel_now():  # 14
    sub = domain.cancel(started(), False, NOW)
    assert (sub.status, sub.canceled, sub.canceled_at, sub.ended_at, sub.cancel_at_period_end
            ) == (CANCELED, True, NOW, NOW, False)


def test_cancel_at_period_end():  # 15
    sub = domain.cancel(started(), True, NOW)
    assert (sub.status, sub.cancel_at_period_end, sub.canceled_at, sub.ended_at) == (
        ACTIVE, True, NOW, None)


def test_cancel_twice():  # 16
    sub = domain.cancel(started(), False, NOW)
    assert refusal(domain.cancel, sub, False, NOW) == "subscription is already canceled"
    assert refusal(domain.cancel, sub, True, NOW) == "subscription is already canceled"


def test_cancel_a_trial():  # 17, 18
    trial = started(trial=7)
    now = domain.cancel(trial, False, NOW)
    assert (now.status, now.canceled, now.ended_at) == (CANCELED, True, NOW)
    later = domain.cancel(trial, True, NOW)
    assert (later.status, later.cancel_at_period_end, later.canceled_at) == (TRIALING, True, NOW)


@pytest.mark.parametrize("status", [PAST_DUE, UNPAID])
def test_cancel_past_due_and_unpaid(status):  # 19
    assert domain.cancel(replace(started(), status=status), False, NOW).status == CANCELED


# ---- §5.4 reactivate -----------------------------------------------------------------------


def test_reactivate_a_pending_cancel():  # 20
    sub = domain.reactivate(replace(started(), cancel_at_period_end=True, canceled=True,
                                    canceled_at=NOW))
    assert (sub.status, sub.cancel_at_period_end, sub.canceled, sub.canceled_at) == (
        ACTIVE, False, False, None)


def test_an_ended_subscription_stays_ended():  # 21
    sub = domain.cancel(started(), False, NOW)
    assert "fully ended" in refusal(domain.reactivate, sub)


def test_reactivate_canceled_without_an_end():  # 22
    sub = replace(started(), status=CANCELED, canceled=True, canceled_at=NOW)
    assert domain.reactivate(sub).status == ACTIVE


def test_a_provider_canceled_subscription_is_not_reactivated_locally():  # §7 B12
    sub = replace(started(), status=CANCELED, canceled=True, provider_type="stripe")
    assert refusal(domain.reactivate, sub) == "cannot reactivate a fully ended subscription"


@pytest.mark.parametrize(("status", "kept"), [(TRIALING, TRIALING), (PAST_DUE, PAST_DUE),
                                              (ACTIVE, ACTIVE)])
def test_reactivate_keeps_the_status(status, kept):  # 23, 24, 25
    sub = replace(started(), status=status, cancel_at_period_end=True, canceled=True,
                  canceled_at=NOW)
    after = domain.reactivate(sub)
    assert (after.status, after.cancel_at_period_end, after.canceled) == (kept, False, False)
    assert domain.reactivate(started()) == started()  # never canceled: nothing changes


# ---- §5.5 plan change and proration --------------------------------------------------------


def mid_period(price=3000, name="Basic", before=15, after=15, **kw):
    """A subscription whose period began `before` days ago and ends in `after` days."""
    sub = started(plan("plan_basic", name, price, **kw))
    return replace(sub, period_start=NOW - timedelta(days=before),
                   period_end=NOW + timedelta(days=after))


def test_change_without_proration():  # 26
    sub, item = domain.change(mid_period(1000), plan("plan_pro", "Pro", 2000), None, False, NOW)
    assert item is None and sub.plan.id == "plan_pro"


def test_upgrade_and_downgrade_mid_period():  # 27, 28
    _, up = domain.change(mid_period(3000), plan("plan_pro", "Pro", 6000), None, True, NOW)
    assert (up.amount, up.currency, up.period_start, up.period_end) == (
        1500, "usd", NOW, NOW + timedelta(days=15))
    assert "Basic" in up.description and "Pro" in up.description
    _, down = domain.change(mid_period(6000, "Pro"), plan("plan_b", "Basic", 3000), None,
                            True, NOW)
    assert down.amount == -1500


def test_the_same_plan():  # 29
    sub = mid_period(1000)
    same, item = domain.change(sub, sub.plan, None, False, NOW)
    assert (same.plan, item) == (sub.plan, None)
    _, item = domain.change(mid_period(3000), mid_period(3000).plan, None, True, NOW)
    assert item is None or abs(item.amount) <= 1


def test_a_new_interval():  # 30
    sub, _ = domain.change(mid_period(1000), plan("plan_new", "New", 2000), None, False, NOW)
    assert (sub.plan.id, sub.plan.name, sub.plan.price) == ("plan_new", "New", 2000)
    sub, _ = domain.change(mid_period(1000), plan("plan_new", "New", 5000, interval="year"),
                           None, True, NOW)
    assert sub.plan.interval == "year"


def test_no_proration_over_an_empty_or_inverted_period():  # 31, 32
    sub = replace(started(), period_start=NOW, period_end=NOW)
    changed, item = domain.change(sub, plan("plan_new", "New", 5000), None, True, NOW)
    assert item is None and changed.plan.id == "plan_new"
    sub = replace(started(), period_start=NOW, period_end=NOW - timedelta(days=5))
    assert domain.change(sub, plan("plan_new", "New", 5000), None, True, NOW)[1] is None


def test_the_description():  # 33, 34
    sub = mid_period(4000, "Alpha", before=10, after=20)
    changed, item = domain.change(sub, plan("plan_hi", "Beta", 8000), None, True, NOW)
    assert item.description == "Proration: Alpha -> Beta"
    assert (item.plan_id, item.plan_name) == ("plan_hi", "Beta")


def test_free_and_paid():  # 35
    assert domain.change(mid_period(0), plan(price=5000), None, True, NOW)[1].amount > 0
    assert domain.change(mid_period(5000), plan(price=0), None, True, NOW)[1].amount < 0


def test_rounding_half_away_from_zero():  # 36, §2.3 example 2
    sub = replace(started(plan(price=2000)), period_start=at(2025, 1, 1),
                  period_end=at(2025, 1, 31))
    _, item = domain.change(sub, plan(price=5000), None, True, at(2025, 1, 21))
    assert item.amount == 1667 - 667 == 1000
    assert domain.half_away_from_zero(domain.Decimal("-2.5")) == -3
    assert domain.half_away_from_zero(domain.Decimal("2.5")) == 3


def test_the_share_is_clamped():  # §2.3 example 3 OURS
    trialing = replace(started(plan(price=2000)), period_start=NOW + timedelta(days=10),
                       period_end=NOW + timedelta(days=41))
    assert domain.change(trialing, plan(price=5000), None, True, NOW)[1].amount == 3000
    past_due = replace(started(plan(price=2000)), period_start=NOW - timedelta(days=35),
                       period_end=NOW - timedelta(days=5))
    assert domain.change(past_due, plan(price=5000), None, True, NOW)[1].amount == 0


def test_per_seat_prices_every_seat():
    team = plan("team", "Team", 2500, per_user=True)
    sub = replace(domain.start(team, 4, None, NOW), period_start=NOW - timedelta(days=15),
                  period_end=NOW + timedelta(days=15))
    assert sub.amount == 10000
    more, item = domain.change(sub, team, 6, True, NOW)
    assert (more.quantity, more.amount, item.amount) == (6, 15000, 2500)
    assert "per-seat" in refusal(domain.seats, plan(), 3)
    assert domain.seats(plan(), None) == domain.seats(team, None) == 1
    assert "between 1 and" in refusal(domain.change, sub, team, 0, False, NOW)


def test_a_canceled_subscription_is_not_changed():
    sub = domain.cancel(started(), False, NOW)
    assert refusal(domain.change, sub, plan(price=1), None, False, NOW) == (
        "cannot change a canceled subscription")


# ---- §5.6 lifecycles -----------------------------------------------------------------------


def test_a_lifecycle_without_trial():  # 37
    sub = mid_period(2000)
    sub = domain.cancel(sub, True, NOW)
    assert sub.cancel_at_period_end
    sub = domain.reactivate(sub)
    assert not sub.cancel_at_period_end
    sub, item = domain.change(sub, plan("plan_pro", "Pro", 5000), None, True, NOW)
    assert item is not None and sub.plan.id == "plan_pro"
    sub = domain.cancel(sub, False, NOW)
    assert sub.status == CANCELED
    assert refusal(domain.cancel, sub, False, NOW) == "subscription is already canceled"


def test_a_lifecycle_with_a_trial():  # 38, 39
    sub = started(trial=7)
    assert sub.status == TRIALING
    sub = domain.reactivate(domain.cancel(sub, True, NOW))
    assert (sub.status, sub.cancel_at_period_end) == (TRIALING, False)
    sub = domain.cancel(started(trial=14), False, NOW)
    assert (sub.status, sub.canceled) == (CANCELED, True)


def test_canceled_reactivated_canceled():  # 40
    sub = replace(started(), status=CANCELED, canceled=True)
    sub = domain.reactivate(sub)
    assert sub.status == ACTIVE
    assert domain.cancel(sub, False, NOW).status == CANCELED
