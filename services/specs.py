"""Every built service, listed once. The platform (`billing dev`), `billing serve`,
`billing migrate` and the packaging loop over this list (services/README.md).

Listed by name and imported when asked for: `billing serve` starts one service and loads
that service's package alone (not the others', payments' provider SDKs among them)."""

from __future__ import annotations

import importlib
from pathlib import Path

from services.runtime.service import ServiceSpec

NAMES: tuple[str, ...] = ("ledger", "metering", "invoicing", "payments", "subscriptions")

# The gateway is no bus service (HTTP in front) but has its own schema too.
GATEWAY_MIGRATIONS = Path(__file__).parent / "gateway" / "migrations"


def spec(name: str) -> ServiceSpec:
    """The named service's spec (`services.<name>.SPEC`), one of NAMES."""
    return importlib.import_module(f"services.{name}").SPEC


def specs() -> tuple[ServiceSpec, ...]:
    """Every service's spec, in the order they start and migrate."""
    return tuple(spec(name) for name in NAMES)


def migrations() -> list[tuple[str, Path]]:
    """(schema, folder) of every schema the platform owns, in the order they apply."""
    return [("gateway", GATEWAY_MIGRATIONS),
            *((s.name, s.migrations) for s in specs() if s.migrations)]
