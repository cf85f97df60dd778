-- Customer balances and their transactions (metering-invoicing.md §2.7, §7): credit a customer
-- holds per currency, separate from the ledger's wallet and from credit grants. Reads never
-- create rows (absent = 0); every change is one upsert of the balance and one transaction row
-- in the same database transaction.

create table invoicing.customer_balances (
    org_id       text        not null,
    livemode     boolean     not null,
    customer_id  text        not null,
    currency     text        not null,
    balance      bigint      not null default 0,  -- positive: credit held; may be negative
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    primary key (org_id, livemode, customer_id, currency)
);

create table invoicing.balance_transactions (
    org_id          text        not null,
    livemode        boolean     not null,
    id              text        not null,
    customer_id     text        not null,
    currency        text        not null,
    amount          bigint      not null,  -- positive credit, negative debit
    type            text        not null,
    description     text        not null default '',
    invoice_id      text        not null default '',
    credit_note_id  text        not null default '',
    source_ref      text        not null default '',
    ending_balance  bigint      not null,
    created_at      timestamptz not null default clock_timestamp(),
    primary key (org_id, livemode, id)
);
create index balance_transactions_newest
    on invoicing.balance_transactions (org_id, livemode, created_at desc, id desc);
create index balance_transactions_by_customer
    on invoicing.balance_transactions (org_id, livemode, customer_id, created_at desc, id desc);
-- What collection and voids take from or give back to a balance happens once per source
-- reference (`invoice:<id>:a<n>:balance`, `…:balance:back`).
create unique index balance_transactions_once
    on invoicing.balance_transactions (org_id, livemode, source_ref) where source_ref <> '';
