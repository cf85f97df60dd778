"""An organization's provider settings in the caller's mode (payments.md §1.3): read, update,
remove one provider. Admin routes. Secrets are write-only; each change is a billing event
(`provider_settings.updated`, with what a read shows) and is used for the next payment (this
replica forgets its cached providers at once, the others within `selection.TTL`).

The provider accounts the settings name are kept beside them (`provider_accounts`, one
organization per account and mode: a second one claiming it is refused 409), so that a
provider webhook without an organization in its URL finds its organization (§5.5). A claim
is proven first: the provider is asked, with the organization's own credentials of that
provider and mode (never the platform's), whether they speak for the account; a no is 400,
a provider that does not answer 502, and nothing is saved either way."""

from __future__ import annotations

import asyncpg

from contracts import Scope
from contracts.errors import conflict
from contracts.payments import (
    PROVIDER_SETTINGS_DELETE,
    PROVIDER_SETTINGS_GET,
    PROVIDER_SETTINGS_UPDATE,
    ProviderSettings,
    ProviderSettingsDeleteParams,
    ProviderSettingsParams,
    ProviderSettingsQuery,
)
from services.payments import selection
from services.payments.common import event, provider_failure
from services.payments.provider_settings import domain, store
from services.payments.providers.base import ProviderError
from services.runtime.encryption import SecretBox
from services.runtime.service import Context, Router

router = Router()


async def stored(db: store.Db, box: SecretBox | None, org_id: str, livemode: bool,
                 ) -> domain.Stored:
    """The organization's settings in one mode, opened (what provider selection reads)."""
    return _opened(box, org_id, livemode, await store.settings(db, org_id, livemode))


def _opened(box: SecretBox | None, org_id: str, livemode: bool,
            row: asyncpg.Record | None) -> domain.Stored:
    if row is None:
        return domain.NOTHING
    return domain.Stored(
        row["version"], row["preferred_processor"],
        domain.unseal(box, org_id, livemode, row["key_id"], row["credentials"]),
        row["updated_at"])


@router.handler(PROVIDER_SETTINGS_GET)
async def get_settings(ctx: Context, scope: Scope, p: ProviderSettingsQuery,
                       ) -> ProviderSettings:
    return domain.view(scope.livemode, await stored(ctx.pool, ctx.state.secrets,
                                                     scope.org_id, scope.livemode))


@router.handler(PROVIDER_SETTINGS_UPDATE, transaction=True)
async def update_settings(ctx: Context, scope: Scope, p: ProviderSettingsParams,
                          conn: asyncpg.Connection) -> ProviderSettings:
    domain.require_change(p)
    before = await _to_change(ctx, scope, conn)
    after = domain.merged(before.credentials, p, scope.livemode)
    await _prove_claims(ctx, scope, before.credentials, after)
    return await _save(ctx, scope, conn, domain.preferred(p.preferredProcessor, before.preferred),
                       after)


@router.handler(PROVIDER_SETTINGS_DELETE, transaction=True)
async def delete_settings(ctx: Context, scope: Scope, p: ProviderSettingsDeleteParams,
                          conn: asyncpg.Connection) -> ProviderSettings:
    before = await _to_change(ctx, scope, conn)
    return await _save(ctx, scope, conn, before.preferred,
                       domain.without(before.credentials, p.provider.strip().lower()))


async def _to_change(ctx: Context, scope: Scope, conn: asyncpg.Connection,
                     ) -> domain.Stored:
    row = await store.settings_to_change(conn, scope.org_id, scope.livemode)
    return _opened(ctx.state.secrets, scope.org_id, scope.livemode, row)


async def _prove_claims(ctx: Context, scope: Scope, before: domain.Credentials,
                        after: domain.Credentials) -> None:
    for provider, account in domain.claims_to_prove(before, after):
        client = selection.own_provider(after, provider, ctx.settings)
        try:
            theirs = await client.speaks_for(account)
        except ProviderError as e:
            raise provider_failure(e) from e
        finally:
            await client.close()
        if not theirs:
            raise domain.not_theirs(provider, account, scope.livemode)


async def _save(ctx: Context, scope: Scope, conn: asyncpg.Connection, preferred: str,
                credentials: domain.Credentials) -> ProviderSettings:
    key_id, sealed = domain.seal(ctx.state.secrets, scope.org_id, scope.livemode, credentials)
    row = await store.save(conn, scope.org_id, scope.livemode, preferred, key_id, sealed)
    taken = await store.claim_accounts(conn, scope.org_id, scope.livemode,
                                       domain.accounts(credentials))
    if taken:
        provider, account = taken[0]
        mode = "live" if scope.livemode else "test"
        raise conflict(f"{provider} account {account} is already another organization's"
                       f" in {mode} mode")
    settings = domain.view(scope.livemode, domain.Stored(
        row["version"], preferred, credentials, row["updated_at"]))
    await event(conn, scope, "provider_settings.updated", "provider_settings", scope.org_id,
                "", settings)
    ctx.state.providers.forget(scope.org_id, scope.livemode)
    return settings
