"""The ledger service: balances, deposits, usage debits (and, later, credits and tiers)."""
