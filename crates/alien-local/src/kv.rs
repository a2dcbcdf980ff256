//! [`SqliteKv`]: the commands [`Kv`] on one SQLite file, `{dir}/kv.db`, in WAL mode with
//! `synchronous=FULL`, one writer connection and a few read-only ones.
//!
//! Every conditional write is one statement (an upsert or update whose `WHERE` checks the
//! condition and the expiry), so the single writer serializes them without transactions or
//! retries. Expired rows are invisible to every query and purged in batches now and then.
//! Versions come from a store-wide counter kept by triggers (`migrations/0001_kv.sql`): a key
//! that is deleted or expires and is written again never gets a version a stale holder has.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alien_commands::kv::{MAX_VALUE_LEN, valid_key};
use alien_commands::{Kv, KvEntry, KvError, PutCondition};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// The database file inside the KV directory.
pub const FILE_NAME: &str = "kv.db";
/// How long a statement waits for a lock held by another connection before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-only connections serving `get` and `scan` next to the single writer.
pub const READERS: u32 = 4;
/// Expired rows are purged (one batch) after every this many writes.
const PURGE_EVERY: u64 = 256;
/// Rows deleted per purge statement, so a purge never holds the writer long.
const PURGE_BATCH: i64 = 512;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

type Row = (String, Vec<u8>, i64, Option<i64>);

const GET: &str = "SELECT key, value, version, expires_at FROM kv \
     WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)";

const PUT_ALWAYS: &str = "INSERT INTO kv (key, value, version, expires_at) \
     VALUES (?1, ?2, (SELECT version + 1 FROM kv_clock WHERE id = 1), ?3) \
     ON CONFLICT (key) DO UPDATE SET \
     value = excluded.value, version = excluded.version, expires_at = excluded.expires_at \
     RETURNING version";

// An expired row counts as absent: it is overwritten in place.
const PUT_IF_ABSENT: &str = "INSERT INTO kv (key, value, version, expires_at) \
     VALUES (?1, ?2, (SELECT version + 1 FROM kv_clock WHERE id = 1), ?3) \
     ON CONFLICT (key) DO UPDATE SET \
     value = excluded.value, version = excluded.version, expires_at = excluded.expires_at \
     WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?4 \
     RETURNING version";

const PUT_IF_VERSION: &str = "UPDATE kv SET value = ?2, \
     version = (SELECT version + 1 FROM kv_clock WHERE id = 1), expires_at = ?3 \
     WHERE key = ?1 AND version = ?4 AND (expires_at IS NULL OR expires_at > ?5) \
     RETURNING version";

const DELETE: &str = "DELETE FROM kv \
     WHERE key = ?1 AND (?2 IS NULL OR version = ?2) AND (expires_at IS NULL OR expires_at > ?3)";

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
    writer: SqlitePool,
    readers: SqlitePool,
    path: PathBuf,
    writes: AtomicU64,
}

impl fmt::Debug for SqliteKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteKv").field("path", &self.path).finish_non_exhaustive()
    }
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
        if let Err(err) = MIGRATOR.run(&writer).await {
            writer.close().await;
            return Err(migrate_error(&shown, err));
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
        let kv = SqliteKv { writer, readers, path, writes: AtomicU64::new(0) };
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
            let deleted = self.purge_batch().await?;
            purged += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }

    /// Closes every connection (readers first, so that the writer's close checkpoints the WAL).
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    async fn purge_batch(&self) -> Result<u64, KvError> {
        let result = sqlx::query(PURGE)
            .bind(now_millis())
            .bind(PURGE_BATCH)
            .execute(&self.writer)
            .await
            .map_err(|e| sql_error(&format!("purging expired entries of {}", self.shown()), e))?;
        Ok(result.rows_affected())
    }

    /// Counts a write and purges one batch of expired rows every [`PURGE_EVERY`] writes; a
    /// failed purge is logged and retried later, it never fails the write that triggered it.
    async fn after_write(&self) {
        if self.writes.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1
            && let Err(err) = self.purge_batch().await
        {
            tracing::warn!(error = %err, "purging expired KV entries failed; retried later");
        }
    }

    fn shown(&self) -> std::path::Display<'_> {
        self.path.display()
    }
}

