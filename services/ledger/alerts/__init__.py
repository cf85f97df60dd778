"""Spend alerts: thresholds on a user's monthly spend, fired inside usage debits."""
