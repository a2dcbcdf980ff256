//! [`SqliteKv`]: the commands [`Kv`] on one SQLite file, `{dir}/kv.db`, in WAL mode with
//! `synchronous=FULL`, one writer connection and a few read-only ones.
//!
//! Writes go through one writer task that commits in groups: it takes every write waiting in its
//! queue, applies them in one `BEGIN IMMEDIATE` transaction (each caller's batch checked and
//! applied on its own, so one caller's failed condition writes nothing of that caller's and does
//! not affect the others) and answers each caller only after the commit is on disk. Under load
//! one fsync covers many callers; alone, a write costs one transaction as before. A group that
//! fails on an SQL error is retried one caller at a time, so only the faulty caller sees it.
//! Expired rows are invisible to every query and purged in batches now and then. Versions come
//! from a store-wide counter kept by triggers (`migrations/0001_kv.sql`): a key that is deleted
//! or expires and is written again never gets a version a stale holder has.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alien_commands::kv::{
    Applied, FinalEntry, SqlRow, apply_writes, batch_outcome, check_batch, check_key,
    condition_holds, delete_outcome, entries_from_rows, entry_from_row, now_millis, put_outcome,
    put_write, scan_range,
};
use alien_commands::{BatchOutcome, Kv, KvEntry, KvError, KvWrite, PutCondition};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{mpsc, oneshot};

/// The database file inside the KV directory.
pub const FILE_NAME: &str = "kv.db";
/// How long a statement waits for a lock held by another connection before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-only connections serving `get` and `scan` next to the single writer.
pub const READERS: u32 = 4;
/// Expired rows are purged (one batch) after every this many writes.
const PURGE_EVERY: u64 = 256;
/// Most callers' batches committed in one transaction.
const MAX_GROUP: usize = 256;
/// Rows per multi-row statement of the writer (4 parameters a row, far below SQLite's limit).
const ROWS_PER_STATEMENT: usize = 500;
/// Writes waiting for the writer task before callers wait to enqueue.
const QUEUE: usize = 1024;
/// Rows deleted per purge statement, so a purge never holds the writer long.
const PURGE_BATCH: i64 = 512;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const GET: &str = "SELECT key, value, version, expires_at FROM kv \
     WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)";

// Two scans so that the index range always starts at the real lower bound (the prefix, or the
// `after` key when it sorts inside the prefix): paging stays O(page).
const SCAN_FROM_PREFIX: &str = "SELECT key, value, version, expires_at FROM kv \
     WHERE key >= ?1 AND key < ?2 AND (expires_at IS NULL OR expires_at > ?3) \
     ORDER BY key LIMIT ?4";

const SCAN_AFTER: &str = "SELECT key, value, version, expires_at FROM kv \
     WHERE key > ?1 AND key < ?2 AND (expires_at IS NULL OR expires_at > ?3) \
     ORDER BY key LIMIT ?4";

const PURGE: &str = "DELETE FROM kv WHERE key IN \
     (SELECT key FROM kv WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)";

/// The commands KV on one SQLite file.
pub struct SqliteKv {
    writes: mpsc::Sender<Job>,
    readers: SqlitePool,
    path: PathBuf,
}

impl fmt::Debug for SqliteKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteKv").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Where a caller waits for its batch's outcome.
type Reply = oneshot::Sender<Result<Applied, KvError>>;

/// Work for the writer task.
enum Job {
    /// Apply a batch; the answer comes after the commit.
    Batch { writes: Vec<KvWrite>, reply: Reply },
    /// Delete one batch of expired rows; answers how many.
    Purge { reply: oneshot::Sender<Result<u64, KvError>> },
    /// Close the connection (checkpointing the WAL) and stop.
    Close { reply: oneshot::Sender<()> },
}

