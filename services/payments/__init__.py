"""The payments service: providers, payment methods, payment and setup intents, top-ups,
refunds, payouts, bank transfers, disputes, inbound provider webhooks, the billing event
log and outbound webhooks (payments.md §1–§6).

One sub-package per area, each with `handlers.py`, `domain.py` (rules, no I/O) and
`store.py` (SQL, schema `payments`): `methods/` (payment methods, provider customers, the
ledger's payment-method question, card tokenization), `intents/` (payment and setup intents),
`topups/`, `refunds/`, `payouts/`, `bank_transfers/` (instructions and the reconciliation of
transfers), `disputes/`, `webhooks_in/` (provider webhooks: verified, stored once, applied),
`provider_settings/` (each organization's provider credentials), `events/` (the platform's
event log, read from JetStream), `webhook_endpoints/` and `webhook_deliveries/` (signed,
ordered, retried POSTs of the events to them), `capabilities/` (what the platform
advertises);
`postings/` sends what payments owes the ledger. `common.py` is what the areas share;
`providers/` the provider interface and its implementations; `selection.py` which provider
serves a request; `bootstrap.py` the state handlers share."""

from pathlib import Path

from services.payments.bank_transfers import handlers as bank_transfers
from services.payments.bootstrap import bootstrap
from services.payments.capabilities import handlers as capabilities
from services.payments.disputes import handlers as disputes
from services.payments.events import handlers as events
from services.payments.intents import handlers as intents
from services.payments.methods import handlers as methods
from services.payments.payouts import handlers as payouts
from services.payments.postings.sender import post_due
from services.payments.provider_settings import handlers as provider_settings
from services.payments.refunds import handlers as refunds
from services.payments.topups import handlers as topups
from services.payments.webhook_deliveries import handlers as webhook_deliveries
from services.payments.webhook_endpoints import handlers as webhook_endpoints
from services.payments.webhooks_in import handlers as webhooks_in
from services.runtime.config import Settings
from services.runtime.service import Job, Router, ServiceSpec


def _recovery_interval(settings: Settings) -> float:
    return max(settings.payments_recovery_s / 6, 0.5)


SPEC = ServiceSpec(
    name="payments",
    handlers=Router(methods.router, intents.router, topups.router, refunds.router,
                    provider_settings.router, payouts.router, bank_transfers.router,
                    disputes.router, webhooks_in.router, events.router,
                    webhook_endpoints.router, webhook_deliveries.router, capabilities.router),
    migrations=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
    # What a crash, a timeout or an outage left behind: ledger postings, top-ups, confirms,
    # refunds the provider never answered, provider events stored but not applied.
    jobs=(Job(1.0, post_due), Job(_recovery_interval, topups.finish_unfinished),
          Job(_recovery_interval, intents.settle_interrupted_confirms),
          Job(_recovery_interval, refunds.redrive_unanswered),
          Job(_recovery_interval, webhooks_in.redrive_unfinished)),
)
