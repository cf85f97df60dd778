-- Idempotency keys of one service (conventions §10.7). The row is written in the same
-- transaction as the effect it guards, so a key is completed exactly when its effect commits.
create table {schema}.idempotency_keys (
    org_id      text        not null,
    livemode    boolean     not null,
    key         text        not null,
    fingerprint text        not null,
    reply       bytea       not null,  -- the encoded bus reply, replayed verbatim
    created_at  timestamptz not null default now(),
    primary key (org_id, livemode, key)
);
create index on {schema}.idempotency_keys (created_at);
