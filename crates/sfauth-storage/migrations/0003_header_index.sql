-- A covering index of what a header listing (`TokenStore::list_headers`) reads: the listing
-- order (key), every column its filters compare, and the clear header with what decides
-- whether it can be trusted. A warm start lists every row; with this index it reads the index
-- alone (about a seventh of the file) and never the rows' sealed blobs, except for the rows it
-- must open. Nothing here is secret: the same columns are clear in the table.
--
-- Safe on an existing file: it only adds an index, built once on the first open by this
-- version (about a second for 100,000 rows), which SQLite then keeps up to date on every write
-- whoever writes. It costs each write one more index entry and the file about a seventh more.
CREATE INDEX IF NOT EXISTS token_records_header ON token_records (
    key, org_id, user_id, client_id, status, version, key_id, header_version, issued_ms,
    last_refreshed_ms, lifetime_ms, tokens_issued_ms, tokens_expires_ms
);
