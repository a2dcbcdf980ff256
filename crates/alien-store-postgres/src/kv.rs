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
//!
//! Batches commit in groups: one writer task per replica takes every batch queued while it
//! wrote the previous group and writes them all with one call of `kv_apply_many` (migration
//! 0003): one statement, one transaction and one commit for up to [`MAX_GROUP`] batches, each
//! still applied on its own terms (its conditions checked against the state the batches before
//! it left). Under load this is what keeps PostgreSQL's CPU and WAL flushes per command low;
//! alone, a batch is written at once. A group that fails for another reason than a deadlock or
//! a serialization failure (which start it over) is written again batch by batch, so that one
//! batch's error is its own.

use std::fmt;
use std::str::FromStr as _;
use std::time::Duration;

use alien_commands::kv::{
    Applied, Done, SqlRow, batch_outcome, check_batch, check_key, delete_outcome, duration_millis,
    entries_from_rows, entry_from_row, now_millis, put_outcome, put_write, scan_range,
};
use alien_commands::{BatchOutcome, Kv, KvEntry, KvError, KvWrite, PutCondition};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};

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
/// Batches written together at most.
pub const MAX_GROUP: usize = 64;

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

// A group of write batches: locks, reads, conditions and writes in one statement (migrations
// 0002 and 0003).
const APPLY_MANY: &str = "SELECT kv_apply_many($1, $2, $3, $4, $5, $6, $7, $8, $9)";

// By key (`= ANY(ARRAY(...))`): an `IN (SELECT ...)` may be planned as a join over the table.
const PURGE: &str = "DELETE FROM kv WHERE key = ANY(ARRAY( \
     SELECT key FROM kv WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2))";

/// The commands KV on PostgreSQL.
pub struct PostgresKv {
    pool: PgPool,
    shown: String,
    /// The writer task's queue.
    writes: mpsc::UnboundedSender<Queued>,
}

/// Names the server and database; never the password.
impl fmt::Debug for PostgresKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresKv").field("at", &self.shown).finish_non_exhaustive()
    }
}

/// A write batch waiting for the writer, and where its outcome goes.
struct Queued {
    batch: Vec<KvWrite>,
    /// Unix milliseconds when it was queued: its TTLs count from there.
    queued_at: i64,
    reply: oneshot::Sender<Result<Applied, KvError>>,
}

/// A failure of a whole group, handed to each of its callers.
#[derive(Clone)]
struct Failure {
    unavailable: bool,
    message: String,
}

impl From<Failure> for KvError {
    fn from(f: Failure) -> KvError {
        if f.unavailable { KvError::Unavailable(f.message) } else { KvError::Backend(f.message) }
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
        let (writes, queue) = mpsc::unbounded_channel();
        let kv = PostgresKv { pool, shown, writes };
        kv.migrate().await?;
        let writer = Writer { pool: kv.pool.clone(), shown: kv.shown.clone(), written: 0 };
        tokio::spawn(writer.run(queue));
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

    /// Applies `batch` atomically, through the writer's next group.
    async fn apply(&self, batch: Vec<KvWrite>) -> Result<Applied, KvError> {
        let (reply, outcome) = oneshot::channel();
        let queued = Queued { batch, queued_at: now_millis(), reply };
        let gone = || KvError::Backend(format!("{}: the KV writer stopped", self.shown));
        self.writes.send(queued).map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

/// The one task of a replica that writes the KV: a group at a time.
struct Writer {
    pool: PgPool,
    shown: String,
    /// Writes since start, for the purge of expired rows.
    written: u64,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Queued>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
            self.write(std::mem::take(&mut group)).await;
        }
    }

    /// Writes `group` and answers each of its callers.
    async fn write(&mut self, group: Vec<Queued>) {
        // A caller that went away (its request cancelled) gets its batch dropped unwritten, as
        // a dropped call never sent would be; so callers that keep going away cannot pile up
        // writes faster than the database takes them.
        let group: Vec<Queued> = group.into_iter().filter(|q| !q.reply.is_closed()).collect();
        if group.is_empty() {
            return;
        }
        let outcomes = match self.attempts(&group).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            // Unreachable, each batch would only wait for the same answer again.
            Err(failure) if group.len() > 1 && !failure.unavailable => {
                tracing::warn!(
                    batches = group.len(),
                    "{}; writing the group's batches one at a time",
                    failure.message
                );
                let mut outcomes = Vec::with_capacity(group.len());
                for queued in &group {
                    let one = self.attempts(std::slice::from_ref(queued)).await;
                    outcomes.push(one.map(|mut o| o.remove(0)).map_err(KvError::from));
                }
                outcomes
            }
            Err(failure) => group.iter().map(|_| Err(failure.clone().into())).collect(),
        };
        let count: u64 = group.iter().map(|q| q.batch.len() as u64).sum();
        for (queued, outcome) in group.into_iter().zip(outcomes) {
            // A caller that went away meanwhile has nobody to tell.
            let _ = queued.reply.send(outcome);
        }
        let before = self.written;
        self.written += count;
        if before / PURGE_EVERY != self.written / PURGE_EVERY {
            let purged =
                sqlx::query(PURGE).bind(now_millis()).bind(PURGE_BATCH).execute(&self.pool).await;
            if let Err(e) = purged {
                tracing::warn!("{}: purging expired KV keys: {e}", self.shown);
            }
        }
    }

