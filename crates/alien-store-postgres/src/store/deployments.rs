//! Deployments: creation (name uniqueness and `maxDeployments` under the group's row lock, the
//! desired release, the sealed token and secret variables, all in one transaction), reads and
//! filtered lists, the unsealing of variables and the token for injection only, and deletion
//! with the revocation of its tokens. The [`DeploymentStore`] implementation is here; status
//! changes, rollouts, leases and groups live in their own modules and are called from it.

use std::time::Duration;

use alien_core::{
    Deployment, DeploymentEvent, DeploymentEventRecord, DeploymentGroup, DeploymentStatus,
    EnvironmentVariable, Id, RawToken, RolloutPolicy,
};
use alien_store::codec::{into_page, limit_of, now_millis, opt_from_json, page_start};
use alien_store::seal::{open_token, open_variables, seal_token, seal_variable};
use alien_store::sql::insert::{DeploymentValues, bind_new_deployment};
use alien_store::sql::rows::{DeploymentRow, ReleaseRow, deployment_columns, deployment_inputs};
use alien_store::sql::{check_capacity, deployment_token, name_conflict};
use alien_store::{
    AcquireFilter, BeginUpdate, DeploymentFilter, DeploymentInputs, DeploymentPatch,
    DeploymentStore, Entity, NewDeployment, Page, PageRequest, StoreError, StoreResult,
};
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use sqlx::postgres::PgConnection;

use super::releases::RELEASE_BY_ID;
use super::tokens::insert_token;
use super::{PostgresStore, is_unique_violation, retrying, sql_error};

/// One deployment, read through `conn` (the pool's, or a transaction's).
pub(crate) async fn fetch_deployment(
    conn: &mut PgConnection,
    deployment: &str,
) -> StoreResult<Option<Deployment>> {
    sqlx::query_as::<_, DeploymentRow>(concat!(
        "SELECT ",
        deployment_columns!(),
        " FROM deployments WHERE id = $1"
    ))
    .bind(deployment)
    .fetch_optional(conn)
    .await
    .map_err(|e| sql_error("reading a deployment", e))?
    .map(DeploymentRow::into_deployment)
    .transpose()
}

const INSERT_DEPLOYMENT: &str = "INSERT INTO deployments (id, name, platform, deployment_model, \
     deployment_group_id, status, desired_release_id, retry_requested, region, stack_settings, \
     target, token, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE, $8, $9, $10, $11, \
     GREATEST($12, COALESCE((SELECT MAX(created_at) FROM deployments), 0) + 1), $12)";

