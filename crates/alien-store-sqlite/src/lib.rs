//! The SQLite implementation of alien-store's traits ([`SqliteStore`]): one file in WAL mode, one
//! writer connection and a small pool of read-only connections, migrated at open from the
//! numbered files in `migrations/`.
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction on the single writer, so read-then-write
//! sequences (name uniqueness, `maxDeployments`, conditional transitions, lease acquisition) are
//! serialized without retries; `synchronous=FULL` makes each commit durable before it is
//! acknowledged. Sensitive values are sealed with the [`Sealer`] ([`seal`], AEGIS-256) inside the
//! writer transaction, and a `key_check` row in `meta` tells at open whether the key opens the
//! data ([`StoreError::WrongKey`] before anything is written); [`keyfile`] rotates a key kept in
//! the state directory and finishes a rotation that was interrupted. Bulk effects (a release
//! marking every deployment of its platforms) are set-based statements whose status mapping is
//! generated from `DeploymentStatus::transition`, so the transition table lives only in
//! alien-core. It never decides policy (who may do what) or HTTP shapes: the server does.
//!
//! This module opens, checks the key, rotates it and closes; one module per concept holds the
//! rest: `codec` (column encoding, cursors, pages), `sql` (SQL generated from the domain rules),
//! `releases`, `groups`, `deployments`, `transitions`, `rollout`, `leases`, `tokens` and `audit`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alien_store::{Store, StoreError, StoreResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, Transaction};
use tokio::sync::RwLock;

use crate::audit::QueuedAudit;
use crate::codec::{reseal, token_aad, variable_aad};
use crate::error::sql_error;
use crate::seal::Sealer;
use crate::seal::{seal_key_check, verify_key_check};
use alien_store::token_cache::TokenCache;

mod audit;
pub mod backup;
#[cfg(feature = "bench")]
mod bench;
mod codec;
mod deployment_cache;
mod deployments;
mod error;
mod groups;
mod heartbeats;
pub mod keyfile;
mod leases;
mod releases;
mod rollout;
/// The sealing of sensitive values, shared with the other backends (`alien_store::seal`).
pub use alien_store::seal;
mod sql;
mod tokens;
mod transitions;

/// How long a statement waits for a lock held by another connection before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-only connections serving reads next to the single writer.
pub const READERS: u32 = 4;
/// The writer connection's page cache, in KiB.
pub const WRITER_CACHE_KIB: u32 = 32 * 1024;
/// Status changes kept per deployment; older events are pruned on the next transition.
pub const EVENTS_KEPT: i64 = 200;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The store on one SQLite file.
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    /// Audit entries waiting for the next group commit (see [`SqliteStore::append_audit`]).
    audit_queue: std::sync::Mutex<Vec<QueuedAudit>>,
    /// Held by the caller that writes the queued audit entries.
    audit_flush: tokio::sync::Mutex<()>,
    /// Tokens found recently (see [`TokenCache`]), kept while the token epoch stays put.
    tokens: TokenCache,
    /// The token epoch last read, and when it is next read (`tokens::check_token_epoch`).
    token_epoch: tokens::TokenEpoch,
    /// Steady heartbeats waiting for their group commit.
    heartbeats: heartbeats::SteadyHeartbeats,
    /// Deployments read recently; the writer's update hook and release keep it exact.
    deployments: Arc<deployment_cache::DeploymentCache>,
    /// Taken (read) before the writer by every write that seals, and (write) by key rotation, so a
    /// value is never sealed with a key that is being retired.
    sealer: RwLock<Sealer>,
    path: PathBuf,
}

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
            .synchronous(SqliteSynchronous::Full)
            // The single writer touches the whole fleet's rows (heartbeats in spread order): a
            // page cache of its own that holds a large fleet's hot pages (the readers keep
            // SQLite's default 2 MiB each).
            .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"));
        let deployments = Arc::new(deployment_cache::DeploymentCache::default());
        let (hooked, settled) = (deployments.clone(), deployments.clone());
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // A connection to a local file has no other end to lose: sqlx's ping before each
            // acquire would be one more trip to the connection's thread per statement.
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                let cache = hooked.clone();
                cache.reconnected();
                Box::pin(async move {
                    conn.lock_handle().await?.set_update_hook(move |change| {
                        if change.table == "deployments" {
                            cache.changed(change.rowid);
                        }
                    });
                    Ok(())
                })
            })
            .after_release(move |_, _| {
                // Back in the pool: the writes it made have committed or rolled back.
                settled.settle();
                Box::pin(async { Ok(true) })
            })
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
            .test_before_acquire(false)
            .connect_with(base.read_only(true))
            .await
        {
            Ok(readers) => readers,
            Err(err) => {
                writer.close().await;
                return Err(sql_error(&format!("opening {shown} for reading"), err));
            }
        };
        let heartbeats = heartbeats::SteadyHeartbeats::new(writer.clone(), deployments.clone());
        Ok(SqliteStore {
            writer,
            readers,
            audit_queue: std::sync::Mutex::default(),
            audit_flush: tokio::sync::Mutex::default(),
            tokens: TokenCache::trusting(),
            token_epoch: tokens::TokenEpoch::default(),
            heartbeats,
            deployments,
            sealer: RwLock::new(sealer),
            path: db_file.to_owned(),
        })
    }

    /// A key for `purpose` derived from the current encryption key (see [`Sealer::derive_key`]).
    pub async fn derive_key(&self, purpose: &str) -> [u8; 32] {
        self.sealer.read().await.derive_key(purpose)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the heartbeat times not written yet, then closes every connection (readers first,
    /// so that the writer's close checkpoints the WAL).
    pub async fn close(&self) {
        if let Err(err) = self.heartbeats.flush().await {
            tracing::warn!(error = %err, "heartbeat times of the last second were not written");
        }
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

        let check = seal_key_check(&new)?;
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
    alien_store::private_fs::create_file_if_missing(path).map_err(|err| {
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
        let check = seal_key_check(sealer)?;
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
