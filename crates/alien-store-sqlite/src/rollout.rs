//! Staged rollouts: whether an `update-pending` deployment may begin its update now under its
//! group's policy (batch size, delay between batches, pause on failure), counted in the group row
//! inside the same transaction as the transition, and the setting of that policy.

use alien_core::{DeploymentEvent, DeploymentGroup, Id, RolloutPolicy};
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
    // No policy, or a deployment-targeted redeploy or retry (a rollback): at once.
    let Some(policy) = policy.filter(|_| targeted == 0) else {
        let begun = transition_in(&mut tx, dep, DeploymentEvent::BeginUpdate, patch).await?;
        tx.commit().await.map_err(|e| sql_error("committing a transition", e))?;
        return Ok(BeginUpdate::Begun(Box::new(begun)));
    };
    let (updating, failed): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(status = 'updating'), 0), COALESCE(SUM(status = 'update-failed'), 0) \
         FROM deployments WHERE deployment_group_id = ?1 AND status IN ('updating', 'update-failed')",
    )
    .bind(&group)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| sql_error("counting a group's updates", e))?;
    if policy.pause_on_failure() && failed > 0 {
        return Ok(BeginUpdate::Held {
            until: None,
            reason: format!("the group's rollout is paused: {failed} deployment(s) update-failed"),
        });
    }
    let size = i64::from(policy.batch_size());
    let mut begun = begun;
    if begun >= size {
        // The batch is full: the next one starts once none of it is updating, after the delay.
        if updating > 0 {
            return Ok(BeginUpdate::Held {
                until: None,
                reason: format!("the group's batch of {size} is updating"),
            });
        }
        let delay = i64::from(policy.batch_delay_secs()) * 1000;
        let ready_at = last_done.unwrap_or(0).saturating_add(delay);
        if now.timestamp_millis() < ready_at {
            return Ok(BeginUpdate::Held {
                until: Some(time("deployment_groups.rollout_last_done_at", ready_at)?),
                reason: format!(
                    "the next batch starts {}s after the previous one",
                    policy.batch_delay_secs()
                ),
            });
        }
        begun = 0;
    }
    if updating >= size {
        // Updates of an earlier rollout still run (a newer release reset the batch).
        return Ok(BeginUpdate::Held {
            until: None,
            reason: format!("{updating} deployments of the group are updating"),
        });
    }
    sqlx::query("UPDATE deployment_groups SET rollout_batch_begun = ?2 WHERE id = ?1")
        .bind(&group)
        .bind(begun + 1)
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_error("counting a batch", e))?;
    let after = transition_in(&mut tx, dep, DeploymentEvent::BeginUpdate, patch).await?;
    tx.commit().await.map_err(|e| sql_error("committing a transition", e))?;
    Ok(BeginUpdate::Begun(Box::new(after)))
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
