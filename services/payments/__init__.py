"""The payments service (not built yet)."""
