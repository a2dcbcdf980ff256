//! The SQLite implementation of every store trait: one file in WAL mode, one writer connection
//! and a small pool of read-only connections.
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction on the single writer, so read-then-write
//! sequences (name uniqueness, `maxDeployments`, conditional transitions, lease acquisition) are
//! serialized without retries; `synchronous=FULL` makes each commit durable before it is
//! acknowledged. Sensitive values are sealed with the [`Sealer`] inside the writer transaction, and
//! a `key_check` row in `meta` tells at open whether the key opens the data ([`StoreError::WrongKey`]
//! before anything is written). Bulk effects (a release marking every deployment of its platforms)
//! are set-based statements whose status mapping is generated from
//! `DeploymentStatus::transition`, so the transition table lives only in alien-core.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use alien_core::{
    Deployment, DeploymentError, DeploymentEvent, DeploymentEventRecord, DeploymentGroup,
    DeploymentModel, DeploymentStatus, EnvironmentVariable, GitMetadata, Id, IdKind, NewRelease,
    Platform, RawToken, Release, RolloutPolicy, Stack, TokenRecord, TokenType, VariableType,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::error::ErrorKind;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Sqlite, Transaction};
use std::collections::BTreeMap;
use tokio::sync::RwLock;

use crate::seal::Sealer;
use crate::{
    AcquireFilter, AuditEntry, AuditLog, BeginUpdate, CreatedRelease, DeploymentFilter,
    DeploymentPatch, DeploymentStore, NewAuditEntry, NewDeployment, NewToken, Page, PageRequest,
    ReleaseStore, Store, StoreError, StoreResult, TokenStore,
};

/// How long a statement waits for a lock held by another connection before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-only connections serving reads next to the single writer.
pub const READERS: u32 = 4;
/// Status changes kept per deployment; older events are pruned on the next transition.
pub const EVENTS_KEPT: i64 = 200;

/// Plaintext of the `key_check` row: opening it proves the key opens the data.
const KEY_CHECK_PLAINTEXT: &[u8] = b"alien-manager key check v1";
const KEY_CHECK_AAD: &str = "meta/value/key_check";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The store on one SQLite file.
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    /// Audit entries waiting for the next group commit (see [`SqliteStore::append_audit`]).
    audit_queue: std::sync::Mutex<Vec<QueuedAudit>>,
    /// Held by the caller that writes the queued audit entries.
    audit_flush: tokio::sync::Mutex<()>,
    /// Tokens found recently (see [`TokenCache`]).
    tokens: TokenCache,
    /// Taken (read) before the writer by every write that seals, and (write) by key rotation, so a
    /// value is never sealed with a key that is being retired.
    sealer: RwLock<Sealer>,
    path: PathBuf,
}

/// Tokens this store found in the last [`TOKEN_CACHE_TTL`], so that an authenticated request
/// does not read its token from the database every time. Every revocation through this store
/// (revoke, admin reset, a deleted deployment's tokens) empties it after its commit, and a lookup
/// that raced a revocation does not fill it (the generation moved), so a token revoked here fails
/// at once; a revocation by another process on the same file (the offline `admin-token reset`)
/// is seen within the TTL. Expiry is checked at every use.
#[derive(Default)]
struct TokenCache {
    entries: std::sync::Mutex<CachedTokens>,
}

/// A revocation generation, and the records found by hash with when they were read.
type CachedTokens = (u64, std::collections::HashMap<String, (TokenRecord, std::time::Instant)>);

/// How long a found token is trusted without reading it again.
const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Tokens remembered at most (the cache starts over when full).
const TOKEN_CACHE_MAX: usize = 10_000;

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CachedTokens> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh, unexpired record for `hash`, and the generation a lookup starts from.
    fn get(&self, hash: &str, now: DateTime<Utc>) -> (Option<TokenRecord>, u64) {
        let guard = self.lock();
        let hit = guard.1.get(hash).filter(|(record, at)| {
            at.elapsed() < TOKEN_CACHE_TTL && record.expires_at.is_none_or(|e| e > now)
        });
        (hit.map(|(record, _)| record.clone()), guard.0)
    }

    /// Remembers `record` unless a revocation happened since `generation`.
    fn put(&self, hash: &str, record: &TokenRecord, generation: u64) {
        let mut guard = self.lock();
        if guard.0 != generation {
            return;
        }
        if guard.1.len() >= TOKEN_CACHE_MAX {
            guard.1.clear();
        }
        guard.1.insert(hash.to_owned(), (record.clone(), std::time::Instant::now()));
    }

    /// Forgets everything (after a revocation commits).
    fn revoked(&self) {
        let mut guard = self.lock();
        guard.0 = guard.0.wrapping_add(1);
        guard.1.clear();
    }
}

/// An audit entry waiting for its group commit, and whom to tell.
type QueuedAudit = (NewAuditEntry, tokio::sync::oneshot::Sender<StoreResult<()>>);

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing, mode 0600) the database `db_file`, migrates it, and checks that
    /// `sealer`'s key opens the existing data ([`StoreError::WrongKey`] otherwise, with nothing
    /// written). The parent directory must exist.
    pub async fn open(db_file: &Path, sealer: Sealer) -> StoreResult<SqliteStore> {
        let shown = db_file.display().to_string();
        precheck_key(db_file, &sealer, &shown).await?;
        create_private_file(db_file)?;
        let base = SqliteConnectOptions::new()
            .filename(db_file)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(writer_options)
            .await
            .map_err(|e| sql_error(&format!("opening {shown} for writing"), e))?;
        let prepared = match prepare(&writer, &sealer, &shown).await {
            Ok(()) => check_writable(&writer, &shown).await,
            Err(err) => Err(err),
        };
        if let Err(err) = prepared {
            writer.close().await;
            return Err(err);
        }
        let readers = match SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(base.read_only(true))
            .await
        {
            Ok(readers) => readers,
            Err(err) => {
                writer.close().await;
                return Err(sql_error(&format!("opening {shown} for reading"), err));
            }
        };
        Ok(SqliteStore {
            writer,
            readers,
            audit_queue: std::sync::Mutex::default(),
            audit_flush: tokio::sync::Mutex::default(),
            tokens: TokenCache::default(),
            sealer: RwLock::new(sealer),
            path: db_file.to_owned(),
        })
    }

    fn lock_audit_queue(&self) -> std::sync::MutexGuard<'_, Vec<QueuedAudit>> {
        // A panic while holding it cannot leave the queue inconsistent (push and take only).
        self.audit_queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A key for `purpose` derived from the current encryption key (see [`Sealer::derive_key`]).
    pub async fn derive_key(&self, purpose: &str) -> [u8; 32] {
        self.sealer.read().await.derive_key(purpose)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For benchmarks only: inserts `count` running push-mode deployments on `platform` into
    /// `group` in one statement (no tokens, no variables), returning the first one's id.
    #[doc(hidden)]
    pub async fn seed_running_deployments(
        &self,
        group: &Id,
        platform: Platform,
        count: u32,
    ) -> StoreResult<Id> {
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3) \
             INSERT INTO deployments (id, name, platform, deployment_model, deployment_group_id, \
             status, created_at, updated_at) \
             SELECT printf('dep_%028d', i), printf('seed-%d', i), ?2, 'push', ?1, 'running', i, i FROM n",
        )
        .bind(group.as_str())
        .bind(platform.as_str())
        .bind(i64::from(count))
        .execute(&self.writer)
        .await
        .map_err(|e| sql_error("seeding deployments", e))?;
        Id::parse(IdKind::Deployment, &format!("dep_{:028}", 1))
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// For benchmarks only: inserts `count` pull-mode deployments on `platform` into `group` in
    /// one transaction, each running `release` with `stack_state`, its agent heard from now, and
    /// its own deployment token stored as `create_deployment` stores it (hash in `tokens`, raw
    /// value sealed in the row). Returns each deployment's id and raw token, for the simulated
    /// agents to sync with.
    #[doc(hidden)]
    pub async fn seed_pull_deployments(
        &self,
        group: &Id,
        platform: Platform,
        release: &Id,
        stack_state: &serde_json::Value,
        count: u32,
    ) -> StoreResult<Vec<(Id, RawToken)>> {
        let now = now_millis();
        let sealer = self.sealer.read().await;
        let mut agents = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..count {
            let id = Id::new(IdKind::Deployment);
            let raw = RawToken::generate(TokenType::Deployment)
                .map_err(|e| StoreError::Database(format!("generating a deployment token: {e}")))?;
            let sealed = seal(&sealer, &token_aad(id.as_str()), raw.expose().as_bytes())?;
            let token_id = Id::new(IdKind::Token);
            rows.push([id.to_string(), token_id.to_string(), raw.hash(), raw.key_prefix(), sealed]);
            agents.push((id, raw));
        }
        let rows = to_json("the seeded rows", &rows)?;
        let mut tx = self.begin("seeding pull deployments").await?;
        sqlx::query(
            "INSERT INTO deployments (id, name, platform, deployment_model, deployment_group_id, \
             status, current_release_id, desired_release_id, stack_state, token, last_heartbeat_at, \
             created_at, updated_at) \
             SELECT json_extract(value, '$[0]'), 'agent-' || substr(json_extract(value, '$[0]'), 5), \
             ?2, 'pull', ?1, 'running', ?3, ?3, ?4, json_extract(value, '$[4]'), ?5, ?5, ?5 \
             FROM json_each(?6)",
        )
        .bind(group.as_str())
        .bind(platform.as_str())
        .bind(release.as_str())
        .bind(to_json("the stack state", stack_state)?)
        .bind(now)
        .bind(&rows)
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_error("seeding pull deployments", e))?;
        sqlx::query(
            "INSERT INTO tokens (id, token_type, key_hash, key_prefix, deployment_group_id, \
             deployment_id, created_at) \
             SELECT json_extract(value, '$[1]'), 'deployment', json_extract(value, '$[2]'), \
             json_extract(value, '$[3]'), ?1, json_extract(value, '$[0]'), ?2 FROM json_each(?3)",
        )
        .bind(group.as_str())
        .bind(now)
        .bind(&rows)
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_error("seeding deployment tokens", e))?;
        tx.commit().await.map_err(|e| sql_error("committing seeded deployments", e))?;
        Ok(agents)
    }

    /// Closes every connection (readers first, so that the writer's close checkpoints the WAL).
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    /// Re-seals every sealed value (deployment tokens, secret variables, the key check) with
    /// `new` in one transaction, then uses `new`; returns how many values were re-sealed.
    pub async fn rotate_key(&self, new: Sealer) -> StoreResult<u64> {
        let mut current = self.sealer.write().await;
        let mut conn = self.writer.acquire().await.map_err(|e| sql_error("rotating the key", e))?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| sql_error("rotating the key", e))?;
        let mut count = 0u64;

        let tokens: Vec<(String, String)> =
            sqlx::query_as("SELECT id, token FROM deployments WHERE token IS NOT NULL")
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| sql_error("reading deployment tokens", e))?;
        for (id, sealed) in tokens {
            let aad = token_aad(&id);
            let resealed = reseal(&current, &new, &aad, &sealed)?;
            sqlx::query("UPDATE deployments SET token = ?1 WHERE id = ?2")
                .bind(resealed)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(|e| sql_error("re-sealing a deployment token", e))?;
            count += 1;
        }

        let secrets: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT deployment_id, name, value FROM deployment_variables WHERE type = 'secret'",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| sql_error("reading secret variables", e))?;
        for (deployment_id, name, sealed) in secrets {
            let aad = variable_aad(&deployment_id, &name);
            let resealed = reseal(&current, &new, &aad, &sealed)?;
            sqlx::query(
                "UPDATE deployment_variables SET value = ?1 WHERE deployment_id = ?2 AND name = ?3",
            )
            .bind(resealed)
            .bind(&deployment_id)
            .bind(&name)
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("re-sealing a secret variable", e))?;
            count += 1;
        }

        let check = seal(&new, KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)?;
        sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES ('key_check', ?1)")
            .bind(check)
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("re-sealing the key check", e))?;
        count += 1;

        tx.commit().await.map_err(|e| sql_error("committing the key rotation", e))?;
        // Swapped while the writer connection is still held: no write can seal with the old key.
        *current = new;
        drop(conn);
        Ok(count)
    }

    async fn begin(&self, what: &str) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(|e| sql_error(what, e))
    }
}

