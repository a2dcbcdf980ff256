//! [`PostgresKv`]: the commands [`Kv`] on PostgreSQL, shared by every replica of a manager.
//!
//! One table `alien_commands.kv` (`migrations_kv/`, its own schema and migration table, so the
//! KV can live in the store's database): a row per key, bytewise key order (`COLLATE "C"`), the
//! value, a version from one database-wide sequence (never reused after a delete or an
//! expiry, whichever replica writes), and an expiry in unix milliseconds. Expired rows are
//! invisible to every query and purged in bounded batches now and then.
//!
//! A batch is one statement, one round trip: the function `kv_apply` (migration 0002) takes a
//! transaction-scoped advisory lock per key (in one order, so two batches never wait on each
//! other in a cycle), which queues every writer of the same key, keys that do not exist yet
//! included; then it reads the keys (a fresh snapshot, after the locks), checks every condition
//! against the state before the batch, and writes the final state with one upsert and one
//! delete. Readers never wait: `get` and `scan` read the last committed state.

use std::fmt;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alien_commands::kv::{
    Applied, Done, SqlRow, batch_outcome, check_batch, check_key, delete_outcome, duration_millis,
    entries_from_rows, entry_from_row, now_millis, put_outcome, put_write, scan_range,
};
use alien_commands::{BatchOutcome, Kv, KvEntry, KvError, KvWrite, PutCondition};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub use crate::pg::{describe, unavailable};
use crate::pg::{redact, retryable};

/// The schema of the KV's table and migrations.
pub const SCHEMA: &str = "alien_commands";
/// Connections of one replica's pool.
pub const MAX_CONNECTIONS: u32 = 8;
/// How long a call waits for a free connection (or a new one) before it is unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The class of the KV's advisory locks (the first key of `pg_advisory_xact_lock(int, int)`).
const LOCK_CLASS: i32 = 0x0061_6b76; // "akv"
/// Expired rows are purged (one batch) after every this many writes of a replica.
const PURGE_EVERY: u64 = 256;
/// Rows deleted per purge, so a purge never holds locks long.
const PURGE_BATCH: i64 = 512;
/// How often a batch starts over after a deadlock or serialization failure.
const RETRIES: usize = 8;

const CREATE_SCHEMA: &str = "CREATE SCHEMA IF NOT EXISTS alien_commands";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations_kv");

const GET: &str = "SELECT key, value, version, expires_at FROM kv \
     WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)";

// Two scans so that the index range always starts at the real lower bound.
const SCAN_FROM_PREFIX: &str = "SELECT key, value, version, expires_at FROM kv \
     WHERE key >= $1 AND key < $2 AND (expires_at IS NULL OR expires_at > $3) \
     ORDER BY key LIMIT $4";
const SCAN_AFTER: &str = "SELECT key, value, version, expires_at FROM kv \
     WHERE key > $1 AND key < $2 AND (expires_at IS NULL OR expires_at > $3) \
     ORDER BY key LIMIT $4";

// A write batch: locks, read, conditions and writes in one statement (migration 0002).
const APPLY: &str = "SELECT kv_apply($1, $2, $3, $4, $5, $6, $7, $8)";

const PURGE: &str = "DELETE FROM kv WHERE key IN \
     (SELECT key FROM kv WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)";

/// The commands KV on PostgreSQL.
pub struct PostgresKv {
    pool: PgPool,
    shown: String,
    written: AtomicU64,
}

/// Names the server and database; never the password.
impl fmt::Debug for PostgresKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresKv").field("at", &self.shown).finish_non_exhaustive()
    }
}

