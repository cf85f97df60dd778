"""The plan catalog: loads the JSON plan files under ``plans/`` into typed, validated plans.

File format (see ``plans/README.md``): each ``*.json`` file is a JSON array of plan objects.
Prices in the files are in major units (dollars, at most two decimals); every price the loader
exposes is an integer in minor units (cents). ``priceAnnual`` in a file means the price *per
month* when billed annually; a plan may state ``priceAnnualTotal`` (the price of a whole year)
instead, and the loader converts it to per month. Validation failures raise
:class:`CatalogError` naming the file and the plan.

Pure code: the only I/O is reading the catalog files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import msgspec

__all__ = [
    "DEFAULT_PLANS_DIR",
    "PLANS_DIR_ENV",
    "Catalog",
    "CatalogError",
    "Payouts",
    "Plan",
    "load_catalog",
    "parse_plans",
    "resolve_plans_dir",
]

#: Environment variable naming the catalog directory (overrides the packaged default).
PLANS_DIR_ENV = "BILLING_PLANS_DIR"
#: Name the reference used for the same override; honoured when ``BILLING_PLANS_DIR`` is unset.
_LEGACY_PLANS_DIR_ENV = "COMMERCE_PLANS_DIR"
#: The default catalog ships inside the package, next to this loader (package data), so an
#: installed wheel finds it as a checkout does.
DEFAULT_PLANS_DIR = Path(__file__).resolve().parent / "plans"

# Files load in this order first (the reference lists subscription plans before DNS plans);
# any other ``*.json`` file follows, by name.
_FIRST_FILES = ("subscription.json", "dns.json")

_SLUG_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
_CATEGORY_RE = _SLUG_RE
_CURRENCY_RE = re.compile(r"^[a-z]{3}$")
_CENTS = Decimal(100)
_MONTHS = 12


class CatalogError(ValueError):
    """A catalog directory or file is missing, unreadable or invalid."""

    def __init__(self, message: str, *, file: str | None = None, plan: str | None = None):
        self.file = file
        self.plan = plan
        where = ""
        if file is not None:
            where = f"{file}: "
        if plan is not None:
            where += f"plan {plan!r}: "
        super().__init__(f"plan catalog: {where}{message}")


class Payouts(msgspec.Struct, frozen=True, kw_only=True):
    """Revenue shared back to the account holder (idle compute / model resale)."""

    idle_resale_percent: int
    description: str = ""


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """One catalog plan. All prices are integer cents; ``None`` means "no list price"."""

    slug: str
    name: str
    description: str
    category: str
    #: Price for one month (per seat when ``per_user``); ``None`` = priced by contract.
    price_monthly_cents: int | None
    #: Price *per month* when billed annually (normalised); ``None`` = no annual option.
    price_annual_cents: int | None
    #: What one year costs when billed annually: the stated yearly total when the file gave
    #: one, else ``price_annual_cents * 12``.
    price_annual_total_cents: int | None
    #: Billed per seat: quantity x price.
    per_user: bool = False
    popular: bool = False
    contact_sales: bool = False
    currency: str = "usd"
    features: list[str] = msgspec.field(default_factory=list)
    #: Integer quotas (``-1`` = unlimited) and boolean switches, keyed as in the files.
    limits: dict[str, int | bool] = msgspec.field(default_factory=dict)
    addons: dict[str, bool] = msgspec.field(default_factory=dict)
    payouts: Payouts | None = None

    @property
    def id(self) -> str:
        """Catalog plans are identified by their slug."""
        return self.slug

    @property
    def is_free(self) -> bool:
        return self.price_monthly_cents == 0

    @property
    def sellable(self) -> bool:
        """Can be subscribed to self-service (has a list price, not a sales contract)."""
        return not self.contact_sales and self.price_monthly_cents is not None


class Catalog:
    """An ordered, read-only set of plans with lookups by slug and by category."""

    __slots__ = ("_plans", "_by_slug", "directory")

    def __init__(self, plans: Iterable[Plan], directory: Path | None = None):
        self._plans: tuple[Plan, ...] = tuple(plans)
        self._by_slug: dict[str, Plan] = {}
        for plan in self._plans:
            if plan.slug in self._by_slug:
                raise CatalogError("duplicate plan slug", plan=plan.slug)
            self._by_slug[plan.slug] = plan
        self.directory = directory

    def all(self) -> list[Plan]:
        """Every plan, in catalog order (file order, then order within the file)."""
        return list(self._plans)

    def get(self, slug: str) -> Plan | None:
        """The plan with exactly this slug (case-sensitive), or ``None``."""
        return self._by_slug.get(slug)

    def by_category(self, category: str) -> list[Plan]:
        """Plans of exactly this category (case-sensitive), in catalog order."""
        return [p for p in self._plans if p.category == category]

    def categories(self) -> list[str]:
        """Distinct categories in order of first appearance."""
        return list(dict.fromkeys(p.category for p in self._plans))

    def __len__(self) -> int:
        return len(self._plans)

    def __iter__(self) -> Iterator[Plan]:
        return iter(self._plans)

    def __contains__(self, slug: object) -> bool:
        return slug in self._by_slug

    def __repr__(self) -> str:
        return f"Catalog({len(self._plans)} plans from {self.directory})"


# --- file schema ---------------------------------------------------------------------------


class _RawPayouts(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    idle_resale_percent: int
    description: str = ""


class _RawPlan(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    id: str
    name: str
    category: str
    price_monthly: Decimal | None
    description: str = ""
    price_annual: Decimal | None = None
    price_annual_total: Decimal | None = None
    price_per_user: bool = False
    popular: bool = False
    contact_sales: bool = False
    currency: str = "usd"
    features: list[str] = msgspec.field(default_factory=list)
    # checked value by value in _build_plan, so an error can name the key
    limits: dict[str, object] = msgspec.field(default_factory=dict)
    addons: dict[str, object] = msgspec.field(default_factory=dict)
    payouts: _RawPayouts | None = None


class _PlanLabel(msgspec.Struct):
    id: object = None


class _Invalid(Exception):
    """Internal: a plan-level validation failure (message only)."""


def _to_cents(value: Decimal, field: str) -> int:
    if not value.is_finite():
        raise _Invalid(f"{field} must be a finite number")
    if value < 0:
        raise _Invalid(f"{field} must not be negative")
    cents = value * _CENTS
    if cents != cents.to_integral_value():
        raise _Invalid(f"{field} {value} has more than two decimal places")
    return int(cents)


def _per_month(total_cents: int) -> int:
    return int((Decimal(total_cents) / _MONTHS).to_integral_value(rounding=ROUND_HALF_UP))


def _build_plan(raw: _RawPlan) -> Plan:
    if not _SLUG_RE.match(raw.id):
        raise _Invalid("id must be a lower-case slug (letters, digits, '-' or '_')")
    if not raw.name.strip():
        raise _Invalid("name must not be empty")
    if not _CATEGORY_RE.match(raw.category):
        raise _Invalid(f"category {raw.category!r} must be a lower-case slug")
    if not _CURRENCY_RE.match(raw.currency):
        raise _Invalid(f"currency {raw.currency!r} must be a lower-case ISO 4217 code")

    monthly = None if raw.price_monthly is None else _to_cents(raw.price_monthly, "priceMonthly")
    if raw.price_annual is not None and raw.price_annual_total is not None:
        raise _Invalid(
            "give either priceAnnual (per month) or priceAnnualTotal (per year), not both"
        )
    if raw.price_annual is not None:
        annual = _to_cents(raw.price_annual, "priceAnnual")
        annual_total: int | None = annual * _MONTHS
    elif raw.price_annual_total is not None:
        annual_total = _to_cents(raw.price_annual_total, "priceAnnualTotal")
        annual = _per_month(annual_total)
    else:
        annual = annual_total = None

    if monthly is None:
        if not raw.contact_sales:
            raise _Invalid("priceMonthly is null but the plan is not contactSales")
        if annual is not None:
            raise _Invalid("an annual price needs a monthly price")
    elif annual is not None and annual > monthly:
        raise _Invalid(
            f"annual price per month ({annual} cents) exceeds the monthly price ({monthly} cents);"
            " a yearly total belongs in priceAnnualTotal"
        )

    for i, feature in enumerate(raw.features):
        if not feature.strip():
            raise _Invalid(f"features[{i}] is empty")
    limits: dict[str, int | bool] = {}
    for key, value in raw.limits.items():
        if not key:
            raise _Invalid("limits has an empty key")
        if not isinstance(value, int):  # bool is an int
            raise _Invalid(f"limits.{key} must be an integer or a boolean, got {value!r}")
        if not isinstance(value, bool) and value < -1:
            raise _Invalid(f"limits.{key} = {value}: use -1 for unlimited, never below")
        limits[key] = value
    addons: dict[str, bool] = {}
    for key, value in raw.addons.items():
        if not key or not isinstance(value, bool):
            raise _Invalid(f"addons.{key} must be a boolean, got {value!r}")
        addons[key] = value
    payouts = None
    if raw.payouts is not None:
        if not 0 <= raw.payouts.idle_resale_percent <= 100:
            raise _Invalid("payouts.idleResalePercent must be between 0 and 100")
        payouts = Payouts(
            idle_resale_percent=raw.payouts.idle_resale_percent,
            description=raw.payouts.description,
        )

    return Plan(
        slug=raw.id,
        name=raw.name,
        description=raw.description,
        category=raw.category,
        price_monthly_cents=monthly,
        price_annual_cents=annual,
        price_annual_total_cents=annual_total,
        per_user=raw.price_per_user,
        popular=raw.popular,
        contact_sales=raw.contact_sales,
        currency=raw.currency,
        features=list(raw.features),
        limits=limits,
        addons=addons,
        payouts=payouts,
    )


def _label(raw: msgspec.Raw, index: int) -> str:
    try:
        ident = msgspec.json.decode(raw, type=_PlanLabel).id
    except (msgspec.ValidationError, msgspec.DecodeError):
        ident = None
    return ident if isinstance(ident, str) and ident else f"#{index}"


def parse_plans(data: bytes | str, source: str = "<memory>") -> list[Plan]:
    """Parse one catalog file's content (a JSON array of plans). ``source`` names it in errors."""
    try:
        items = msgspec.json.decode(data, type=list[msgspec.Raw])
    except msgspec.ValidationError as exc:
        raise CatalogError(f"expected a JSON array of plans ({exc})", file=source) from None
    except msgspec.DecodeError as exc:
        raise CatalogError(f"invalid JSON ({exc})", file=source) from None
    plans: list[Plan] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        label = _label(item, index)
        try:
            raw = msgspec.json.decode(item, type=_RawPlan)
            plan = _build_plan(raw)
        except msgspec.ValidationError as exc:
            raise CatalogError(str(exc), file=source, plan=label) from None
        except _Invalid as exc:
            raise CatalogError(str(exc), file=source, plan=label) from None
        if plan.slug in seen:
            raise CatalogError("duplicate plan id", file=source, plan=label)
        seen.add(plan.slug)
        plans.append(plan)
    return plans