/// Creates the database file with mode 0600 when it does not exist.
fn create_private_file(path: &Path) -> StoreResult<()> {
    crate::private_fs::create_file_if_missing(path).map_err(|err| {
        StoreError::Unavailable(format!(
            "cannot create the database file {}: {err} (does its directory exist and is it writable?)",
            path.display()
        ))
    })
}

/// On an existing database, checks the key through a read-only connection before anything opens
/// it for writing: closing a writer checkpoints the WAL, which would change the files even when
/// the key is then refused.
async fn precheck_key(db_file: &Path, sealer: &Sealer, shown: &str) -> StoreResult<()> {
    if std::fs::metadata(db_file).map(|m| m.len() == 0).unwrap_or(true) {
        return Ok(());
    }
    // Without a WAL file (a clean shutdown checkpointed everything) the database is read as
    // immutable, which creates no -wal/-shm files; with one, a read-only connection reads it too.
    let mut wal = db_file.as_os_str().to_owned();
    wal.push("-wal");
    let immutable = !Path::new(&wal).exists();
    let options = SqliteConnectOptions::new()
        .filename(db_file)
        .busy_timeout(BUSY_TIMEOUT)
        .read_only(true)
        .immutable(immutable);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| sql_error(&format!("opening {shown} for reading"), e))?;
    let has_meta: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| sql_error(&format!("reading {shown}"), e))?;
    let existing = if has_meta > 0 { read_key_check(&mut conn).await? } else { None };
    let verdict = match &existing {
        Some(sealed) => verify_key_check(sealer, sealed),
        None => Ok(()),
    };
    let _ = conn.close().await;
    verdict
}

/// Checks the key against existing data, migrates, and records the key check on a new database.
async fn prepare(writer: &SqlitePool, sealer: &Sealer, shown: &str) -> StoreResult<()> {
    let mut conn = writer.acquire().await.map_err(|e| sql_error(&format!("opening {shown}"), e))?;
    // Before migrating: a wrong key must leave the file untouched.
    let has_meta: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| sql_error(&format!("reading {shown}"), e))?;
    let existing = if has_meta > 0 { read_key_check(&mut conn).await? } else { None };
    if let Some(sealed) = &existing {
        verify_key_check(sealer, sealed)?;
    }
    MIGRATOR.run(&mut *conn).await.map_err(|err| match err {
        sqlx::migrate::MigrateError::Execute(e)
        | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => {
            sql_error(&format!("migrating {shown}"), e)
        }
        sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::Database(format!(
            "{shown} was migrated by a newer alien-manager (migration {version}); run that version \
             or restore a backup"
        )),
        other => StoreError::Database(format!("migrating {shown}: {other}")),
    })?;
    if existing.is_none() {
        let check = seal(sealer, KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('key_check', ?1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(check)
        .execute(&mut *conn)
        .await
        .map_err(|e| sql_error(&format!("writing the key check to {shown}"), e))?;
        // Another process may have won the race with its own key.
        if let Some(sealed) = read_key_check(&mut conn).await? {
            verify_key_check(sealer, &sealed)?;
        }
    }
    Ok(())
}

/// Begins and rolls back a write transaction: a read-only or locked file fails here (after the
/// busy timeout) with `Unavailable`, without writing anything.
async fn check_writable(writer: &SqlitePool, shown: &str) -> StoreResult<()> {
    let context = format!(
        "{shown} cannot be written (read-only file or directory, or locked by another process)"
    );
    let tx = writer.begin_with("BEGIN IMMEDIATE").await.map_err(|e| sql_error(&context, e))?;
    tx.rollback().await.map_err(|e| sql_error(&context, e))
}

async fn read_key_check(conn: &mut SqliteConnection) -> StoreResult<Option<String>> {
    sqlx::query_scalar("SELECT value FROM meta WHERE key = 'key_check'")
        .fetch_optional(conn)
        .await
        .map_err(|e| sql_error("reading the key check", e))
}

fn verify_key_check(sealer: &Sealer, sealed: &str) -> StoreResult<()> {
    match sealer.open(KEY_CHECK_AAD, sealed) {
        Ok(plain) if plain == KEY_CHECK_PLAINTEXT => Ok(()),
        _ => Err(StoreError::WrongKey(
            "the database was sealed with another key; start with the key it was created with \
             (encryption-key or {state-dir}/encryption.key), or rotate keys with rotate-key"
                .into(),
        )),
    }
}

fn seal(sealer: &Sealer, aad: &str, plaintext: &[u8]) -> StoreResult<String> {
    sealer.seal(aad, plaintext).map_err(|e| StoreError::Database(format!("sealing {aad}: {e}")))
}

fn open_sealed(sealer: &Sealer, aad: &str, sealed: &str) -> StoreResult<String> {
    sealer.open_string(aad, sealed).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn reseal(old: &Sealer, new: &Sealer, aad: &str, sealed: &str) -> StoreResult<String> {
    let plain = old.open(aad, sealed).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    seal(new, aad, &plain)
}

fn token_aad(deployment_id: &str) -> String {
    format!("deployments/token/{deployment_id}")
}

fn variable_aad(deployment_id: &str, name: &str) -> String {
    format!("deployment_variables/value/{deployment_id}/{name}")
}

/// Maps a database error: locks, read-only files, I/O and pool exhaustion are `Unavailable`.
fn sql_error(context: &str, err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            // Primary result codes: BUSY 5, LOCKED 6, READONLY 8, IOERR 10, CORRUPT 11, FULL 13,
            // CANTOPEN 14, PROTOCOL 15, NOTADB 26.
            match code & 0xff {
                5 | 6 | 8 | 10 | 13 | 14 | 15 => {
                    StoreError::Unavailable(format!("{context}: {err}"))
                }
                11 | 26 => StoreError::Corrupt(format!("{context}: {err}")),
                _ => StoreError::Database(format!("{context}: {err}")),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => StoreError::Unavailable(format!("{context}: {err}")),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt(format!("{context}: {err}"))
        }
        _ => StoreError::Database(format!("{context}: {err}")),
    }
}

fn is_unique_violation(err: &sqlx::Error, index_hint: &str) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.kind() == ErrorKind::UniqueViolation && db.message().contains(index_hint))
}

fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == ErrorKind::ForeignKeyViolation)
}

// ---- encoding of columns ----

fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(column: &str, millis: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| StoreError::Corrupt(format!("{column}: {millis} is not a timestamp")))
}

fn opt_time(column: &str, millis: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    millis.map(|m| time(column, m)).transpose()
}

