//! Deployment groups: unique names, a `maxDeployments` limit, the deployment count read with
//! the group, and the rollout policy (its gating lives in `transitions`).

use alien_core::{DeploymentGroup, Id, IdKind, RolloutPolicy};
use alien_store::codec::{into_page, limit_of, now_millis, page_start, to_json};
use alien_store::sql::rows::{GroupRow, group_select, new_group};
use alien_store::{Entity, Page, PageRequest, StoreError, StoreResult};

use super::{PostgresStore, is_unique_violation};

// Increasing, so that "oldest first" is the creation order (ties, from two replicas in one
// millisecond, are ordered by id).
const INSERT_GROUP: &str = "INSERT INTO deployment_groups (id, name, max_deployments, created_at) \
     VALUES ($1, $2, $3, GREATEST($4, COALESCE((SELECT MAX(created_at) FROM deployment_groups), 0) + 1)) \
     RETURNING created_at";

impl PostgresStore {
    /// See `DeploymentStore::create_group`.
    pub(crate) async fn create_group_row(
        &self,
        name: &str,
        max_deployments: u32,
    ) -> StoreResult<DeploymentGroup> {
        let group = Id::try_new(IdKind::DeploymentGroup)
            .map_err(|e| StoreError::Database(format!("generating a group id: {e}")))?;
        let created_at: i64 = sqlx::query_scalar(INSERT_GROUP)
            .bind(group.as_str())
            .bind(name)
            .bind(i64::from(max_deployments))
            .bind(now_millis())
            .fetch_one(&self.pool)
            .await
            .map_err(|err| {
                if is_unique_violation(&err, "deployment_groups_by_name") {
                    StoreError::GroupNameConflict { name: name.to_owned() }
                } else {
                    self.error("creating a deployment group", err)
                }
            })?;
        new_group(group, name, max_deployments, created_at)
    }

    /// See `DeploymentStore::get_group`.
    pub(crate) async fn group_row(&self, group: &Id) -> StoreResult<Option<DeploymentGroup>> {
        sqlx::query_as::<_, GroupRow>(concat!(group_select!(), " WHERE g.id = $1"))
            .bind(group.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error("reading a deployment group", e))?
            .map(GroupRow::into_group)
            .transpose()
    }

    /// See `DeploymentStore::list_groups`.
    pub(crate) async fn group_rows(
        &self,
        page: &PageRequest,
    ) -> StoreResult<Page<DeploymentGroup>> {
        let (after_millis, after_id) = page_start("g", page, i64::MIN)?;
        let limit = limit_of(page);
        let rows = sqlx::query_as::<_, GroupRow>(concat!(
            group_select!(),
            " WHERE (g.created_at, g.id) > ($1, $2) ORDER BY g.created_at, g.id LIMIT $3"
        ))
        .bind(after_millis)
        .bind(&after_id)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error("listing deployment groups", e))?;
        into_page(rows, limit, GroupRow::cursor, GroupRow::into_group)
    }

    /// See `DeploymentStore::set_group_rollout`.
    pub(crate) async fn set_rollout(
        &self,
        group: &Id,
        rollout: Option<RolloutPolicy>,
    ) -> StoreResult<DeploymentGroup> {
        let json = match &rollout {
            Some(policy) => Some(to_json("the rollout policy", policy)?),
            None => None,
        };
        let updated = sqlx::query("UPDATE deployment_groups SET rollout = $2 WHERE id = $1")
            .bind(group.as_str())
            .bind(json)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error("setting a rollout policy", e))?
            .rows_affected();
        let not_found =
            || StoreError::NotFound { entity: Entity::DeploymentGroup, id: group.to_string() };
        if updated == 0 {
            return Err(not_found());
        }
        self.group_row(group).await?.ok_or_else(not_found)
    }
}
