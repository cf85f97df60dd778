"""Payments' state, built once when it starts: the providers handlers choose from, the
key provider credentials (and webhook secrets) are sealed with, the batches concurrent
requests share, and the event log's reader with the webhook sender it feeds."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.payments.events.consumer import EventLog
from services.payments.methods import store
from services.payments.postings.sender import Outbound
from services.payments.provider_settings.handlers import stored
from services.payments.selection import Providers
from services.payments.topups.batches import TopupWrites
from services.payments.webhook_deliveries.sender import Sender
from services.payments.webhooks_in.handlers import Secrets, intake
from services.runtime.batching import MicroBatcher
from services.runtime.bus import nats_servers
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
    webhooks: Sender  # outbound webhook deliveries (its `clock` is the deliveries' time)
    event_log: EventLog  # every billing event, logged, and its deliveries queued


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
    webhooks = Sender(lambda: ctx.pool, secrets, concurrency=ctx.settings.webhook_concurrency)
    event_log = EventLog(lambda: ctx.pool, nats_servers(ctx.settings.nats_url),
                         clock=lambda: webhooks.clock(), queued=webhooks.wake)
    topups = TopupWrites(ctx)
    ctx.on_stop(topups.stop)
    ctx.state = PaymentsState(
        providers, MicroBatcher(lambda checks: store.methods_exist(ctx.pool, checks)), secrets,
        topups, postings, Secrets(ctx), intake(ctx), webhooks, event_log)
    await webhooks.start()
    ctx.on_stop(webhooks.stop)
    ctx.log_published = event_log.log_published  # payments' own events, as they go out
    await event_log.start()
    ctx.on_stop(event_log.stop)
