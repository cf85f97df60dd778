"""Shared mechanisms for every service: config, bus wiring, database, idempotency, ids,
telemetry, embedded dev servers. No billing rules live here."""
