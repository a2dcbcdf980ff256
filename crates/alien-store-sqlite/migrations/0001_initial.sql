-- Initial schema of alien-manager's store.
-- Timestamps are INTEGER unix milliseconds; JSON documents are TEXT; sealed values are TEXT in
-- the `v1:` format of src/seal.rs. Each index names the query it serves (src/sqlite.rs).

-- Store-wide facts, e.g. `key_check`: a sealed known value that tells whether a key opens the data.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE releases (
    id           TEXT PRIMARY KEY NOT NULL,
    stack        TEXT NOT NULL,      -- JSON object: platform -> stack
    git_metadata TEXT,               -- JSON
    version      TEXT,
    description  TEXT,
    -- Strictly increasing across releases (the store makes it so), so "latest" is unambiguous.
    created_at   INTEGER NOT NULL UNIQUE
) STRICT;
-- list_releases, latest_release(None): newest first.
CREATE INDEX releases_by_created ON releases (created_at, id);

-- The platforms each release has a stack for, so that "latest release for a platform" and
-- "deployments on a platform of this release" are index lookups.
CREATE TABLE release_platforms (
    platform   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    release_id TEXT NOT NULL REFERENCES releases (id),
    PRIMARY KEY (platform, created_at, release_id),
    UNIQUE (release_id, platform)
) STRICT, WITHOUT ROWID;

CREATE TABLE deployment_groups (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL,
    max_deployments INTEGER NOT NULL CHECK (max_deployments >= 0),
    created_at      INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX deployment_groups_by_name ON deployment_groups (name);
-- list_groups: oldest first.
CREATE INDEX deployment_groups_by_created ON deployment_groups (created_at, id);

CREATE TABLE deployments (
    id                  TEXT PRIMARY KEY NOT NULL,
    name                TEXT NOT NULL,
    platform            TEXT NOT NULL
        CHECK (platform IN ('aws', 'gcp', 'azure', 'kubernetes', 'local')),
    deployment_model    TEXT NOT NULL CHECK (deployment_model IN ('push', 'pull')),
    deployment_group_id TEXT NOT NULL REFERENCES deployment_groups (id),
    status              TEXT NOT NULL CHECK (status IN (
        'pending', 'provisioning', 'provisioning-failed', 'running', 'refresh-failed',
        'update-pending', 'updating', 'update-failed', 'delete-pending', 'deleting',
        'delete-failed', 'deleted', 'stale')),
    current_release_id  TEXT REFERENCES releases (id),
    desired_release_id  TEXT REFERENCES releases (id),
    stack_state         TEXT,        -- JSON
    error               TEXT,        -- JSON DeploymentError
    retry_requested     INTEGER NOT NULL DEFAULT 0 CHECK (retry_requested IN (0, 1)),
    region              TEXT,
    stack_settings      TEXT,        -- JSON
    target              TEXT,        -- JSON
    token               TEXT,        -- sealed raw deployment token, AAD deployments/token/<id>
    last_heartbeat_at   INTEGER,
    locked_by           TEXT,
    locked_at           INTEGER,
    -- 0 = due as soon as the status asks for work; never NULL so that the due index is one range.
    next_step_after     INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
) STRICT;
-- Name uniqueness, deployment counts per group, name lookups within a group.
CREATE UNIQUE INDEX deployments_by_group_name ON deployments (deployment_group_id, name);
-- acquire_due and the heartbeat loop: push deployments by status, due first.
CREATE INDEX deployments_due ON deployments (status, next_step_after)
    WHERE deployment_model = 'push';
-- acquire_due: deployments with a pending retry request.
CREATE INDEX deployments_retry ON deployments (next_step_after)
    WHERE retry_requested = 1 AND deployment_model = 'push';
-- create_release: the deployments of the release's platforms.
CREATE INDEX deployments_by_platform_status ON deployments (platform, status);
-- list_deployments: oldest first, overall and within a group; lookups by name alone.
CREATE INDEX deployments_by_created ON deployments (created_at, id);
CREATE INDEX deployments_by_group_created ON deployments (deployment_group_id, created_at, id);
CREATE INDEX deployments_by_name ON deployments (name);

CREATE TABLE deployment_variables (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    position      INTEGER NOT NULL,
    name          TEXT NOT NULL,
    type          TEXT NOT NULL CHECK (type IN ('plain', 'secret')),
    -- Plain values as given; secret values sealed, AAD deployment_variables/value/<dep>/<name>.
    value         TEXT NOT NULL,
    PRIMARY KEY (deployment_id, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE deployment_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    from_status   TEXT,
    to_status     TEXT NOT NULL,
    reason        TEXT NOT NULL,
    detail        TEXT,              -- JSON
    at            INTEGER NOT NULL
) STRICT;
-- deployment_events: newest first per deployment; deletion with the deployment.
CREATE INDEX deployment_events_by_deployment ON deployment_events (deployment_id, at);

CREATE TABLE tokens (
    id                  TEXT PRIMARY KEY NOT NULL,
    token_type          TEXT NOT NULL CHECK (token_type IN ('admin', 'deployment-group', 'deployment')),
    key_hash            TEXT NOT NULL,
    key_prefix          TEXT NOT NULL,
    -- No foreign keys: a deployment's revoked tokens outlive it.
    deployment_group_id TEXT,
    deployment_id       TEXT,
    name                TEXT,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER,
    last_used_at        INTEGER,
    revoked_at          INTEGER
) STRICT;
-- find_token: every authenticated request.
CREATE UNIQUE INDEX tokens_by_key_hash ON tokens (key_hash);
-- delete_deployment: revoke the deployment's tokens.
CREATE INDEX tokens_by_deployment ON tokens (deployment_id) WHERE deployment_id IS NOT NULL;
-- list_tokens, count_tokens, revoke_admin_tokens: live tokens.
CREATE INDEX tokens_live_by_type ON tokens (token_type, created_at, id) WHERE revoked_at IS NULL;

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    token_id    TEXT,
    token_type  TEXT,
    action      TEXT NOT NULL,
    target_id   TEXT,
    status      INTEGER NOT NULL,
    outcome     TEXT NOT NULL
) STRICT;
