-- An organization's payment provider settings, one row per mode (payments.md §1.3, §10).
-- The credentials are one encrypted document (AES-256-GCM under BILLING_SECRETS_KEY, bound
-- to the row's organization and mode): nothing in this table reads in clear but the choice
-- of processor.
create table payments.provider_settings (
    org_id              text        not null,
    livemode            boolean     not null,
    preferred_processor text        not null default '',
    credentials         bytea,      -- nonce + ciphertext; null: none stored
    key_id              text        not null default '',  -- which key sealed them
    version             bigint      not null default 0,  -- each change counts: caches compare
    updated_at          timestamptz not null default now(),
    primary key (org_id, livemode)
);
