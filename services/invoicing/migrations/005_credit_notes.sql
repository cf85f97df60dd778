-- Credit notes (metering-invoicing.md §2.6, §6): credit given against an open or paid invoice,
-- numbered per organization and mode (kind `credit_note` in invoicing.numbers).

create table invoicing.credit_notes (
    org_id          text        not null,
    livemode        boolean     not null,
    id              text        not null,
    invoice_id      text        not null,
    customer_id     text        not null,
    number          bigint      not null,
    amount          bigint      not null check (amount > 0),
    currency        text        not null,
    status          text        not null default 'issued',  -- issued | void
    reason          text        not null default '',
    line_items      jsonb,
    out_of_band_amount bigint   not null default 0,
    -- How it was applied: `invoice` (an open invoice's amount due went down) or
    -- `customer_balance` (a paid invoice's customer was credited, in that transaction).
    applied_to      text        not null,
    credit_balance_transaction text not null default '',
    memo            text        not null default '',
    created_at      timestamptz not null default clock_timestamp(),
    updated_at      timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create unique index credit_notes_numbered on invoicing.credit_notes (org_id, livemode, number);
create index credit_notes_by_invoice on invoicing.credit_notes (org_id, livemode, invoice_id);
create index credit_notes_newest on invoicing.credit_notes (org_id, livemode, created_at desc, id desc);