fn id(column: &str, value: &str) -> StoreResult<Id> {
    Id::parse_any(value).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn opt_id(column: &str, value: Option<&str>) -> StoreResult<Option<Id>> {
    value.map(|v| id(column, v)).transpose()
}

fn parse<T: FromStr>(column: &str, value: &str) -> StoreResult<T>
where
    T::Err: fmt::Display,
{
    value.parse().map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn opt_from_json<T: DeserializeOwned>(column: &str, text: Option<&str>) -> StoreResult<Option<T>> {
    text.map(|t| from_json(column, t)).transpose()
}

fn to_json<T: Serialize + ?Sized>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Database(format!("cannot encode {what} as JSON: {e}")))
}

fn opt_to_json<T: Serialize>(what: &str, value: Option<&T>) -> StoreResult<Option<String>> {
    value.map(|v| to_json(what, v)).transpose()
}

fn token_type(value: &str) -> StoreResult<TokenType> {
    TokenType::ALL
        .into_iter()
        .find(|kind| kind.as_str() == value)
        .ok_or_else(|| StoreError::Corrupt(format!("tokens.token_type: unknown {value:?}")))
}

fn count(column: &str, value: i64) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value} out of range")))
}

// ---- cursors: base64url("<list>:<millis>:<id>") ----

fn encode_cursor(list: &str, millis: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{list}:{millis}:{id}"))
}

fn decode_cursor(list: &str, cursor: &str) -> StoreResult<(i64, String)> {
    let bad = || StoreError::BadCursor(format!("{cursor:.64} is not a cursor of this list"));
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ':');
    if parts.next() != Some(list) {
        return Err(bad());
    }
    let millis = parts.next().and_then(|m| m.parse::<i64>().ok()).ok_or_else(bad)?;
    let id = parts.next().ok_or_else(bad)?;
    Ok((millis, id.to_owned()))
}

fn limit_of(page: &PageRequest) -> i64 {
    i64::from(page.effective_limit())
}

/// Cuts one extra fetched row off and makes the cursor of the last item kept.
fn into_page<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    key: impl Fn(&R) -> String,
    convert: impl Fn(R) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(&key)
    } else {
        None
    };
    let items = rows.into_iter().map(convert).collect::<StoreResult<Vec<T>>>()?;
    Ok(Page { items, next_cursor })
}

// ---- SQL generated from the domain rules ----

/// The update of a transition (and of a report of an unchanged status): `?1` the new status,
/// `?2..?9` the patch, `?10` the id, `?11` the status it must still have; `$returning` appended.
macro_rules! patch_deployment_sql {
    ($returning:expr) => {
        concat!(
            "UPDATE deployments SET status = ?1, \
             desired_release_id = COALESCE(?2, desired_release_id), \
             current_release_id = COALESCE(?3, current_release_id), \
             stack_state = COALESCE(?4, stack_state), \
             error = CASE WHEN ?5 THEN ?6 ELSE error END, \
             retry_requested = COALESCE(?7, retry_requested), \
             last_heartbeat_at = COALESCE(?8, last_heartbeat_at), \
             updated_at = ?9 \
             WHERE id = ?10 AND status = ?11",
            $returning
        )
    };
}

macro_rules! deployment_columns {
    () => {
        "id, name, platform, deployment_model, deployment_group_id, status, current_release_id, \
         desired_release_id, stack_state, error, retry_requested, region, last_heartbeat_at, \
         next_step_after, created_at, updated_at"
    };
}

fn quoted(statuses: impl IntoIterator<Item = DeploymentStatus>) -> String {
    statuses.into_iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
}

/// Statuses a new desired release applies to (everything outside the delete path that accepts it).
fn release_markable() -> impl Iterator<Item = DeploymentStatus> {
    DeploymentStatus::ALL
        .into_iter()
        .filter(|s| !s.is_deleting() && s.transition(DeploymentEvent::NewDesiredRelease).is_ok())
}

/// `CASE status WHEN ... END`: `DeploymentStatus::transition(NewDesiredRelease)` as SQL.
fn new_release_case() -> String {
    let mut case = String::from("CASE status");
    for status in release_markable() {
        if let Ok(next) = status.transition(DeploymentEvent::NewDesiredRelease)
            && next != status
        {
            case.push_str(&format!(" WHEN '{}' THEN '{}'", status.as_str(), next.as_str()));
        }
    }
    case.push_str(" ELSE status END");
    case
}

/// Statuses the push loop steps (pending only with a desired release).
const LOOP_STATUSES: [DeploymentStatus; 6] = [
    DeploymentStatus::Pending,
    DeploymentStatus::Provisioning,
    DeploymentStatus::UpdatePending,
    DeploymentStatus::Updating,
    DeploymentStatus::DeletePending,
    DeploymentStatus::Deleting,
];

static RELEASE_EVENTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO deployment_events (deployment_id, from_status, to_status, reason, detail, at) \
         SELECT id, status, {case}, 'release', json_object('releaseId', ?1), ?2 FROM deployments \
         WHERE platform IN (SELECT platform FROM release_platforms WHERE release_id = ?1) \
         AND status IN ({markable})",
        case = new_release_case(),
        markable = quoted(release_markable()),
    )
});

static RELEASE_MARK_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE deployments SET status = {case}, desired_release_id = ?1, next_step_after = 0, \
         updated_at = ?2 \
         WHERE platform IN (SELECT platform FROM release_platforms WHERE release_id = ?1) \
         AND status IN ({markable})",
        case = new_release_case(),
        markable = quoted(release_markable()),
    )
});

/// Push deployments with work to do, due and not leased (or leased before `?3`): `?2` = now.
/// `filter` holds further conditions (fixed fragments with bound values) applied to both halves.
fn due_sql(filter: &str) -> String {
    let push = DeploymentModel::Push.as_str();
    let pending = DeploymentStatus::Pending.as_str();
    format!(
        "SELECT id, next_step_after, updated_at FROM deployments \
         WHERE deployment_model = '{push}' AND status IN ({statuses}) AND next_step_after <= ?2 \
         AND (status <> '{pending}' OR desired_release_id IS NOT NULL) \
         AND (locked_by IS NULL OR locked_at < ?3){filter} \
         UNION \
         SELECT id, next_step_after, updated_at FROM deployments \
         WHERE deployment_model = '{push}' AND retry_requested = 1 AND next_step_after <= ?2 \
         AND (locked_by IS NULL OR locked_at < ?3){filter}",
        statuses = quoted(LOOP_STATUSES),
    )
}

/// Leases the first `?4` due deployments to `?1` at `?2`.
fn acquire_sql(filter: &str) -> String {
    format!(
        "UPDATE deployments SET locked_by = ?1, locked_at = ?2 WHERE id IN ( \
         SELECT id FROM ({due}) ORDER BY next_step_after, updated_at, id LIMIT ?4) \
         RETURNING {columns}",
        due = due_sql(filter),
        columns = deployment_columns!(),
    )
}

/// The deployment loop's acquisition (no filter), built once.
static ACQUIRE_SQL: LazyLock<String> = LazyLock::new(|| acquire_sql(""));

/// The conditions of `filter` as SQL, numbered from `?5` and bound in the same order by
/// [`bind_acquire_filter`]. Lists are bound as JSON arrays.
fn acquire_filter_sql(filter: &AcquireFilter) -> String {
    let mut sql = String::new();
    let mut n = 4;
    if filter.deployment_group_id.is_some() {
        n += 1;
        sql.push_str(&format!(" AND deployment_group_id = ?{n}"));
    }
    if filter.platforms.is_some() {
        n += 1;
        sql.push_str(&format!(" AND platform IN (SELECT value FROM json_each(?{n}))"));
    }
    if filter.deployment_ids.is_some() {
        n += 1;
        sql.push_str(&format!(" AND id IN (SELECT value FROM json_each(?{n}))"));
    }
    sql
}

fn bind_acquire_filter<'q, O>(
    mut query: sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments>,
    filter: &AcquireFilter,
) -> StoreResult<sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments>> {
    if let Some(group) = &filter.deployment_group_id {
        query = query.bind(group.to_string());
    }
    if let Some(platforms) = &filter.platforms {
        let names: Vec<&str> = platforms.iter().map(|p| p.as_str()).collect();
        query = query.bind(to_json("the platforms to acquire", &names)?);
    }
    if let Some(ids) = &filter.deployment_ids {
        let ids: Vec<&str> = ids.iter().map(Id::as_str).collect();
        query = query.bind(to_json("the deployments to acquire", &ids)?);
    }
    Ok(query)
}

// ---- rows ----

#[derive(sqlx::FromRow)]
struct DeploymentRow {
    id: String,
    name: String,
    platform: String,
    deployment_model: String,
    deployment_group_id: String,
    status: String,
    current_release_id: Option<String>,
    desired_release_id: Option<String>,
    stack_state: Option<String>,
    error: Option<String>,
    retry_requested: bool,
    region: Option<String>,
    last_heartbeat_at: Option<i64>,
    next_step_after: i64,
    created_at: i64,
    updated_at: i64,
}

