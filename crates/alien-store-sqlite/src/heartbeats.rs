//! Steady heartbeats (`DeploymentStore::record_steady_heartbeat`): most agent syncs change
//! nothing but the heartbeat time.
//!
//! The first steady report of a deployment (and any report not known steady) is checked by the
//! database, group-committed: each caller queues its heartbeat and waits; whoever finds the commit
//! lock free takes everything queued and writes it in one conditional `UPDATE ... FROM
//! json_each(..)` (one sync), and every caller learns whether its own row matched. The commit
//! runs in its own task: a caller that goes away (its client hung up) does not cut the others'
//! batch short. A matched report's digest is kept (`deployment_cache`, exact for this process).
//!
//! A report whose digest is kept is steady without a trip to the database: its heartbeat time
//! is acknowledged at once and written with every other one of the last [`FLUSH_AFTER`], a
//! thousand a statement (issue 21: a heartbeat time may be batched; status changes never are,
//! they take the full way). A crash loses at most that second of heartbeat times, never a status
//! or a state.
//! Until written, a time is still seen: `get_deployment` shows it, and the search for silent
//! agents and a clean close write everything first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alien_core::{DeploymentModel, DeploymentStatus, Id};
use alien_store::{SteadyReport, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use tokio::sync::oneshot;

use crate::deployment_cache::{DeploymentCache, SteadyDigest, SteadyLookup};
use crate::error::sql_error;

/// How long an acknowledged heartbeat time of a known-steady report may wait to be written.
pub const FLUSH_AFTER: Duration = Duration::from_secs(1);
/// Heartbeat times per statement of a flush: each statement commits on its own, so other writes
/// (and the deployment cache's readings) never wait behind a whole second of a large fleet.
const FLUSH_ROWS: usize = 1_000;

/// One queued heartbeat and where its answer goes (the row's rowid if it matched).
struct Queued {
    /// `[id, at, platform, release]`.
    row: serde_json::Value,
    /// The stack state as written (kept apart: `json_each` hands a string over as it is, without
    /// parsing the whole row again for it).
    state: String,
    id: String,
    answer: oneshot::Sender<StoreResult<Option<i64>>>,
}

/// The queue, the commit lock and the unwritten times of steady heartbeats.
pub(crate) struct SteadyHeartbeats {
    inner: Arc<Inner>,
}

struct Inner {
    writer: SqlitePool,
    cache: Arc<DeploymentCache>,
    queue: Mutex<Vec<Queued>>,
    commit: Arc<tokio::sync::Mutex<()>>,
    /// Acknowledged heartbeat times (Unix milliseconds) not written yet, by deployment id.
    unwritten: Mutex<HashMap<String, i64>>,
    /// A flush is scheduled.
    scheduled: AtomicBool,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
}

/// Sets the heartbeat of every row of the batch whose deployment is exactly as reported.
static STEADY_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE deployments SET last_heartbeat_at = MAX(COALESCE(last_heartbeat_at, b.at), b.at) \
         FROM (SELECT r.value ->> 0 AS id, r.value ->> 1 AS at, r.value ->> 2 AS platform, \
                      r.value ->> 3 AS release, s.value AS state \
               FROM json_each(?1) AS r JOIN json_each(?2) AS s ON s.key = r.key) AS b \
         WHERE deployments.id = b.id AND deployments.deployment_model = '{pull}' \
         AND deployments.status = '{running}' AND deployments.platform = b.platform \
         AND deployments.current_release_id = b.release \
         AND deployments.desired_release_id = b.release \
         AND deployments.retry_requested = 0 AND deployments.error IS NULL \
         AND deployments.stack_state = b.state \
         RETURNING deployments.id, deployments.rowid",
        pull = DeploymentModel::Pull.as_str(),
        running = DeploymentStatus::Running.as_str(),
    )
});

/// Writes acknowledged heartbeat times (`[[id, at], ...]`), never moving one back.
static FLUSH_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE deployments SET last_heartbeat_at = MAX(COALESCE(last_heartbeat_at, b.at), b.at) \
         FROM (SELECT value ->> 0 AS id, value ->> 1 AS at FROM json_each(?1)) AS b \
         WHERE deployments.id = b.id AND deployments.deployment_model = '{pull}'",
        pull = DeploymentModel::Pull.as_str(),
    )
});

impl SteadyHeartbeats {
    pub(crate) fn new(writer: SqlitePool, cache: Arc<DeploymentCache>) -> SteadyHeartbeats {
        SteadyHeartbeats {
            inner: Arc::new(Inner {
                writer,
                cache,
                queue: Mutex::default(),
                commit: Arc::default(),
                unwritten: Mutex::default(),
                scheduled: AtomicBool::new(false),
                flushing: tokio::sync::Mutex::const_new(()),
            }),
        }
    }

