//! [`PostgresStore`]: alien-store's traits on PostgreSQL, shared by every replica of a manager.
//!
//! The tables of the SQLite store in the schema `alien` (`migrations_store/`, with its own
//! migration table): timestamps are BIGINT unix milliseconds, JSON documents TEXT, ids and names
//! `COLLATE "C"`; values are encoded by `alien_store::codec` and sensitive ones sealed by
//! `alien_store::seal`, as SQLite does, and a `key_check` row in `meta` tells at connect whether
//! the key opens the data ([`StoreError::WrongKey`] before anything is written).
//!
//! Where SQLite relies on its single writer, transactions at `READ COMMITTED` take row locks, in
//! one order (a deployment before its group; several deployments by id): a transition, a report
//! and a rollout step lock their deployment (`FOR UPDATE`), a creation locks its group (so the
//! name check and `maxDeployments` hold), a release locks the `releases` table (its timestamp is
//! strictly increasing, and a deployment created meanwhile waits and then sees it) and the
//! deployments it marks; leases are taken with `FOR UPDATE SKIP LOCKED`, so two replicas never
//! lease the same deployment and never wait on each other; revoking an admin token locks the
//! live admin tokens first. A deadlock or serialization failure that still happens runs the
//! transaction again. Connection failures are [`StoreError::Unavailable`].

use std::fmt;
use std::str::FromStr as _;
use std::time::Duration;

use alien_store::seal::{
    Sealer, reseal_column, seal_key_check, token_aad, variable_aad, verify_key_check,
};
use alien_store::{Store, StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::pg::{describe, redact, retryable, unavailable};

mod audit;
mod deployments;
mod groups;
mod leases;
mod releases;
mod tokens;
mod transitions;

/// The schema of the store's tables and migrations.
pub const SCHEMA: &str = "alien";
/// Connections of one replica's pool.
pub const MAX_CONNECTIONS: u32 = 16;
/// How long a call waits for a free connection (or a new one) before it is unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Status changes kept per deployment; older events are pruned on the next transition.
pub const EVENTS_KEPT: i64 = 200;
/// How often a transaction starts over after a deadlock or serialization failure.
const RETRIES: u32 = 8;

const CREATE_SCHEMA: &str = "CREATE SCHEMA IF NOT EXISTS alien";
// Schema-qualified: read before the schema is known to exist.
const HAS_META: &str = "SELECT to_regclass('alien.meta') IS NOT NULL";
const READ_KEY_CHECK: &str = "SELECT value FROM alien.meta WHERE key = 'key_check'";
const WRITE_KEY_CHECK: &str =
    "INSERT INTO meta (key, value) VALUES ('key_check', $1) ON CONFLICT (key) DO NOTHING";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations_store");

/// The store on one PostgreSQL database.
pub struct PostgresStore {
    pool: PgPool,
    sealer: Sealer,
    shown: String,
    /// Tokens found lately (see [`tokens::TokenWatch`]).
    tokens: tokens::TokenWatch,
    /// The audit writer's queue (see [`audit`]).
    audit: tokio::sync::mpsc::UnboundedSender<audit::QueuedAudit>,
}

/// Names the server and database; never the password or the key.
impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").field("at", &self.shown).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`), checks
    /// that `sealer`'s key opens the existing data ([`StoreError::WrongKey`] otherwise, with
    /// nothing written), creates the schema `alien` when missing, runs the store's migrations
    /// (replicas starting at once take turns: the migrator holds an advisory lock) and records
    /// the key check on a new database.
    pub async fn connect(url: &str, sealer: Sealer) -> StoreResult<PostgresStore> {
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Database(format!(
                "not a PostgreSQL URL (expected postgres://user:password@host:port/database): {}",
                redact(&e.to_string(), url)
            ))
        })?;
        let shown = describe(&options);
        let options = options.options([("search_path", SCHEMA)]);
        let options_for_listener = options.clone();
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        let tokens = tokens::TokenWatch::start(&pool, options_for_listener);
        let audit = audit::start_writer(pool.clone(), shown.clone());
        let store = PostgresStore { pool, sealer, shown, tokens, audit };
        if let Err(err) = store.prepare().await {
            store.close().await;
            return Err(err);
        }
        Ok(store)
    }

    /// The key check, the schema and the migrations (see [`PostgresStore::connect`]).
    async fn prepare(&self) -> StoreResult<()> {
        // Before anything is created: a wrong key must leave the database untouched.
        let existing = self.read_key_check().await?;
        if let Some(sealed) = &existing {
            verify_key_check(&self.sealer, sealed)?;
        }
        // Two replicas creating the schema at once: one of them may see a duplicate; the second
        // try finds it.
        if sqlx::query(CREATE_SCHEMA).execute(&self.pool).await.is_err() {
            sqlx::query(CREATE_SCHEMA)
                .execute(&self.pool)
                .await
                .map_err(|e| self.error(&format!("creating schema {SCHEMA}"), e))?;
        }
        MIGRATOR.run(&self.pool).await.map_err(|err| match err {
            sqlx::migrate::MigrateError::Execute(e)
            | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => self.error("migrating", e),
            sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::Database(format!(
                "{}: schema {SCHEMA} was migrated by a newer alien-manager (migration {version}); \
                 run that version or restore a backup",
                self.shown
            )),
            other => StoreError::Database(format!("{}: migrating: {other}", self.shown)),
        })?;
        if existing.is_none() {
            let check = seal_key_check(&self.sealer)?;
            sqlx::query(WRITE_KEY_CHECK)
                .bind(check)
                .execute(&self.pool)
                .await
                .map_err(|e| self.error("writing the key check", e))?;
            // Another replica may have won the race with its own key.
            match self.read_key_check().await? {
                Some(sealed) => verify_key_check(&self.sealer, &sealed)?,
                None => {
                    return Err(StoreError::Database(format!(
                        "{}: the key check vanished right after it was written",
                        self.shown
                    )));
                }
            }
        }
        Ok(())
    }

    async fn read_key_check(&self) -> StoreResult<Option<String>> {
        let has_meta: bool = sqlx::query_scalar(HAS_META)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.error("looking for the store's tables", e))?;
        if !has_meta {
            return Ok(None);
        }
        sqlx::query_scalar(READ_KEY_CHECK)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error("reading the key check", e))
    }

    /// A key for `purpose` derived from the encryption key (see [`Sealer::derive_key`]).
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        self.sealer.derive_key(purpose)
    }

    /// Re-seals every sealed value (deployment tokens, secret variables, the key check) with
    /// `new` in one transaction, then uses `new`; returns how many values were re-sealed.
    ///
    /// Offline only: every other replica still seals with the old key, and after the commit its
    /// writes would not open; stop them first and start them with the new key.
    pub async fn rotate_key(&mut self, new: Sealer) -> StoreResult<u64> {
        let count = retrying(|| rotate_once(self, &new)).await?;
        self.sealer = new;
        Ok(count)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.tokens.stop();
        self.pool.close().await;
    }

    /// A database error, naming the server and what was being done.
    fn error(&self, what: &str, err: sqlx::Error) -> StoreError {
        sql_error(&format!("{} {what}", self.shown), err)
    }

    async fn begin(&self, what: &str) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(|e| self.error(what, e))
    }

    /// A read-only transaction whose statements all read one snapshot (`REPEATABLE READ`).
    async fn begin_snapshot(&self, what: &str) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.begin(what).await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(what, e))?;
        Ok(tx)
    }
}

