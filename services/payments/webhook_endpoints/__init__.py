"""Outbound webhook endpoints (payments.md §2.9, §6.3): where an organization wants its
events, and the secret their deliveries are signed with."""
