-- The token store: one row per key, the record sealed, its listing metadata in clear columns.
CREATE TABLE IF NOT EXISTS token_records (
    key        TEXT PRIMARY KEY NOT NULL,  -- TokenKey's string form; also the listing order
    org_id     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    status     TEXT NOT NULL,              -- 'active' | 'reauth_required'
    version    INTEGER NOT NULL,
    key_id     TEXT NOT NULL,              -- id of the encryption key that sealed `sealed`
    sealed     BLOB NOT NULL,              -- the record, XChaCha20-Poly1305, bound to key + version
    updated_at INTEGER NOT NULL            -- milliseconds since the Unix epoch
) STRICT;

CREATE INDEX IF NOT EXISTS token_records_org ON token_records (org_id, key);
CREATE INDEX IF NOT EXISTS token_records_user ON token_records (user_id, key);
CREATE INDEX IF NOT EXISTS token_records_client ON token_records (client_id, key);

-- Refresh leases. A row outlives its record: `last_fence` must never go back.
CREATE TABLE IF NOT EXISTS token_leases (
    key        TEXT PRIMARY KEY NOT NULL,
    last_fence INTEGER NOT NULL,
    holder     TEXT,                       -- NULL when released
    fence      INTEGER,
    expires_at INTEGER                     -- milliseconds since the Unix epoch
) STRICT;
