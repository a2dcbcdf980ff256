-- The store of alien-manager on PostgreSQL (src/store/), in its own schema `alien` with its own
-- migration table. The same tables as the SQLite store (alien-store-sqlite/migrations), so the
-- two read alike: timestamps are BIGINT unix milliseconds, JSON documents TEXT, sealed values TEXT
-- in the `v1:` format of alien_store::seal. Ids, names and enums are `COLLATE "C"`: bytewise order,
-- the order of the keyset cursors, whatever the database's locale.

-- Store-wide facts, e.g. `key_check`: a sealed known value that tells whether a key opens the data.
CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE releases (
    id           TEXT COLLATE "C" PRIMARY KEY,
    stack        TEXT NOT NULL,      -- JSON object: platform -> stack
    git_metadata TEXT,               -- JSON
    version      TEXT,
    description  TEXT,
    -- Strictly increasing across releases (creation holds a table lock), so "latest" is unambiguous.
    created_at   BIGINT NOT NULL UNIQUE
);
CREATE INDEX releases_by_created ON releases (created_at, id);

CREATE TABLE release_platforms (
    platform   TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    release_id TEXT COLLATE "C" NOT NULL REFERENCES releases (id),
    PRIMARY KEY (platform, created_at, release_id),
    UNIQUE (release_id, platform)
);

CREATE TABLE deployment_groups (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    name                 TEXT COLLATE "C" NOT NULL,
    max_deployments      BIGINT NOT NULL CHECK (max_deployments >= 0),
    created_at           BIGINT NOT NULL,
    -- The rollout policy as JSON ({batchSize?, batchDelaySecs?, pauseOnFailure?}); NULL: none.
    rollout              TEXT,
    -- Updates begun in the group's current batch.
    rollout_batch_begun  BIGINT NOT NULL DEFAULT 0,
    -- When a deployment of the group last left `updating`.
    rollout_last_done_at BIGINT
);
CREATE UNIQUE INDEX deployment_groups_by_name ON deployment_groups (name);
CREATE INDEX deployment_groups_by_created ON deployment_groups (created_at, id);

CREATE TABLE deployments (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    name                TEXT COLLATE "C" NOT NULL,
    platform            TEXT COLLATE "C" NOT NULL
        CHECK (platform IN ('aws', 'gcp', 'azure', 'kubernetes', 'local')),
    deployment_model    TEXT COLLATE "C" NOT NULL CHECK (deployment_model IN ('push', 'pull')),
    deployment_group_id TEXT COLLATE "C" NOT NULL REFERENCES deployment_groups (id),
    status              TEXT COLLATE "C" NOT NULL CHECK (status IN (
        'pending', 'provisioning', 'provisioning-failed', 'running', 'refresh-failed',
        'update-pending', 'updating', 'update-failed', 'delete-pending', 'deleting',
        'delete-failed', 'deleted', 'stale')),
    current_release_id  TEXT COLLATE "C" REFERENCES releases (id),
    desired_release_id  TEXT COLLATE "C" REFERENCES releases (id),
    stack_state         TEXT,        -- JSON
    error               TEXT,        -- JSON DeploymentError
    retry_requested     BOOLEAN NOT NULL DEFAULT FALSE,
    region              TEXT,
    stack_settings      TEXT,        -- JSON
    target              TEXT,        -- JSON
    token               TEXT,        -- sealed raw deployment token, AAD deployments/token/<id>
    last_heartbeat_at   BIGINT,
    locked_by           TEXT COLLATE "C",
    locked_at           BIGINT,
    -- 0 = due as soon as the status asks for work; never NULL so that the due index is one range.
    next_step_after     BIGINT NOT NULL DEFAULT 0,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE UNIQUE INDEX deployments_by_group_name ON deployments (deployment_group_id, name);
CREATE INDEX deployments_due ON deployments (status, next_step_after)
    WHERE deployment_model = 'push';
CREATE INDEX deployments_retry ON deployments (next_step_after)
    WHERE retry_requested AND deployment_model = 'push';
CREATE INDEX deployments_by_platform_status ON deployments (platform, status);
CREATE INDEX deployments_by_created ON deployments (created_at, id);
CREATE INDEX deployments_by_group_created ON deployments (deployment_group_id, created_at, id);
CREATE INDEX deployments_by_name ON deployments (name);
CREATE INDEX deployments_by_owner ON deployments (locked_by) WHERE locked_by IS NOT NULL;
CREATE INDEX deployments_in_flight ON deployments (deployment_group_id, status)
    WHERE status IN ('updating', 'update-failed');

CREATE TABLE deployment_variables (
    deployment_id TEXT COLLATE "C" NOT NULL REFERENCES deployments (id),
    position      BIGINT NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    type          TEXT COLLATE "C" NOT NULL CHECK (type IN ('plain', 'secret')),
    -- Plain values as given; secret values sealed, AAD deployment_variables/value/<dep>/<name>.
    value         TEXT NOT NULL,
    PRIMARY KEY (deployment_id, name)
);

CREATE TABLE deployment_events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deployment_id TEXT COLLATE "C" NOT NULL REFERENCES deployments (id),
    from_status   TEXT COLLATE "C",
    to_status     TEXT COLLATE "C" NOT NULL,
    reason        TEXT NOT NULL,
    detail        TEXT,              -- JSON
    at            BIGINT NOT NULL
);
CREATE INDEX deployment_events_by_deployment ON deployment_events (deployment_id, id);

CREATE TABLE tokens (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    token_type          TEXT COLLATE "C" NOT NULL
        CHECK (token_type IN ('admin', 'deployment-group', 'deployment')),
    key_hash            TEXT COLLATE "C" NOT NULL,
    key_prefix          TEXT NOT NULL,
    -- No foreign keys: a deployment's revoked tokens outlive it.
    deployment_group_id TEXT COLLATE "C",
    deployment_id       TEXT COLLATE "C",
    name                TEXT,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT,
    last_used_at        BIGINT,
    revoked_at          BIGINT
);
CREATE UNIQUE INDEX tokens_by_key_hash ON tokens (key_hash);
CREATE INDEX tokens_by_deployment ON tokens (deployment_id) WHERE deployment_id IS NOT NULL;
CREATE INDEX tokens_live_by_type ON tokens (token_type, created_at, id) WHERE revoked_at IS NULL;

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    token_id    TEXT COLLATE "C",
    token_type  TEXT COLLATE "C",
    action      TEXT NOT NULL,
    target_id   TEXT,
    status      INTEGER NOT NULL,
    outcome     TEXT NOT NULL
);
