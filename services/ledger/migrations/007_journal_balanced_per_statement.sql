-- The journal's last fence (005), checked once per statement instead of once per posting:
-- the postings a statement writes sum to zero in each currency for each entry. Postings are
-- never changed or deleted, so an entry whose every statement balanced is balanced. The
-- journal writes an entry with all its postings in one statement (journal/store.py), in
-- any order; the deferred row trigger ran a query per posting (two per top-up credit).
drop trigger journal_postings_balanced on ledger.journal_postings;
drop function ledger.journal_entry_balanced();

create function ledger.journal_entries_balanced() returns trigger language plpgsql as $$
declare
    unbalanced record;
begin
    select entry_id, currency, sum(amount) as total into unbalanced
    from posted
    group by org_id, livemode, entry_id, currency
    having sum(amount) <> 0
    order by entry_id, currency
    limit 1;
    if found then
        raise exception 'ledger entry % postings sum to % in % (must be 0)',
            unbalanced.entry_id, unbalanced.total, unbalanced.currency
            using errcode = 'check_violation';
    end if;
    return null;
end
$$;
create trigger journal_postings_balanced
    after insert on ledger.journal_postings
    referencing new table as posted
    for each statement execute function ledger.journal_entries_balanced();
