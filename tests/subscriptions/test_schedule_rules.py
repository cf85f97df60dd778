"""Schedules, pure (subscriptions.md §1.5, §5.8 #46–52, §3.3.1 OURS): transitions with the
reference's messages, phase validation, and the order of a schedule's boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.errors import Failure
from contracts.subscription_schedules import PhaseInput, PhaseItem
from services.subscriptions.schedules import domain
from services.subscriptions.schedules.domain import Boundary

T0 = datetime(2026, 1, 31, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def refused(fn, *args):
    with pytest.raises(Failure) as e:
        fn(*args)
    return e.value.error.status, e.value.error.message


def test_status_names():  # 52
    assert (domain.NOT_STARTED, domain.ACTIVE, domain.COMPLETED, domain.RELEASED,
            domain.CANCELED) == ("not_started", "active", "completed", "released", "canceled")


@pytest.mark.parametrize("status", ["not_started", "active"])
def test_release_and_cancel_from_a_running_schedule(status):  # 47, 48
    assert domain.release(status) == "released"
    assert domain.cancel(status) == "canceled"


@pytest.mark.parametrize("status", ["completed", "released", "canceled", "", "suspended"])
def test_release_refused(status):  # 47, 51
    assert refused(domain.release, status) == (
        400, f"can only release active or not_started schedules, current: {status}")


@pytest.mark.parametrize("status", ["completed", "released", "canceled", "", "paused"])
def test_cancel_refused(status):  # 48, 51
    assert refused(domain.cancel, status) == (
        400, f"can only cancel active or not_started schedules, current: {status}")


def test_only_running_schedules_are_updated():  # §3.3.4 OURS
    domain.updatable("active")
    domain.updatable("not_started")
    assert refused(domain.updatable, "released") == (400, "cannot update a released schedule")


def test_end_behavior():
    assert domain.end_behavior("") == "release"  # 46
    assert domain.end_behavior("cancel") == "cancel"
    assert refused(domain.end_behavior, "pause") == (400, "endBehavior must be release or cancel")


def phase(start, end, plan="pro", **kw):
    return PhaseInput(planId=plan, startDate=start, endDate=end, **kw)


@pytest.mark.parametrize("phases, message", [
    ([phase(T0, T0 + DAY, plan=" ")], "phases[0].planId is required"),
    ([PhaseInput(planId="pro", endDate=T0)], "phases[0]: startDate and endDate are required"),
    ([phase(T0, T0)], "phases[0]: endDate must be after startDate"),
    ([phase(T0, T0 + 2 * DAY), phase(T0 + DAY, T0 + 3 * DAY)],
     "phases[1]: phases must be in order and must not overlap"),
    ([phase(T0, T0 + DAY, prorationBehavior="always")],
     "phases[0].prorationBehavior must be create_prorations or none"),
    ([phase(T0, T0 + DAY, items=[PhaseItem("price_1", -1)])],
     "phases[0]: item quantities must be >= 0"),
])
def test_bad_phases(phases, message):
    assert refused(domain.phases, phases) == (400, message)


def test_phases_as_stored():  # 53: times in the reference's rendering, trialEnd always
    (stored,) = domain.phases([phase(T0, T0 + DAY, items=[PhaseItem("price_1", 3)])])
    assert (stored.planId, stored.startDate, stored.endDate, stored.trialEnd, stored.items) == (
        "pro", "2026-01-31T12:00:00Z", "2026-02-01T12:00:00Z", "0001-01-01T00:00:00Z",
        [PhaseItem("price_1", 3)])
    assert domain.quantity(stored) == 3


def test_boundaries_in_order():
    phases = domain.phases([phase(T0, T0 + DAY), phase(T0 + 2 * DAY, T0 + 3 * DAY, "max")])
    assert domain.next_boundary(None, phases, -1) == Boundary(0, T0)
    assert domain.next_boundary(T0 - DAY, phases, -1) == Boundary(0, T0 - DAY)
    assert domain.next_boundary(None, phases, 0) == Boundary(1, T0 + 2 * DAY)
    assert domain.next_boundary(None, phases, 1) == Boundary(2, T0 + 3 * DAY)  # the end
    assert domain.next_boundary(None, phases, 2) is None
    assert domain.next_boundary(T0, [], -1) is None  # nothing to run


def test_new_phases_keep_those_begun():
    phases = domain.phases([phase(T0, T0 + DAY)])
    domain.keeps_begun(0, phases)
    assert refused(domain.keeps_begun, 1, phases) == (
        400, "phases: 2 phases have begun; give at least that many")
