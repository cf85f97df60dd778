"""Outbound webhook deliveries (payments.md §6.4, §6.5): each event to each matching
endpoint, signed, in order per endpoint, retried for three days."""
