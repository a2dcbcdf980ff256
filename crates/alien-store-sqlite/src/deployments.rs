//! Deployments: creation (name uniqueness, `maxDeployments`, the desired release, the sealed token
//! and secret variables, all in one transaction), reads and filtered lists, the unsealing of
//! variables and the token for injection only, and deletion with the revocation of its tokens.
//! The [`DeploymentStore`] implementation is here; status changes, rollouts, leases and groups
//! live in their own modules and are called from it.

use std::time::{Duration, Instant};

use alien_core::{
    Deployment, DeploymentEvent, DeploymentEventRecord, DeploymentGroup, DeploymentStatus,
    EnvironmentVariable, Id, RawToken, RolloutPolicy,
};
use alien_store::seal::{open_token, open_variables, seal_token, seal_variable};
use alien_store::sql::insert::{DeploymentValues, bind_new_deployment};
use alien_store::sql::rows::{DeploymentRow, ReleaseRow, deployment_columns, deployment_inputs};
use alien_store::sql::{check_capacity, deployment_token, name_conflict};
use alien_store::{
    AcquireFilter, BeginUpdate, DeploymentFilter, DeploymentInputs, DeploymentPatch,
    DeploymentStore, NewDeployment, Page, PageRequest, StoreError, StoreResult,
};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection};

use crate::SqliteStore;
use crate::codec::{into_page, limit_of, now_millis, page_start};
use crate::deployment_cache::Lookup;
use crate::error::{is_unique_violation, sql_error};
use crate::releases::RELEASE_BY_ID;
use crate::tokens::insert_token;
use crate::{groups, leases, rollout, transitions};

/// A row of `deployments` with its rowid (what the deployment cache knows rows by) and the bytes
/// of its stored state and error (what the cache weighs it by).
#[derive(sqlx::FromRow)]
struct RowidDeploymentRow {
    rowid: i64,
    stored_bytes: i64,
    #[sqlx(flatten)]
    row: DeploymentRow,
}

impl SqliteStore {
    /// Reads `PRAGMA data_version` on the writer in the background, for the deployment cache to
    /// see another process's writes (see `deployment_cache`).
    fn check_data_version(&self) {
        let (writer, cache) = (self.writer.clone(), self.deployments.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let version =
                sqlx::query_scalar::<_, i64>("PRAGMA data_version").fetch_one(&writer).await.ok();
            cache.checked(version, started);
        });
    }

    /// The deployment as stored, from the cache or the database (then kept in the cache).
    async fn read_deployment(&self, deployment: &Id) -> StoreResult<Option<Deployment>> {
        let (found, check) = self.deployments.get(deployment.as_str(), Instant::now());
        if check {
            self.check_data_version();
        }
        let generation = match found {
            Lookup::Hit(found) => return Ok(Some(*found)),
            Lookup::Miss { generation } => generation,
        };
        let row = sqlx::query_as::<_, RowidDeploymentRow>(concat!(
            "SELECT rowid, COALESCE(length(CAST(stack_state AS BLOB)), 0) \
             + COALESCE(length(CAST(error AS BLOB)), 0) AS stored_bytes, ",
            deployment_columns!(),
            " FROM deployments WHERE id = ?1"
        ))
        .bind(deployment.as_str())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| sql_error("reading a deployment", e))?;
        let Some(RowidDeploymentRow { rowid, stored_bytes, row }) = row else { return Ok(None) };
        let found = row.into_deployment()?;
        let bytes = usize::try_from(stored_bytes).unwrap_or(usize::MAX);
        self.deployments.put(generation, rowid, bytes, &found);
        Ok(Some(found))
    }
}

/// One deployment, read through `conn` (a reader, or the writer's transaction).
pub(crate) async fn fetch_deployment(
    conn: &mut SqliteConnection,
    deployment: &str,
) -> StoreResult<Option<Deployment>> {
    sqlx::query_as::<_, DeploymentRow>(concat!(
        "SELECT ",
        deployment_columns!(),
        " FROM deployments WHERE id = ?1"
    ))
    .bind(deployment)
    .fetch_optional(conn)
    .await
    .map_err(|e| sql_error("reading a deployment", e))?
    .map(DeploymentRow::into_deployment)
    .transpose()
}

#[async_trait::async_trait]
impl DeploymentStore for SqliteStore {
    async fn create_group(&self, name: &str, max_deployments: u32) -> StoreResult<DeploymentGroup> {
        groups::create_group(self, name, max_deployments).await
    }

    async fn get_group(&self, group: &Id) -> StoreResult<Option<DeploymentGroup>> {
        groups::get_group(self, group).await
    }

