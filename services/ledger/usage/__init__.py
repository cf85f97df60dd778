"""Usage debits (batched: `recorder.py`) and their copies into api-usage meters
(`backfill.py`)."""