impl PostgresKv {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`),
    /// creates the schema `alien_commands` when missing and runs the KV's migrations (several
    /// replicas starting at once take turns: the migrator holds an advisory lock).
    pub async fn connect(url: &str) -> Result<PostgresKv, KvError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            KvError::Backend(format!(
                "not a PostgreSQL URL (expected postgres://user:password@host:port/database): {}",
                redact(&e.to_string(), url)
            ))
        })?;
        let shown = describe(&options);
        let options = options.options([("search_path", SCHEMA)]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        let kv = PostgresKv { pool, shown, written: AtomicU64::new(0) };
        kv.migrate().await?;
        Ok(kv)
    }

    async fn migrate(&self) -> Result<(), KvError> {
        // Two replicas creating the schema at once: one of them may see a duplicate; the second
        // try finds it.
        if sqlx::query(CREATE_SCHEMA).execute(&self.pool).await.is_err() {
            sqlx::query(CREATE_SCHEMA)
                .execute(&self.pool)
                .await
                .map_err(|e| self.error(&format!("creating schema {SCHEMA}"), &e))?;
        }
        MIGRATOR.run(&self.pool).await.map_err(|err| match err {
            sqlx::migrate::MigrateError::Execute(e)
            | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => self.error("migrating", &e),
            sqlx::migrate::MigrateError::VersionMissing(version) => KvError::Backend(format!(
                "{}: schema {SCHEMA} was migrated by a newer alien-manager (migration {version}); \
                 run that version",
                self.shown
            )),
            other => KvError::Backend(format!("{}: migrating: {other}", self.shown)),
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn error(&self, what: &str, err: &sqlx::Error) -> KvError {
        let message = format!("{} {what}: {err}", self.shown);
        if unavailable(err) { KvError::Unavailable(message) } else { KvError::Backend(message) }
    }

    /// Applies `writes` atomically, starting over after a deadlock or serialization failure.
    async fn apply(&self, writes: &[KvWrite]) -> Result<Applied, KvError> {
        let mut attempt = 0;
        loop {
            match self.transaction(writes).await {
                Err(err) if retryable(&err) && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(2 << attempt.min(6))).await;
                }
                Err(err) => return Err(self.error("writing", &err)),
                Ok(applied) => return Ok(applied),
            }
        }
    }

    /// One attempt: the batch in one statement ([`APPLY`]).
    async fn transaction(&self, writes: &[KvWrite]) -> Result<Applied, sqlx::Error> {
        let now = now_millis();
        let n = writes.len();
        let (mut keys, mut puts, mut values) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut conditions, mut versions, mut expires) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for write in writes {
            let (is_put, value, condition, version, expiry): (bool, &[u8], i16, u64, Option<i64>) =
                match write {
                    KvWrite::Put { value, condition, ttl, .. } => {
                        let expiry = ttl.map(|ttl| now.saturating_add(duration_millis(ttl)));
                        match condition {
                            PutCondition::Always => (true, value, 0, 0, expiry),
                            PutCondition::IfAbsent => (true, value, 1, 0, expiry),
                            PutCondition::IfVersion(v) => (true, value, 2, *v, expiry),
                        }
                    }
                    KvWrite::Delete { version: None, .. } => (false, &[], 0, 0, None),
                    KvWrite::Delete { version: Some(v), .. } => (false, &[], 2, *v, None),
                };
            keys.push(write.key());
            puts.push(is_put);
            values.push(value);
            conditions.push(condition);
            versions.push(i64::try_from(version).unwrap_or(i64::MAX));
            expires.push(expiry);
        }
        let results: Vec<i64> = sqlx::query_scalar(APPLY)
            .bind(LOCK_CLASS)
            .bind(now)
            .bind(&keys)
            .bind(&puts)
            .bind(&values)
            .bind(&conditions)
            .bind(&versions)
            .bind(&expires)
            .fetch_one(&self.pool)
            .await?;
        let applied = match results.split_first() {
            Some((-1, done)) => Ok(done
                .iter()
                .map(|r| match *r {
                    -1 => Done::Deleted(true),
                    -2 => Done::Deleted(false),
                    version => Done::Put(u64::try_from(version).unwrap_or(0)),
                })
                .collect()),
            Some((failed, [])) => Err(usize::try_from(*failed).unwrap_or(usize::MAX)),
            _ => return Err(sqlx::Error::Protocol(format!("kv_apply answered {results:?}"))),
        };
        let count = writes.len() as u64;
        let before = self.written.fetch_add(count, Ordering::Relaxed);
        if before / PURGE_EVERY != (before + count) / PURGE_EVERY {
            sqlx::query(PURGE).bind(now).bind(PURGE_BATCH).execute(&self.pool).await?;
        }
        Ok(applied)
    }
}

#[async_trait::async_trait]
impl Kv for PostgresKv {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        check_key(key)?;
        let row: Option<SqlRow> = sqlx::query_as(GET)
            .bind(key)
            .bind(now_millis())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(&format!("reading KV key {key}"), &e))?;
        row.map(|(k, v, version, expires)| entry_from_row(k, v, version, expires)).transpose()
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        condition: PutCondition,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, KvError> {
        let write = put_write(key, value, condition, ttl)?;
        put_outcome(key, self.apply(&[write]).await?)
    }

    async fn delete(&self, key: &str, version: Option<u64>) -> Result<bool, KvError> {
        check_key(key)?;
        Ok(delete_outcome(&self.apply(&[KvWrite::Delete { key: key.to_owned(), version }]).await?))
    }

    async fn write_batch(&self, writes: Vec<KvWrite>) -> Result<BatchOutcome, KvError> {
        check_batch(&writes)?;
        Ok(batch_outcome(self.apply(&writes).await?))
    }

    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        let Some(range) = scan_range(prefix, after, limit)? else {
            return Ok(Vec::new());
        };
        let sql = if range.after { SCAN_AFTER } else { SCAN_FROM_PREFIX };
        let rows: Vec<SqlRow> = sqlx::query_as(sql)
            .bind(range.lower)
            .bind(range.upper)
            .bind(now_millis())
            .bind(range.limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(&format!("scanning KV prefix {prefix}"), &e))?;
        entries_from_rows(rows)
    }

    async fn ping(&self) -> Result<(), KvError> {
        sqlx::query("SELECT 1 FROM kv LIMIT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| self.error("reading the KV table", &e))
    }
}
