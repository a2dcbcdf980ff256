//! Steady heartbeats (`DeploymentStore::record_steady_heartbeat`), group-committed: most agent
//! syncs change nothing but the heartbeat time, and the single writer would otherwise spend a
//! transaction and a disk sync on each. Each caller queues its heartbeat and waits; whoever finds
//! the commit lock free takes everything queued and writes it in one conditional `UPDATE ...
//! FROM json_each(..)` in one transaction (one sync), and every caller learns whether its own row
//! matched. Nobody is answered before the transaction that holds their heartbeat has committed,
//! so nothing acknowledged is lost. The commit runs in its own task: a caller that goes away
//! (its client hung up) does not cut the others' batch short.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use alien_core::{DeploymentModel, DeploymentStatus, Id};
use alien_store::{SteadyReport, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::SqlitePool;
use tokio::sync::oneshot;

use crate::error::sql_error;

/// One queued heartbeat and where its answer goes.
struct Queued {
    /// `[id, at, platform, release]`.
    row: serde_json::Value,
    /// The stack state as written (kept apart: `json_each` hands a string over as it is, without
    /// parsing the whole row again for it).
    state: String,
    id: String,
    answer: oneshot::Sender<StoreResult<bool>>,
}

/// The queue and the commit lock of steady heartbeats.
#[derive(Default)]
pub(crate) struct SteadyHeartbeats {
    queue: Mutex<Vec<Queued>>,
    commit: Arc<tokio::sync::Mutex<()>>,
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
         RETURNING deployments.id",
        pull = DeploymentModel::Pull.as_str(),
        running = DeploymentStatus::Running.as_str(),
    )
});

impl SteadyHeartbeats {
    /// Queues the heartbeat and returns once the transaction holding it committed.
    pub(crate) async fn record(
        &self,
        writer: &SqlitePool,
        id: &Id,
        report: &SteadyReport,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (answer, mut answered) = oneshot::channel();
        let row = json!([
            id.as_str(),
            at.timestamp_millis(),
            report.platform.as_str(),
            report.release.as_str()
        ]);
        let state = report.stack_state.clone();
        self.lock_queue()?.push(Queued { row, state, id: id.as_str().to_owned(), answer });
        tokio::select! {
            biased;
            // An earlier batch took it.
            result = &mut answered => return result.unwrap_or_else(|_| Err(interrupted())),
            guard = self.commit.clone().lock_owned() => {
                let batch = std::mem::take(&mut *self.lock_queue()?);
                if !batch.is_empty() {
                    let writer = writer.clone();
                    tokio::spawn(async move {
                        commit(&writer, batch).await;
                        drop(guard);
                    });
                }
            }
        }
        answered.await.unwrap_or_else(|_| Err(interrupted()))
    }

    fn lock_queue(&self) -> StoreResult<std::sync::MutexGuard<'_, Vec<Queued>>> {
        self.queue
            .lock()
            .map_err(|_| StoreError::Database("the heartbeat queue is poisoned".into()))
    }
}

fn interrupted() -> StoreError {
    StoreError::Unavailable("the heartbeat's batch was interrupted; sync again".into())
}

/// Writes `batch` in one transaction and answers each caller. A deployment queued twice goes in
/// a later statement of the same transaction, so each row's condition is checked on its own.
async fn commit(writer: &SqlitePool, batch: Vec<Queued>) {
    let mut rounds: Vec<Vec<Queued>> = Vec::new();
    for queued in batch {
        match rounds.iter_mut().find(|round| round.iter().all(|q| q.id != queued.id)) {
            Some(round) => round.push(queued),
            None => rounds.push(vec![queued]),
        }
    }
    match write(writer, &rounds).await {
        Ok(matched) => {
            for (round, matched) in rounds.into_iter().zip(matched) {
                for queued in round {
                    let _ = queued.answer.send(Ok(matched.contains(&queued.id)));
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

/// The ids each round matched.
async fn write(writer: &SqlitePool, rounds: &[Vec<Queued>]) -> StoreResult<Vec<HashSet<String>>> {
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| sql_error("recording heartbeats", e))?;
    let mut matched = Vec::with_capacity(rounds.len());
    for round in rounds {
        let rows: Vec<&serde_json::Value> = round.iter().map(|q| &q.row).collect();
        let states: Vec<&str> = round.iter().map(|q| q.state.as_str()).collect();
        let encode = |what: &str, e: serde_json::Error| {
            StoreError::Database(format!("cannot encode heartbeat {what}: {e}"))
        };
        let rows = serde_json::to_string(&rows).map_err(|e| encode("rows", e))?;
        let states = serde_json::to_string(&states).map_err(|e| encode("states", e))?;
        let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(STEADY_SQL.as_str()))
            .bind(rows)
            .bind(states)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| sql_error("recording heartbeats", e))?;
        matched.push(ids.into_iter().collect());
    }
    tx.commit().await.map_err(|e| sql_error("committing heartbeats", e))?;
    Ok(matched)
}
