-- Pricing rules (metering-invoicing.md §2.3): how a meter's usage is priced, per organization
-- and mode. Several rules may name one meter; the newest fitting one prices it (§9.3). No
-- update; delete is a hard delete (past invoices hold amounts, not rules).
create table {schema}.pricing_rules (
    org_id              text        not null,
    livemode            boolean     not null,
    id                  text        not null,
    meter_id            text        not null,
    plan_id             text        not null default '',
    model               text        not null
        check (model in ('per_unit', 'tiered', 'volume', 'package')),
    currency            text        not null,
    unit_price          bigint      not null check (unit_price >= 0),
    unit_price_decimal  text,    -- decimal cents; null: unit_price alone
    package_size        bigint   -- units per package; null unless model = 'package'
        check ((model = 'package') = (package_size is not null and package_size > 0)),
    tiers               jsonb,   -- [{upTo, price, flat, priceDecimal?}]; null when not given
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
-- Lists in creation order, by meter (and the rules of the meters an invoice prices).
create index pricing_rules_by_meter
    on {schema}.pricing_rules (org_id, livemode, meter_id, created_at, id);
create index pricing_rules_in_creation_order
    on {schema}.pricing_rules (org_id, livemode, created_at, id);
