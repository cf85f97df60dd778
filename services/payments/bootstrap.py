"""Payments' state, built once when it starts: the providers handlers choose from, the
key provider credentials are sealed with, and the batches concurrent requests share."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.payments.methods import store
from services.payments.postings.sender import Outbound
from services.payments.provider_settings.handlers import stored
from services.payments.selection import Providers
from services.payments.topups.batches import TopupWrites
from services.payments.webhooks_in.handlers import Secrets, intake
from services.runtime.batching import MicroBatcher
from services.runtime.encryption import SecretBox
from services.runtime.service import Context

log = logging.getLogger(__name__)


@dataclass
class PaymentsState:
    providers: Providers
    # The ledger asks this for starter-credit claims, and for status checks while its own
    # copy of the methods catches up after a start: concurrent checks share a query.
    method_checks: MicroBatcher
    # `BILLING_SECRETS_KEY`; None: organizations cannot store provider credentials (503).
    secrets: SecretBox | None
    topups: TopupWrites  # concurrent top-ups share their claims, charges and completions
    postings: Outbound  # ledger postings on their way
    webhook_secrets: Secrets  # each organization's, cached
    webhook_intake: MicroBatcher  # concurrent provider deliveries share their insert


async def bootstrap(ctx: Context) -> None:
    secrets = SecretBox.from_setting(ctx.settings.secrets_key)
    if secrets is None:
        log.warning("BILLING_SECRETS_KEY is not set: organizations cannot store provider "
                    "credentials (the platform's, from the environment, still serve)")
    providers = Providers(ctx.settings, lambda org_id, livemode: stored(
        ctx.pool, ctx.state.secrets, org_id, livemode))
    ctx.on_stop(providers.close)
    postings = Outbound(ctx)
    ctx.on_stop(postings.stop)
    ctx.state = PaymentsState(
        providers, MicroBatcher(lambda checks: store.methods_exist(ctx.pool, checks)), secrets,
        TopupWrites(ctx), postings, Secrets(ctx), intake(ctx))
