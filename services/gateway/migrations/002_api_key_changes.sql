-- Gateways cache keys for up to a minute. A key revoked, re-dated or deleted is announced
-- on `gateway_api_key_changes` when its transaction commits (NOTIFY is transactional), to
-- every gateway listening, which drops it from its cache at once: whoever changed it (the
-- CLI, an operator's SQL), with or without a bus. The payload is the key's hash, in hex.
create function gateway.announce_api_key_change() returns trigger language plpgsql as $$
begin
    perform pg_notify('gateway_api_key_changes', encode(old.hash, 'hex'));
    return null;
end
$$;

create trigger api_key_changed
    after update of revoked_at, expires_at, hash or delete on gateway.api_keys
    for each row execute function gateway.announce_api_key_change();
