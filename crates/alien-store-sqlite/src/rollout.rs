//! Staged rollouts: what a group's rollout stands at is read, `RolloutPolicy::decide` (the rule,
//! in alien-core) answers whether an `update-pending` deployment may begin its update now, and the
//! batch count and the transition are written in the same transaction; and the setting of the
//! policy.

use alien_core::{
    DeploymentEvent, DeploymentGroup, GroupRollout, Id, RolloutDecision, RolloutPolicy,
};
use alien_store::{BeginUpdate, DeploymentPatch, StoreError, StoreResult};
use chrono::{DateTime, Utc};

use crate::SqliteStore;
use crate::codec::{from_json, time, to_json};
use crate::error::sql_error;
use crate::groups;
use crate::transitions::transition_in;

/// A deployment's group, whether it was targeted (`retry_requested`), and the group's rollout
/// policy (JSON), updates begun in its current batch and end of its last update (millis).
type RolloutRow = (String, i64, Option<String>, i64, Option<i64>);

/// See `DeploymentStore::begin_update`.
pub(crate) async fn begin_update(
    store: &SqliteStore,
    deployment: &Id,
    now: DateTime<Utc>,
    patch: DeploymentPatch,
) -> StoreResult<BeginUpdate> {
    let dep = deployment.as_str();
    let mut tx = store.begin("beginning an update").await?;
    let row: Option<RolloutRow> = sqlx::query_as(
        "SELECT g.id, d.retry_requested, g.rollout, g.rollout_batch_begun, g.rollout_last_done_at \
         FROM deployments d JOIN deployment_groups g ON g.id = d.deployment_group_id WHERE d.id = ?1",
    )
    .bind(dep)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| sql_error("reading a deployment's rollout", e))?;
    let Some((group, targeted, policy, begun, last_done)) = row else {
        return Err(StoreError::NotFound {
            entity: alien_store::Entity::Deployment,
            id: dep.to_owned(),
        });
    };
    let policy: Option<RolloutPolicy> = match policy {
        Some(json) => Some(from_json("deployment_groups.rollout", &json)?),
        None => None,
    };
    let (updating, failed): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(status = 'updating'), 0), COALESCE(SUM(status = 'update-failed'), 0) \
         FROM deployments WHERE deployment_group_id = ?1 AND status IN ('updating', 'update-failed')",
    )
    .bind(&group)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| sql_error("counting a group's updates", e))?;
    let last_done_at = match last_done {
        Some(millis) => Some(time("deployment_groups.rollout_last_done_at", millis)?),
        None => None,
    };
    let count = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    let state = GroupRollout {
        targeted: targeted != 0,
        updating: count(updating),
        failed: count(failed),
        batch_begun: count(begun),
        last_done_at,
    };
    match RolloutPolicy::decide(policy.as_ref(), &state, now) {
        RolloutDecision::Hold { until, reason } => Ok(BeginUpdate::Held { until, reason }),
        RolloutDecision::Begin { batch_begun } => {
            if let Some(begun) = batch_begun {
                sqlx::query("UPDATE deployment_groups SET rollout_batch_begun = ?2 WHERE id = ?1")
                    .bind(&group)
                    .bind(i64::from(begun))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| sql_error("counting a batch", e))?;
            }
            let after = transition_in(&mut tx, dep, DeploymentEvent::BeginUpdate, patch).await?;
            tx.commit().await.map_err(|e| sql_error("committing a transition", e))?;
            Ok(BeginUpdate::Begun(Box::new(after)))
        }
    }
}

/// See `DeploymentStore::set_group_rollout`.
pub(crate) async fn set_group_rollout(
    store: &SqliteStore,
    group: &Id,
    rollout: Option<RolloutPolicy>,
) -> StoreResult<DeploymentGroup> {
    let json = match &rollout {
        Some(policy) => Some(to_json("the rollout policy", policy)?),
        None => None,
    };
    let updated = sqlx::query("UPDATE deployment_groups SET rollout = ?2 WHERE id = ?1")
        .bind(group.as_str())
        .bind(json)
        .execute(&store.writer)
        .await
        .map_err(|e| sql_error("setting a rollout policy", e))?
        .rows_affected();
    if updated == 0 {
        return Err(StoreError::NotFound {
            entity: alien_store::Entity::DeploymentGroup,
            id: group.to_string(),
        });
    }
    groups::get_group(store, group).await?.ok_or_else(|| StoreError::NotFound {
        entity: alien_store::Entity::DeploymentGroup,
        id: group.to_string(),
    })
}
