"""Gateway messages other processes send it."""

# Broadcast, no queue group: every gateway replica drops the revoked key from its cache.
API_KEY_REVOKED = "billing.gateway.api_key.revoked"