impl DeploymentRow {
    fn into_deployment(self) -> StoreResult<Deployment> {
        Ok(Deployment {
            id: id("deployments.id", &self.id)?,
            name: self.name,
            platform: parse("deployments.platform", &self.platform)?,
            status: parse("deployments.status", &self.status)?,
            deployment_model: parse("deployments.deployment_model", &self.deployment_model)?,
            deployment_group_id: id("deployments.deployment_group_id", &self.deployment_group_id)?,
            current_release_id: opt_id(
                "deployments.current_release_id",
                self.current_release_id.as_deref(),
            )?,
            desired_release_id: opt_id(
                "deployments.desired_release_id",
                self.desired_release_id.as_deref(),
            )?,
            stack_state: opt_from_json("deployments.stack_state", self.stack_state.as_deref())?,
            error: opt_from_json::<DeploymentError>("deployments.error", self.error.as_deref())?,
            retry_requested: self.retry_requested,
            region: self.region,
            last_heartbeat_at: opt_time("deployments.last_heartbeat_at", self.last_heartbeat_at)?,
            created_at: time("deployments.created_at", self.created_at)?,
            updated_at: time("deployments.updated_at", self.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ReleaseRow {
    id: String,
    stack: String,
    git_metadata: Option<String>,
    version: Option<String>,
    description: Option<String>,
    created_at: i64,
}

impl ReleaseRow {
    fn into_release(self) -> StoreResult<Release> {
        Ok(Release {
            id: id("releases.id", &self.id)?,
            stack: from_json::<BTreeMap<Platform, Stack>>("releases.stack", &self.stack)?,
            git_metadata: opt_from_json::<GitMetadata>(
                "releases.git_metadata",
                self.git_metadata.as_deref(),
            )?,
            version: self.version,
            description: self.description,
            created_at: time("releases.created_at", self.created_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    id: String,
    name: String,
    max_deployments: i64,
    deployment_count: i64,
    rollout: Option<String>,
    created_at: i64,
}

impl GroupRow {
    fn into_group(self) -> StoreResult<DeploymentGroup> {
        Ok(DeploymentGroup {
            id: id("deployment_groups.id", &self.id)?,
            name: self.name,
            max_deployments: count("deployment_groups.max_deployments", self.max_deployments)?,
            deployment_count: count("deployment count", self.deployment_count)?,
            rollout: match &self.rollout {
                Some(json) => Some(from_json("deployment_groups.rollout", json)?),
                None => None,
            },
            created_at: time("deployment_groups.created_at", self.created_at)?,
        })
    }
}

macro_rules! group_select {
    () => {
        "SELECT g.id, g.name, g.max_deployments, g.rollout, g.created_at, \
         (SELECT COUNT(*) FROM deployments d WHERE d.deployment_group_id = g.id) AS deployment_count \
         FROM deployment_groups g"
    };
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    token_type: String,
    key_hash: String,
    key_prefix: String,
    deployment_group_id: Option<String>,
    deployment_id: Option<String>,
    name: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
}

macro_rules! token_columns {
    () => {
        "id, token_type, key_hash, key_prefix, deployment_group_id, deployment_id, name, \
         created_at, expires_at, last_used_at"
    };
}

impl TokenRow {
    fn into_record(self) -> StoreResult<TokenRecord> {
        Ok(TokenRecord {
            id: id("tokens.id", &self.id)?,
            token_type: token_type(&self.token_type)?,
            key_prefix: self.key_prefix,
            key_hash: self.key_hash,
            deployment_group_id: opt_id(
                "tokens.deployment_group_id",
                self.deployment_group_id.as_deref(),
            )?,
            deployment_id: opt_id("tokens.deployment_id", self.deployment_id.as_deref())?,
            name: self.name,
            created_at: time("tokens.created_at", self.created_at)?,
            expires_at: opt_time("tokens.expires_at", self.expires_at)?,
            last_used_at: opt_time("tokens.last_used_at", self.last_used_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    from_status: Option<String>,
    to_status: String,
    reason: String,
    detail: Option<String>,
    at: i64,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: i64,
    token_id: Option<String>,
    token_type: Option<String>,
    action: String,
    target_id: Option<String>,
    status: i64,
    outcome: String,
}

impl AuditRow {
    fn into_entry(self) -> StoreResult<AuditEntry> {
        Ok(AuditEntry {
            id: self.id,
            at: time("audit_log.at", self.at)?,
            token_id: opt_id("audit_log.token_id", self.token_id.as_deref())?,
            token_type: self.token_type.as_deref().map(token_type).transpose()?,
            action: self.action,
            target_id: self.target_id,
            status: u16::try_from(self.status).map_err(|_| {
                StoreError::Corrupt(format!("audit_log.status: {} out of range", self.status))
            })?,
            outcome: self.outcome,
        })
    }
}

/// Inserts `batch` with one multi-row statement (one disk sync); a batch of more than a
/// statement's rows is one transaction.
async fn write_audit(writer: &SqlitePool, batch: &[QueuedAudit]) -> StoreResult<()> {
    const ROWS: usize = 1000; // 7 parameters a row: far below SQLite's 32,766 per statement.
    let mut tx = match batch.len() > ROWS {
        true => Some(
            writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| sql_error("appending to the audit log", e))?,
        ),
        false => None,
    };
    for chunk in batch.chunks(ROWS) {
        let mut insert = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO audit_log (at, token_id, token_type, action, target_id, status, outcome) ",
        );
        insert.push_values(chunk, |mut row, (entry, _)| {
            row.push_bind(entry.at.timestamp_millis())
                .push_bind(entry.token_id.as_ref().map(|id| id.as_str().to_owned()))
                .push_bind(entry.token_type.map(TokenType::as_str))
                .push_bind(entry.action.clone())
                .push_bind(entry.target_id.clone())
                .push_bind(i64::from(entry.status))
                .push_bind(entry.outcome.clone());
        });
        let statement = insert.build().persistent(false);
        let done = match tx.as_mut() {
            Some(tx) => statement.execute(&mut **tx).await,
            None => statement.execute(writer).await,
        };
        done.map_err(|e| sql_error("appending to the audit log", e))?;
    }
    if let Some(tx) = tx {
        tx.commit().await.map_err(|e| sql_error("committing the audit log", e))?;
    }
    Ok(())
}

/// A transition inside `tx` (see [`DeploymentStore::transition`]).
async fn transition_in(
    tx: &mut Transaction<'static, Sqlite>,
    dep: &str,
    event: DeploymentEvent,
    patch: DeploymentPatch,
) -> StoreResult<Deployment> {
    let now = now_millis();
    let current: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT status, desired_release_id FROM deployments WHERE id = ?1")
            .bind(dep)
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| sql_error("reading a deployment", e))?;
    let Some((status, desired)) = current else {
        return Err(StoreError::NotFound { kind: "deployment", id: dep.to_owned() });
    };
    let from: DeploymentStatus = parse("deployments.status", &status)?;
    if let Some(expected) = patch.expect_status
        && expected != from
    {
        return Err(StoreError::Conflict(format!(
            "deployment {dep} is {from}, no longer {expected}"
        )));
    }
    let to = from.transition(event)?;

    let error = match &patch.error {
        Some(Some(error)) => Some(to_json("the deployment error", error)?),
        _ => None,
    };
    let updated = sqlx::query(patch_deployment_sql!(""))
        .bind(to.as_str())
        .bind(patch.desired_release_id.as_ref().map(Id::as_str))
        .bind(patch.current_release_id.as_ref().map(Id::as_str))
        .bind(opt_to_json("the stack state", patch.stack_state.as_ref())?)
        .bind(patch.error.is_some())
        .bind(error)
        .bind(patch.retry_requested)
        .bind(patch.last_heartbeat_at.map(|t| t.timestamp_millis()))
        .bind(now)
        .bind(dep)
        .bind(from.as_str())
        .execute(&mut **tx)
        .await
        .map_err(|err| {
            if is_foreign_key_violation(&err) {
                StoreError::NotFound {
                    kind: "release",
                    id: patch
                        .desired_release_id
                        .iter()
                        .chain(patch.current_release_id.iter())
                        .map(Id::to_string)
                        .collect::<Vec<_>>()
                        .join(" or "),
                }
            } else {
                sql_error("updating a deployment", err)
            }
        })?
        .rows_affected();
    if updated == 0 {
        return Err(StoreError::Conflict(format!(
            "deployment {dep} changed status while {event} was being applied"
        )));
    }

    // (Not when it went stale: its agent fell silent; that is no end of an update.)
    if from == DeploymentStatus::Updating
        && !matches!(to, DeploymentStatus::Updating | DeploymentStatus::Stale)
    {
        // The end of an update: when the group's next rollout batch may start counts from here.
        sqlx::query(
            "UPDATE deployment_groups SET rollout_last_done_at = ?2 WHERE rollout IS NOT NULL \
             AND id = (SELECT deployment_group_id FROM deployments WHERE id = ?1)",
        )
        .bind(dep)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| sql_error("recording the end of an update", e))?;
    }

    let new_desired =
        patch.desired_release_id.as_ref().is_some_and(|d| desired.as_deref() != Some(d.as_str()));
    if to != from || new_desired {
        let reason = if patch.reason.is_empty() { event.to_string() } else { patch.reason.clone() };
        sqlx::query(
                "INSERT INTO deployment_events (deployment_id, from_status, to_status, reason, detail, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(dep)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(reason)
            .bind(opt_to_json("the event detail", patch.detail.as_ref())?)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(|e| sql_error("recording a deployment event", e))?;
        sqlx::query(
            "DELETE FROM deployment_events WHERE deployment_id = ?1 AND id < ( \
                 SELECT id FROM deployment_events WHERE deployment_id = ?1 \
                 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        )
        .bind(dep)
        .bind(EVENTS_KEPT - 1)
        .execute(&mut **tx)
        .await
        .map_err(|e| sql_error("pruning deployment events", e))?;
    }

    let after = fetch_deployment(tx, dep).await?.ok_or_else(|| {
        StoreError::Database(format!("deployment {dep} vanished during a transition"))
    })?;
    Ok(after)
}

async fn fetch_deployment(
    conn: &mut SqliteConnection,
    deployment: &str,
) -> StoreResult<Option<Deployment>> {
    sqlx::query_as::<_, DeploymentRow>(concat!(
        "SELECT ",
        deployment_columns!(),
        " FROM deployments WHERE id = ?1"
    ))
    .bind(deployment)
    .fetch_optional(conn)
    .await
    .map_err(|e| sql_error("reading a deployment", e))?
    .map(DeploymentRow::into_deployment)
    .transpose()
}

async fn insert_token(
    conn: &mut SqliteConnection,
    token: &NewToken,
    now: i64,
) -> StoreResult<TokenRecord> {
    let record = TokenRecord {
        id: token.id.clone(),
        token_type: token.token_type,
        key_prefix: token.raw.key_prefix(),
        key_hash: token.raw.hash(),
        deployment_group_id: token.deployment_group_id.clone(),
        deployment_id: token.deployment_id.clone(),
        name: token.name.clone(),
        created_at: time("tokens.created_at", now)?,
        expires_at: token
            .expires_at
            .map(|t| time("tokens.expires_at", t.timestamp_millis()))
            .transpose()?,
        last_used_at: None,
    };
    sqlx::query(
        "INSERT INTO tokens (id, token_type, key_hash, key_prefix, deployment_group_id, \
         deployment_id, name, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .bind(record.id.as_str())
    .bind(record.token_type.as_str())
    .bind(&record.key_hash)
    .bind(&record.key_prefix)
    .bind(record.deployment_group_id.as_ref().map(Id::as_str))
    .bind(record.deployment_id.as_ref().map(Id::as_str))
    .bind(record.name.as_deref())
    .bind(now)
    .bind(record.expires_at.map(|t| t.timestamp_millis()))
    .execute(conn)
    .await
    .map_err(|err| {
        if is_unique_violation(&err, "tokens.key_hash") {
            StoreError::Conflict("a token with this value already exists".into())
        } else if is_unique_violation(&err, "tokens.id") {
            StoreError::Conflict(format!("token {} already exists", record.id))
        } else {
            sql_error("storing a token", err)
        }
    })?;
    Ok(record)
}

#[async_trait::async_trait]
impl ReleaseStore for SqliteStore {
    async fn create_release(&self, release: NewRelease) -> StoreResult<CreatedRelease> {
        let release_id = Id::try_new(IdKind::Release)
            .map_err(|e| StoreError::Database(format!("generating a release id: {e}")))?;
        let stack = to_json("the release stack", &release.stack)?;
        let git = opt_to_json("the git metadata", release.git_metadata.as_ref())?;
        let now = now_millis();
        let mut tx = self.begin("creating a release").await?;
        // Strictly increasing, so the latest release is unambiguous even within a millisecond.
        let created_at: i64 = sqlx::query_scalar(
            "INSERT INTO releases (id, stack, git_metadata, version, description, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, MAX(?6, COALESCE((SELECT MAX(created_at) FROM releases), 0) + 1)) \
             RETURNING created_at",
        )
        .bind(release_id.as_str())
        .bind(&stack)
        .bind(git.as_deref())
        .bind(release.version.as_deref())
        .bind(release.description.as_deref())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| sql_error("storing a release", e))?;
        for platform in release.stack.keys() {
            sqlx::query(
                "INSERT INTO release_platforms (platform, created_at, release_id) VALUES (?1, ?2, ?3)",
            )
            .bind(platform.as_str())
            .bind(created_at)
            .bind(release_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("storing a release's platforms", e))?;
        }
        sqlx::query(AssertSqlSafe(RELEASE_EVENTS_SQL.as_str()))
            .bind(release_id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("recording the release in deployment events", e))?;
        let marked = sqlx::query(AssertSqlSafe(RELEASE_MARK_SQL.as_str()))
            .bind(release_id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("marking deployments with the release", e))?
            .rows_affected();
        // A new rollout starts in every staged group the release reaches.
        sqlx::query(
            "UPDATE deployment_groups SET rollout_batch_begun = 0 WHERE rollout IS NOT NULL \
             AND rollout_batch_begun > 0 AND id IN (SELECT deployment_group_id FROM deployments \
             WHERE desired_release_id = ?1 AND status = 'update-pending')",
        )
        .bind(release_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_error("starting the groups' rollouts", e))?;
        tx.commit().await.map_err(|e| sql_error("committing a release", e))?;
        Ok(CreatedRelease {
            release: Release {
                id: release_id,
                stack: release.stack,
                git_metadata: release.git_metadata,
                version: release.version,
                description: release.description,
                created_at: time("releases.created_at", created_at)?,
            },
            marked,
        })
    }

    async fn get_release(&self, release: &Id) -> StoreResult<Option<Release>> {
        sqlx::query_as::<_, ReleaseRow>(
            "SELECT id, stack, git_metadata, version, description, created_at FROM releases WHERE id = ?1",
        )
        .bind(release.as_str())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| sql_error("reading a release", e))?
        .map(ReleaseRow::into_release)
        .transpose()
    }

    async fn latest_release(&self, platform: Option<Platform>) -> StoreResult<Option<Release>> {
        let query = match platform {
            None => sqlx::query_as::<_, ReleaseRow>(
                "SELECT id, stack, git_metadata, version, description, created_at FROM releases \
                 ORDER BY created_at DESC, id DESC LIMIT 1",
            ),
            Some(platform) => sqlx::query_as::<_, ReleaseRow>(
                "SELECT r.id, r.stack, r.git_metadata, r.version, r.description, r.created_at \
                 FROM release_platforms p JOIN releases r ON r.id = p.release_id \
                 WHERE p.platform = ?1 ORDER BY p.created_at DESC, p.release_id DESC LIMIT 1",
            )
            .bind(platform.as_str()),
        };
        query
            .fetch_optional(&self.readers)
            .await
            .map_err(|e| sql_error("reading the latest release", e))?
            .map(ReleaseRow::into_release)
            .transpose()
    }

    async fn list_releases(&self, page: &PageRequest) -> StoreResult<Page<Release>> {
        let (after_millis, after_id) = match &page.cursor {
            Some(cursor) => decode_cursor("r", cursor)?,
            None => (i64::MAX, String::new()),
        };
        let limit = limit_of(page);
        let rows = sqlx::query_as::<_, ReleaseRow>(
            "SELECT id, stack, git_metadata, version, description, created_at FROM releases \
             WHERE (created_at, id) < (?1, ?2) ORDER BY created_at DESC, id DESC LIMIT ?3",
        )
        .bind(after_millis)
        .bind(&after_id)
        .bind(limit + 1)
        .fetch_all(&self.readers)
        .await
        .map_err(|e| sql_error("listing releases", e))?;
        into_page(
            rows,
            limit,
            |r| encode_cursor("r", r.created_at, &r.id),
            ReleaseRow::into_release,
        )
    }
}

#[async_trait::async_trait]
impl DeploymentStore for SqliteStore {
    async fn create_group(&self, name: &str, max_deployments: u32) -> StoreResult<DeploymentGroup> {
        let group = Id::try_new(IdKind::DeploymentGroup)
            .map_err(|e| StoreError::Database(format!("generating a group id: {e}")))?;
        // Strictly increasing, so that "oldest first" is the creation order.
        let created_at: i64 = sqlx::query_scalar(
            "INSERT INTO deployment_groups (id, name, max_deployments, created_at) VALUES (?1, ?2, ?3, \
             MAX(?4, COALESCE((SELECT MAX(created_at) FROM deployment_groups), 0) + 1)) \
             RETURNING created_at",
        )
        .bind(group.as_str())
        .bind(name)
        .bind(i64::from(max_deployments))
        .bind(now_millis())
        .fetch_one(&self.writer)
        .await
        .map_err(|err| {
            if is_unique_violation(&err, "deployment_groups.name") {
                StoreError::GroupNameConflict { name: name.to_owned() }
            } else {
                sql_error("creating a deployment group", err)
            }
        })?;
        Ok(DeploymentGroup {
            id: group,
            name: name.to_owned(),
            max_deployments,
            deployment_count: 0,
            rollout: None,
            created_at: time("deployment_groups.created_at", created_at)?,
        })
    }

    async fn get_group(&self, group: &Id) -> StoreResult<Option<DeploymentGroup>> {
        sqlx::query_as::<_, GroupRow>(concat!(group_select!(), " WHERE g.id = ?1"))
            .bind(group.as_str())
            .fetch_optional(&self.readers)
            .await
            .map_err(|e| sql_error("reading a deployment group", e))?
            .map(GroupRow::into_group)
            .transpose()
    }

    async fn list_groups(&self, page: &PageRequest) -> StoreResult<Page<DeploymentGroup>> {
        let (after_millis, after_id) = match &page.cursor {
            Some(cursor) => decode_cursor("g", cursor)?,
            None => (i64::MIN, String::new()),
        };
        let limit = limit_of(page);
        let rows = sqlx::query_as::<_, GroupRow>(concat!(
            group_select!(),
            " WHERE (g.created_at, g.id) > (?1, ?2) ORDER BY g.created_at, g.id LIMIT ?3"
        ))
        .bind(after_millis)
        .bind(&after_id)
        .bind(limit + 1)
        .fetch_all(&self.readers)
        .await
        .map_err(|e| sql_error("listing deployment groups", e))?;
        into_page(rows, limit, |g| encode_cursor("g", g.created_at, &g.id), GroupRow::into_group)
    }

    async fn create_deployment(&self, new: NewDeployment) -> StoreResult<Deployment> {
        let dep = new.id.as_str();
        let group = new.deployment_group_id.as_str();
        let now = now_millis();
        let sealer = self.sealer.read().await;
        let mut tx = self.begin("creating a deployment").await?;

        let max: Option<i64> =
            sqlx::query_scalar("SELECT max_deployments FROM deployment_groups WHERE id = ?1")
                .bind(group)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| sql_error("reading the deployment group", e))?;
        let Some(max) = max else {
            return Err(StoreError::NotFound { kind: "deployment group", id: group.to_owned() });
        };
        let held: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deployments WHERE deployment_group_id = ?1")
                .bind(group)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| sql_error("counting the group's deployments", e))?;
        if held >= max {
            return Err(StoreError::MaxDeploymentsReached {
                group: new.deployment_group_id.clone(),
                max: count("deployment_groups.max_deployments", max)?,
            });
        }
        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM deployments WHERE deployment_group_id = ?1 AND name = ?2",
        )
        .bind(group)
        .bind(&new.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| sql_error("checking the deployment name", e))?;
        let name_conflict = || StoreError::NameConflict {
            name: new.name.clone(),
            group: new.deployment_group_id.clone(),
        };
        if taken.is_some() {
            return Err(name_conflict());
        }
        let desired: Option<String> = sqlx::query_scalar(
            "SELECT release_id FROM release_platforms WHERE platform = ?1 \
             ORDER BY created_at DESC, release_id DESC LIMIT 1",
        )
        .bind(new.platform.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| sql_error("finding the latest release for the platform", e))?;

        // Strictly increasing, so that "oldest first" is the creation order.
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(created_at) FROM deployments")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| sql_error("reading the newest deployment", e))?;
        let created_at = now.max(last.map_or(0, |l| l.saturating_add(1)));

        let sealed_token = seal(&sealer, &token_aad(dep), new.token.raw.expose().as_bytes())?;
        sqlx::query(
            "INSERT INTO deployments (id, name, platform, deployment_model, deployment_group_id, \
             status, desired_release_id, retry_requested, region, stack_settings, target, token, \
             created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10, ?11, ?12, ?12)",
        )
        .bind(dep)
        .bind(&new.name)
        .bind(new.platform.as_str())
        .bind(new.deployment_model.as_str())
        .bind(group)
        .bind(DeploymentStatus::Pending.as_str())
        .bind(desired.as_deref())
        .bind(new.region.as_deref())
        .bind(opt_to_json("stackSettings", new.stack_settings.as_ref())?)
        .bind(opt_to_json("target", new.target.as_ref())?)
        .bind(&sealed_token)
        .bind(created_at)
        .execute(&mut *tx)
        .await
        .map_err(|err| {
            if is_unique_violation(&err, "deployments.deployment_group_id") {
                name_conflict()
            } else if is_unique_violation(&err, "deployments.id") {
                StoreError::Conflict(format!("deployment {dep} already exists"))
            } else {
                sql_error("storing a deployment", err)
            }
        })?;

        for (position, var) in new.environment_variables.iter().enumerate() {
            let (kind, value) = match var.var_type {
                VariableType::Plain => ("plain", var.value.clone()),
                VariableType::Secret => {
                    ("secret", seal(&sealer, &variable_aad(dep, &var.name), var.value.as_bytes())?)
                }
            };
            sqlx::query(
                "INSERT INTO deployment_variables (deployment_id, position, name, type, value) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(dep)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(&var.name)
            .bind(kind)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(|err| {
                if is_unique_violation(&err, "deployment_variables") {
                    StoreError::Conflict(format!("variable {} is given twice", var.name))
                } else {
                    sql_error("storing a deployment variable", err)
                }
            })?;
        }

        let mut token = new.token.clone();
        token.deployment_id = Some(new.id.clone());
        token.deployment_group_id = Some(new.deployment_group_id.clone());
        insert_token(&mut tx, &token, now).await?;

        sqlx::query(
            "INSERT INTO deployment_events (deployment_id, from_status, to_status, reason, detail, at) \
             VALUES (?1, NULL, ?2, 'created', NULL, ?3)",
        )
        .bind(dep)
        .bind(DeploymentStatus::Pending.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_error("recording the creation event", e))?;

        let created = fetch_deployment(&mut tx, dep).await?.ok_or_else(|| {
            StoreError::Database(format!("deployment {dep} vanished while being created"))
        })?;
        tx.commit().await.map_err(|e| sql_error("committing a deployment", e))?;
        Ok(created)
    }

    async fn get_deployment(&self, deployment: &Id) -> StoreResult<Option<Deployment>> {
        let mut conn =
            self.readers.acquire().await.map_err(|e| sql_error("reading a deployment", e))?;
        fetch_deployment(&mut conn, deployment.as_str()).await
    }

    async fn list_deployments(
        &self,
        filter: &DeploymentFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Deployment>> {
        let (after_millis, after_id) = match &page.cursor {
            Some(cursor) => decode_cursor("d", cursor)?,
            None => (i64::MIN, String::new()),
        };
        let limit = limit_of(page);
        // Only fixed fragments are appended; every value is bound.
        let mut sql = String::from(concat!(
            "SELECT ",
            deployment_columns!(),
            " FROM deployments WHERE (created_at, id) > (?, ?)"
        ));
        if filter.deployment_group_id.is_some() {
            sql.push_str(" AND deployment_group_id = ?");
        }
        if filter.status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if filter.platform.is_some() {
            sql.push_str(" AND platform = ?");
        }
        if filter.name.is_some() {
            sql.push_str(" AND name = ?");
        }
        sql.push_str(" ORDER BY created_at, id LIMIT ?");
        let mut query = sqlx::query_as::<_, DeploymentRow>(AssertSqlSafe(sql))
            .bind(after_millis)
            .bind(after_id);
        if let Some(group) = &filter.deployment_group_id {
            query = query.bind(group.as_str());
        }
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(platform) = filter.platform {
            query = query.bind(platform.as_str());
        }
        if let Some(name) = &filter.name {
            query = query.bind(name.as_str());
        }
        let rows = query
            .bind(limit + 1)
            .fetch_all(&self.readers)
            .await
            .map_err(|e| sql_error("listing deployments", e))?;
        into_page(
            rows,
            limit,
            |d| encode_cursor("d", d.created_at, &d.id),
            DeploymentRow::into_deployment,
        )
    }

    async fn deployment_environment(
        &self,
        deployment: &Id,
    ) -> StoreResult<Vec<EnvironmentVariable>> {
        let dep = deployment.as_str();
        let sealer = self.sealer.read().await;
        let mut conn =
            self.readers.acquire().await.map_err(|e| sql_error("reading variables", e))?;
        let mut tx = conn.begin().await.map_err(|e| sql_error("reading variables", e))?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM deployments WHERE id = ?1")
            .bind(dep)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| sql_error("reading a deployment", e))?;
        if exists.is_none() {
            return Err(StoreError::NotFound { kind: "deployment", id: dep.to_owned() });
        }
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT name, type, value FROM deployment_variables WHERE deployment_id = ?1 \
             ORDER BY position",
        )
        .bind(dep)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| sql_error("reading variables", e))?;
        drop(tx);
        rows.into_iter()
            .map(|(name, kind, value)| {
                let (var_type, value) = match kind.as_str() {
                    "plain" => (VariableType::Plain, value),
                    "secret" => {
                        let plain = open_sealed(&sealer, &variable_aad(dep, &name), &value)?;
                        (VariableType::Secret, plain)
                    }
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "deployment_variables.type: unknown {other:?}"
                        )));
                    }
                };
                Ok(EnvironmentVariable { name, value, var_type })
            })
            .collect()
    }

    async fn deployment_token(&self, deployment: &Id) -> StoreResult<Option<RawToken>> {
        let dep = deployment.as_str();
        let sealer = self.sealer.read().await;
        let sealed: Option<Option<String>> =
            sqlx::query_scalar("SELECT token FROM deployments WHERE id = ?1")
                .bind(dep)
                .fetch_optional(&self.readers)
                .await
                .map_err(|e| sql_error("reading a deployment token", e))?;
        let Some(sealed) = sealed.flatten() else {
            return Ok(None);
        };
        let raw = open_sealed(&sealer, &token_aad(dep), &sealed)?;
        RawToken::parse(TokenType::Deployment, &raw)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("deployments.token of {dep}: {e}")))
    }

