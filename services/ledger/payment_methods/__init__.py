"""Customers' payment methods as the ledger knows them: learnt from payments' billing events,
so the status check answers `hasPaymentMethod` without asking payments."""
