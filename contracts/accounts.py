"""Billing accounts (subscriptions.md §3.6): the organization seen as one billing account,
and its members. No service owns them: the gateway answers from the caller's organization
and IAM claims (a route of kind `gateway`), so these are shapes only, with no endpoint on
the bus."""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from contracts.common import IdParams, Params
from contracts.limits import Id


class NoParams(Params):
    """A route that reads nothing from the request (the 501 stubs read neither path nor
    body)."""


class AccountMembersParams(IdParams):
    """`:id` is the account, from the path (`memberId` of the stubs is not read)."""

    memberId: Id = ""


class BillingAccount(msgspec.Struct):
    id: str
    name: str
    orgId: str
    orgName: str
    currency: str
    createdAt: str
    role: str | UnsetType = UNSET  # only for an IAM caller with a subject


class AccountMember(msgspec.Struct):
    id: str
    userId: str
    email: str
    role: str
    addedAt: str