    async fn transition(
        &self,
        deployment: &Id,
        event: DeploymentEvent,
        patch: DeploymentPatch,
    ) -> StoreResult<Deployment> {
        let mut tx = self.begin("transitioning a deployment").await?;
        let after = transition_in(&mut tx, deployment.as_str(), event, patch).await?;
        tx.commit().await.map_err(|e| sql_error("committing a transition", e))?;
        Ok(after)
    }

    async fn record_report(
        &self,
        deployment: &Id,
        status: DeploymentStatus,
        patch: DeploymentPatch,
    ) -> StoreResult<Option<Deployment>> {
        let error = match &patch.error {
            Some(Some(error)) => Some(to_json("the deployment error", error)?),
            _ => None,
        };
        // One statement, no transaction of its own: the status condition is the whole check.
        sqlx::query_as::<_, DeploymentRow>(patch_deployment_sql!(concat!(
            " RETURNING ",
            deployment_columns!()
        )))
        .bind(status.as_str())
        .bind(None::<&str>)
        .bind(patch.current_release_id.as_ref().map(Id::as_str))
        .bind(opt_to_json("the stack state", patch.stack_state.as_ref())?)
        .bind(patch.error.is_some())
        .bind(error)
        .bind(patch.retry_requested)
        .bind(patch.last_heartbeat_at.map(|t| t.timestamp_millis()))
        .bind(now_millis())
        .bind(deployment.as_str())
        .bind(status.as_str())
        .fetch_optional(&self.writer)
        .await
        .map_err(|err| {
            if is_foreign_key_violation(&err) {
                StoreError::NotFound {
                    kind: "release",
                    id: patch.current_release_id.as_ref().map(Id::to_string).unwrap_or_default(),
                }
            } else {
                sql_error("recording a report", err)
            }
        })?
        .map(DeploymentRow::into_deployment)
        .transpose()
    }