impl PostgresStore {
    /// One attempt at creating a deployment (see `DeploymentStore::create_deployment`).
    async fn insert_deployment(&self, new: &NewDeployment) -> StoreResult<Deployment> {
        let dep = new.id.as_str();
        let group = new.deployment_group_id.as_str();
        let now = now_millis();
        let mut tx = self.begin("creating a deployment").await?;
        // A release being stored finishes first (and this deployment gets it); creations do not
        // wait on each other here.
        sqlx::query("LOCK TABLE releases IN SHARE MODE")
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error("waiting for releases being stored", e))?;
        // The group's row lock makes the name check and the count one step per group.
        let max: Option<i64> = sqlx::query_scalar(
            "SELECT max_deployments FROM deployment_groups WHERE id = $1 FOR UPDATE",
        )
        .bind(group)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.error("reading the deployment group", e))?;
        let Some(max) = max else {
            return Err(StoreError::NotFound {
                entity: Entity::DeploymentGroup,
                id: group.to_owned(),
            });
        };
        let held: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deployments WHERE deployment_group_id = $1")
                .bind(group)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.error("counting the group's deployments", e))?;
        check_capacity(new, held, max)?;
        let taken: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM deployments WHERE deployment_group_id = $1 AND name = $2",
        )
        .bind(group)
        .bind(&new.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.error("checking the deployment name", e))?;
        if taken.is_some() {
            return Err(name_conflict(new));
        }
        let desired: Option<String> = sqlx::query_scalar(
            "SELECT release_id FROM release_platforms WHERE platform = $1 \
             ORDER BY created_at DESC, release_id DESC LIMIT 1",
        )
        .bind(new.platform.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.error("finding the latest release for the platform", e))?;

        let sealed_token = seal_token(&self.sealer, dep, &new.token.raw)?;
        let values = DeploymentValues::new(new, desired.as_deref(), &sealed_token, now)?;
        bind_new_deployment!(sqlx::query(INSERT_DEPLOYMENT), values)
            .execute(&mut *tx)
            .await
            .map_err(|err| {
                if is_unique_violation(&err, "deployments_by_group_name") {
                    name_conflict(new)
                } else if is_unique_violation(&err, "deployments_pkey") {
                    StoreError::Conflict(format!("deployment {dep} already exists"))
                } else {
                    self.error("storing a deployment", err)
                }
            })?;

        for (position, var) in new.environment_variables.iter().enumerate() {
            let (kind, value) = seal_variable(&self.sealer, dep, var)?;
            sqlx::query(
                "INSERT INTO deployment_variables (deployment_id, position, name, type, value) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(dep)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(&var.name)
            .bind(kind)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(|err| {
                if is_unique_violation(&err, "deployment_variables_pkey") {
                    StoreError::Conflict(format!("variable {} is given twice", var.name))
                } else {
                    self.error("storing a deployment variable", err)
                }
            })?;
        }

        insert_token(&mut tx, &deployment_token(new), now).await?;

        sqlx::query(
            "INSERT INTO deployment_events (deployment_id, from_status, to_status, reason, detail, at) \
             VALUES ($1, NULL, $2, 'created', NULL, $3)",
        )
        .bind(dep)
        .bind(DeploymentStatus::Pending.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error("recording the creation event", e))?;

        let created = fetch_deployment(&mut tx, dep).await?.ok_or_else(|| {
            StoreError::Database(format!("deployment {dep} vanished while being created"))
        })?;
        tx.commit().await.map_err(|e| self.error("committing a deployment", e))?;
        Ok(created)
    }

    /// One attempt at deleting a deployment (see `DeploymentStore::delete_deployment`).
    async fn event(
        &self,
        dep: &str,
        reason: &str,
        detail: &serde_json::Value,
    ) -> StoreResult<bool> {
        let detail = serde_json::to_string(detail)
            .map_err(|e| StoreError::Database(format!("encoding the event detail: {e}")))?;
        let mut tx = self.begin("recording a deployment event").await?;
        let inserted = sqlx::query(
            "INSERT INTO deployment_events (deployment_id, from_status, to_status, reason, detail, at) \
             SELECT id, status, status, $2, $3, $4 FROM deployments WHERE id = $1",
        )
        .bind(dep)
        .bind(reason)
        .bind(detail)
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error("recording a deployment event", e))?
        .rows_affected();
        if inserted > 0 {
            super::transitions::prune_events(&mut tx, dep).await?;
        }
        tx.commit().await.map_err(|e| self.error("committing a deployment event", e))?;
        Ok(inserted > 0)
    }

    async fn remove_deployment(&self, dep: &str) -> StoreResult<bool> {
        let now = now_millis();
        let mut tx = self.begin("deleting a deployment").await?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE")
                .bind(dep)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.error("reading a deployment", e))?;
        if exists.is_none() {
            return Ok(false);
        }
        for (sql, what) in [
            ("DELETE FROM deployment_events WHERE deployment_id = $1", "deleting events"),
            ("DELETE FROM deployment_variables WHERE deployment_id = $1", "deleting variables"),
            ("DELETE FROM deployments WHERE id = $1", "deleting the deployment"),
        ] {
            sqlx::query(sql).bind(dep).execute(&mut *tx).await.map_err(|e| self.error(what, e))?;
        }
        sqlx::query(
            "UPDATE tokens SET revoked_at = $2 WHERE deployment_id = $1 AND revoked_at IS NULL",
        )
        .bind(dep)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error("revoking the deployment's tokens", e))?;
        super::tokens::announce_revocation(self, &mut tx).await?;
        tx.commit().await.map_err(|e| self.error("committing a deletion", e))?;
        self.forget_tokens();
        Ok(true)
    }
}

