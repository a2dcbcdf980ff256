-- One round trip per write batch (src/kv.rs): the advisory locks of its keys, the read of their
-- live versions, every condition against the state before the batch, then the writes in order,
-- in one statement of the caller's (autocommit) transaction. Each statement of a VOLATILE
-- function takes a fresh snapshot under READ COMMITTED, so the read below sees every batch that
-- held these locks before.
--
-- Per write i: p_puts[i] (put, else delete), p_values[i] (a put's value), p_conditions[i]
-- (0: none, 1: only if absent, 2: only at version p_versions[i]), p_expires[i] (a put's expiry,
-- unix ms, NULL: never).
-- Returns {-1, results...} when every condition held: a put's new version, or for a delete -1
-- (a live key was deleted) or -2 (nothing was there); else {i}: the 0-based index of the first
-- write whose condition failed (nothing was written).
CREATE FUNCTION kv_apply(
    p_class      INTEGER,
    p_now        BIGINT,
    p_keys       TEXT[],
    p_puts       BOOLEAN[],
    p_values     BYTEA[],
    p_conditions SMALLINT[],
    p_versions   BIGINT[],
    p_expires    BIGINT[]
) RETURNS BIGINT[]
LANGUAGE plpgsql
SET search_path = alien_commands, pg_temp
AS $$
DECLARE
    n             INTEGER := coalesce(array_length(p_keys, 1), 0);
    live_keys     TEXT[];
    live_versions BIGINT[];
    final_keys    TEXT[] := '{}';
    final_values  BYTEA[] := '{}';
    final_vers    BIGINT[] := '{}';
    final_expires BIGINT[] := '{}';
    final_deleted BOOLEAN[] := '{}';
    results       BIGINT[] := ARRAY[-1]::BIGINT[];
    i             INTEGER;
    pos            INTEGER;
    slot          INTEGER;
    live          BIGINT;
    new_version   BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(p_class, h)
        FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(p_keys) AS k ORDER BY h) AS locks;
    SELECT coalesce(array_agg(kv.key), '{}'), coalesce(array_agg(kv.version), '{}')
        INTO live_keys, live_versions
        FROM kv WHERE kv.key = ANY(p_keys) AND (kv.expires_at IS NULL OR kv.expires_at > p_now);
    FOR i IN 1..n LOOP
        pos := array_position(live_keys, p_keys[i]);
        live := CASE WHEN pos IS NULL THEN NULL ELSE live_versions[pos] END;
        IF (p_conditions[i] = 1 AND live IS NOT NULL)
           OR (p_conditions[i] = 2 AND (live IS NULL OR live <> p_versions[i])) THEN
            RETURN ARRAY[i - 1]::BIGINT[];
        END IF;
    END LOOP;
    FOR i IN 1..n LOOP
        pos := array_position(live_keys, p_keys[i]);
        slot := array_position(final_keys, p_keys[i]);
        IF slot IS NULL THEN
            final_keys := array_append(final_keys, p_keys[i]);
            final_values := array_append(final_values, NULL::BYTEA);
            final_vers := array_append(final_vers, NULL::BIGINT);
            final_expires := array_append(final_expires, NULL::BIGINT);
            final_deleted := array_append(final_deleted, TRUE);
            slot := array_length(final_keys, 1);
        END IF;
        IF p_puts[i] THEN
            new_version := nextval('kv_version');
            IF pos IS NULL THEN
                live_keys := array_append(live_keys, p_keys[i]);
                live_versions := array_append(live_versions, new_version);
            ELSE
                live_versions[pos] := new_version;
            END IF;
            final_values[slot] := p_values[i];
            final_vers[slot] := new_version;
            final_expires[slot] := p_expires[i];
            final_deleted[slot] := FALSE;
            results := array_append(results, new_version);
        ELSE
            IF pos IS NULL THEN
                results := array_append(results, -2::BIGINT);
            ELSE
                live_keys[pos] := NULL;
                results := array_append(results, -1::BIGINT);
            END IF;
            final_deleted[slot] := TRUE;
        END IF;
    END LOOP;
    INSERT INTO kv (key, value, version, expires_at)
        SELECT f.k, f.val, f.ver, f.ex
        FROM unnest(final_keys, final_values, final_vers, final_expires, final_deleted)
            AS f(k, val, ver, ex, del)
        WHERE NOT f.del
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version,
            expires_at = EXCLUDED.expires_at;
    DELETE FROM kv WHERE kv.key IN
        (SELECT f.k FROM unnest(final_keys, final_deleted) AS f(k, del) WHERE f.del);
    RETURN results;
END;
$$;
