-- The clear header of a record: what a warm start needs to schedule a tenant without opening
-- it (`TokenStore::list_headers`). None of it is secret: times, in milliseconds since the Unix
-- epoch, and a lifetime in milliseconds. `header_version` is the record version the header
-- was written at: a row written before this migration, or since by a version of sfauth that
-- does not know these columns, has another (or none), and is opened instead.
ALTER TABLE token_records ADD COLUMN header_version INTEGER;
ALTER TABLE token_records ADD COLUMN issued_ms INTEGER;
ALTER TABLE token_records ADD COLUMN last_refreshed_ms INTEGER;
ALTER TABLE token_records ADD COLUMN lifetime_ms INTEGER;
ALTER TABLE token_records ADD COLUMN tokens_issued_ms INTEGER;
ALTER TABLE token_records ADD COLUMN tokens_expires_ms INTEGER;