    async fn begin_update(
        &self,
        deployment: &Id,
        now: DateTime<Utc>,
        patch: DeploymentPatch,
    ) -> StoreResult<BeginUpdate> {
        let dep = deployment.as_str();
        let mut tx = self.begin("beginning an update").await?;
        let row: Option<(String, i64, Option<String>, i64, Option<i64>)> = sqlx::query_as(
            "SELECT g.id, d.retry_requested, g.rollout, g.rollout_batch_begun, g.rollout_last_done_at \
             FROM deployments d JOIN deployment_groups g ON g.id = d.deployment_group_id WHERE d.id = ?1",
        )
        .bind(dep)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| sql_error("reading a deployment's rollout", e))?;
        let Some((group, targeted, policy, begun, last_done)) = row else {
            return Err(StoreError::NotFound { kind: "deployment", id: dep.to_owned() });
        };
        let policy: Option<RolloutPolicy> = match policy {
            Some(json) => Some(from_json("deployment_groups.rollout", &json)?),
            None => None,
        };
        // No policy, or a deployment-targeted redeploy or retry (a rollback): at once.
        let Some(policy) = policy.filter(|_| targeted == 0) else {
            let begun = transition_in(&mut tx, dep, DeploymentEvent::BeginUpdate, patch).await?;
            tx.commit().await.map_err(|e| sql_error("committing a transition", e))?;
            return Ok(BeginUpdate::Begun(Box::new(begun)));
        };
        let (updating, failed): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(status = 'updating'), 0), COALESCE(SUM(status = 'update-failed'), 0) \
             FROM deployments WHERE deployment_group_id = ?1 AND status IN ('updating', 'update-failed')",
        )
        .bind(&group)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| sql_error("counting a group's updates", e))?;
        if policy.pause_on_failure() && failed > 0 {
            return Ok(BeginUpdate::Held {
                until: None,
                reason: format!(
                    "the group's rollout is paused: {failed} deployment(s) update-failed"
                ),
            });
        }
        let size = i64::from(policy.batch_size());
        let mut begun = begun;
        if begun >= size {
            // The batch is full: the next one starts once none of it is updating, after the delay.
            if updating > 0 {
                return Ok(BeginUpdate::Held {
                    until: None,
                    reason: format!("the group's batch of {size} is updating"),
                });
            }
            let delay = i64::from(policy.batch_delay_secs()) * 1000;
            let ready_at = last_done.unwrap_or(0).saturating_add(delay);
            if now.timestamp_millis() < ready_at {
                return Ok(BeginUpdate::Held {
                    until: Some(time("deployment_groups.rollout_last_done_at", ready_at)?),
                    reason: format!(
                        "the next batch starts {}s after the previous one",
                        policy.batch_delay_secs()
                    ),
                });
            }
            begun = 0;
        }
        if updating >= size {
            // Updates of an earlier rollout still run (a newer release reset the batch).
            return Ok(BeginUpdate::Held {
                until: None,
                reason: format!("{updating} deployments of the group are updating"),
            });
        }
        sqlx::query("UPDATE deployment_groups SET rollout_batch_begun = ?2 WHERE id = ?1")
            .bind(&group)
            .bind(begun + 1)
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("counting a batch", e))?;
        let after = transition_in(&mut tx, dep, DeploymentEvent::BeginUpdate, patch).await?;
        tx.commit().await.map_err(|e| sql_error("committing a transition", e))?;
        Ok(BeginUpdate::Begun(Box::new(after)))
    }

    async fn set_group_rollout(
        &self,
        group: &Id,
        rollout: Option<RolloutPolicy>,
    ) -> StoreResult<DeploymentGroup> {
        let json = match &rollout {
            Some(policy) => Some(to_json("the rollout policy", policy)?),
            None => None,
        };
        let updated = sqlx::query("UPDATE deployment_groups SET rollout = ?2 WHERE id = ?1")
            .bind(group.as_str())
            .bind(json)
            .execute(&self.writer)
            .await
            .map_err(|e| sql_error("setting a rollout policy", e))?
            .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound { kind: "deployment group", id: group.to_string() });
        }
        self.get_group(group)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "deployment group", id: group.to_string() })
    }

    async fn delete_deployment(&self, deployment: &Id) -> StoreResult<bool> {
        let dep = deployment.as_str();
        let now = now_millis();
        let mut tx = self.begin("deleting a deployment").await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM deployments WHERE id = ?1")
            .bind(dep)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| sql_error("reading a deployment", e))?;
        if exists.is_none() {
            return Ok(false);
        }
        for (sql, what) in [
            ("DELETE FROM deployment_events WHERE deployment_id = ?1", "deleting events"),
            ("DELETE FROM deployment_variables WHERE deployment_id = ?1", "deleting variables"),
            ("DELETE FROM deployments WHERE id = ?1", "deleting the deployment"),
        ] {
            sqlx::query(sql).bind(dep).execute(&mut *tx).await.map_err(|e| sql_error(what, e))?;
        }
        sqlx::query(
            "UPDATE tokens SET revoked_at = ?2 WHERE deployment_id = ?1 AND revoked_at IS NULL",
        )
        .bind(dep)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_error("revoking the deployment's tokens", e))?;
        tx.commit().await.map_err(|e| sql_error("committing a deletion", e))?;
        // Its tokens were revoked with it.
        self.tokens.revoked();
        Ok(true)
    }

    async fn deployment_events(
        &self,
        deployment: &Id,
        limit: u32,
    ) -> StoreResult<Vec<DeploymentEventRecord>> {
        let dep = deployment.as_str();
        let limit = PageRequest { limit, cursor: None }.effective_limit();
        let mut conn = self.readers.acquire().await.map_err(|e| sql_error("reading events", e))?;
        let mut tx = conn.begin().await.map_err(|e| sql_error("reading events", e))?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM deployments WHERE id = ?1")
            .bind(dep)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| sql_error("reading a deployment", e))?;
        if exists.is_none() {
            return Err(StoreError::NotFound { kind: "deployment", id: dep.to_owned() });
        }
        let rows = sqlx::query_as::<_, EventRow>(
            "SELECT from_status, to_status, reason, detail, at FROM deployment_events \
             WHERE deployment_id = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(dep)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| sql_error("reading events", e))?;
        rows.into_iter()
            .map(|row| {
                Ok(DeploymentEventRecord {
                    from: row
                        .from_status
                        .as_deref()
                        .map(|s| parse("deployment_events.from_status", s))
                        .transpose()?,
                    to: parse("deployment_events.to_status", &row.to_status)?,
                    reason: row.reason,
                    detail: opt_from_json("deployment_events.detail", row.detail.as_deref())?,
                    at: time("deployment_events.at", row.at)?,
                })
            })
            .collect()
    }

    async fn acquire_due_matching(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        stale_after: Duration,
        filter: &AcquireFilter,
    ) -> StoreResult<Vec<Deployment>> {
        if limit == 0 || filter.is_void() {
            return Ok(Vec::new());
        }
        let now = now.timestamp_millis();
        let stale = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
        let conditions = acquire_filter_sql(filter);
        let sql =
            if conditions.is_empty() { ACQUIRE_SQL.clone() } else { acquire_sql(&conditions) };
        let query = sqlx::query_as::<_, DeploymentRow>(AssertSqlSafe(sql))
            .bind(owner)
            .bind(now)
            .bind(now.saturating_sub(stale))
            .bind(i64::from(limit));
        let query = bind_acquire_filter(query, filter)?;
        let mut tx = self.begin("acquiring due deployments").await?;
        let mut rows = query
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| sql_error("acquiring due deployments", e))?;
        tx.commit().await.map_err(|e| sql_error("committing leases", e))?;
        rows.sort_by(|a, b| {
            (a.next_step_after, a.updated_at, &a.id).cmp(&(b.next_step_after, b.updated_at, &b.id))
        });
        rows.into_iter().map(DeploymentRow::into_deployment).collect()
    }

    async fn release_leases_of(&self, owner: &str) -> StoreResult<u64> {
        let released = sqlx::query(
            "UPDATE deployments SET locked_by = NULL, locked_at = NULL WHERE locked_by = ?1",
        )
        .bind(owner)
        .execute(&self.writer)
        .await
        .map_err(|e| sql_error("releasing leases", e))?
        .rows_affected();
        Ok(released)
    }

    async fn renew_lease(
        &self,
        deployment: &Id,
        owner: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let updated =
            sqlx::query("UPDATE deployments SET locked_at = ?3 WHERE id = ?1 AND locked_by = ?2")
                .bind(deployment.as_str())
                .bind(owner)
                .bind(now.timestamp_millis())
                .execute(&self.writer)
                .await
                .map_err(|e| sql_error("renewing a lease", e))?
                .rows_affected();
        Ok(updated > 0)
    }

    async fn silent_pull_deployments(
        &self,
        silent_since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Id>> {
        let quiet: Vec<DeploymentStatus> = DeploymentStatus::ALL
            .into_iter()
            .filter(|s| s.transition(DeploymentEvent::HeartbeatMissed).is_ok_and(|t| t != *s))
            .collect();
        let sql = format!(
            "SELECT id FROM deployments WHERE deployment_model = 'pull' AND status IN ({}) \
             AND COALESCE(last_heartbeat_at, created_at) < ?1 ORDER BY id LIMIT ?2",
            quoted(quiet)
        );
        let ids: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(silent_since.timestamp_millis())
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| sql_error("finding silent agents", e))?;
        ids.iter()
            .map(|id| {
                Id::parse(IdKind::Deployment, id)
                    .map_err(|e| StoreError::Corrupt(format!("deployments.id {id}: {e}")))
            })
            .collect()
    }

    async fn record_heartbeat(&self, deployment: &Id, at: DateTime<Utc>) -> StoreResult<bool> {
        let updated = sqlx::query("UPDATE deployments SET last_heartbeat_at = ?2 WHERE id = ?1")
            .bind(deployment.as_str())
            .bind(at.timestamp_millis())
            .execute(&self.writer)
            .await
            .map_err(|e| sql_error("recording a heartbeat", e))?
            .rows_affected();
        Ok(updated > 0)
    }

    async fn save_progress(
        &self,
        deployment: &Id,
        owner: &str,
        stack_state: &serde_json::Value,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE deployments SET stack_state = ?3, updated_at = ?4 \
             WHERE id = ?1 AND locked_by = ?2",
        )
        .bind(deployment.as_str())
        .bind(owner)
        .bind(opt_to_json("the stack state", Some(stack_state))?)
        .bind(Utc::now().timestamp_millis())
        .execute(&self.writer)
        .await
        .map_err(|e| sql_error("saving a step's progress", e))?
        .rows_affected();
        Ok(updated > 0)
    }

    async fn release_lease(
        &self,
        deployment: &Id,
        owner: &str,
        next_step_after: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE deployments SET locked_by = NULL, locked_at = NULL, next_step_after = ?3 \
             WHERE id = ?1 AND locked_by = ?2",
        )
        .bind(deployment.as_str())
        .bind(owner)
        .bind(next_step_after.map_or(0, |t| t.timestamp_millis()))
        .execute(&self.writer)
        .await
        .map_err(|e| sql_error("releasing a lease", e))?
        .rows_affected();
        Ok(updated > 0)
    }
}

