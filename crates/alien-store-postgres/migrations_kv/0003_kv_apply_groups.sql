-- Group commit (src/kv.rs): the write batches that queue up while one group is being written go
-- to the server together, in one statement and one transaction, so that one commit (one WAL
-- flush) and one round trip serve them all.
--
-- kv_apply's statements keep their generic plans (PL/pgSQL planned them again on most calls, a
-- third of a call's time), and never scan the table: found with auto_explain under load, its
-- final delete `IN (SELECT ... unnest)` was cached as a hash join over a sequential scan of the
-- whole table, where looking up each key by the primary key is what it needs.
ALTER FUNCTION kv_apply(INTEGER, BIGINT, TEXT[], BOOLEAN[], BYTEA[], SMALLINT[], BIGINT[], BIGINT[])
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION kv_apply(INTEGER, BIGINT, TEXT[], BOOLEAN[], BYTEA[], SMALLINT[], BIGINT[], BIGINT[])
    SET enable_seqscan = off;

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
