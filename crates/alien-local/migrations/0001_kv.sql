-- The commands KV (src/kv.rs). Timestamps are INTEGER unix milliseconds.

-- One row per key. `expires_at` NULL = never; a row at or past it is invisible to every query
-- and is purged in batches (kv_by_expiry).
CREATE TABLE kv (
    key        TEXT PRIMARY KEY NOT NULL,
    value      BLOB NOT NULL,
    version    INTEGER NOT NULL,
    expires_at INTEGER
) STRICT;
-- Purging expired rows, oldest first.
CREATE INDEX kv_by_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;

-- The highest version ever written to any key. Every write takes the next one, so a key that is
-- deleted or expires and is written again never gets a version a stale holder still has
-- (a released lease cannot delete its successor). Kept by the triggers below, in the statement
-- that writes, so conditional writes stay single statements.
CREATE TABLE kv_clock (
    id      INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    version INTEGER NOT NULL
) STRICT;
INSERT INTO kv_clock (id, version) VALUES (1, 0);

CREATE TRIGGER kv_clock_on_insert AFTER INSERT ON kv
BEGIN
    UPDATE kv_clock SET version = NEW.version WHERE id = 1 AND version < NEW.version;
END;

CREATE TRIGGER kv_clock_on_update AFTER UPDATE OF version ON kv
BEGIN
    UPDATE kv_clock SET version = NEW.version WHERE id = 1 AND version < NEW.version;
END;
