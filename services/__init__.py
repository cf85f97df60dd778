"""Billing platform services. Each subpackage is one service; runtime/ holds shared mechanisms."""
