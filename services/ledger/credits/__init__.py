"""Credit grants: create, void, list, balances, and burn-down for invoicing."""
