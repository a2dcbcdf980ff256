//! Status changes: an event applied to a deployment's current status through
//! `DeploymentStatus::transition`, conditionally on that status not having changed meanwhile,
//! with the patch of fields that goes with it and a row in the deployment's events (the newest
//! [`EVENTS_KEPT`](crate::EVENTS_KEPT) kept). An agent's report of the status it already has is
//! one conditional statement, without an event.

use alien_core::{Deployment, DeploymentEvent, DeploymentEventRecord, DeploymentStatus, Id};
use alien_store::{DeploymentPatch, PageRequest, StoreError, StoreResult};
use sqlx::{Connection, Sqlite, Transaction};

use crate::codec::{now_millis, opt_from_json, opt_to_json, parse, time, to_json};
use crate::deployments::{DeploymentRow, fetch_deployment};
use crate::error::{is_foreign_key_violation, sql_error};
use crate::sql::{deployment_columns, patch_deployment_sql};
use crate::{EVENTS_KEPT, SqliteStore};

#[derive(sqlx::FromRow)]
struct EventRow {
    from_status: Option<String>,
    to_status: String,
    reason: String,
    detail: Option<String>,
    at: i64,
}

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
    let from: DeploymentStatus = parse("deployments.status", &status)?;
    if let Some(expected) = patch.expect_status
        && expected != from
    {
        return Err(StoreError::Conflict(format!(
            "deployment {dep} is {from}, no longer {expected}"
        )));
    }
    let to = from.transition(event)?;

    let error = match &patch.error {
        Some(Some(error)) => Some(to_json("the deployment error", error)?),
        _ => None,
    };
    let updated = sqlx::query(patch_deployment_sql!(""))
        .bind(to.as_str())
        .bind(patch.desired_release_id.as_ref().map(Id::as_str))
        .bind(patch.current_release_id.as_ref().map(Id::as_str))
        .bind(opt_to_json("the stack state", patch.stack_state.as_ref())?)
        .bind(patch.error.is_some())
        .bind(error)
        .bind(patch.retry_requested)
        .bind(patch.last_heartbeat_at.map(|t| t.timestamp_millis()))
        .bind(now)
        .bind(dep)
        .bind(from.as_str())
        .execute(&mut **tx)
        .await
        .map_err(|err| {
            if is_foreign_key_violation(&err) {
                StoreError::NotFound {
                    entity: alien_store::Entity::Release,
                    id: patch
                        .desired_release_id
                        .iter()
                        .chain(patch.current_release_id.iter())
                        .map(Id::to_string)
                        .collect::<Vec<_>>()
                        .join(" or "),
                }
            } else {
                sql_error("updating a deployment", err)
            }
        })?
        .rows_affected();
    if updated == 0 {
        return Err(StoreError::Conflict(format!(
            "deployment {dep} changed status while {event} was being applied"
        )));
    }

    // (Not when it went stale: its agent fell silent; that is no end of an update.)
    if from == DeploymentStatus::Updating
        && !matches!(to, DeploymentStatus::Updating | DeploymentStatus::Stale)
    {
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

    let new_desired =
        patch.desired_release_id.as_ref().is_some_and(|d| desired.as_deref() != Some(d.as_str()));
    if to != from || new_desired {
        let reason = if patch.reason.is_empty() { event.to_string() } else { patch.reason.clone() };
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
    let error = match &patch.error {
        Some(Some(error)) => Some(to_json("the deployment error", error)?),
        _ => None,
    };
    // One statement, no transaction of its own: the status condition is the whole check.
    sqlx::query_as::<_, DeploymentRow>(patch_deployment_sql!(concat!(
        " RETURNING ",
        deployment_columns!()
    )))
    .bind(status.as_str())
    .bind(None::<&str>)
    .bind(patch.current_release_id.as_ref().map(Id::as_str))
    .bind(opt_to_json("the stack state", patch.stack_state.as_ref())?)
    .bind(patch.error.is_some())
    .bind(error)
    .bind(patch.retry_requested)
    .bind(patch.last_heartbeat_at.map(|t| t.timestamp_millis()))
    .bind(now_millis())
    .bind(deployment.as_str())
    .bind(status.as_str())
    .fetch_optional(&store.writer)
    .await
    .map_err(|err| {
        if is_foreign_key_violation(&err) {
            StoreError::NotFound {
                entity: alien_store::Entity::Release,
                id: patch.current_release_id.as_ref().map(Id::to_string).unwrap_or_default(),
            }
        } else {
            sql_error("recording a report", err)
        }
    })?
    .map(DeploymentRow::into_deployment)
    .transpose()
}

/// See `DeploymentStore::deployment_events`.
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
    let rows = sqlx::query_as::<_, EventRow>(
        "SELECT from_status, to_status, reason, detail, at FROM deployment_events \
         WHERE deployment_id = ?1 ORDER BY id DESC LIMIT ?2",
    )
    .bind(dep)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| sql_error("reading events", e))?;
    rows.into_iter()
        .map(|row| {
            Ok(DeploymentEventRecord {
                from: row
                    .from_status
                    .as_deref()
                    .map(|s| parse("deployment_events.from_status", s))
                    .transpose()?,
                to: parse("deployment_events.to_status", &row.to_status)?,
                reason: row.reason,
                detail: opt_from_json("deployment_events.detail", row.detail.as_deref())?,
                at: time("deployment_events.at", row.at)?,
            })
        })
        .collect()
}