def resolve_plans_dir(directory: Path | str | None = None) -> Path:
    """The catalog directory: the argument, else ``$BILLING_PLANS_DIR``, else
    ``$COMMERCE_PLANS_DIR`` (the reference's name), else the catalog shipped in the package."""
    if directory is not None:
        return Path(directory)
    for env in (PLANS_DIR_ENV, _LEGACY_PLANS_DIR_ENV):
        value = os.environ.get(env, "").strip()
        if value:
            return Path(value)
    return DEFAULT_PLANS_DIR


def _file_order(path: Path) -> tuple[int, str]:
    try:
        return (_FIRST_FILES.index(path.name), path.name)
    except ValueError:
        return (len(_FIRST_FILES), path.name)


def load_catalog(directory: Path | str | None = None) -> Catalog:
    """Load every ``*.json`` plan file of the catalog directory (see :func:`resolve_plans_dir`).

    Order: ``subscription.json``, then ``dns.json``, then other files by name; plans keep their
    order within a file. Any unreadable or invalid file, or a slug defined twice, raises
    :class:`CatalogError`.
    """
    root = resolve_plans_dir(directory)
    if not root.is_dir():
        raise CatalogError(f"catalog directory {str(root)!r} does not exist")
    files = sorted(
        (p for p in root.glob("*.json") if p.is_file() and not p.name.startswith(".")),
        key=_file_order,
    )
    if not files:
        raise CatalogError(f"no *.json plan files in {str(root)!r}")

    plans: list[Plan] = []
    origin: dict[str, str] = {}
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CatalogError(f"cannot read ({exc.strerror or exc})", file=str(path)) from None
        for plan in parse_plans(data, source=str(path)):
            if plan.slug in origin:
                raise CatalogError(
                    f"duplicate plan id (already defined in {origin[plan.slug]})",
                    file=str(path),
                    plan=plan.slug,
                )
            origin[plan.slug] = str(path)
            plans.append(plan)
    if not plans:
        raise CatalogError(f"no plans defined in {str(root)!r}")
    return Catalog(plans, directory=root)
