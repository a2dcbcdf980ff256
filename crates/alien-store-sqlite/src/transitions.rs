//! Status changes: an event applied to a deployment's current status through
//! `DeploymentStatus::transition`, conditionally on that status not having changed meanwhile,
//! with the patch of fields that goes with it and a row in the deployment's events (the newest
//! [`EVENTS_KEPT`](crate::EVENTS_KEPT) kept). An agent's report of the status it already has is
//! one conditional statement, without an event.

use alien_core::{Deployment, DeploymentEvent, DeploymentEventRecord, DeploymentStatus, Id};
use alien_store::sql::patch::{
    PatchValues, bind_patch, changed_meanwhile, ends_update, event_reason, missing_release,
    transition_statuses,
};
use alien_store::sql::rows::{DeploymentRow, EventRow, deployment_columns, event_columns};
use alien_store::{DeploymentPatch, PageRequest, StoreError, StoreResult};
use sqlx::{Connection, Sqlite, Transaction};

use crate::codec::{now_millis, opt_to_json};
use crate::deployments::fetch_deployment;
use crate::error::{is_foreign_key_violation, sql_error};
use crate::sql::patch_deployment_sql;
use crate::{EVENTS_KEPT, SqliteStore};

/// A transition inside `tx` (see `DeploymentStore::transition`).
pub(crate) async fn transition_in(
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
        return Err(StoreError::NotFound {
            entity: alien_store::Entity::Deployment,
            id: dep.to_owned(),
        });
    };
    let (from, to) = transition_statuses(dep, &status, event, &patch)?;
    let values = PatchValues::transition(dep, from, to, &patch, now)?;
    let updated = bind_patch!(sqlx::query(patch_deployment_sql!("")), values)
        .execute(&mut **tx)
        .await
        .map_err(|err| {
            if is_foreign_key_violation(&err) {
                missing_release(patch.desired_release_id.iter().chain(&patch.current_release_id))
            } else {
                sql_error("updating a deployment", err)
            }
        })?
        .rows_affected();
    if updated == 0 {
        return Err(changed_meanwhile(dep, event));
    }

    if ends_update(from, to) {
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

    if let Some(reason) = event_reason(from, to, event, &patch, desired.as_deref()) {
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
        prune_events(tx, dep).await?;
    }

    let after = fetch_deployment(tx, dep).await?.ok_or_else(|| {
        StoreError::Database(format!("deployment {dep} vanished during a transition"))
    })?;
    Ok(after)
}

/// See `DeploymentStore::transition`.
pub(crate) async fn transition(
    store: &SqliteStore,
    deployment: &Id,
    event: DeploymentEvent,
    patch: DeploymentPatch,
) -> StoreResult<Deployment> {
    let mut tx = store.begin("transitioning a deployment").await?;
    let after = transition_in(&mut tx, deployment.as_str(), event, patch).await?;
    tx.commit().await.map_err(|e| sql_error("committing a transition", e))?;
    Ok(after)
}

/// See `DeploymentStore::record_report`.
pub(crate) async fn record_report(
    store: &SqliteStore,
    deployment: &Id,
    status: DeploymentStatus,
    patch: DeploymentPatch,
) -> StoreResult<Option<Deployment>> {
    let values = PatchValues::report(deployment.as_str(), status, &patch, now_millis())?;
    // One statement, no transaction of its own: the status condition is the whole check.
    bind_patch!(
        sqlx::query_as::<_, DeploymentRow>(patch_deployment_sql!(concat!(
            " RETURNING ",
            deployment_columns!()
        ))),
        values
    )
    .fetch_optional(&store.writer)
    .await
    .map_err(|err| {
        if is_foreign_key_violation(&err) {
            missing_release(&patch.current_release_id)
        } else {
            sql_error("recording a report", err)
        }
    })?
    .map(DeploymentRow::into_deployment)
    .transpose()
}

/// See `DeploymentStore::deployment_events`.
/// Keeps the newest [`EVENTS_KEPT`] events of `dep`.
async fn prune_events(tx: &mut Transaction<'static, Sqlite>, dep: &str) -> StoreResult<()> {
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
    Ok(())
}

/// See `DeploymentStore::record_event`.
pub(crate) async fn record_event(
    store: &SqliteStore,
    deployment: &Id,
    reason: &str,
    detail: &serde_json::Value,
) -> StoreResult<bool> {
    let dep = deployment.as_str();
    let detail = serde_json::to_string(detail)
        .map_err(|e| StoreError::Database(format!("encoding the event detail: {e}")))?;
    let mut tx = store.begin("recording a deployment event").await?;
    let inserted = sqlx::query(
        "INSERT INTO deployment_events (deployment_id, from_status, to_status, reason, detail, at) \
         SELECT id, status, status, ?2, ?3, ?4 FROM deployments WHERE id = ?1",
    )
    .bind(dep)
    .bind(reason)
    .bind(detail)
    .bind(now_millis())
    .execute(&mut *tx)
    .await
    .map_err(|e| sql_error("recording a deployment event", e))?
    .rows_affected();
    if inserted > 0 {
        prune_events(&mut tx, dep).await?;
    }
    tx.commit().await.map_err(|e| sql_error("committing a deployment event", e))?;
    Ok(inserted > 0)
}

pub(crate) async fn deployment_events(
    store: &SqliteStore,
    deployment: &Id,
    limit: u32,
) -> StoreResult<Vec<DeploymentEventRecord>> {
    let dep = deployment.as_str();
    let limit = PageRequest { limit, cursor: None }.effective_limit();
    let mut conn = store.readers.acquire().await.map_err(|e| sql_error("reading events", e))?;
    let mut tx = conn.begin().await.map_err(|e| sql_error("reading events", e))?;
    crate::deployments::require_deployment(&mut tx, dep).await?;
    let rows = sqlx::query_as::<_, EventRow>(concat!(
        "SELECT ",
        event_columns!(),
        " FROM deployment_events WHERE deployment_id = ?1 ORDER BY id DESC LIMIT ?2"
    ))
    .bind(dep)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| sql_error("reading events", e))?;
    rows.into_iter().map(EventRow::into_record).collect()
}