    /// Writes `group`, starting over after a deadlock or serialization failure.
    async fn attempts(&self, group: &[Queued]) -> Result<Vec<Applied>, Failure> {
        let mut attempt = 0;
        loop {
            match self.transaction(group).await {
                Err(err) if retryable(&err) && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(2 << attempt.min(6))).await;
                }
                Err(err) => {
                    return Err(Failure {
                        unavailable: unavailable(&err),
                        message: format!("{} writing: {err}", self.shown),
                    });
                }
                Ok(applied) => return Ok(applied),
            }
        }
    }

    /// One attempt: the group in one statement ([`APPLY_MANY`]).
    async fn transaction(&self, group: &[Queued]) -> Result<Vec<Applied>, sqlx::Error> {
        let n: usize = group.iter().map(|q| q.batch.len()).sum();
        let (mut keys, mut puts, mut values) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut conditions, mut versions, mut expires) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let mut ends = Vec::with_capacity(group.len());
        for queued in group {
            for write in &queued.batch {
                let (is_put, value, condition, version, expiry): (
                    bool,
                    &[u8],
                    i16,
                    u64,
                    Option<i64>,
                ) = match write {
                    KvWrite::Put { value, condition, ttl, .. } => {
                        let expiry =
                            ttl.map(|ttl| queued.queued_at.saturating_add(duration_millis(ttl)));
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
            ends.push(i32::try_from(keys.len()).unwrap_or(i32::MAX));
        }
        let results: Vec<i64> = sqlx::query_scalar(APPLY_MANY)
            .bind(LOCK_CLASS)
            .bind(now_millis())
            .bind(&ends)
            .bind(&keys)
            .bind(&puts)
            .bind(&values)
            .bind(&conditions)
            .bind(&versions)
            .bind(&expires)
            .fetch_one(&self.pool)
            .await?;
        let answered = || sqlx::Error::Protocol(format!("kv_apply_many answered {results:?}"));
        let mut rest = results.as_slice();
        let mut applied = Vec::with_capacity(group.len());
        for _ in group {
            let (len, tail) = rest.split_first().ok_or_else(answered)?;
            let len = usize::try_from(*len).map_err(|_| answered())?;
            if tail.len() < len {
                return Err(answered());
            }
            let (one, tail) = tail.split_at(len);
            rest = tail;
            applied.push(match one.split_first() {
                Some((-1, done)) => Ok(done
                    .iter()
                    .map(|r| match *r {
                        -1 => Done::Deleted(true),
                        -2 => Done::Deleted(false),
                        version => Done::Put(u64::try_from(version).unwrap_or(0)),
                    })
                    .collect()),
                Some((failed, [])) => Err(usize::try_from(*failed).unwrap_or(usize::MAX)),
                _ => return Err(answered()),
            });
        }
        if !rest.is_empty() {
            return Err(answered());
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
        put_outcome(key, self.apply(vec![write]).await?)
    }

    async fn delete(&self, key: &str, version: Option<u64>) -> Result<bool, KvError> {
        check_key(key)?;
        let batch = vec![KvWrite::Delete { key: key.to_owned(), version }];
        Ok(delete_outcome(&self.apply(batch).await?))
    }

    async fn write_batch(&self, writes: Vec<KvWrite>) -> Result<BatchOutcome, KvError> {
        check_batch(&writes)?;
        Ok(batch_outcome(self.apply(writes).await?))
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
