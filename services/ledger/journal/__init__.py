"""The double-entry journal (ledger.md §2.9): accounts, entries, holds, payment operations."""
