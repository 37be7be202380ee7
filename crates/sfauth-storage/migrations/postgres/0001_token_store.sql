-- The token store on PostgreSQL (PostgresStore). Applied with `search_path` set to the store's
-- schema alone, so every name below is created there (and sqlx's `_sqlx_migrations` too).

-- One row per key, the record sealed, its listing metadata in clear columns. Keys compare
-- bytewise (`COLLATE "C"`): the listing order is the order of the key's string form, whatever
-- the database's default collation.
CREATE TABLE token_records (
    key        TEXT COLLATE "C" PRIMARY KEY,
    org_id     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    status     TEXT NOT NULL,                 -- 'active' | 'reauth_required'
    version    BIGINT NOT NULL,
    key_id     TEXT NOT NULL,                 -- id of the encryption key that sealed `sealed`
    sealed     BYTEA NOT NULL,                -- the record, XChaCha20-Poly1305, bound to key + version
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX token_records_org ON token_records (org_id, key);
CREATE INDEX token_records_user ON token_records (user_id, key);
CREATE INDEX token_records_client ON token_records (client_id, key);

-- Refresh leases. A row outlives its record and its lease: `last_fence` never goes back.
CREATE TABLE token_leases (
    key        TEXT COLLATE "C" PRIMARY KEY,
    last_fence BIGINT NOT NULL,
    holder     TEXT,                          -- NULL when released
    fence      BIGINT,
    expires_at BIGINT                         -- milliseconds since the Unix epoch, database clock
);

-- Watches: every change of a record, and every release of a lease, notifies the channel
-- '<schema>.token_changes' with the hex SHA-256 of the key (a key can be longer than a
-- notification payload may be). A trigger sends it in the writing statement's own
-- transaction, so it is delivered exactly when the write commits, whoever wrote.
CREATE FUNCTION token_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed TEXT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD.key;
    ELSE
        changed := NEW.key;
    END IF;
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.token_changes',
                      encode(sha256(convert_to(changed, 'UTF8')), 'hex'));
    RETURN NULL;
END
$$;

CREATE TRIGGER token_records_changed
    AFTER INSERT OR UPDATE OR DELETE ON token_records
    FOR EACH ROW EXECUTE FUNCTION token_changed();

CREATE TRIGGER token_leases_released
    AFTER UPDATE OF holder ON token_leases
    FOR EACH ROW WHEN (OLD.holder IS NOT NULL AND NEW.holder IS NULL)
    EXECUTE FUNCTION token_changed();
