"""The billing event log (payments.md §2.8, §6.1, §6.2): every domain event of the platform,
read from JetStream, kept for listing and for outbound webhooks."""
