"""Balances and money movements: deposits, withdrawals, refunds, starter credit, expiring
lots, tiers and status."""
