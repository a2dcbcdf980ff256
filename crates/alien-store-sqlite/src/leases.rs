//! Who works on a deployment. Push mode: leases of the deployment loop and of external drivers'
//! sessions, taken by one conditional update over the due deployments (two callers never get the
//! same one), renewed, released with when the deployment is next due, and taken over once stale;
//! progress is saved only by the holder. Pull mode: the agents' heartbeats, and the deployments
//! whose agent fell silent.

use std::time::Duration;

use alien_core::{Deployment, DeploymentEvent, DeploymentStatus, Id, IdKind};
use alien_store::{AcquireFilter, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use crate::SqliteStore;
use crate::codec::opt_to_json;
use crate::error::sql_error;
use crate::sql::{ACQUIRE_SQL, acquire_filter_sql, acquire_sql, bind_acquire_filter, quoted};
use alien_store::sql::rows::DeploymentRow;

/// See `DeploymentStore::acquire_due_matching`.
pub(crate) async fn acquire_due_matching(
    store: &SqliteStore,
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
    let sql = if conditions.is_empty() { ACQUIRE_SQL.clone() } else { acquire_sql(&conditions) };
    let query = sqlx::query_as::<_, DeploymentRow>(AssertSqlSafe(sql))
        .bind(owner)
        .bind(now)
        .bind(now.saturating_sub(stale))
        .bind(i64::from(limit));
    let query = bind_acquire_filter(query, filter)?;
    let mut tx = store.begin("acquiring due deployments").await?;
    let rows =
        query.fetch_all(&mut *tx).await.map_err(|e| sql_error("acquiring due deployments", e))?;
    tx.commit().await.map_err(|e| sql_error("committing leases", e))?;
    DeploymentRow::into_leased(rows)
}

/// See `DeploymentStore::release_leases_of`.
pub(crate) async fn release_leases_of(store: &SqliteStore, owner: &str) -> StoreResult<u64> {
    let released = sqlx::query(
        "UPDATE deployments SET locked_by = NULL, locked_at = NULL WHERE locked_by = ?1",
    )
    .bind(owner)
    .execute(&store.writer)
    .await
    .map_err(|e| sql_error("releasing leases", e))?
    .rows_affected();
    Ok(released)
}

/// See `DeploymentStore::renew_lease`.
pub(crate) async fn renew_lease(
    store: &SqliteStore,
    deployment: &Id,
    owner: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let updated =
        sqlx::query("UPDATE deployments SET locked_at = ?3 WHERE id = ?1 AND locked_by = ?2")
            .bind(deployment.as_str())
            .bind(owner)
            .bind(now.timestamp_millis())
            .execute(&store.writer)
            .await
            .map_err(|e| sql_error("renewing a lease", e))?
            .rows_affected();
    Ok(updated > 0)
}

/// See `DeploymentStore::save_progress`.
pub(crate) async fn save_progress(
    store: &SqliteStore,
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
    .execute(&store.writer)
    .await
    .map_err(|e| sql_error("saving a step's progress", e))?
    .rows_affected();
    Ok(updated > 0)
}

/// See `DeploymentStore::release_lease`.
pub(crate) async fn release_lease(
    store: &SqliteStore,
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
    .execute(&store.writer)
    .await
    .map_err(|e| sql_error("releasing a lease", e))?
    .rows_affected();
    Ok(updated > 0)
}

/// See `DeploymentStore::silent_pull_deployments`.
pub(crate) async fn silent_pull_deployments(
    store: &SqliteStore,
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
        .fetch_all(&store.readers)
        .await
        .map_err(|e| sql_error("finding silent agents", e))?;
    ids.iter()
        .map(|id| {
            Id::parse(IdKind::Deployment, id)
                .map_err(|e| StoreError::Corrupt(format!("deployments.id {id}: {e}")))
        })
        .collect()
}

/// See `DeploymentStore::record_heartbeat`.
pub(crate) async fn record_heartbeat(
    store: &SqliteStore,
    deployment: &Id,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let updated = sqlx::query("UPDATE deployments SET last_heartbeat_at = ?2 WHERE id = ?1")
        .bind(deployment.as_str())
        .bind(at.timestamp_millis())
        .execute(&store.writer)
        .await
        .map_err(|e| sql_error("recording a heartbeat", e))?
        .rows_affected();
    Ok(updated > 0)
}
