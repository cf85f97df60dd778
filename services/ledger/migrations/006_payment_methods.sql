-- What the ledger knows of its customers' payment methods, for `GET /billing/status` (a bot
-- gate calls it on every request): learnt from payments' billing events
-- (`billing.events.payment_method.*`) instead of asking payments each time.
--
-- One row per method, keyed by its id, and every column only ever moves one way (attached,
-- then perhaps verified, then perhaps detached, for good): an event delivered twice, late or
-- out of order leaves the row as it was, so the consumer needs no record of event ids.
-- Detached rows stay, so that a late copy of an earlier event cannot bring a method back.
create table ledger.payment_methods (
    org_id       text        not null,
    livemode     boolean     not null,
    id           text        not null,  -- the method's id at payments (pm_…)
    customer_id  text        not null,  -- the ledger's user id
    verified     boolean     not null,  -- a provider accepted it
    detached     boolean     not null,
    updated_at   timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
-- The status check: does the customer have a live method?
create index payment_methods_live on ledger.payment_methods (org_id, livemode, customer_id)
    where not detached;