/// One attempt at [`PostgresStore::rotate_key`]; the tables are locked against writers.
async fn rotate_once(store: &PostgresStore, new: &Sealer) -> StoreResult<u64> {
    const WHAT: &str = "rotating the encryption key";
    let current = &store.sealer;
    let mut tx = store.begin(WHAT).await?;
    sqlx::query("LOCK TABLE deployments, deployment_variables, meta IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(|e| store.error(WHAT, e))?;
    let mut count = 0u64;
    let tokens: Vec<(String, String)> =
        sqlx::query_as("SELECT id, token FROM deployments WHERE token IS NOT NULL")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| store.error("reading deployment tokens", e))?;
    for (id, sealed) in tokens {
        let resealed = reseal_column(current, new, &token_aad(&id), &sealed)?;
        sqlx::query("UPDATE deployments SET token = $1 WHERE id = $2")
            .bind(resealed)
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(|e| store.error("re-sealing a deployment token", e))?;
        count += 1;
    }
    let secrets: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT deployment_id, name, value FROM deployment_variables WHERE type = 'secret'",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| store.error("reading secret variables", e))?;
    for (deployment_id, name, sealed) in secrets {
        let resealed = reseal_column(current, new, &variable_aad(&deployment_id, &name), &sealed)?;
        sqlx::query(
            "UPDATE deployment_variables SET value = $1 WHERE deployment_id = $2 AND name = $3",
        )
        .bind(resealed)
        .bind(&deployment_id)
        .bind(&name)
        .execute(&mut *tx)
        .await
        .map_err(|e| store.error("re-sealing a secret variable", e))?;
        count += 1;
    }
    sqlx::query("UPDATE meta SET value = $1 WHERE key = 'key_check'")
        .bind(seal_key_check(new)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| store.error("re-sealing the key check", e))?;
    count += 1;
    tx.commit().await.map_err(|e| store.error("committing the key rotation", e))?;
    Ok(count)
}

/// Maps a database error: unreachable or overloaded servers are `Unavailable`, undecodable
/// values `Corrupt`, a deadlock or serialization failure that outlived its retries `Conflict`,
/// anything else `Database`.
pub(crate) fn sql_error(context: &str, err: sqlx::Error) -> StoreError {
    if unavailable(&err) {
        return StoreError::Unavailable(format!("{context}: {err}"));
    }
    if retryable(&err) {
        let code = match &err {
            sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
            _ => String::new(),
        };
        return StoreError::Conflict(format!("{context}: {err} (SQLSTATE {code}; try again)"));
    }
    match err {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt(format!("{context}: {err}"))
        }
        _ => StoreError::Database(format!("{context}: {err}")),
    }
}

/// Whether `err` broke the unique index or constraint `name`.
pub(crate) fn is_unique_violation(err: &sqlx::Error, name: &str) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.kind() == sqlx::error::ErrorKind::UniqueViolation && db.constraint() == Some(name))
}

/// Whether `err` broke a foreign key.
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}

/// Whether a store error came from a deadlock or serialization failure (see [`sql_error`]).
fn is_retryable(err: &StoreError) -> bool {
    matches!(err, StoreError::Conflict(message)
        if message.contains("(SQLSTATE 40001;") || message.contains("(SQLSTATE 40P01;"))
}

/// Runs the transaction `attempt` again (a few times, with a short backoff) after a deadlock or
/// serialization failure.
pub(crate) async fn retrying<T, F, Fut>(mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(err) if is_retryable(&err) && tries < RETRIES => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(2 << tries.min(6))).await;
            }
            other => return other,
        }
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM meta")
            .fetch_one(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| self.error("reading the store's tables", e))
    }
}