#[async_trait::async_trait]
impl TokenStore for SqliteStore {
    async fn create_token(&self, token: NewToken) -> StoreResult<TokenRecord> {
        let mut conn = self.writer.acquire().await.map_err(|e| sql_error("storing a token", e))?;
        insert_token(&mut conn, &token, now_millis()).await
    }

    async fn find_token(&self, hash: &str, now: DateTime<Utc>) -> StoreResult<Option<TokenRecord>> {
        let (hit, generation) = self.tokens.get(hash, now);
        if hit.is_some() {
            return Ok(hit);
        }
        let found = sqlx::query_as::<_, TokenRow>(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE key_hash = ?1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > ?2)"
        ))
        .bind(hash)
        .bind(now.timestamp_millis())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| sql_error("looking up a token", e))?
        .map(TokenRow::into_record)
        .transpose()?;
        if let Some(record) = &found {
            self.tokens.put(hash, record, generation);
        }
        Ok(found)
    }

    async fn get_token(&self, token: &Id) -> StoreResult<Option<TokenRecord>> {
        sqlx::query_as::<_, TokenRow>(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE id = ?1 AND revoked_at IS NULL"
        ))
        .bind(token.as_str())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| sql_error("reading a token", e))?
        .map(TokenRow::into_record)
        .transpose()
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        sqlx::query_as::<_, TokenRow>(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?1) \
             ORDER BY created_at, id"
        ))
        .bind(now_millis())
        .fetch_all(&self.readers)
        .await
        .map_err(|e| sql_error("listing tokens", e))?
        .into_iter()
        .map(TokenRow::into_record)
        .collect()
    }

    async fn revoke_token(&self, token: &Id) -> StoreResult<bool> {
        let updated =
            sqlx::query("UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
                .bind(token.as_str())
                .bind(now_millis())
                .execute(&self.writer)
                .await
                .map_err(|e| sql_error("revoking a token", e))?
                .rows_affected();
        self.tokens.revoked();
        Ok(updated > 0)
    }

    async fn revoke_admin_tokens(&self) -> StoreResult<u64> {
        let revoked = sqlx::query(
            "UPDATE tokens SET revoked_at = ?1 WHERE token_type = 'admin' AND revoked_at IS NULL",
        )
        .bind(now_millis())
        .execute(&self.writer)
        .await
        .map_err(|e| sql_error("revoking admin tokens", e))?
        .rows_affected();
        self.tokens.revoked();
        Ok(revoked)
    }

    async fn count_tokens(&self, kind: TokenType) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tokens WHERE token_type = ?1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > ?2)",
        )
        .bind(kind.as_str())
        .bind(now_millis())
        .fetch_one(&self.readers)
        .await
        .map_err(|e| sql_error("counting tokens", e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn record_token_use(&self, uses: &[(Id, DateTime<Utc>)]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin("recording token use").await?;
        for (token, at) in uses {
            // Never moves backwards when batches arrive out of order.
            sqlx::query(
                "UPDATE tokens SET last_used_at = MAX(COALESCE(last_used_at, ?2), ?2) WHERE id = ?1",
            )
            .bind(token.as_str())
            .bind(at.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("recording token use", e))?;
        }
        tx.commit().await.map_err(|e| sql_error("committing token use", e))
    }
}

#[async_trait::async_trait]
impl AuditLog for SqliteStore {
    /// Group commit: the entry joins a queue; whoever holds the flush lock writes everything
    /// queued in one transaction (one disk sync) and tells each caller. A caller returns only
    /// once its entry is committed, so an acknowledged call's entry survives a crash.
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<()> {
        let (done, committed) = tokio::sync::oneshot::channel();
        self.lock_audit_queue().push((entry, done));
        {
            let _flushing = self.audit_flush.lock().await;
            let batch = std::mem::take(&mut *self.lock_audit_queue());
            if !batch.is_empty() {
                // A task of its own: a caller whose request is dropped meanwhile must not take
                // the other callers' entries with it.
                let writer = self.writer.clone();
                let flush = tokio::spawn(async move {
                    let result = write_audit(&writer, &batch).await;
                    for (_, done) in batch {
                        let _ = done.send(result.as_ref().map(|_| ()).map_err(|e| {
                            StoreError::Database(format!("appending to the audit log: {e}"))
                        }));
                    }
                });
                // Holding the flush lock until it is written keeps entries in order.
                let _ = flush.await;
            }
        }
        committed.await.unwrap_or_else(|_| {
            Err(StoreError::Database("the audit log writer went away".to_owned()))
        })
    }

    async fn list_audit(&self, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        let before = match &page.cursor {
            Some(cursor) => decode_cursor("a", cursor)?.0,
            None => i64::MAX,
        };
        let limit = limit_of(page);
        let rows = sqlx::query_as::<_, AuditRow>(
            "SELECT id, at, token_id, token_type, action, target_id, status, outcome \
             FROM audit_log WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.readers)
        .await
        .map_err(|e| sql_error("listing the audit log", e))?;
        into_page(rows, limit, |a| encode_cursor("a", a.id, ""), AuditRow::into_entry)
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM meta")
            .fetch_one(&self.readers)
            .await
            .map_err(|e| sql_error("reading", e))?;
        check_writable(&self.writer, &self.path.display().to_string()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_other_lists_and_garbage() {
        let cursor = encode_cursor("d", 1_700_000_000_123, "dep_abc");
        assert_eq!(decode_cursor("d", &cursor).unwrap(), (1_700_000_000_123, "dep_abc".into()));
        for bad in [cursor.as_str(), "", "!!", "ZDox", &URL_SAFE_NO_PAD.encode("g:x:y")] {
            assert!(matches!(decode_cursor("g", bad), Err(StoreError::BadCursor(_))), "{bad}");
        }
    }

    #[test]
    fn generated_sql_follows_the_domain_names() {
        assert_eq!(DeploymentModel::Push.as_str(), "push");
        let case = new_release_case();
        assert!(case.contains("WHEN 'running' THEN 'update-pending'"), "{case}");
        assert!(!case.contains("delete"), "{case}");
        let markable: Vec<_> = release_markable().collect();
        assert!(markable.contains(&DeploymentStatus::Stale));
        assert!(!markable.iter().any(|s| s.is_deleting()));
    }

    /// A loop tick must not scan the deployments table, whatever its size.
    #[tokio::test]
    async fn the_due_query_uses_indexes_only() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::new(crate::seal::EncryptionKey::generate().unwrap());
        let store = SqliteStore::open(&dir.path().join("db"), sealer).await.unwrap();
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {}", &*ACQUIRE_SQL)))
                .bind("owner")
                .bind(0i64)
                .bind(0i64)
                .bind(10i64)
                .fetch_all(&store.readers)
                .await
                .unwrap();
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(details.iter().any(|d| d.contains("deployments_due")), "{details:#?}");
        assert!(details.iter().any(|d| d.contains("deployments_retry")), "{details:#?}");
        assert!(!details.iter().any(|d| d.starts_with("SCAN deployments")), "{details:#?}");
        store.close().await;
    }
}
