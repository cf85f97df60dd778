-- Expired idempotency keys are found by sweeping the table in block ranges (TID range scans,
-- see `store.delete_expired_keys`), not through an index on their age: one index write less
-- for every keyed event, the platform's most frequent write.
drop index {schema}.event_keys_by_age;