#[async_trait::async_trait]
impl Kv for SqliteKv {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        check_key(key)?;
        let row: Option<Row> = sqlx::query_as(GET)
            .bind(key)
            .bind(now_millis())
            .fetch_optional(&self.readers)
            .await
            .map_err(|e| sql_error(&format!("reading KV key {key}"), e))?;
        row.map(entry).transpose()
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        condition: PutCondition,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, KvError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(KvError::ValueTooLarge { size: value.len(), max: MAX_VALUE_LEN });
        }
        let now = now_millis();
        let expires_at = ttl.map(|ttl| now.saturating_add(millis(ttl)));
        let query = match condition {
            PutCondition::Always => {
                sqlx::query_scalar(PUT_ALWAYS).bind(key).bind(value).bind(expires_at)
            }
            PutCondition::IfAbsent => {
                sqlx::query_scalar(PUT_IF_ABSENT).bind(key).bind(value).bind(expires_at).bind(now)
            }
            PutCondition::IfVersion(version) => {
                // Versions are positive i64 in the table: a larger one matches nothing.
                let Ok(version) = i64::try_from(version) else { return Ok(None) };
                sqlx::query_scalar(PUT_IF_VERSION)
                    .bind(key)
                    .bind(value)
                    .bind(expires_at)
                    .bind(version)
                    .bind(now)
            }
        };
        let written: Option<i64> = query
            .fetch_optional(&self.writer)
            .await
            .map_err(|e| sql_error(&format!("writing KV key {key}"), e))?;
        self.after_write().await;
        written.map(|v| version(key, v)).transpose()
    }

    async fn delete(&self, key: &str, version: Option<u64>) -> Result<bool, KvError> {
        check_key(key)?;
        let version = match version.map(i64::try_from) {
            None => None,
            Some(Ok(version)) => Some(version),
            Some(Err(_)) => return Ok(false),
        };
        let result = sqlx::query(DELETE)
            .bind(key)
            .bind(version)
            .bind(now_millis())
            .execute(&self.writer)
            .await
            .map_err(|e| sql_error(&format!("deleting KV key {key}"), e))?;
        Ok(result.rows_affected() > 0)
    }

    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        check_key(prefix)?;
        if let Some(after) = after {
            check_key(after)?;
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let upper = prefix_upper_bound(prefix)?;
        let (sql, lower) = match after {
            Some(after) if after >= prefix => (SCAN_AFTER, after),
            _ => (SCAN_FROM_PREFIX, prefix),
        };
        let rows: Vec<Row> = sqlx::query_as(sql)
            .bind(lower)
            .bind(upper)
            .bind(now_millis())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| sql_error(&format!("scanning KV prefix {prefix}"), e))?;
        rows.into_iter().map(entry).collect()
    }

    async fn ping(&self) -> Result<(), KvError> {
        let shown = self.shown();
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .map_err(|e| sql_error(&format!("reading {shown}"), e))?;
        // A write transaction proves the file is writable and not locked by another process.
        let tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| sql_error(&format!("{shown} cannot be written"), e))?;
        tx.rollback().await.map_err(|e| sql_error(&format!("{shown} cannot be written"), e))
    }
}

fn check_key(key: &str) -> Result<(), KvError> {
    if valid_key(key) { Ok(()) } else { Err(KvError::InvalidKey(key.to_owned())) }
}

/// The smallest string above every key that starts with `prefix`: the prefix with its last
/// character incremented. Valid keys are ASCII up to `z`, so the result is ASCII too.
fn prefix_upper_bound(prefix: &str) -> Result<String, KvError> {
    let mut bytes = prefix.as_bytes().to_vec();
    let next = bytes.pop().and_then(|last| last.checked_add(1)).filter(u8::is_ascii);
    let Some(next) = next else { return Err(KvError::InvalidKey(prefix.to_owned())) };
    bytes.push(next);
    String::from_utf8(bytes).map_err(|_| KvError::InvalidKey(prefix.to_owned()))
}

fn entry((key, value, version_number, expires_at): Row) -> Result<KvEntry, KvError> {
    let version = version(&key, version_number)?;
    let expires_at = match expires_at {
        None => None,
        Some(ms) => Some(
            u64::try_from(ms)
                .ok()
                .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    KvError::Backend(format!("KV key {key}: expires_at {ms} is not a time"))
                })?,
        ),
    };
    Ok(KvEntry { key, value, version, expires_at })
}

fn version(key: &str, version: i64) -> Result<u64, KvError> {
    u64::try_from(version)
        .map_err(|_| KvError::Backend(format!("KV key {key}: version {version} is negative")))
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, millis)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bound_increments_the_last_character() {
        assert_eq!(prefix_upper_bound("cmd:").unwrap(), "cmd;");
        assert_eq!(prefix_upper_bound("a.z").unwrap(), "a.{");
        assert!(prefix_upper_bound("").is_err());
    }
}
