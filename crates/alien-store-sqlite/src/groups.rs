//! Deployment groups: unique names, a `maxDeployments` limit, the deployment count read with
//! the group, and the rollout policy (its gating lives in [`crate::rollout`]).

use alien_core::{DeploymentGroup, Id, IdKind};
use alien_store::sql::rows::{GroupRow, group_select, new_group};
use alien_store::{Page, PageRequest, StoreError, StoreResult};

use crate::SqliteStore;
use crate::codec::{into_page, limit_of, now_millis, page_start};
use crate::error::{is_unique_violation, sql_error};

/// See `DeploymentStore::create_group`.
pub(crate) async fn create_group(
    store: &SqliteStore,
    name: &str,
    max_deployments: u32,
) -> StoreResult<DeploymentGroup> {
    let group = Id::try_new(IdKind::DeploymentGroup)
        .map_err(|e| StoreError::Database(format!("generating a group id: {e}")))?;
    // Strictly increasing, so that "oldest first" is the creation order.
    let created_at: i64 = sqlx::query_scalar(
        "INSERT INTO deployment_groups (id, name, max_deployments, created_at) VALUES (?1, ?2, ?3, \
         MAX(?4, COALESCE((SELECT MAX(created_at) FROM deployment_groups), 0) + 1)) \
         RETURNING created_at",
    )
    .bind(group.as_str())
    .bind(name)
    .bind(i64::from(max_deployments))
    .bind(now_millis())
    .fetch_one(&store.writer)
    .await
    .map_err(|err| {
        if is_unique_violation(&err, "deployment_groups.name") {
            StoreError::GroupNameConflict { name: name.to_owned() }
        } else {
            sql_error("creating a deployment group", err)
        }
    })?;
    new_group(group, name, max_deployments, created_at)
}

/// See `DeploymentStore::get_group`.
pub(crate) async fn get_group(
    store: &SqliteStore,
    group: &Id,
) -> StoreResult<Option<DeploymentGroup>> {
    sqlx::query_as::<_, GroupRow>(concat!(group_select!(), " WHERE g.id = ?1"))
        .bind(group.as_str())
        .fetch_optional(&store.readers)
        .await
        .map_err(|e| sql_error("reading a deployment group", e))?
        .map(GroupRow::into_group)
        .transpose()
}

/// See `DeploymentStore::list_groups`.
pub(crate) async fn list_groups(
    store: &SqliteStore,
    page: &PageRequest,
) -> StoreResult<Page<DeploymentGroup>> {
    let (after_millis, after_id) = page_start("g", page, i64::MIN)?;
    let limit = limit_of(page);
    let rows = sqlx::query_as::<_, GroupRow>(concat!(
        group_select!(),
        " WHERE (g.created_at, g.id) > (?1, ?2) ORDER BY g.created_at, g.id LIMIT ?3"
    ))
    .bind(after_millis)
    .bind(&after_id)
    .bind(limit + 1)
    .fetch_all(&store.readers)
    .await
    .map_err(|e| sql_error("listing deployment groups", e))?;
    into_page(rows, limit, GroupRow::cursor, GroupRow::into_group)
}
