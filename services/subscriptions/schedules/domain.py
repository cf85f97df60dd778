"""Subscription schedules, pure (subscriptions.md §1.5, §3.3): what a new schedule is, the
status transitions with the reference's messages, phase validation, and where a running
schedule stands. No I/O.

A schedule runs through boundaries: its start (phase 0 begins: a subscription is created
for the customer on phase 0's plan), each later phase's startDate (the subscription changes
to that phase's plan and quantity) and the last phase's endDate (release: the subscription
goes on alone; cancel: it is canceled at once and the schedule completes). `current_phase`
counts them: -1 before the start, then the phase in effect, then len(phases) at the end."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts import ErrorCode
from contracts.errors import Failure, invalid
from contracts.ids import rfc3339
from contracts.subscription_schedules import Phase, PhaseInput, ScheduleCreateParams

NOT_STARTED, ACTIVE, COMPLETED, RELEASED, CANCELED = (
    "not_started", "active", "completed", "released", "canceled")
RELEASE, CANCEL = "release", "cancel"
CREATE_PRORATIONS, NO_PRORATIONS = "create_prorations", "none"
SCHEDULE_NOT_FOUND = "subscription schedule not found"
BEFORE_START = -1  # current_phase of a schedule not started


def _transition_refused(message: str) -> Failure:
    return Failure(ErrorCode.INVALID_STATE, 400, message)  # §3.3.5: 400, as the reference


# ---- transitions (§1.5) --------------------------------------------------------------------

def release(status: str) -> str:
    if status not in (ACTIVE, NOT_STARTED):
        raise _transition_refused(
            f"can only release active or not_started schedules, current: {status}")
    return RELEASED


def cancel(status: str) -> str:
    if status not in (ACTIVE, NOT_STARTED):
        raise _transition_refused(
            f"can only cancel active or not_started schedules, current: {status}")
    return CANCELED


def updatable(status: str) -> None:
    """§3.3.4 OURS: a finished schedule is not rewritten."""
    if status not in (NOT_STARTED, ACTIVE):
        raise invalid(f"cannot update a {status} schedule")


# ---- what a schedule holds -----------------------------------------------------------------

def end_behavior(raw: str) -> str:
    behavior = raw.strip() or RELEASE
    if behavior not in (RELEASE, CANCEL):
        raise invalid("endBehavior must be release or cancel", "endBehavior")
    return behavior


def customer(p: ScheduleCreateParams) -> str:
    customer_id = p.customerId.strip()
    if not customer_id:
        raise invalid("customerId is required", "customerId")
    return customer_id


def phases(given: list[PhaseInput]) -> list[Phase]:
    """§3.3.1 OURS: every phase names a plan and its dates, ends after it starts, and
    starts no earlier than the one before ends."""
    checked: list[Phase] = []
    for i, phase in enumerate(given):
        name = f"phases[{i}]"
        if not phase.planId.strip():
            raise invalid(f"{name}.planId is required", "phases")
        if phase.startDate is None or phase.endDate is None:
            raise invalid(f"{name}: startDate and endDate are required", "phases")
        if phase.endDate <= phase.startDate:
            raise invalid(f"{name}: endDate must be after startDate", "phases")
        if i and phase.startDate < given[i - 1].endDate:
            raise invalid(f"{name}: phases must be in order and must not overlap", "phases")
        if phase.prorationBehavior not in ("", CREATE_PRORATIONS, NO_PRORATIONS):
            raise invalid(f"{name}.prorationBehavior must be create_prorations or none",
                          "phases")
        if any(item.quantity < 0 for item in phase.items or ()):
            raise invalid(f"{name}: item quantities must be >= 0", "phases")
        checked.append(Phase(
            planId=phase.planId.strip(), startDate=rfc3339(phase.startDate),
            endDate=rfc3339(phase.endDate), trialEnd=rfc3339(phase.trialEnd),
            items=phase.items or None, prorationBehavior=phase.prorationBehavior))
    return checked


# ---- running -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Boundary:
    """The next thing a schedule does: `phase` becomes current (len(phases): the end)."""

    phase: int
    at: datetime


def next_boundary(start_date: datetime | None, phases: list[Phase], current: int,
                  ) -> Boundary | None:
    """Phase 0 begins at the schedule's startDate, or its own when the schedule has none;
    a schedule without phases has nothing to run."""
    if not phases or current >= len(phases):
        return None
    if current == BEFORE_START:
        return Boundary(0, start_date or _time(phases[0].startDate))
    if current < len(phases) - 1:
        return Boundary(current + 1, _time(phases[current + 1].startDate))
    return Boundary(len(phases), _time(phases[-1].endDate))


def quantity(phase: Phase) -> int | None:
    """The seats a phase asks for: its items' quantities together; None: no items, the
    subscription's own quantity stands."""
    return sum(item.quantity for item in phase.items) if phase.items else None


def prorates(phase: Phase) -> bool:
    return phase.prorationBehavior == CREATE_PRORATIONS


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def keeps_begun(current: int, phases: list[Phase]) -> None:
    """New phases of a running schedule keep a phase for each one already begun (the
    boundaries crossed stay crossed; the next is read from the new phases)."""
    if current >= len(phases):
        raise invalid(f"phases: {current + 1} phases have begun; give at least that many",
                      "phases")
