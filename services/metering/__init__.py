"""The metering service (not built yet)."""
