"""The capabilities payload (subscriptions.md §3.7), verbatim: array orders are part of it."""

from __future__ import annotations

from contracts.payments import Capabilities

CAPABILITIES = Capabilities(
    paymentMethods=["card", "bank_account", "balance", "crypto"],
    currencies=["usd", "eur", "gbp", "cad", "aud", "jpy", "chf",
                "btc", "eth", "sol", "usdc", "usdt", "lux"],
    features=["subscriptions", "subscription_items", "metered_billing", "invoicing",
              "credit_grants", "credit_notes", "refunds", "disputes", "dunning",
              "payment_intents", "setup_intents", "customer_balance", "payouts",
              "webhooks", "billing_events", "customer_portal"],
    billingModels=["flat_rate", "per_seat", "metered", "tiered", "volume", "threshold",
                   "hybrid"],
    taxCalculation=True,
    bankTransferReconciliation=False,
)
