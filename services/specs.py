"""Every built service, listed once. The platform (`billing dev`), `billing serve`,
`billing migrate` and the packaging loop over this list (services/README.md)."""

from __future__ import annotations

from pathlib import Path

from services import invoicing, ledger, metering, payments, subscriptions
from services.runtime.service import ServiceSpec

SPECS: tuple[ServiceSpec, ...] = (ledger.SPEC, metering.SPEC, invoicing.SPEC, payments.SPEC,
                                  subscriptions.SPEC)
BY_NAME: dict[str, ServiceSpec] = {spec.name: spec for spec in SPECS}

# The gateway is no bus service (HTTP in front) but has its own schema too.
GATEWAY_MIGRATIONS = Path(__file__).parent / "gateway" / "migrations"


def migrations() -> list[tuple[str, Path]]:
    """(schema, folder) of every schema the platform owns, in the order they apply."""
    return [("gateway", GATEWAY_MIGRATIONS),
            *((spec.name, spec.migrations) for spec in SPECS if spec.migrations)]