    /// Whether the deployment is exactly as `report` says; if so its heartbeat time `at` is
    /// recorded (see the module documentation). `check` starts a reading of `PRAGMA
    /// data_version` when the cache asks for one.
    pub(crate) async fn record(
        &self,
        id: &Id,
        report: &SteadyReport,
        at: DateTime<Utc>,
        check: impl FnOnce(),
    ) -> StoreResult<bool> {
        let digest = digest(report);
        let (found, asked) = self.inner.cache.steady_get(id.as_str(), &digest, Instant::now());
        if asked {
            check();
        }
        let generation = match found {
            SteadyLookup::Steady => {
                self.remember(id.as_str(), at.timestamp_millis())?;
                return Ok(true);
            }
            SteadyLookup::Ask { generation } => generation,
        };
        let Some(rowid) = self.confirm(id, report, at).await? else { return Ok(false) };
        self.inner.cache.steady_put(generation, rowid, id.as_str(), digest);
        Ok(true)
    }

    /// The acknowledged heartbeat time of `id` not written yet, if any (Unix milliseconds).
    pub(crate) fn unwritten(&self, id: &str) -> StoreResult<Option<i64>> {
        Ok(self.inner.lock_unwritten()?.get(id).copied())
    }

    /// Writes every acknowledged heartbeat time now.
    pub(crate) async fn flush(&self) -> StoreResult<()> {
        self.inner.flush().await
    }

    fn remember(&self, id: &str, at: i64) -> StoreResult<()> {
        {
            let mut unwritten = self.inner.lock_unwritten()?;
            let kept = unwritten.entry(id.to_owned()).or_insert(at);
            *kept = (*kept).max(at);
        }
        self.inner.schedule();
        Ok(())
    }

    /// Queues the heartbeat for the database's check and returns once the transaction holding
    /// it committed: the row's rowid if it matched.
    async fn confirm(
        &self,
        id: &Id,
        report: &SteadyReport,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<i64>> {
        let (answer, mut answered) = oneshot::channel();
        let row = json!([
            id.as_str(),
            at.timestamp_millis(),
            report.platform.as_str(),
            report.release.as_str()
        ]);
        let state = report.stack_state.clone();
        self.inner.lock_queue()?.push(Queued { row, state, id: id.as_str().to_owned(), answer });
        tokio::select! {
            biased;
            // An earlier batch took it.
            result = &mut answered => return result.unwrap_or_else(|_| Err(interrupted())),
            guard = self.inner.commit.clone().lock_owned() => {
                let batch = std::mem::take(&mut *self.inner.lock_queue()?);
                if !batch.is_empty() {
                    let inner = self.inner.clone();
                    tokio::spawn(async move {
                        commit(&inner, batch).await;
                        drop(guard);
                    });
                }
            }
        }
        answered.await.unwrap_or_else(|_| Err(interrupted()))
    }
}

impl Inner {
    fn lock_queue(&self) -> StoreResult<std::sync::MutexGuard<'_, Vec<Queued>>> {
        self.queue
            .lock()
            .map_err(|_| StoreError::Database("the heartbeat queue is poisoned".into()))
    }

    fn lock_unwritten(&self) -> StoreResult<std::sync::MutexGuard<'_, HashMap<String, i64>>> {
        self.unwritten
            .lock()
            .map_err(|_| StoreError::Database("the unwritten heartbeat times are poisoned".into()))
    }

    /// Flushes within [`FLUSH_AFTER`], unless a flush is already scheduled.
    fn schedule(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FLUSH_AFTER).await;
            inner.scheduled.store(false, Ordering::SeqCst);
            if let Err(err) = inner.flush().await {
                if inner.writer.is_closed() {
                    return;
                }
                tracing::warn!(error = %err, "writing heartbeat times failed; trying again");
                inner.schedule();
            }
        });
    }

    async fn flush(&self) -> StoreResult<()> {
        let _one = self.flushing.lock().await;
        let taken: Vec<(String, i64)> =
            std::mem::take(&mut *self.lock_unwritten()?).into_iter().collect();
        for (n, chunk) in taken.chunks(FLUSH_ROWS).enumerate() {
            if let Err(err) = self.write_times(chunk).await {
                // Kept for the next flush (a newer time of the same deployment wins).
                let mut unwritten = self.lock_unwritten()?;
                for (id, at) in taken.into_iter().skip(n * FLUSH_ROWS) {
                    let kept = unwritten.entry(id).or_insert(at);
                    *kept = (*kept).max(at);
                }
                return Err(err);
            }
        }
        Ok(())
    }

    async fn write_times(&self, times: &[(String, i64)]) -> StoreResult<()> {
        let rows = serde_json::to_string(times)
            .map_err(|e| StoreError::Database(format!("cannot encode heartbeat times: {e}")))?;
        let mut conn =
            self.writer.acquire().await.map_err(|e| sql_error("writing heartbeat times", e))?;
        // The writer is held anyway: a reading of `PRAGMA data_version` for the deployment cache
        // costs nothing more here, and keeps its entries served while flushes keep the writer
        // busy (a reading of its own would wait behind them).
        let started = Instant::now();
        let version = sqlx::query_scalar::<_, i64>("PRAGMA data_version")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| sql_error("reading the data version", e))?;
        self.cache.checked(Some(version), started);
        let _mode = self.cache.heartbeat_only();
        sqlx::query(sqlx::AssertSqlSafe(FLUSH_SQL.as_str()))
            .bind(rows)
            .execute(&mut *conn)
            .await
            .map_err(|e| sql_error("writing heartbeat times", e))?;
        Ok(())
    }
}

