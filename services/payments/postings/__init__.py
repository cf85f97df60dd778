"""Ledger postings: what payments owes the ledger (a charge's journal entry, a top-up's
credit, a refund), written in the transaction of the change that owes it and sent until the
ledger acknowledges it. A crash between a provider's success and the ledger leaves the
posting behind, and `post_due` finishes it: the ledger posts each exactly once because it
deduplicates by the posting's natural key."""
