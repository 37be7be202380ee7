-- The change feed (`TokenStore::changes`): a write that leaves a record active, with no refresh
-- in flight and a header written at its version, also tells the listeners that header, so that
-- a worker learns of another's refresh without reading it. The payload becomes
-- '<hex SHA-256 of the key>|<version>|active|<header>|<key>' (the hash first, as before, so a
-- watch still finds its key by the first 64 characters); every other change, a lease release,
-- and a key too long for a notification's 8,000-byte payload keep the hash alone.
CREATE OR REPLACE FUNCTION token_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed TEXT;
    payload TEXT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD.key;
    ELSE
        changed := NEW.key;
    END IF;
    payload := encode(sha256(convert_to(changed, 'UTF8')), 'hex');
    -- Nested, not one condition: NEW of token_leases has no status, and PL/pgSQL does not
    -- promise to stop at the first false operand.
    IF TG_TABLE_NAME = 'token_records' AND TG_OP <> 'DELETE' THEN
        IF NEW.status = 'active' AND NEW.header_version = NEW.version
           AND NEW.header LIKE '0:%' AND octet_length(NEW.key) <= 6000 THEN
            payload := payload || '|' || NEW.version || '|active|' || NEW.header || '|'
                       || NEW.key;
        END IF;
    END IF;
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.token_changes', payload);
    RETURN NULL;
END
$$;
