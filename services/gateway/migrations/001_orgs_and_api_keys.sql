-- Organizations (tenants) and their API keys. Keys are stored only as HMAC-SHA256 hashes
-- (with a server-side pepper); the plaintext is shown once, at creation.
create table gateway.orgs (
    id          text        primary key,
    name        text        not null unique,
    enabled     boolean     not null default true,
    created_at  timestamptz not null default now()
);

create table gateway.api_keys (
    id           text        primary key,
    org_id       text        not null references gateway.orgs (id),
    livemode     boolean     not null,
    kind         text        not null check (kind in ('secret', 'publishable')),
    name         text        not null default '',
    prefix       text        not null,  -- first characters, safe to show and log
    hash         bytea       not null unique,
    created_at   timestamptz not null default now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);
create index on gateway.api_keys (org_id);
