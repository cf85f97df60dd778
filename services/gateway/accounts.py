"""Billing accounts (subscriptions.md §3.6), answered by the gateway: the organization is
the one billing account, its member the IAM caller. Pure functions of the caller's
organization and claims; no billing rules, nothing stored. Account and member management
are the console's: 501, as the reference (clients redirect on it)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from contracts import ErrorCode
from contracts.accounts import AccountMember, AccountMembersParams, BillingAccount
from contracts.ids import rfc3339
from services.gateway.auth import Caller
from services.gateway.errors import ApiError
from services.gateway.pipeline import Pipeline
from services.gateway.store import Org

ACCESS_DENIED = "access denied to billing account"


def role_of(roles: tuple[str, ...]) -> str:
    """The first of the claims' roles that is `admin` or `owner`, else `member` (`isAdmin`
    is not consulted)."""
    return next((r for r in roles if r in ("admin", "owner")), "member")


def _iam_subject(caller: Caller) -> str:
    """The IAM caller's subject; "" for keys and service tokens."""
    return (caller.actor.subject or "") if caller.actor.kind == "iam" else ""


async def _org(pipeline: Pipeline, caller: Caller) -> Org:
    return await pipeline.auth.existing_org(caller.org_name)


async def list_accounts(pipeline: Pipeline, request: web.Request, caller: Caller,
                        params: Any) -> list[BillingAccount]:
    org = await _org(pipeline, caller)
    account = BillingAccount(id=org.id, name=org.name, orgId=org.id, orgName=org.name,
                             currency="usd", createdAt=rfc3339(org.created_at))
    if _iam_subject(caller):
        account.role = role_of(caller.roles)
    return [account]


async def list_members(pipeline: Pipeline, request: web.Request, caller: Caller,
                       params: AccountMembersParams) -> list[AccountMember]:
    if params.id != caller.org_id:
        raise ApiError(403, ACCESS_DENIED, ErrorCode.FORBIDDEN)
    subject = _iam_subject(caller)
    if not subject:
        return []
    org = await _org(pipeline, caller)
    return [AccountMember(id=subject, userId=subject, email=caller.actor.email or "",
                          role=role_of(caller.roles), addedAt=rfc3339(org.created_at))]


def console_only(message: str) -> Any:
    """The answer of a management stub: always 501 with `message` (path and body unread)."""
    async def refuse(pipeline: Pipeline, request: web.Request, caller: Caller,
                     params: Any) -> None:
        raise ApiError(501, message, ErrorCode.NOT_IMPLEMENTED)

    return refuse
