"""What a user's subscriptions entitle them to: the ledger's tiers and metering's DNS limits
ask it (contracts/entitlements.py)."""