impl SqliteKv {
    /// Opens `{dir}/kv.db`, creating `dir` (mode 0700) and the file (mode 0600) when missing,
    /// migrates it and purges expired entries.
    pub async fn open(dir: &Path) -> Result<SqliteKv, KvError> {
        create_private_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let shown = path.display().to_string();
        create_private_file(&path)?;
        let base = SqliteConnectOptions::new().filename(&path).busy_timeout(BUSY_TIMEOUT);
        let mut writer = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .connect()
            .await
            .map_err(|e| sql_error(&format!("opening {shown} for writing"), e))?;
        if let Err(err) = MIGRATOR.run(&mut writer).await {
            let _ = writer.close().await;
            return Err(migrate_error(&shown, err));
        }
        let readers = match SqlitePoolOptions::new()
            .max_connections(READERS)
            // A local file has no other end to lose: no ping (a trip to the connection's
            // thread) before each read.
            .test_before_acquire(false)
            .connect_with(base.read_only(true))
            .await
        {
            Ok(readers) => readers,
            Err(err) => {
                let _ = writer.close().await;
                return Err(sql_error(&format!("opening {shown} for reading"), err));
            }
        };
        let (writes, queue) = mpsc::channel(QUEUE);
        tokio::spawn(Writer { conn: writer, shown: shown.clone(), written: 0 }.run(queue));
        let kv = SqliteKv { writes, readers, path };
        if let Err(err) = kv.purge_expired().await {
            kv.close().await;
            return Err(err);
        }
        Ok(kv)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes every expired entry (in batches); returns how many. Writes also purge a batch
    /// every few hundred calls, so calling this is optional.
    pub async fn purge_expired(&self) -> Result<u64, KvError> {
        let mut purged = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            self.writes.send(Job::Purge { reply }).await.map_err(|_| self.closed())?;
            let deleted = answer.await.map_err(|_| self.closed())??;
            purged += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }

    /// Closes every connection (readers first, so that the writer's close checkpoints the WAL).
    /// Writes after this fail as unavailable.
    pub async fn close(&self) {
        self.readers.close().await;
        let (reply, closed) = oneshot::channel();
        if self.writes.send(Job::Close { reply }).await.is_ok() {
            let _ = closed.await;
        }
    }

    /// Hands `writes` to the writer task and waits for the commit.
    async fn submit(&self, writes: Vec<KvWrite>) -> Result<Applied, KvError> {
        let (reply, answer) = oneshot::channel();
        self.writes.send(Job::Batch { writes, reply }).await.map_err(|_| self.closed())?;
        answer.await.map_err(|_| self.closed())?
    }

    fn closed(&self) -> KvError {
        KvError::Unavailable(format!("the KV {} is closed", self.shown()))
    }

    fn shown(&self) -> std::path::Display<'_> {
        self.path.display()
    }
}

