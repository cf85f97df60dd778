"""Spend alert subjects (ledger service), `billing.<service>.<resource>.<action>`."""

LEDGER_SPEND_ALERT_LIST = "billing.ledger.spend_alert.list"
LEDGER_SPEND_ALERT_CREATE = "billing.ledger.spend_alert.create"
LEDGER_SPEND_ALERT_UPDATE = "billing.ledger.spend_alert.update"
LEDGER_SPEND_ALERT_DELETE = "billing.ledger.spend_alert.delete"
