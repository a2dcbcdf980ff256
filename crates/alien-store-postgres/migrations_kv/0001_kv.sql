-- The commands KV (src/kv.rs), in its own schema (`alien_commands`, with its own migration
-- table) so that it can share a database with the store. Timestamps are unix milliseconds.

-- One row per key, ordered bytewise (COLLATE "C": scans walk key ranges). `expires_at` NULL =
-- never; a row at or past it is invisible to every query and is purged in batches.
CREATE TABLE kv (
    key        TEXT COLLATE "C" PRIMARY KEY,
    value      BYTEA NOT NULL,
    version    BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX kv_by_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;

-- Every write takes the next version, database-wide: a key that is deleted or expires and is
-- written again never gets a version a stale holder still has (a released lease cannot delete
-- its successor), whichever replica writes.
CREATE SEQUENCE kv_version AS BIGINT START 1;