/// The writer task: owns the only writing connection.
struct Writer {
    conn: SqliteConnection,
    shown: String,
    written: u64,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        while let Some(first) = queue.recv().await {
            let mut group = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Batch { writes, reply } => group.push((writes, reply)),
                    Job::Purge { reply } => {
                        let purged = sqlx::query(PURGE)
                            .bind(now_millis())
                            .bind(PURGE_BATCH)
                            .execute(&mut self.conn)
                            .await
                            .map(|r| r.rows_affected())
                            .map_err(|e| sql_error(&format!("purging {}", self.shown), e));
                        let _ = reply.send(purged);
                    }
                    Job::Close { reply } => close = Some(reply),
                }
                if close.is_none() && group.len() < MAX_GROUP {
                    next = queue.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.commit_group(group).await;
            }
            if let Some(reply) = close {
                // Later callers find the queue closed; queued ones see their reply dropped.
                queue.close();
                if let Err(err) = self.conn.close().await {
                    tracing::warn!(error = %err, kv = %self.shown, "closing the KV writer failed");
                }
                let _ = reply.send(());
                return;
            }
        }
        let _ = self.conn.close().await;
    }

    /// Commits a group in one transaction and answers every caller; when the transaction
    /// fails, each caller's batch is retried alone so only a faulty one gets the error.
    async fn commit_group(&mut self, group: Vec<(Vec<KvWrite>, Reply)>) {
        let batches: Vec<&[KvWrite]> = group.iter().map(|(w, _)| w.as_slice()).collect();
        match self.transaction(&batches).await {
            Ok(results) => {
                for ((_, reply), result) in group.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(err) if group.len() == 1 => {
                if let Some((_, reply)) = group.into_iter().next() {
                    let _ = reply.send(Err(sql_error(&format!("writing {}", self.shown), err)));
                }
            }
            Err(_) => {
                for (writes, reply) in group {
                    let result = self
                        .transaction(&[writes.as_slice()])
                        .await
                        .map(|mut r| r.pop().unwrap_or(Ok(Vec::new())))
                        .map_err(|e| sql_error(&format!("writing {}", self.shown), e));
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// One transaction for the whole group, in a handful of statements whatever its size: read
    /// the live versions of every key the group writes, decide each caller's batch in order
    /// against that state (so later batches see earlier ones, as if run one by one), then write
    /// the final state of each key with one multi-row upsert and one delete.
    async fn transaction(&mut self, batches: &[&[KvWrite]]) -> Result<Vec<Applied>, sqlx::Error> {
        let now = now_millis();
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        let keys: Vec<&str> = {
            let mut keys: Vec<&str> =
                batches.iter().flat_map(|w| w.iter().map(KvWrite::key)).collect();
            keys.sort_unstable();
            keys.dedup();
            keys
        };
        let mut live: HashMap<&str, i64> = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let mut select = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "SELECT key, version FROM kv WHERE (expires_at IS NULL OR expires_at > ",
            );
            select.push_bind(now).push(") AND key IN (");
            let mut list = select.separated(", ");
            for key in chunk {
                list.push_bind(*key);
            }
            select.push(")");
            let rows: Vec<(String, i64)> = select.build_query_as().fetch_all(&mut *tx).await?;
            for (key, version) in rows {
                if let Some(k) = chunk.iter().find(|k| **k == key) {
                    live.insert(k, version);
                }
            }
        }
        let mut clock: i64 = sqlx::query_scalar("SELECT version FROM kv_clock WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let first_clock = clock;
        // The final state of each written key: `Some((value, version, expires_at))` or deleted.
        let mut finals: HashMap<&str, Option<FinalEntry<'_>>> = HashMap::new();
        let mut results = Vec::with_capacity(batches.len());
        let mut written = 0;
        for writes in batches {
            if let Some(index) = writes.iter().position(|w| {
                !condition_holds(w, live.get(w.key()).and_then(|v| u64::try_from(*v).ok()))
            }) {
                results.push(Err(index));
                continue;
            }
            let Ok(done) = apply_writes(writes, now, &mut live, &mut finals, || {
                clock += 1;
                Ok::<_, Infallible>(clock)
            });
            written += writes.len() as u64;
            results.push(Ok(done));
        }
        let (puts, deletes): (Vec<_>, Vec<_>) = finals.into_iter().partition(|(_, f)| f.is_some());
        for chunk in puts.chunks(ROWS_PER_STATEMENT) {
            let mut upsert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO kv (key, value, version, expires_at) ",
            );
            upsert.push_values(chunk, |mut row, (key, state)| {
                if let Some((value, version, expires_at)) = state {
                    row.push_bind(*key)
                        .push_bind(*value)
                        .push_bind(*version)
                        .push_bind(*expires_at);
                }
            });
            upsert.push(
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                 version = excluded.version, expires_at = excluded.expires_at",
            );
            upsert.build().persistent(false).execute(&mut *tx).await?;
        }
        for chunk in deletes.chunks(ROWS_PER_STATEMENT) {
            let mut delete =
                sqlx::QueryBuilder::<sqlx::Sqlite>::new("DELETE FROM kv WHERE key IN (");
            let mut list = delete.separated(", ");
            for (key, _) in chunk {
                list.push_bind(*key);
            }
            delete.push(")");
            delete.build().persistent(false).execute(&mut *tx).await?;
        }
        if clock != first_clock {
            // Versions handed to keys deleted within the group are spent too: never reused.
            sqlx::query("UPDATE kv_clock SET version = ?1 WHERE id = 1 AND version < ?1")
                .bind(clock)
                .execute(&mut *tx)
                .await?;
        }
        // Every few hundred writes, one bounded purge rides along.
        if self.written / PURGE_EVERY != (self.written + written) / PURGE_EVERY {
            sqlx::query(PURGE).bind(now).bind(PURGE_BATCH).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.written += written;
        Ok(results)
    }
}

#[async_trait::async_trait]
impl Kv for SqliteKv {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        check_key(key)?;
        let row: Option<SqlRow> = sqlx::query_as(GET)
            .bind(key)
            .bind(now_millis())
            .fetch_optional(&self.readers)
            .await
            .map_err(|e| sql_error(&format!("reading KV key {key}"), e))?;
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
        put_outcome(key, self.submit(vec![write]).await?)
    }

    async fn delete(&self, key: &str, version: Option<u64>) -> Result<bool, KvError> {
        check_key(key)?;
        Ok(delete_outcome(
            &self.submit(vec![KvWrite::Delete { key: key.to_owned(), version }]).await?,
        ))
    }

    async fn write_batch(&self, writes: Vec<KvWrite>) -> Result<BatchOutcome, KvError> {
        check_batch(&writes)?;
        Ok(batch_outcome(self.submit(writes).await?))
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
            .fetch_all(&self.readers)
            .await
            .map_err(|e| sql_error(&format!("scanning KV prefix {prefix}"), e))?;
        entries_from_rows(rows)
    }

    async fn ping(&self) -> Result<(), KvError> {
        let shown = self.shown();
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .map_err(|e| sql_error(&format!("reading {shown}"), e))?;
        // An empty batch is a write transaction: it proves the file is writable and not locked
        // by another process.
        self.submit(Vec::new()).await.map(|_| ())
    }
}

fn create_private_dir(dir: &Path) -> Result<(), KvError> {
    alien_store::private_fs::create_dir(dir).map_err(|err| {
        KvError::Unavailable(format!(
            "cannot create the KV directory {}: {err} (is its parent writable?)",
            dir.display()
        ))
    })
}

/// Creates the database file with mode 0600 when it does not exist.
fn create_private_file(path: &Path) -> Result<(), KvError> {
    alien_store::private_fs::create_file_if_missing(path).map_err(|err| {
        KvError::Unavailable(format!(
            "cannot create the KV database {}: {err} (is its directory writable?)",
            path.display()
        ))
    })
}

fn migrate_error(shown: &str, err: sqlx::migrate::MigrateError) -> KvError {
    match err {
        sqlx::migrate::MigrateError::Execute(e)
        | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => {
            sql_error(&format!("migrating {shown}"), e)
        }
        sqlx::migrate::MigrateError::VersionMissing(version) => KvError::Backend(format!(
            "{shown} was migrated by a newer alien-manager (migration {version}); run that version \
             or delete the file (it holds only in-flight command state)"
        )),
        other => KvError::Backend(format!("migrating {shown}: {other}")),
    }
}

/// Maps a database error: locks, read-only files, I/O and pool exhaustion are `Unavailable`.
fn sql_error(context: &str, err: sqlx::Error) -> KvError {
    match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            // Primary result codes: BUSY 5, LOCKED 6, READONLY 8, IOERR 10, FULL 13,
            // CANTOPEN 14, PROTOCOL 15.
            match code & 0xff {
                5 | 6 | 8 | 10 | 13 | 14 | 15 => KvError::Unavailable(format!("{context}: {err}")),
                _ => KvError::Backend(format!("{context}: {err}")),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => KvError::Unavailable(format!("{context}: {err}")),
        _ => KvError::Backend(format!("{context}: {err}")),
    }
}
