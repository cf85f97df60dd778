"""The invoicing service (not built yet)."""
