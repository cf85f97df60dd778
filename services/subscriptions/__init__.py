"""The subscriptions service (not built yet)."""
