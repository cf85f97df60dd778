-- The ledger: every money movement is one transfer between two accounts (debit, credit) in
-- one currency, so each posting sums to zero by construction. Rows are never updated;
-- corrections are new rows pointing at the original (`reverses`).
-- Accounts are `user:<owner/name>` for customers and `platform:<purpose>` for the platform's
-- side (deposits received, usage revenue, credits issued, ...).
create table ledger.transactions (
    org_id          text        not null,
    livemode        boolean     not null,
    id              text        not null,
    type            text        not null check (type in ('deposit', 'withdraw', 'transfer', 'hold', 'hold-removed')),
    user_id         text        not null,  -- the customer this movement belongs to
    debit_account   text        not null,
    credit_account  text        not null,
    currency        text        not null,
    amount          bigint      not null check (amount > 0),
    notes           text        not null default '',
    tags            text        not null default '',
    metadata        jsonb,
    expires_at      timestamptz,
    reverses        text,
    created_at      timestamptz not null default now(),
    primary key (org_id, livemode, id),
    check (debit_account <> credit_account)
);
create index transactions_by_user on ledger.transactions (org_id, livemode, user_id, created_at desc, id desc);
create index transactions_usage on ledger.transactions (org_id, livemode, user_id, created_at desc, id desc)
    where tags = 'api-usage';

-- Stored customer balances, changed only in the transaction that inserts the movement.
-- Platform accounts have no stored row: they are hot (every usage debit touches one) and are
-- recomputed from the transactions when verifying.
create table ledger.balances (
    org_id      text        not null,
    livemode    boolean     not null,
    user_id     text        not null,
    currency    text        not null,
    balance     bigint      not null default 0,
    holds       bigint      not null default 0 check (holds >= 0),
    updated_at  timestamptz not null default now(),
    primary key (org_id, livemode, user_id, currency)
);
