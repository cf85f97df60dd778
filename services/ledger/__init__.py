"""The ledger service: balances and money movements, usage debits, credit grants, spend
alerts and the double-entry journal.

One sub-package per area, each with the same files: `handlers.py` (module-level handlers
on the area's router: decode is done by the runtime, they call the domain and encode),
`domain.py` (rules, no I/O) and `store.py` (SQL). `payment_methods/` has no handlers: its
consumer keeps the ledger's copy of payments' payment methods (for the status check) from
payments' events. `bootstrap.py` builds the state the handlers share; `migrations/` is the
`ledger` schema. services/README.md is the template.
"""

from pathlib import Path

from services.ledger.alerts import handlers as alerts
from services.ledger.balances import handlers as balances
from services.ledger.bootstrap import bootstrap
from services.ledger.credits import handlers as credits
from services.ledger.journal import handlers as journal
from services.ledger.usage import handlers as usage
from services.runtime.service import Job, Router, ServiceSpec

SPEC = ServiceSpec(
    name="ledger",
    handlers=Router(balances.router, usage.router, credits.router, alerts.router,
                    journal.router),
    migrations=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
    jobs=(
        # Expired deposits lapse, and expired journal holds release, on the same interval.
        Job(lambda settings: settings.lapse_interval_s, balances.lapse_expired_deposits),
        Job(lambda settings: settings.lapse_interval_s, journal.expire_holds),
    ),
)
