-- Money that must reach the ledger (payments.md §10; the issue's "through the ledger,
-- exactly once"): a posting is written in the same transaction as the change that owes it,
-- then sent to the ledger's endpoint until the ledger has acknowledged it. The ledger
-- deduplicates by the posting's natural key, so sending twice posts once.
create table payments.ledger_postings (
    org_id          text        not null,
    livemode        boolean     not null,
    id              text        not null,  -- what it posts: `topup:<id>`, `payment:<pi>`, ...
    subject         text        not null,  -- the ledger endpoint
    params          bytea       not null,  -- its params, JSON
    created_at      timestamptz not null default now(),
    -- Not sent again before this: a sender holds a posting this long (a lease), and a
    -- failed one waits longer after every attempt.
    next_attempt_at timestamptz not null,
    attempts        integer     not null default 0,
    last_error      text        not null default '',
    posted_at       timestamptz,
    primary key (org_id, livemode, id)
);
create index ledger_postings_due on payments.ledger_postings (next_attempt_at)
    where posted_at is null;

-- Top-ups (§4.3): charge a card, then credit the customer's balance. The row is the
-- request's idempotency record: `started` before the provider is called, `charged` once it
-- took the money (the credit is then owed: a ledger posting), `completed` with the answer
-- replays return. A top-up that never reached the provider is `failed` and frees its key.
create table payments.topups (
    org_id            text        not null,
    livemode          boolean     not null,
    id                text        not null,
    customer_id       text        not null,  -- whose balance is credited
    idempotency_key   text        not null,  -- the client's key, `nonce:<token>`, or the id
    fingerprint       text        not null default '',
    status            text        not null,  -- started | charged | completed | failed
    amount            bigint      not null check (amount > 0),
    currency          text        not null,
    payment_method_id text        not null default '',
    source_token      text        not null default '',  -- a one-time token (token top-ups)
    provider          text        not null default '',
    provider_ref      text        not null default '',
    payment_intent_id text        not null default '',
    reply             bytea,  -- completed: the answer, as sent
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create unique index topups_by_key
    on payments.topups (org_id, livemode, customer_id, idempotency_key)
    where status <> 'failed';
create index topups_unfinished on payments.topups (updated_at)
    where status in ('started', 'charged');