#[async_trait::async_trait]
impl DeploymentStore for PostgresStore {
    async fn create_group(&self, name: &str, max_deployments: u32) -> StoreResult<DeploymentGroup> {
        self.create_group_row(name, max_deployments).await
    }

    async fn get_group(&self, group: &Id) -> StoreResult<Option<DeploymentGroup>> {
        self.group_row(group).await
    }

    async fn list_groups(&self, page: &PageRequest) -> StoreResult<Page<DeploymentGroup>> {
        self.group_rows(page).await
    }

    async fn create_deployment(&self, new: NewDeployment) -> StoreResult<Deployment> {
        retrying(|| self.insert_deployment(&new)).await
    }

    async fn get_deployment(&self, deployment: &Id) -> StoreResult<Option<Deployment>> {
        let mut conn =
            self.pool.acquire().await.map_err(|e| self.error("reading a deployment", e))?;
        fetch_deployment(&mut conn, deployment.as_str()).await
    }

    async fn list_deployments(
        &self,
        filter: &DeploymentFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Deployment>> {
        let (after_millis, after_id) = page_start("d", page, i64::MIN)?;
        let limit = limit_of(page);
        // Only fixed fragments are appended; every value is bound.
        let mut query = QueryBuilder::<sqlx::Postgres>::new(concat!(
            "SELECT ",
            deployment_columns!(),
            " FROM deployments WHERE (created_at, id) > ("
        ));
        query.push_bind(after_millis).push(", ").push_bind(after_id).push(")");
        if let Some(group) = &filter.deployment_group_id {
            query.push(" AND deployment_group_id = ").push_bind(group.to_string());
        }
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(platform) = filter.platform {
            query.push(" AND platform = ").push_bind(platform.as_str());
        }
        if let Some(name) = &filter.name {
            query.push(" AND name = ").push_bind(name.clone());
        }
        query.push(" ORDER BY created_at, id LIMIT ").push_bind(limit + 1);
        let rows = query
            .build_query_as::<DeploymentRow>()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error("listing deployments", e))?;
        into_page(rows, limit, DeploymentRow::cursor, DeploymentRow::into_deployment)
    }

    async fn deployment_environment(
        &self,
        deployment: &Id,
    ) -> StoreResult<Vec<EnvironmentVariable>> {
        let dep = deployment.as_str();
        let mut tx = self.begin_snapshot("reading variables").await?;
        require_deployment(&mut tx, dep).await?;
        let rows = variable_rows(&mut tx, dep).await?;
        drop(tx);
        open_variables(&self.sealer, dep, rows)
    }