    async fn list_groups(&self, page: &PageRequest) -> StoreResult<Page<DeploymentGroup>> {
        groups::list_groups(self, page).await
    }

    async fn create_deployment(&self, new: NewDeployment) -> StoreResult<Deployment> {
        let dep = new.id.as_str();
        let group = new.deployment_group_id.as_str();
        let now = now_millis();
        let sealer = self.sealer.read().await;
        let mut tx = self.begin("creating a deployment").await?;

        let max: Option<i64> =
            sqlx::query_scalar("SELECT max_deployments FROM deployment_groups WHERE id = ?1")
                .bind(group)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| sql_error("reading the deployment group", e))?;
        let Some(max) = max else {
            return Err(StoreError::NotFound {
                entity: alien_store::Entity::DeploymentGroup,
                id: group.to_owned(),
            });
        };
        let held: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deployments WHERE deployment_group_id = ?1")
                .bind(group)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| sql_error("counting the group's deployments", e))?;
        check_capacity(&new, held, max)?;
        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM deployments WHERE deployment_group_id = ?1 AND name = ?2",
        )
        .bind(group)
        .bind(&new.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| sql_error("checking the deployment name", e))?;
        if taken.is_some() {
            return Err(name_conflict(&new));
        }
        let desired: Option<String> = sqlx::query_scalar(
            "SELECT release_id FROM release_platforms WHERE platform = ?1 \
             ORDER BY created_at DESC, release_id DESC LIMIT 1",
        )
        .bind(new.platform.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| sql_error("finding the latest release for the platform", e))?;

        // Strictly increasing, so that "oldest first" is the creation order.
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(created_at) FROM deployments")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| sql_error("reading the newest deployment", e))?;
        let created_at = now.max(last.map_or(0, |l| l.saturating_add(1)));

        let sealed_token = seal_token(&sealer, dep, &new.token.raw)?;
        let values = DeploymentValues::new(&new, desired.as_deref(), &sealed_token, created_at)?;
        bind_new_deployment!(
            sqlx::query(
                "INSERT INTO deployments (id, name, platform, deployment_model, \
                 deployment_group_id, status, desired_release_id, retry_requested, region, \
                 stack_settings, target, token, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10, ?11, ?12, ?12)",
            ),
            values
        )
        .execute(&mut *tx)
        .await
        .map_err(|err| {
            if is_unique_violation(&err, "deployments.deployment_group_id") {
                name_conflict(&new)
            } else if is_unique_violation(&err, "deployments.id") {
                StoreError::Conflict(format!("deployment {dep} already exists"))
            } else {
                sql_error("storing a deployment", err)
            }
        })?;

        for (position, var) in new.environment_variables.iter().enumerate() {
            let (kind, value) = seal_variable(&sealer, dep, var)?;
            sqlx::query(
                "INSERT INTO deployment_variables (deployment_id, position, name, type, value) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(dep)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(&var.name)
            .bind(kind)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(|err| {
                if is_unique_violation(&err, "deployment_variables") {
                    StoreError::Conflict(format!("variable {} is given twice", var.name))
                } else {
                    sql_error("storing a deployment variable", err)
                }
            })?;
        }

        insert_token(&mut tx, &deployment_token(&new), now).await?;

        sqlx::query(
            "INSERT INTO deployment_events (deployment_id, from_status, to_status, reason, detail, at) \
             VALUES (?1, NULL, ?2, 'created', NULL, ?3)",
        )
        .bind(dep)
        .bind(DeploymentStatus::Pending.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_error("recording the creation event", e))?;

        let created = fetch_deployment(&mut tx, dep).await?.ok_or_else(|| {
            StoreError::Database(format!("deployment {dep} vanished while being created"))
        })?;
        tx.commit().await.map_err(|e| sql_error("committing a deployment", e))?;
        Ok(created)
    }

    async fn get_deployment(&self, deployment: &Id) -> StoreResult<Option<Deployment>> {
        let found = self.read_deployment(deployment).await?;
        // A heartbeat time acknowledged but not written yet (see `heartbeats`) is shown.
        let Some(mut found) = found else { return Ok(None) };
        if let Some(at) = self.heartbeats.unwritten(deployment.as_str())?
            && let Some(at) = DateTime::<Utc>::from_timestamp_millis(at)
            && found.last_heartbeat_at.is_none_or(|written| written < at)
        {
            found.last_heartbeat_at = Some(at);
        }
        Ok(Some(found))
    }

    async fn list_deployments(
        &self,
        filter: &DeploymentFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Deployment>> {
        let (after_millis, after_id) = page_start("d", page, i64::MIN)?;
        let limit = limit_of(page);
        // Only fixed fragments are appended; every value is bound.
        let mut sql = String::from(concat!(
            "SELECT ",
            deployment_columns!(),
            " FROM deployments WHERE (created_at, id) > (?, ?)"
        ));
        if filter.deployment_group_id.is_some() {
            sql.push_str(" AND deployment_group_id = ?");
        }
        if filter.status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if filter.platform.is_some() {
            sql.push_str(" AND platform = ?");
        }
        if filter.name.is_some() {
            sql.push_str(" AND name = ?");
        }
        sql.push_str(" ORDER BY created_at, id LIMIT ?");
        let mut query = sqlx::query_as::<_, DeploymentRow>(AssertSqlSafe(sql))
            .bind(after_millis)
            .bind(after_id);
        if let Some(group) = &filter.deployment_group_id {
            query = query.bind(group.as_str());
        }
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(platform) = filter.platform {
            query = query.bind(platform.as_str());
        }
        if let Some(name) = &filter.name {
            query = query.bind(name.as_str());
        }
        let rows = query
            .bind(limit + 1)
            .fetch_all(&self.readers)
            .await
            .map_err(|e| sql_error("listing deployments", e))?;
        into_page(rows, limit, DeploymentRow::cursor, DeploymentRow::into_deployment)
    }

    async fn deployment_environment(
        &self,
        deployment: &Id,
    ) -> StoreResult<Vec<EnvironmentVariable>> {
        let dep = deployment.as_str();
        let sealer = self.sealer.read().await;
        let mut conn =
            self.readers.acquire().await.map_err(|e| sql_error("reading variables", e))?;
        let mut tx = conn.begin().await.map_err(|e| sql_error("reading variables", e))?;
        require_deployment(&mut tx, dep).await?;
        let rows = variable_rows(&mut tx, dep).await?;
        drop(tx);
        open_variables(&sealer, dep, rows)
    }

    async fn deployment_token(&self, deployment: &Id) -> StoreResult<Option<RawToken>> {
        let dep = deployment.as_str();
        let sealer = self.sealer.read().await;
        let sealed: Option<Option<String>> =
            sqlx::query_scalar("SELECT token FROM deployments WHERE id = ?1")
                .bind(dep)
                .fetch_optional(&self.readers)
                .await
                .map_err(|e| sql_error("reading a deployment token", e))?;
        open_token(&sealer, dep, sealed.flatten())
    }

    async fn deployment_inputs(
        &self,
        deployment: &Id,
        release: Option<&Id>,
    ) -> StoreResult<DeploymentInputs> {
        const WHAT: &str = "reading what a deployment step works with";
        let dep = deployment.as_str();
        let sealer = self.sealer.read().await;
        let mut conn = self.readers.acquire().await.map_err(|e| sql_error(WHAT, e))?;
        let mut tx = conn.begin().await.map_err(|e| sql_error(WHAT, e))?;
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT token, target FROM deployments WHERE id = ?1")
                .bind(dep)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| sql_error(WHAT, e))?;
        let Some((token, target)) = row else {
            return Err(StoreError::NotFound {
                entity: alien_store::Entity::Deployment,
                id: dep.to_owned(),
            });
        };
        let release = match release {
            Some(release) => sqlx::query_as::<_, ReleaseRow>(RELEASE_BY_ID)
                .bind(release.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| sql_error(WHAT, e))?,
            None => None,
        };
        let variables = variable_rows(&mut tx, dep).await?;
        drop(tx);
        deployment_inputs(&sealer, dep, release, variables, token, target)
    }

    async fn deployment_target(&self, deployment: &Id) -> StoreResult<Option<serde_json::Value>> {
        let found: Option<Option<String>> =
            sqlx::query_scalar("SELECT target FROM deployments WHERE id = ?1")
                .bind(deployment.as_str())
                .fetch_optional(&self.readers)
                .await
                .map_err(|e| sql_error("reading a deployment's target", e))?;
        let Some(target) = found else {
            return Err(StoreError::NotFound {
                entity: alien_store::Entity::Deployment,
                id: deployment.to_string(),
            });
        };
        crate::codec::opt_from_json("deployments.target", target.as_deref())
    }

    async fn transition(
        &self,
        deployment: &Id,
        event: DeploymentEvent,
        patch: DeploymentPatch,
    ) -> StoreResult<Deployment> {
        transitions::transition(self, deployment, event, patch).await
    }

    async fn record_report(
        &self,
        deployment: &Id,
        status: DeploymentStatus,
        patch: DeploymentPatch,
    ) -> StoreResult<Option<Deployment>> {
        transitions::record_report(self, deployment, status, patch).await
    }

    async fn begin_update(
        &self,
        deployment: &Id,
        now: DateTime<Utc>,
        patch: DeploymentPatch,
    ) -> StoreResult<BeginUpdate> {
        rollout::begin_update(self, deployment, now, patch).await
    }

    async fn set_group_rollout(
        &self,
        group: &Id,
        policy: Option<RolloutPolicy>,
    ) -> StoreResult<DeploymentGroup> {
        rollout::set_group_rollout(self, group, policy).await
    }

    async fn delete_deployment(&self, deployment: &Id) -> StoreResult<bool> {
        let dep = deployment.as_str();
        let now = now_millis();
        let mut tx = self.begin("deleting a deployment").await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM deployments WHERE id = ?1")
            .bind(dep)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| sql_error("reading a deployment", e))?;
        if exists.is_none() {
            return Ok(false);
        }
        for (sql, what) in [
            ("DELETE FROM deployment_events WHERE deployment_id = ?1", "deleting events"),
            ("DELETE FROM deployment_variables WHERE deployment_id = ?1", "deleting variables"),
            ("DELETE FROM deployments WHERE id = ?1", "deleting the deployment"),
        ] {
            sqlx::query(sql).bind(dep).execute(&mut *tx).await.map_err(|e| sql_error(what, e))?;
        }
        sqlx::query(
            "UPDATE tokens SET revoked_at = ?2 WHERE deployment_id = ?1 AND revoked_at IS NULL",
        )
        .bind(dep)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_error("revoking the deployment's tokens", e))?;
        tx.commit().await.map_err(|e| sql_error("committing a deletion", e))?;
        // Its tokens were revoked with it.
        self.tokens.revoked();
        Ok(true)
    }

    async fn record_event(
        &self,
        deployment: &Id,
        reason: &str,
        detail: serde_json::Value,
    ) -> StoreResult<bool> {
        transitions::record_event(self, deployment, reason, &detail).await
    }

    async fn deployment_events(
        &self,
        deployment: &Id,
        limit: u32,
    ) -> StoreResult<Vec<DeploymentEventRecord>> {
        transitions::deployment_events(self, deployment, limit).await
    }

    async fn acquire_due_matching(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        stale_after: Duration,
        filter: &AcquireFilter,
    ) -> StoreResult<Vec<Deployment>> {
        leases::acquire_due_matching(self, owner, now, limit, stale_after, filter).await
    }

    async fn release_leases_of(&self, owner: &str) -> StoreResult<u64> {
        leases::release_leases_of(self, owner).await
    }

    async fn renew_lease(
        &self,
        deployment: &Id,
        owner: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        leases::renew_lease(self, deployment, owner, now).await
    }

    async fn silent_pull_deployments(
        &self,
        silent_since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Id>> {
        // Acknowledged heartbeat times first: an agent heard from is never found silent.
        self.heartbeats.flush().await?;
        leases::silent_pull_deployments(self, silent_since, limit).await
    }

    async fn record_heartbeat(&self, deployment: &Id, at: DateTime<Utc>) -> StoreResult<bool> {
        leases::record_heartbeat(self, deployment, at).await
    }

    async fn record_steady_heartbeat(
        &self,
        deployment: &Id,
        report: &alien_store::SteadyReport,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.heartbeats.record(deployment, report, at, || self.check_data_version()).await
    }

    async fn save_progress(
        &self,
        deployment: &Id,
        owner: &str,
        stack_state: &serde_json::Value,
    ) -> StoreResult<bool> {
        leases::save_progress(self, deployment, owner, stack_state).await
    }

    async fn release_lease(
        &self,
        deployment: &Id,
        owner: &str,
        next_step_after: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        leases::release_lease(self, deployment, owner, next_step_after).await
    }
}

/// A deployment's variables as stored (`name`, `type`, sealed or plain `value`), in order.
async fn variable_rows(
    conn: &mut SqliteConnection,
    dep: &str,
) -> StoreResult<Vec<(String, String, String)>> {
    sqlx::query_as(
        "SELECT name, type, value FROM deployment_variables WHERE deployment_id = ?1 \
         ORDER BY position",
    )
    .bind(dep)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| sql_error("reading variables", e))
}

/// `NotFound` unless the deployment `dep` exists (read inside the caller's transaction, so what
/// follows reads the same snapshot).
pub(crate) async fn require_deployment(conn: &mut SqliteConnection, dep: &str) -> StoreResult<()> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM deployments WHERE id = ?1")
        .bind(dep)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| sql_error("reading a deployment", e))?;
    match exists {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound {
            entity: alien_store::Entity::Deployment,
            id: dep.to_owned(),
        }),
    }
}
