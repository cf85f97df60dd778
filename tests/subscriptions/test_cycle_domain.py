"""The billing cycle's rules without I/O (metering-invoicing.md §9.9, §9.10, §11.11 examples
93, 101, 102; subscriptions.md §1.3.3): what is due, what an outcome changes, the dunning
schedule and its configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.subscriptions.cycle import domain
from services.subscriptions.subscriptions.domain import PlanTerms, Sub

T = datetime(2025, 2, 15, 0, 0, 1, tzinfo=UTC)
PRO = PlanTerms(id="pro", name="Pro", price=2000, currency="usd", interval="monthly")


def sub(status: str = "active", end: datetime = T - timedelta(seconds=1), **kw) -> Sub:
    start = datetime(2025, 1, 15, tzinfo=UTC)
    fields = {"plan": PRO, "status": status, "quantity": 1, "period_start": start,
              "period_end": end, "billing_anchor": start, "start_at": start, **kw}
    return Sub(**fields)


def test_due_table():  # §11.11 example 93
    assert domain.due(sub("active", T - timedelta(seconds=1)), T)
    assert not domain.due(sub("active", T + timedelta(hours=1)), T)
    assert domain.due(sub("past_due", T - timedelta(days=1)), T)
    assert not domain.due(sub("active", T), T)  # strictly after the end
    for status in ("canceled", "unpaid", "trialing"):
        assert not domain.due(sub(status), T)
    trial = sub("trialing", T + timedelta(days=30), trial_end=T - timedelta(days=1))
    assert domain.trial_over(trial, T)
    assert not domain.trial_over(sub("trialing", trial_end=T + timedelta(days=1)), T)


def test_trial_ends_into_its_first_period_or_ends_when_cancelled():
    trial = sub("trialing", T + timedelta(days=30), trial_end=T - timedelta(days=1))
    assert domain.end_trial(trial) == domain.Change("active", "subscription.trial_ended")
    leaving = sub("trialing", trial_end=T - timedelta(days=1), cancel_at_period_end=True)
    assert domain.end_trial(leaving) == domain.Change("canceled", "subscription.canceled",
                                                      ended_at=T - timedelta(days=1))


def test_paid_period_advances_anchored():  # §11.11 example 100, Δ
    anchor = datetime(2025, 1, 31, 10, tzinfo=UTC)
    first = sub(period_start=anchor, period_end=datetime(2025, 2, 28, 10, tzinfo=UTC),
                billing_anchor=anchor)
    change = domain.paid(first)
    assert (change.status, change.event, change.period_start, change.period_end) == (
        "active", "subscription.renewed", datetime(2025, 2, 28, 10, tzinfo=UTC),
        datetime(2025, 3, 31, 10, tzinfo=UTC))


def test_cancel_at_period_end_bills_the_period_then_ends():  # example 102
    leaving = sub(cancel_at_period_end=True)
    for change in (domain.paid(leaving), domain.failed(leaving)):
        assert change == domain.Change("canceled", "subscription.canceled",
                                       ended_at=leaving.period_end)
    assert domain.paid(sub("canceled")) is None
    assert domain.failed(sub("canceled")) is None


def test_failure_starts_dunning_and_exhaustion_ends_it_as_configured():
    assert domain.failed(sub()) == domain.Change("past_due", "subscription.past_due")
    assert domain.written_off(sub("past_due"), domain.Dunning()) == domain.Change(
        "unpaid", "subscription.unpaid")
    ends = domain.written_off(sub("past_due"), domain.Dunning(final_state="canceled"))
    assert (ends.status, ends.ended_at) == ("canceled", sub().period_end)
    assert domain.written_off(sub("canceled"), domain.Dunning()) is None


def test_default_schedule_is_eight_attempts_over_two_weeks():
    dunning = domain.Dunning.from_env({})
    assert (dunning.attempts, dunning.final_state) == (8, "unpaid")
    times = [dunning.next_attempt(T, n) for n in range(1, 9)]
    assert times[-1] is None
    assert times[-2] == T + timedelta(days=14)
    assert times == sorted(times[:-1]) + [None]


def test_schedule_from_the_environment():  # example 101: +1 d, +4 d, +11 d
    dunning = domain.Dunning.from_env({"BILLING_DUNNING_RETRY_HOURS": "24,96,264",
                                       "BILLING_DUNNING_FINAL_STATE": "Canceled"})
    assert dunning.attempts == 4 and dunning.final_state == "canceled"
    assert [dunning.next_attempt(T, n) for n in (1, 2, 3, 4)] == [
        T + timedelta(days=1), T + timedelta(days=4), T + timedelta(days=11), None]


@pytest.mark.parametrize("env", [{"BILLING_DUNNING_RETRY_HOURS": "48,24"},
                                 {"BILLING_DUNNING_RETRY_HOURS": "0"},
                                 {"BILLING_DUNNING_RETRY_HOURS": "x"},
                                 {"BILLING_DUNNING_FINAL_STATE": "past_due"}])
def test_bad_schedules_are_refused(env):
    with pytest.raises(ValueError):
        domain.Dunning.from_env(env)
