//! Status changes: an event applied to a deployment's current status through
//! `DeploymentStatus::transition`, under the deployment's row lock, with the patch of fields that
//! goes with it and a row in the deployment's events (the newest [`EVENTS_KEPT`] kept); an
//! agent's report of the status it already has (one conditional statement, without an event);
//! and staged rollouts: `RolloutPolicy::decide` (the rule, in alien-core) answers whether an
//! `update-pending` deployment may begin its update now, under the locks of the deployment and
//! then its group, and the batch count and the transition are written in the same transaction.

use alien_core::{
    Deployment, DeploymentEvent, DeploymentEventRecord, DeploymentStatus, GroupRollout, Id,
    RolloutDecision, RolloutPolicy,
};
use alien_store::codec::{from_json, now_millis, opt_to_json, time};
use alien_store::sql::patch::{
    PatchValues, bind_patch, changed_meanwhile, ends_update, event_reason, missing_release,
    transition_statuses,
};
use alien_store::sql::rows::{DeploymentRow, EventRow, deployment_columns, event_columns};
use alien_store::{BeginUpdate, DeploymentPatch, Entity, PageRequest, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::deployments::{fetch_deployment, require_deployment};
use super::{EVENTS_KEPT, PostgresStore, is_foreign_key_violation, sql_error};

/// The update of a transition (and of a report of an unchanged status): `$1` the new status,
/// `$2..$9` the patch, `$10` the id, `$11` the status it must still have; `$returning` appended.
macro_rules! patch_deployment_sql {
    ($returning:expr) => {
        concat!(
            "UPDATE deployments SET status = $1, \
             desired_release_id = COALESCE($2, desired_release_id), \
             current_release_id = COALESCE($3, current_release_id), \
             stack_state = COALESCE($4, stack_state), \
             error = CASE WHEN $5 THEN $6 ELSE error END, \
             retry_requested = COALESCE($7, retry_requested), \
             last_heartbeat_at = COALESCE($8, last_heartbeat_at), \
             updated_at = $9 \
             WHERE id = $10 AND status = $11",
            $returning
        )
    };
}

/// A deployment's group, whether it was targeted (`retry_requested`), and the group's rollout
/// policy (JSON), updates begun in its current batch and end of its last update (millis).
type RolloutRow = (String, bool, Option<String>, i64, Option<i64>);

/// Keeps the newest [`EVENTS_KEPT`] events of `dep`.
pub(crate) async fn prune_events(
    tx: &mut Transaction<'static, Postgres>,
    dep: &str,
) -> StoreResult<()> {
    sqlx::query(
        "DELETE FROM deployment_events WHERE deployment_id = $1 AND id < ( \
         SELECT id FROM deployment_events WHERE deployment_id = $1 \
         ORDER BY id DESC LIMIT 1 OFFSET $2)",
    )
    .bind(dep)
    .bind(EVENTS_KEPT - 1)
    .execute(&mut **tx)
    .await
    .map_err(|e| sql_error("pruning deployment events", e))?;
    Ok(())
}

/// A transition inside `tx` (see `DeploymentStore::transition`); the deployment's row is locked.
pub(crate) async fn transition_in(
    tx: &mut Transaction<'static, Postgres>,
    dep: &str,
    event: DeploymentEvent,
    patch: &DeploymentPatch,
) -> StoreResult<Deployment> {
    let now = now_millis();
    let current: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT status, desired_release_id FROM deployments WHERE id = $1 FOR UPDATE",
    )
    .bind(dep)
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| sql_error("reading a deployment", e))?;
    let Some((status, desired)) = current else {
        return Err(StoreError::NotFound { entity: Entity::Deployment, id: dep.to_owned() });
    };
    let (from, to) = transition_statuses(dep, &status, event, patch)?;
    let values = PatchValues::transition(dep, from, to, patch, now)?;
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
            "UPDATE deployment_groups SET rollout_last_done_at = $2 WHERE rollout IS NOT NULL \
             AND id = (SELECT deployment_group_id FROM deployments WHERE id = $1)",
        )
        .bind(dep)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| sql_error("recording the end of an update", e))?;
    }

    if let Some(reason) = event_reason(from, to, event, patch, desired.as_deref()) {
        sqlx::query(
            "INSERT INTO deployment_events (deployment_id, from_status, to_status, reason, detail, at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
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

    fetch_deployment(tx, dep).await?.ok_or_else(|| {
        StoreError::Database(format!("deployment {dep} vanished during a transition"))
    })
}

impl PostgresStore {
    /// One attempt at `DeploymentStore::transition`.
    pub(crate) async fn transition_once(
        &self,
        dep: &str,
        event: DeploymentEvent,
        patch: &DeploymentPatch,
    ) -> StoreResult<Deployment> {
        let mut tx = self.begin("transitioning a deployment").await?;
        let after = transition_in(&mut tx, dep, event, patch).await?;
        tx.commit().await.map_err(|e| self.error("committing a transition", e))?;
        Ok(after)
    }

    /// See `DeploymentStore::record_report`: one conditional statement, the status condition
    /// is the whole check.
    pub(crate) async fn report(
        &self,
        deployment: &Id,
        status: DeploymentStatus,
        patch: &DeploymentPatch,
    ) -> StoreResult<Option<Deployment>> {
        let values = PatchValues::report(deployment.as_str(), status, patch, now_millis())?;
        bind_patch!(
            sqlx::query_as::<_, DeploymentRow>(patch_deployment_sql!(concat!(
                " RETURNING ",
                deployment_columns!()
            ))),
            values
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|err| {
            if is_foreign_key_violation(&err) {
                missing_release(&patch.current_release_id)
            } else {
                self.error("recording a report", err)
            }
        })?
        .map(DeploymentRow::into_deployment)
        .transpose()
    }

    /// One attempt at `DeploymentStore::begin_update`.
    pub(crate) async fn begin_update_once(
        &self,
        dep: &str,
        now: DateTime<Utc>,
        patch: &DeploymentPatch,
    ) -> StoreResult<BeginUpdate> {
        let mut tx = self.begin("beginning an update").await?;
        // The deployment first, then its group: the order of every transaction here.
        let group: Option<String> = sqlx::query_scalar(
            "SELECT deployment_group_id FROM deployments WHERE id = $1 FOR UPDATE",
        )
        .bind(dep)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.error("reading a deployment", e))?;
        let Some(group) = group else {
            return Err(StoreError::NotFound { entity: Entity::Deployment, id: dep.to_owned() });
        };
        sqlx::query("SELECT 1 FROM deployment_groups WHERE id = $1 FOR UPDATE")
            .bind(&group)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error("locking a deployment's group", e))?;
        let row: Option<RolloutRow> = sqlx::query_as(
            "SELECT g.id, d.retry_requested, g.rollout, g.rollout_batch_begun, \
             g.rollout_last_done_at FROM deployments d \
             JOIN deployment_groups g ON g.id = d.deployment_group_id WHERE d.id = $1",
        )
        .bind(dep)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.error("reading a deployment's rollout", e))?;
        let Some((group, targeted, policy, begun, last_done)) = row else {
            return Err(StoreError::NotFound { entity: Entity::Deployment, id: dep.to_owned() });
        };
        let policy: Option<RolloutPolicy> = match policy {
            Some(json) => Some(from_json("deployment_groups.rollout", &json)?),
            None => None,
        };
        let (updating, failed): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE status = 'updating'), \
             COUNT(*) FILTER (WHERE status = 'update-failed') \
             FROM deployments WHERE deployment_group_id = $1 \
             AND status IN ('updating', 'update-failed')",
        )
        .bind(&group)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.error("counting a group's updates", e))?;
        let last_done_at = match last_done {
            Some(millis) => Some(time("deployment_groups.rollout_last_done_at", millis)?),
            None => None,
        };
        let count = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        let state = GroupRollout {
            targeted,
            updating: count(updating),
            failed: count(failed),
            batch_begun: count(begun),
            last_done_at,
        };
        match RolloutPolicy::decide(policy.as_ref(), &state, now) {
            RolloutDecision::Hold { until, reason } => Ok(BeginUpdate::Held { until, reason }),
            RolloutDecision::Begin { batch_begun } => {
                if let Some(begun) = batch_begun {
                    sqlx::query(
                        "UPDATE deployment_groups SET rollout_batch_begun = $2 WHERE id = $1",
                    )
                    .bind(&group)
                    .bind(i64::from(begun))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.error("counting a batch", e))?;
                }
                let after =
                    transition_in(&mut tx, dep, DeploymentEvent::BeginUpdate, patch).await?;
                tx.commit().await.map_err(|e| self.error("committing a transition", e))?;
                Ok(BeginUpdate::Begun(Box::new(after)))
            }
        }
    }

    /// See `DeploymentStore::deployment_events`.
    pub(crate) async fn events(
        &self,
        deployment: &Id,
        limit: u32,
    ) -> StoreResult<Vec<DeploymentEventRecord>> {
        let dep = deployment.as_str();
        let limit = PageRequest { limit, cursor: None }.effective_limit();
        let mut tx = self.begin_snapshot("reading events").await?;
        require_deployment(&mut tx, dep).await?;
        let rows = sqlx::query_as::<_, EventRow>(concat!(
            "SELECT ",
            event_columns!(),
            " FROM deployment_events WHERE deployment_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(dep)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.error("reading events", e))?;
        drop(tx);
        rows.into_iter().map(EventRow::into_record).collect()
    }
}