    async fn deployment_token(&self, deployment: &Id) -> StoreResult<Option<RawToken>> {
        let dep = deployment.as_str();
        let sealed: Option<Option<String>> =
            sqlx::query_scalar("SELECT token FROM deployments WHERE id = $1")
                .bind(dep)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.error("reading a deployment token", e))?;
        open_token(&self.sealer, dep, sealed.flatten())
    }

    async fn deployment_inputs(
        &self,
        deployment: &Id,
        release: Option<&Id>,
    ) -> StoreResult<DeploymentInputs> {
        const WHAT: &str = "reading what a deployment step works with";
        let dep = deployment.as_str();
        let mut tx = self.begin_snapshot(WHAT).await?;
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT token, target FROM deployments WHERE id = $1")
                .bind(dep)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.error(WHAT, e))?;
        let Some((token, target)) = row else {
            return Err(StoreError::NotFound { entity: Entity::Deployment, id: dep.to_owned() });
        };
        let release = match release {
            Some(release) => sqlx::query_as::<_, ReleaseRow>(RELEASE_BY_ID)
                .bind(release.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.error(WHAT, e))?,
            None => None,
        };
        let variables = variable_rows(&mut tx, dep).await?;
        drop(tx);
        deployment_inputs(&self.sealer, dep, release, variables, token, target)
    }

    async fn deployment_target(&self, deployment: &Id) -> StoreResult<Option<serde_json::Value>> {
        let found: Option<Option<String>> =
            sqlx::query_scalar("SELECT target FROM deployments WHERE id = $1")
                .bind(deployment.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.error("reading a deployment's target", e))?;
        let Some(target) = found else {
            return Err(StoreError::NotFound {
                entity: Entity::Deployment,
                id: deployment.to_string(),
            });
        };
        opt_from_json("deployments.target", target.as_deref())
    }

    async fn transition(
        &self,
        deployment: &Id,
        event: DeploymentEvent,
        patch: DeploymentPatch,
    ) -> StoreResult<Deployment> {
        retrying(|| self.transition_once(deployment.as_str(), event, &patch)).await
    }

    async fn record_report(
        &self,
        deployment: &Id,
        status: DeploymentStatus,
        patch: DeploymentPatch,
    ) -> StoreResult<Option<Deployment>> {
        retrying(|| self.report(deployment, status, &patch)).await
    }

    async fn begin_update(
        &self,
        deployment: &Id,
        now: DateTime<Utc>,
        patch: DeploymentPatch,
    ) -> StoreResult<BeginUpdate> {
        retrying(|| self.begin_update_once(deployment.as_str(), now, &patch)).await
    }

    async fn set_group_rollout(
        &self,
        group: &Id,
        policy: Option<RolloutPolicy>,
    ) -> StoreResult<DeploymentGroup> {
        self.set_rollout(group, policy).await
    }

    async fn delete_deployment(&self, deployment: &Id) -> StoreResult<bool> {
        retrying(|| self.remove_deployment(deployment.as_str())).await
    }

    async fn record_event(
        &self,
        deployment: &Id,
        reason: &str,
        detail: serde_json::Value,
    ) -> StoreResult<bool> {
        retrying(|| self.event(deployment.as_str(), reason, &detail)).await
    }

    async fn deployment_events(
        &self,
        deployment: &Id,
        limit: u32,
    ) -> StoreResult<Vec<DeploymentEventRecord>> {
        self.events(deployment, limit).await
    }

    async fn acquire_due_matching(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        stale_after: Duration,
        filter: &AcquireFilter,
    ) -> StoreResult<Vec<Deployment>> {
        retrying(|| self.acquire(owner, now, limit, stale_after, filter)).await
    }

    async fn release_leases_of(&self, owner: &str) -> StoreResult<u64> {
        self.release_all_leases(owner).await
    }

    async fn renew_lease(
        &self,
        deployment: &Id,
        owner: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.renew(deployment, owner, now).await
    }

    async fn silent_pull_deployments(
        &self,
        silent_since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Id>> {
        self.silent_pull(silent_since, limit).await
    }

    async fn record_heartbeat(&self, deployment: &Id, at: DateTime<Utc>) -> StoreResult<bool> {
        self.heartbeat(deployment, at).await
    }

    async fn record_steady_heartbeat(
        &self,
        deployment: &Id,
        report: &alien_store::SteadyReport,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.steady_heartbeat(deployment, report, at).await
    }

    async fn save_progress(
        &self,
        deployment: &Id,
        owner: &str,
        stack_state: &serde_json::Value,
    ) -> StoreResult<bool> {
        self.progress(deployment, owner, stack_state).await
    }

    async fn release_lease(
        &self,
        deployment: &Id,
        owner: &str,
        next_step_after: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        self.release_one_lease(deployment, owner, next_step_after).await
    }
}

/// A deployment's variables as stored (`name`, `type`, sealed or plain `value`), in order.
async fn variable_rows(
    conn: &mut PgConnection,
    dep: &str,
) -> StoreResult<Vec<(String, String, String)>> {
    sqlx::query_as(
        "SELECT name, type, value FROM deployment_variables WHERE deployment_id = $1 \
         ORDER BY position",
    )
    .bind(dep)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| sql_error("reading variables", e))
}

/// `NotFound` unless the deployment `dep` exists.
pub(crate) async fn require_deployment(conn: &mut PgConnection, dep: &str) -> StoreResult<()> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM deployments WHERE id = $1")
        .bind(dep)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| sql_error("reading a deployment", e))?;
    match exists {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound { entity: Entity::Deployment, id: dep.to_owned() }),
    }
}
