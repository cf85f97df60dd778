"""The billing cycle's rules (metering-invoicing.md §8.3, §9.9, §9.10; subscriptions.md
§1.3.3, §2.5, §2.6), pure: which subscriptions are due, what a period's outcome changes on
the subscription, and the dunning schedule. `now` is always passed in, so tests run the
rules on any clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.subscriptions.subscriptions.domain import (
    ACTIVE,
    CANCELED,
    PAST_DUE,
    TRIALING,
    UNPAID,
    Sub,
    next_period,
)

CATCH_UP = 12  # periods one run bills per subscription at most (§8.3 step 6)
NOT_DUE = "subscription period is not due for renewal"  # §2.5 OURS, §11.11 example 105

# A period's claim (table subscriptions.period_renewals): `renewing` (as claimed) while a
# runner asks invoicing for the period invoice, `past_due` while dunning retries it,
# `settled` once the period is paid, forgiven or written off.
RENEWING, DUNNING, SETTLED = "renewing", "past_due", "settled"


def trial_over(sub: Sub, now: datetime) -> bool:
    return sub.status == TRIALING and sub.trial_end is not None and sub.trial_end <= now


def due(sub: Sub, now: datetime) -> bool:
    """§9.9: strictly after the period's end."""
    return sub.status in (ACTIVE, PAST_DUE) and now > sub.period_end


@dataclass(frozen=True, slots=True)
class Change:
    """What a step of the cycle changes on the subscription, and the event announcing it."""

    status: str
    event: str
    period_start: datetime | None = None  # None: the period stays
    period_end: datetime | None = None
    ended_at: datetime | None = None  # set: the subscription ends (canceled)


def end_trial(sub: Sub) -> Change:
    """§1.3.3: trialing → active at trialEnd (its first paid period began there); a trial
    cancelled at period end ends instead, unbilled."""
    if sub.cancel_at_period_end:
        return Change(CANCELED, "subscription.canceled", ended_at=sub.trial_end)
    return Change(ACTIVE, "subscription.trial_ended")


def paid(sub: Sub) -> Change | None:
    """The period's invoice is paid (or voided: forgiven, Q3): the next period begins
    (anchored), or a subscription cancelled at period end ends at the end of the period just
    billed. One that ended meanwhile stays ended (None)."""
    if sub.status == CANCELED:
        return None
    if sub.cancel_at_period_end:
        return Change(CANCELED, "subscription.canceled", ended_at=sub.period_end)
    start, end = next_period(sub)
    return Change(ACTIVE, "subscription.renewed", period_start=start, period_end=end)


def failed(sub: Sub) -> Change | None:
    """The first collection failed: dunning starts. Cancelled at period end, it ends anyway
    (§2.5 OURS: billed in arrears, whatever the collection's outcome); its invoice is still
    retried. One that ended meanwhile stays ended (None)."""
    if sub.status == CANCELED:
        return None
    if sub.cancel_at_period_end:
        return Change(CANCELED, "subscription.canceled", ended_at=sub.period_end)
    return Change(PAST_DUE, "subscription.past_due")


def written_off(sub: Sub, dunning: Dunning) -> Change | None:
    """The last retry failed: unpaid or canceled, as configured (None: already ended)."""
    if sub.status == CANCELED:
        return None
    if dunning.final_state == CANCELED:
        return Change(CANCELED, "subscription.canceled", ended_at=sub.period_end)
    return Change(UNPAID, "subscription.unpaid")


# ---- dunning (§9.10; issue 13: 8 attempts over 2 weeks by default) --------------------------

# Hours after the first failed attempt at which each retry runs: attempts 2–8.
RETRY_HOURS = (24, 72, 120, 168, 216, 264, 336)


@dataclass(frozen=True, slots=True)
class Dunning:
    retry_hours: tuple[float, ...] = RETRY_HOURS
    final_state: str = UNPAID  # what a subscription becomes when every attempt failed

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Dunning:
        """`BILLING_DUNNING_RETRY_HOURS` (increasing hours after the first failure, comma
        separated) and `BILLING_DUNNING_FINAL_STATE` (unpaid | canceled)."""
        hours = env.get("BILLING_DUNNING_RETRY_HOURS", "").strip()
        final = env.get("BILLING_DUNNING_FINAL_STATE", "").strip().lower() or UNPAID
        retries = tuple(float(h) for h in hours.split(",")) if hours else RETRY_HOURS
        if final not in (UNPAID, CANCELED):
            raise ValueError(f"BILLING_DUNNING_FINAL_STATE must be {UNPAID} or {CANCELED}")
        if any(h <= 0 for h in retries) or list(retries) != sorted(retries):
            raise ValueError("BILLING_DUNNING_RETRY_HOURS must be increasing positive hours")
        return cls(retries, final)

    @property
    def attempts(self) -> int:
        return 1 + len(self.retry_hours)

    def next_attempt(self, first_failure: datetime, attempts: int) -> datetime | None:
        """When attempt `attempts + 1` runs, `attempts` having failed; None: none left."""
        if attempts >= self.attempts:
            return None
        return first_failure + timedelta(hours=self.retry_hours[attempts - 1])
