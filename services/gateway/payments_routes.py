"""Payments routes (payments.md §1.3, §3, §4.1–§4.9, §5, §6).

Payment and setup intents, refunds and an organization's provider settings are `admin` (the
caller's mode: a test key reads and writes the test settings). Payment methods are `user`: an
end user is pinned to themselves through `customerId` (create, list); methods reached by id
are checked against the caller by payments (someone else's → 404, no existence oracle). Card
tokenization is `user` and takes at most `CARD_BODY_BYTES` (a card is never kept). Payouts
(create, cancel) and the reconciliation of a transfer move money: `mint`; reconciliation is
served on the reference's path and on the seed document's (§4.8). Disputes are `admin`.
Provider webhooks carry no credential (`webhook`: the provider's signature, for the
organization the URL names, else the platform's). The event log, webhook endpoints and
their deliveries are `admin`; creating an endpoint and rotating its secret are not
idempotent (the answer holds the secret, which is not stored in clear)."""

from __future__ import annotations

from contracts import disputes, payments, payouts, webhooks
from contracts.webhooks_in import WEBHOOK_INGEST
from services.gateway.routing import Route

PAYMENT_ROUTES: tuple[Route, ...] = (
    Route("POST", "/billing/payment-intents", payments.PAYMENT_INTENT_CREATE, "admin",
          user_field=None, idempotent=True, status=201),
    Route("GET", "/billing/payment-intents", payments.PAYMENT_INTENT_LIST, "admin",
          source="query", user_field=None),
    Route("GET", "/billing/payment-intents/{id}", payments.PAYMENT_INTENT_GET, "admin",
          source="query", user_field=None),
    Route("POST", "/billing/payment-intents/{id}/confirm", payments.PAYMENT_INTENT_CONFIRM,
          "admin", source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/payment-intents/{id}/capture", payments.PAYMENT_INTENT_CAPTURE,
          "admin", source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/payment-intents/{id}/cancel", payments.PAYMENT_INTENT_CANCEL,
          "admin", source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/refunds", payments.REFUND_CREATE, "admin", user_field=None,
          idempotent=True, status=201),
    Route("GET", "/billing/refunds", payments.REFUND_LIST, "admin", source="query",
          user_field=None),
    Route("GET", "/billing/refunds/{id}", payments.REFUND_GET, "admin", source="query",
          user_field=None),
    Route("POST", "/billing/setup-intents", payments.SETUP_INTENT_CREATE, "admin",
          user_field=None, idempotent=True, status=201),
    Route("GET", "/billing/setup-intents/{id}", payments.SETUP_INTENT_GET, "admin",
          source="query", user_field=None),
    Route("POST", "/billing/setup-intents/{id}/confirm", payments.SETUP_INTENT_CONFIRM,
          "admin", source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/setup-intents/{id}/cancel", payments.SETUP_INTENT_CANCEL,
          "admin", source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/payment-methods", payments.PAYMENT_METHOD_CREATE, "user",
          user_field="customerId", idempotent=True, status=201),
    Route("GET", "/billing/payment-methods", payments.PAYMENT_METHOD_LIST, "user",
          source="query", user_field=None),
    Route("GET", "/billing/payment-methods/{id}", payments.PAYMENT_METHOD_GET, "user",
          source="query", user_field=None),
    Route("PATCH", "/billing/payment-methods/{id}", payments.PAYMENT_METHOD_UPDATE, "user",
          user_field=None, idempotent=True),
    Route("DELETE", "/billing/payment-methods/{id}", payments.PAYMENT_METHOD_DETACH, "user",
          source="query", user_field=None, idempotent=True),
    # A customer id is `owner/name`: the segment may hold its slash (or `%2F`).
    Route("POST", "/billing/customers/{id:.+}/default-payment-method",
          payments.PAYMENT_METHOD_SET_DEFAULT, "user", user_field=None, idempotent=True),
    # Top-ups answer 200 (conventions §3); end users top up their own balance only.
    Route("POST", "/billing/topup", payments.TOPUP_SAVED_METHOD, "admin", user_field=None,
          idempotent=True),
    Route("POST", "/billing/topup/token", payments.TOPUP_TOKEN, "user", user_field=None,
          idempotent=True),
    Route("POST", "/billing/card/tokenize", payments.CARD_TOKENIZE, "user", user_field=None,
          max_body=payments.CARD_BODY_BYTES),
    Route("GET", "/billing/provider-settings", payments.PROVIDER_SETTINGS_GET, "admin",
          source="query", user_field=None),
    Route("POST", "/billing/provider-settings", payments.PROVIDER_SETTINGS_UPDATE, "admin",
          user_field=None),
    Route("DELETE", "/billing/provider-settings/{provider}", payments.PROVIDER_SETTINGS_DELETE,
          "admin", source="query", user_field=None),
    Route("POST", "/billing/payouts", payouts.PAYOUT_CREATE, "mint", user_field=None,
          idempotent=True, status=201),
    Route("GET", "/billing/payouts", payouts.PAYOUT_LIST, "admin", source="query",
          user_field=None),
    Route("GET", "/billing/payouts/{id}", payouts.PAYOUT_GET, "admin", source="query",
          user_field=None),
    Route("POST", "/billing/payouts/{id}/cancel", payouts.PAYOUT_CANCEL, "mint",
          source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/bank-transfer-instructions", payouts.INSTRUCTION_CREATE, "admin",
          user_field=None, idempotent=True, status=201),
    Route("GET", "/billing/bank-transfer-instructions", payouts.INSTRUCTION_LIST, "admin",
          source="query", user_field=None),
    Route("GET", "/billing/bank-transfer-instructions/{id}", payouts.INSTRUCTION_GET, "admin",
          source="query", user_field=None),
    Route("POST", "/billing/reconciliation/match", payouts.TRANSFER_MATCH, "mint",
          user_field=None, idempotent=True),
    Route("POST", "/billing/bank-transfer-instructions/reconciliation/match",
          payouts.TRANSFER_MATCH, "mint", user_field=None, idempotent=True),
    # Static: what the platform advertises (subscriptions.md §3.7).
    Route("GET", "/billing/capabilities", payments.CAPABILITIES_GET, "admin", source="query",
          user_field=None),
    Route("GET", "/billing/disputes", disputes.DISPUTE_LIST, "admin", source="query",
          user_field=None),
    Route("GET", "/billing/disputes/{id}", disputes.DISPUTE_GET, "admin", source="query",
          user_field=None),
    Route("PATCH", "/billing/disputes/{id}", disputes.DISPUTE_SUBMIT_EVIDENCE, "admin",
          user_field=None, idempotent=True),
    Route("POST", "/billing/disputes/{id}/close", disputes.DISPUTE_CLOSE, "admin",
          source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/webhooks/{provider}", WEBHOOK_INGEST, "webhook", source="raw",
          user_field=None, kind="webhook"),
    Route("POST", "/billing/webhooks/{provider}/{org}", WEBHOOK_INGEST, "webhook",
          source="raw", user_field=None, kind="webhook"),
    Route("GET", "/billing/events", webhooks.EVENT_LIST, "admin", source="query",
          user_field=None),
    Route("GET", "/billing/events/{id}", webhooks.EVENT_GET, "admin", source="query",
          user_field=None),
    Route("POST", "/billing/webhook-endpoints", webhooks.WEBHOOK_ENDPOINT_CREATE, "admin",
          user_field=None, status=201),
    Route("GET", "/billing/webhook-endpoints", webhooks.WEBHOOK_ENDPOINT_LIST, "admin",
          source="query", user_field=None),
    Route("GET", "/billing/webhook-endpoints/{id}", webhooks.WEBHOOK_ENDPOINT_GET, "admin",
          source="query", user_field=None),
    Route("PATCH", "/billing/webhook-endpoints/{id}", webhooks.WEBHOOK_ENDPOINT_UPDATE,
          "admin", user_field=None),
    Route("POST", "/billing/webhook-endpoints/{id}/rotate-secret",
          webhooks.WEBHOOK_ENDPOINT_ROTATE_SECRET, "admin", source="optional", user_field=None),
    Route("DELETE", "/billing/webhook-endpoints/{id}", webhooks.WEBHOOK_ENDPOINT_DELETE,
          "admin", source="query", user_field=None),
    Route("GET", "/billing/webhook-endpoints/{id}/deliveries", webhooks.WEBHOOK_DELIVERY_LIST,
          "admin", source="query", user_field=None),
    Route("GET", "/billing/webhook-endpoints/{id}/deliveries/{deliveryId}",
          webhooks.WEBHOOK_DELIVERY_GET, "admin", source="query", user_field=None),
    Route("POST", "/billing/webhook-endpoints/{id}/deliveries/{deliveryId}/redeliver",
          webhooks.WEBHOOK_DELIVERY_REDELIVER, "admin", source="optional", user_field=None),
)
