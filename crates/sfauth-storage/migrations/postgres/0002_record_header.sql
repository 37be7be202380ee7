-- The record's clear header, read by `TokenStore::header` without opening the record: whether a
-- refresh is in flight and the times its tokens fall due by, in milliseconds, nothing secret
-- (the text `record::header_field` writes, as RedisStore keeps it), and the version it was
-- written at. NULL in rows written before this migration; a row written since by a version
-- of sfauth without it keeps an older `header_version` than its `version`. Either way the
-- record is opened instead. Nullable, without a default: adding them rewrites no row.
ALTER TABLE token_records ADD COLUMN header TEXT, ADD COLUMN header_version BIGINT;
