-- Found tokens are cached in memory (alien_store::token_cache). Every change that can end a
-- token's validity (revocation, deletion, a changed expiry, hash or binding) bumps this epoch, in
-- the same transaction, whichever process or code path makes it; each manager on the file reads
-- it at least once a second and forgets its cached tokens when it moved.
INSERT INTO meta (key, value) VALUES ('token_epoch', '0') ON CONFLICT (key) DO NOTHING;

CREATE TRIGGER tokens_epoch_on_update
AFTER UPDATE OF revoked_at, expires_at, key_hash, token_type, deployment_group_id, deployment_id
ON tokens
BEGIN
    UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'token_epoch';
END;

CREATE TRIGGER tokens_epoch_on_delete AFTER DELETE ON tokens
BEGIN
    UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'token_epoch';
END;
