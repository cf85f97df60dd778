"""Disputes (payments.md §2.5, §4.5): created and updated by provider webhooks; read,
answered with evidence and closed (accepted) through the admin API.

Field names are the reference's JSON names; fields it emits only when set are `UNSET`."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from contracts.common import IdParams, Params
from contracts.endpoint import Endpoint
from contracts.limits import Id, Name, Notes

STATUSES = ("warning_needs_response", "needs_response", "under_review", "won", "lost",
            "warning_under_review", "warning_closed")


class Evidence(msgspec.Struct, omit_defaults=True):
    customerName: Name = ""
    customerEmailAddress: Name = ""
    productDescription: Notes = ""
    serviceDate: Name = ""
    uncategorizedText: Notes = ""


class DisputeListParams(Params):
    paymentIntentId: Id = ""
    limit: int = 0  # ≤ 0: 100; at most 1000
    startingAfter: Id = ""



class DisputeEvidenceParams(Params):
    """PATCH: the fields given replace theirs; the others stay (§4.5 DO: merge)."""

    id: Id = ""  # from the path
    customerName: Name | UnsetType = UNSET
    customerEmailAddress: Name | UnsetType = UNSET
    productDescription: Notes | UnsetType = UNSET
    serviceDate: Name | UnsetType = UNSET
    uncategorizedText: Notes | UnsetType = UNSET


class Dispute(msgspec.Struct, omit_defaults=True):
    id: str
    paymentIntentId: str
    amount: int
    currency: str
    status: str
    created: str
    livemode: bool
    reason: str | UnsetType = UNSET
    evidenceDueBy: str | UnsetType = UNSET
    evidence: Evidence | UnsetType = UNSET
    providerRef: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


DISPUTE_LIST = Endpoint("billing.payments.dispute.list", DisputeListParams, list[Dispute])
DISPUTE_GET = Endpoint("billing.payments.dispute.get", IdParams, Dispute)
DISPUTE_SUBMIT_EVIDENCE = Endpoint("billing.payments.dispute.submit_evidence",
                                   DisputeEvidenceParams, Dispute)
DISPUTE_CLOSE = Endpoint("billing.payments.dispute.close", IdParams, Dispute)
