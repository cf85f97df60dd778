"""The payments service: payment methods and payment intents (payments.md §2–§4), through
a provider (`providers/`: the offline one today; Stripe and Square next).

Files (services/README.md): `handlers.py` the handlers, `domain.py` the rules and the
PaymentIntent state machine (no I/O), `store.py` the SQL (schema `payments`),
`selection.py` which provider serves a request, `bootstrap.py` the state handlers share."""

from pathlib import Path

from services.payments import handlers
from services.payments.bootstrap import bootstrap
from services.runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="payments",
    handlers=handlers.router,
    migrations=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
)
