"""Disputes, pure (payments.md §2.5, §4.5 DO): the lifecycle, what evidence a PATCH leaves,
and where the disputed amount must stand in the ledger for a status. No I/O."""

from __future__ import annotations

from contracts.disputes import DisputeEvidenceParams, Evidence
from contracts.errors import invalid

NEEDS_RESPONSE, UNDER_REVIEW, WON, LOST = "needs_response", "under_review", "won", "lost"
WARNING_NEEDS_RESPONSE, WARNING_UNDER_REVIEW, WARNING_CLOSED = (
    "warning_needs_response", "warning_under_review", "warning_closed")
FINAL = frozenset({WON, LOST, WARNING_CLOSED})
ANSWERABLE = frozenset({NEEDS_RESPONSE, WARNING_NEEDS_RESPONSE, UNDER_REVIEW,
                        WARNING_UNDER_REVIEW})
WARNINGS = frozenset({WARNING_NEEDS_RESPONSE, WARNING_UNDER_REVIEW, WARNING_CLOSED})

DISPUTE_NOT_FOUND = "dispute not found"

# Where the disputed amount stands in the journal (the `ledger` column) and the moves
# between: taken from the customer when a (non-warning) dispute opens, back when it is won
# (or an inquiry that took it closes), kept out when it is lost.
NOT_TAKEN, HELD, RETURNED, KEPT = "", "held", "returned", "kept"
OPEN, GIVE_BACK, WRITE_OFF = "", "won", "lost"  # the journal's dispute outcomes

# Our evidence fields and the provider's (Stripe's) names for them.
EVIDENCE_FIELDS = {"customerName": "customer_name",
                   "customerEmailAddress": "customer_email_address",
                   "productDescription": "product_description", "serviceDate": "service_date",
                   "uncategorizedText": "uncategorized_text"}


def ledger_moves(state: str, status: str) -> tuple[list[str], str]:
    """The journal moves that bring the amount from `state` to where `status` wants it,
    and the state after them. Each move happens once: `state` remembers."""
    moves = []
    if state == NOT_TAKEN and status not in WARNINGS:
        moves.append(OPEN)
        state = HELD
    if state == HELD and status in (WON, WARNING_CLOSED):
        moves.append(GIVE_BACK)
        state = RETURNED
    elif state == HELD and status == LOST:
        moves.append(WRITE_OFF)
        state = KEPT
    return moves, state


def merged_evidence(stored: Evidence, p: DisputeEvidenceParams) -> Evidence:
    """§4.5 DO: the fields given replace theirs, absent ones stay."""
    given = {name: getattr(p, name) for name in EVIDENCE_FIELDS
             if isinstance(getattr(p, name), str)}
    if not given:
        raise invalid("no evidence given: customerName, customerEmailAddress, "
                      "productDescription, serviceDate or uncategorizedText")
    fields = {name: getattr(stored, name) for name in EVIDENCE_FIELDS}
    fields.update({name: value.strip() for name, value in given.items()})
    return Evidence(**fields)


def for_provider(evidence: Evidence) -> dict[str, str]:
    """The evidence in the provider's names, empty fields left out."""
    return {EVIDENCE_FIELDS[name]: getattr(evidence, name) for name in EVIDENCE_FIELDS
            if getattr(evidence, name)}


def submitted(status: str) -> str:
    """The status evidence moves a dispute to (§4.5 DO), or a 400 in a final one."""
    if status not in ANSWERABLE:
        raise invalid(f"cannot submit evidence for dispute in status {status}")
    return WARNING_UNDER_REVIEW if status in WARNINGS else UNDER_REVIEW


def closed(status: str) -> str:
    """Close = accept the dispute: lost (an inquiry: closed); a final one cannot be."""
    if status in FINAL:
        raise invalid(f"cannot close dispute in status {status}")
    return WARNING_CLOSED if status in WARNINGS else LOST


def event_type(status: str) -> str:
    return "dispute.closed" if status in FINAL else "dispute.updated"
