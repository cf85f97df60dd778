"""Tier configuration (ledger.md §2.5, §8 G.1–G.7) and tier resolution (§9.10 [FIX])."""

from services.ledger.balances import tiers


def test_tier_configs():
    assert (tiers.TIERS["free"].max_agents, tiers.TIERS["free"].daily_credits_cents) == (1, 100)
    assert (tiers.TIERS["pro"].max_agents, tiers.TIERS["pro"].daily_credits_cents) == (10, 0)
    assert list(tiers.TIERS) == ["free", "starter", "pro", "enterprise"]


def test_parse_is_exact_and_defaults_to_free():
    for name in ("free", "starter", "pro", "enterprise"):
        assert tiers.parse(name).name == name
    for name in ("", "gold", "Pro", "nonexistent"):
        assert tiers.parse(name) is tiers.FREE


def test_model_access_by_prefix():
    pro, free = tiers.TIERS["pro"], tiers.FREE
    assert pro.allows("claude-opus-4") and pro.allows("anything")
    assert free.allows("claude-sonnet-4-20250514") and free.allows("zen3-mini")
    assert not free.allows("claude-opus-4") and not free.allows("gpt-4o")


def test_daily_credits_and_unlimited_agents():
    assert [t.name for t in tiers.TIERS.values() if t.has_daily_credits] == ["free"]
    assert [t.name for t in tiers.TIERS.values() if t.unlimited_agents] == ["enterprise"]
    assert tiers.daily_remaining(tiers.FREE, 30) == 70
    assert tiers.daily_remaining(tiers.FREE, 250) == 0
    assert tiers.daily_remaining(tiers.TIERS["pro"], 0) == 0


def test_only_minters_may_name_a_tier():
    assert tiers.resolve(None, "enterprise", may_name_tier=True).name == "enterprise"
    assert tiers.resolve(None, "enterprise", may_name_tier=False) is tiers.FREE
    assert tiers.resolve("gold", "pro", may_name_tier=True) is tiers.FREE  # the claim wins
    assert tiers.resolve("pro", "", may_name_tier=False).name == "pro"
