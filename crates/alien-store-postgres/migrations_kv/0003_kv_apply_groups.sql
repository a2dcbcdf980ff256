-- Group commit (src/kv.rs): the write batches that queue up while one group is being written go
-- to the server together, in one statement and one transaction, so that one commit (one WAL
-- flush) and one round trip serve them all.
--
-- kv_apply again, with two plan fixes found with auto_explain under load: the final delete
-- looks its keys up by key (`= ANY(ARRAY(...))`), where `IN (SELECT ... unnest)` was cached as
-- a hash join over a sequential scan of the whole table; and the function's statements keep
-- their generic plans (PL/pgSQL planned them again on most calls, a third of a call's time).
CREATE OR REPLACE FUNCTION kv_apply(
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
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
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
    pos           INTEGER;
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
    DELETE FROM kv WHERE kv.key = ANY(ARRAY(
        SELECT f.k FROM unnest(final_keys, final_deleted) AS f(k, del) WHERE f.del));
    RETURN results;
END;
$$;

-- Several batches in one transaction, in order, each as kv_apply writes it (with its own
-- conditions, seeing the batches before it). Batch b holds the writes p_ends[b-1]+1..p_ends[b]
-- (1-based, p_ends[0] taken as 0) of the flat arrays. The advisory locks of every key of the
-- group are taken first, in one order (kv_apply taking them again is a no-op), so two groups
-- never wait on each other in a cycle.
-- Returns, per batch in order, the length of its kv_apply result followed by that result.
CREATE FUNCTION kv_apply_many(
    p_class      INTEGER,
    p_now        BIGINT,
    p_ends       INTEGER[],
    p_keys       TEXT[],
    p_puts       BOOLEAN[],
    p_values     BYTEA[],
    p_conditions SMALLINT[],
    p_versions   BIGINT[],
    p_expires    BIGINT[]
) RETURNS BIGINT[]
LANGUAGE plpgsql
SET search_path = alien_commands, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    out    BIGINT[] := '{}';
    one    BIGINT[];
    b      INTEGER;
    first  INTEGER := 1;
BEGIN
    PERFORM pg_advisory_xact_lock(p_class, h)
        FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(p_keys) AS k ORDER BY h) AS locks;
    FOR b IN 1..coalesce(array_length(p_ends, 1), 0) LOOP
        one := kv_apply(p_class, p_now, p_keys[first:p_ends[b]], p_puts[first:p_ends[b]],
            p_values[first:p_ends[b]], p_conditions[first:p_ends[b]],
            p_versions[first:p_ends[b]], p_expires[first:p_ends[b]]);
        out := out || array_length(one, 1)::BIGINT || one;
        first := p_ends[b] + 1;
    END LOOP;
    RETURN out;
END;
$$;
