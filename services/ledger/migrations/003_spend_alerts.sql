-- Spend alerts (ledger.md §2.4): a user's monthly spend threshold in one currency. An alert
-- fires once per UTC calendar month, on the usage debit that carries the month's spend across
-- its threshold; `triggered_period` records that month so it does not fire again in it.
create table ledger.spend_alerts (
    org_id            text        not null,
    livemode          boolean     not null,
    id                text        not null,
    user_id           text        not null,
    title             text        not null default '',
    threshold         bigint      not null check (threshold > 0),
    currency          text        not null,
    triggered_at      timestamptz,  -- the last firing; null = never
    triggered_period  date,         -- first day of the UTC month of the last firing
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create index spend_alerts_by_user
    on ledger.spend_alerts (org_id, livemode, user_id, created_at desc, id desc);

-- Each user's api-usage spend per currency and UTC calendar month, kept by the usage debit
-- itself with an atomic increment: alerts read the month's total without summing the ledger,
-- and the row lock serialises one user's concurrent debits, so a threshold is crossed once.
create table ledger.monthly_spend (
    org_id    text    not null,
    livemode  boolean not null,
    user_id   text    not null,
    currency  text    not null,
    period    date    not null,  -- first day of the UTC month
    amount    bigint  not null,
    primary key (org_id, livemode, user_id, currency, period)
);
