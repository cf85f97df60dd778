"""The default plan catalog (plans/, shipped beside the loader) and its loader (contracts.catalog)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts import catalog as catalog_module
from contracts.catalog import (
    DEFAULT_PLANS_DIR,
    Catalog,
    CatalogError,
    Plan,
    load_catalog,
    parse_plans,
)

# The reference catalog's facts: slug -> (category, monthly cents, annual cents per month,
# per seat, popular, contact sales). world-pro / world-team state a yearly total (290, 990 USD),
# normalised here to per month: 29000 / 12 = 2416.67 -> 2417, 99000 / 12 = 8250.
REFERENCE = {
    "developer": ("personal", 0, 0, False, False, False),
    "pro": ("personal", 2000, 1600, True, False, False),
    "team": ("team", 2500, 2000, True, True, False),
    "max": ("personal", 20000, 16000, True, False, False),
    "team-max": ("team", 22500, 18000, True, False, False),
    "enterprise": ("enterprise", None, None, False, False, True),
    "world-free": ("world", 0, 0, False, False, False),
    "world-pro": ("world", 2900, 2417, False, True, False),
    "world-team": ("world", 9900, 8250, False, False, False),
    "dns-free": ("dns", 0, 0, False, False, False),
    "dns-pro": ("dns", 500, 400, False, True, False),
    "dns-enterprise": ("dns", 2500, 2000, False, False, False),
}

REFERENCE_LIMITS = {
    "developer": {"requestsPerMinute": 60, "tokensPerMinute": 100000, "freeCredit": 5},
    "pro": {"requestsPerMinute": 500, "tokensPerMinute": 1000000},
    "team": {"requestsPerMinute": 1000, "tokensPerMinute": 2000000},
    "max": {"requestsPerMinute": 5000, "tokensPerMinute": 10000000, "includedCloudCredits": 100},
    "team-max": {
        "requestsPerMinute": 5000,
        "tokensPerMinute": 10000000,
        "includedCloudCreditsPerUser": 100,
    },
    "enterprise": {"requestsPerMinute": 50000, "tokensPerMinute": 100000000},
    "world-free": {"maxAlerts": 3, "apiRateLimit": 60, "mcpRateLimit": 30},
    "world-pro": {"maxAlerts": -1, "apiRateLimit": 6000, "mcpRateLimit": 3000},
    "world-team": {"maxAlerts": -1, "maxMembers": 5, "apiRateLimit": 30000, "mcpRateLimit": 15000},
    "dns-free": {"zones": 2, "recordsPerZone": 50, "queriesPerDay": 10000},
    "dns-pro": {"zones": 25, "recordsPerZone": 500, "queriesPerDay": 1000000},
    "dns-enterprise": {"zones": -1, "recordsPerZone": -1, "queriesPerDay": -1},
}


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_PLANS_DIR", raising=False)
    monkeypatch.delenv("COMMERCE_PLANS_DIR", raising=False)


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog()


def _plan(**overrides: object) -> dict[str, object]:
    plan: dict[str, object] = {
        "id": "solo",
        "name": "Solo",
        "description": "A single test plan.",
        "category": "custom",
        "priceMonthly": 12.5,
        "priceAnnual": 10,
        "features": ["One thing"],
        "limits": {"widgets": 3},
    }
    plan.update(overrides)
    return plan


def _write(directory: Path, name: str, plans: object) -> Path:
    path = directory / name
    path.write_text(json.dumps(plans), encoding="utf-8")
    return path


# --- the default catalog ---------------------------------------------------------------------


def test_default_directory_is_the_catalog_shipped_beside_its_loader(catalog: Catalog) -> None:
    # Package data next to the loader, so a non-editable install has it too (issue 9).
    assert DEFAULT_PLANS_DIR == Path(catalog_module.__file__).resolve().parent / "plans"
    assert catalog.directory == DEFAULT_PLANS_DIR


def test_every_reference_plan_and_category_is_present_in_order(catalog: Catalog) -> None:
    assert [p.slug for p in catalog.all()] == list(REFERENCE)
    assert catalog.categories() == ["personal", "team", "enterprise", "world", "dns"]
    for category in {c for c, *_ in REFERENCE.values()}:
        expected = [slug for slug, facts in REFERENCE.items() if facts[0] == category]
        assert [p.slug for p in catalog.by_category(category)] == expected
    assert len(catalog.by_category("world")) == 3
    assert catalog.by_category("World") == []


@pytest.mark.parametrize("slug", list(REFERENCE))
def test_plan_facts_match_the_reference(catalog: Catalog, slug: str) -> None:
    category, monthly, annual, per_user, popular, contact_sales = REFERENCE[slug]
    plan = catalog.get(slug)
    assert isinstance(plan, Plan)
    assert plan.slug == plan.id == slug
    assert plan.name and plan.description and plan.features
    assert plan.category == category
    assert plan.currency == "usd"
    assert plan.price_monthly_cents == monthly
    assert plan.price_annual_cents == annual
    assert plan.per_user is per_user
    assert plan.popular is popular
    assert plan.contact_sales is contact_sales
    assert plan.limits == REFERENCE_LIMITS[slug]
    for price in (plan.price_monthly_cents, plan.price_annual_cents):
        assert price is None or type(price) is int


def test_free_developer_plan_costs_nothing(catalog: Catalog) -> None:
    developer = catalog.get("developer")
    assert developer is not None
    assert developer.price_monthly_cents == 0
    assert developer.price_annual_cents == 0
    assert developer.is_free and developer.sellable
    assert developer.limits["requestsPerMinute"] == 60
    assert developer.limits["tokensPerMinute"] == 100000
    assert developer.payouts is not None and developer.payouts.idle_resale_percent == 20


def test_per_seat_plans_are_flagged(catalog: Catalog) -> None:
    assert {p.slug for p in catalog if p.per_user} == {"pro", "team", "max", "team-max"}


def test_enterprise_is_priced_by_contract(catalog: Catalog) -> None:
    enterprise = catalog.get("enterprise")
    assert enterprise is not None
    assert enterprise.contact_sales
    assert enterprise.price_monthly_cents is None
    assert not enterprise.sellable and not enterprise.is_free


def test_annual_prices_mean_per_month_when_billed_annually(catalog: Catalog) -> None:
    pro = catalog.get("pro")
    assert pro is not None
    assert (pro.price_annual_cents, pro.price_annual_total_cents) == (1600, 19200)
    # world plans state a yearly total in the file: converted to per month, total kept exact
    world_pro = catalog.get("world-pro")
    world_team = catalog.get("world-team")
    assert world_pro is not None and world_team is not None
    assert (world_pro.price_annual_cents, world_pro.price_annual_total_cents) == (2417, 29000)
    assert (world_team.price_annual_cents, world_team.price_annual_total_cents) == (8250, 99000)
    for plan in catalog:
        if plan.price_annual_cents is not None:
            assert plan.price_monthly_cents is not None
            assert plan.price_annual_cents <= plan.price_monthly_cents


def test_yearly_total_is_converted_to_per_month() -> None:
    data = json.dumps([_plan(priceMonthly=10, priceAnnual=None, priceAnnualTotal=100)])
    (plan,) = parse_plans(data)
    assert plan.price_monthly_cents == 1000
    assert plan.price_annual_cents == 833  # 10000 / 12 = 833.33
    assert plan.price_annual_total_cents == 10000
    (half,) = parse_plans(
        json.dumps([_plan(priceMonthly=1, priceAnnual=None, priceAnnualTotal=0.06)])
    )
    assert half.price_annual_cents == 1  # 6 / 12 = 0.5 rounds half up


def test_dns_plans_and_their_limits(catalog: Catalog) -> None:
    dns = catalog.by_category("dns")
    assert [p.slug for p in dns] == ["dns-free", "dns-pro", "dns-enterprise"]
    limits = {
        p.slug: (p.limits["queriesPerDay"], p.limits["zones"], p.limits["recordsPerZone"])
        for p in dns
    }
    assert limits == {
        "dns-free": (10000, 2, 50),
        "dns-pro": (1000000, 25, 500),
        "dns-enterprise": (-1, -1, -1),
    }


def test_lookup_is_exact(catalog: Catalog) -> None:
    assert catalog.get("dns-pro") is not None
    assert catalog.get("nonexistent-plan") is None
    assert catalog.get("Pro") is None
    assert "pro" in catalog and "nope" not in catalog
    assert len(catalog) == 12


def test_plan_files_are_json_arrays_with_plan_ids() -> None:
    for path in DEFAULT_PLANS_DIR.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(data, list) and all("id" in p for p in data)


# --- configuration ---------------------------------------------------------------------------


def test_env_directory_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "custom.json", [_plan()])
    (tmp_path / "README.md").write_text("not a plan file")
    monkeypatch.setenv("BILLING_PLANS_DIR", str(tmp_path))
    catalog = load_catalog()
    assert catalog.directory == tmp_path
    assert [p.slug for p in catalog.all()] == ["solo"]
    solo = catalog.get("solo")
    assert solo is not None
    assert solo.price_monthly_cents == 1250
    assert solo.price_annual_cents == 1000
    assert solo.limits == {"widgets": 3}
    assert catalog.by_category("custom") == [solo]
    assert catalog.get("developer") is None


def test_explicit_directory_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_PLANS_DIR", str(tmp_path / "missing"))
    assert len(load_catalog(DEFAULT_PLANS_DIR)) == 12


def test_file_order_subscription_then_dns_then_others(tmp_path: Path) -> None:
    _write(tmp_path, "a-extra.json", [_plan(id="extra")])
    _write(tmp_path, "dns.json", [_plan(id="d")])
    _write(tmp_path, "subscription.json", [_plan(id="s")])
    assert [p.slug for p in load_catalog(tmp_path)] == ["s", "d", "extra"]


# --- validation ------------------------------------------------------------------------------


def test_malformed_json_raises_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"id": "x",', encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path)
    assert "broken.json" in str(info.value)
    assert info.value.file == str(path)


@pytest.mark.parametrize(
    ("plan", "fragment"),
    [
        (_plan(priceMonthly="twelve"), "priceMonthly"),
        (_plan(limits={"widgets": 2.5}), "widgets"),
        (_plan(limits={"widgets": -2}), "widgets"),
        (_plan(limits={"widgets": "3"}), "widgets"),
        (_plan(addons={"sso": 1}), "addons.sso"),
        (_plan(priceMonthly=-1), "negative"),
        (_plan(priceMonthly=1.234), "decimal"),
        (_plan(priceAnnualTotal=100), "not both"),
        (_plan(priceMonthly=29, priceAnnual=290), "priceAnnualTotal"),
        (_plan(priceMonthly=None, priceAnnual=None), "contactSales"),
        (_plan(pricMonthly=3), "pricMonthly"),
        (_plan(id="Has Spaces"), "slug"),
        (_plan(name=""), "name"),
        (_plan(features=["ok", " "]), "features"),
        (_plan(payouts={"idleResalePercent": 120}), "idleResalePercent"),
    ],
)
def test_invalid_plan_names_file_and_plan(
    tmp_path: Path, plan: dict[str, object], fragment: str
) -> None:
    _write(tmp_path, "good.json", [_plan(id="fine")])
    _write(tmp_path, "bad.json", [plan])
    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path)
    message = str(info.value)
    assert "bad.json" in message
    assert f"plan {plan['id']!r}" in message
    assert fragment in message
    assert info.value.plan == plan["id"]


def test_plan_without_id_is_named_by_position(tmp_path: Path) -> None:
    bad = _plan()
    del bad["id"]
    _write(tmp_path, "plans.json", [_plan(id="first"), bad])
    with pytest.raises(CatalogError, match=r"plans\.json: plan '#1': .*id"):
        load_catalog(tmp_path)


def test_not_an_array_raises(tmp_path: Path) -> None:
    _write(tmp_path, "object.json", {"plans": []})
    with pytest.raises(CatalogError, match="object.json"):
        load_catalog(tmp_path)


def test_duplicate_slug_across_files_raises(tmp_path: Path) -> None:
    _write(tmp_path, "one.json", [_plan(id="same")])
    _write(tmp_path, "two.json", [_plan(id="same")])
    with pytest.raises(CatalogError, match=r"two\.json: plan 'same': duplicate .*one\.json"):
        load_catalog(tmp_path)


def test_missing_or_empty_directory_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CatalogError, match="no \\*.json plan files"):
        load_catalog(tmp_path)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog()


def test_reference_style_yearly_total_in_price_annual_is_refused() -> None:
    # The reference stored world-pro's yearly total (290) in priceAnnual; we refuse that shape.
    data = json.dumps([_plan(id="world-pro", priceMonthly=29, priceAnnual=290)])
    with pytest.raises(CatalogError, match="exceeds the monthly price"):
        parse_plans(data, source="reference.json")