/// The digest of everything a steady report says.
fn digest(report: &SteadyReport) -> SteadyDigest {
    Sha256::new()
        .chain_update(report.platform.as_str())
        .chain_update([0])
        .chain_update(report.release.as_str())
        .chain_update([0])
        .chain_update(&report.stack_state)
        .finalize()
        .into()
}

fn interrupted() -> StoreError {
    StoreError::Unavailable("the heartbeat's batch was interrupted; sync again".into())
}

/// Writes `batch` in one transaction and answers each caller. A deployment queued twice goes in
/// a later statement of the same transaction, so each row's condition is checked on its own.
async fn commit(inner: &Inner, batch: Vec<Queued>) {
    let mut rounds: Vec<Vec<Queued>> = Vec::new();
    for queued in batch {
        match rounds.iter_mut().find(|round| round.iter().all(|q| q.id != queued.id)) {
            Some(round) => round.push(queued),
            None => rounds.push(vec![queued]),
        }
    }
    match write(inner, &rounds).await {
        Ok(matched) => {
            for (round, matched) in rounds.into_iter().zip(matched) {
                for queued in round {
                    let _ = queued.answer.send(Ok(matched.get(&queued.id).copied()));
                }
            }
        }
        Err(err) => {
            for queued in rounds.into_iter().flatten() {
                let copy = match &err {
                    StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
                    other => StoreError::Database(other.to_string()),
                };
                let _ = queued.answer.send(Err(copy));
            }
        }
    }
}

/// The ids each round matched, with their rowids. The writer is in heartbeat-only mode
/// meanwhile: these statements set `last_heartbeat_at` and nothing else.
async fn write(inner: &Inner, rounds: &[Vec<Queued>]) -> StoreResult<Vec<HashMap<String, i64>>> {
    let mut conn =
        inner.writer.acquire().await.map_err(|e| sql_error("recording heartbeats", e))?;
    let _mode = inner.cache.heartbeat_only();
    // One round (the usual case: each deployment once) is one statement, committed on its own
    // as it completes (autocommit, `synchronous=FULL`): one trip to the connection's thread
    // instead of three (BEGIN, the statement, COMMIT).
    if let [round] = rounds {
        let matched: Vec<(String, i64)> = steady_statement(round)?
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| sql_error("recording heartbeats", e))?;
        return Ok(vec![matched.into_iter().collect()]);
    }
    let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
        .await
        .map_err(|e| sql_error("recording heartbeats", e))?;
    let mut matched = Vec::with_capacity(rounds.len());
    for round in rounds {
        let ids: Vec<(String, i64)> = steady_statement(round)?
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| sql_error("recording heartbeats", e))?;
        matched.push(ids.into_iter().collect());
    }
    tx.commit().await.map_err(|e| sql_error("committing heartbeats", e))?;
    Ok(matched)
}

/// The statement of one round, its rows and states bound.
fn steady_statement(
    round: &[Queued],
) -> StoreResult<
    sqlx::query::QueryAs<'static, sqlx::Sqlite, (String, i64), sqlx::sqlite::SqliteArguments>,
> {
    let rows: Vec<&serde_json::Value> = round.iter().map(|q| &q.row).collect();
    let states: Vec<&str> = round.iter().map(|q| q.state.as_str()).collect();
    let encode = |what: &str, e: serde_json::Error| {
        StoreError::Database(format!("cannot encode heartbeat {what}: {e}"))
    };
    let rows = serde_json::to_string(&rows).map_err(|e| encode("rows", e))?;
    let states = serde_json::to_string(&states).map_err(|e| encode("states", e))?;
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(STEADY_SQL.as_str())).bind(rows).bind(states))
}
