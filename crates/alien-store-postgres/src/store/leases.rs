//! Who works on a deployment. Push mode: leases of the deployment loop and of external drivers'
//! sessions, taken by one update over the due deployments that locks them with
//! `FOR UPDATE SKIP LOCKED` (two replicas never get the same one, and never wait on each other),
//! renewed, released with when the deployment is next due, and taken over once stale; progress
//! is saved only by the holder. Pull mode: the agents' heartbeats, and the deployments whose
//! agent fell silent.

use std::sync::LazyLock;
use std::time::Duration;

use alien_core::{Deployment, DeploymentModel, DeploymentStatus, Id, IdKind};
use alien_store::codec::opt_to_json;
use alien_store::sql::{due_statuses, quoted, silent_statuses};
use alien_store::{AcquireFilter, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder};

use super::PostgresStore;
use alien_store::sql::rows::{DeploymentRow, deployment_columns};

/// Statuses with work for the push loop, as SQL literals.
static DUE_STATUSES: LazyLock<String> = LazyLock::new(|| quoted(due_statuses()));

/// A steady heartbeat (`DeploymentStore::record_steady_heartbeat`): `$1` id, `$2` at, `$3`
/// platform, `$4` release, `$5` stack state.
static STEADY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE deployments SET last_heartbeat_at = GREATEST(COALESCE(last_heartbeat_at, $2), $2) \
         WHERE id = $1 AND deployment_model = '{pull}' AND status = '{running}' \
         AND platform = $3 AND current_release_id = $4 AND desired_release_id = $4 \
         AND NOT retry_requested AND error IS NULL AND stack_state = $5",
        pull = DeploymentModel::Pull.as_str(),
        running = DeploymentStatus::Running.as_str(),
    )
});

/// Pull deployments whose agent fell silent before `$1`, at most `$2`.
static SILENT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id FROM deployments WHERE deployment_model = 'pull' AND status IN ({}) \
         AND COALESCE(last_heartbeat_at, created_at) < $1 ORDER BY id LIMIT $2",
        quoted(silent_statuses())
    )
});

impl PostgresStore {
    /// One attempt at `DeploymentStore::acquire_due_matching`.
    pub(crate) async fn acquire(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        stale_after: Duration,
        filter: &AcquireFilter,
    ) -> StoreResult<Vec<Deployment>> {
        if limit == 0 || filter.is_void() {
            return Ok(Vec::new());
        }
        let mut query = acquire_query("", owner, now, limit, stale_after, filter);
        let rows = query
            .build_query_as::<DeploymentRow>()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error("acquiring due deployments", e))?;
        DeploymentRow::into_leased(rows)
    }

    /// See `DeploymentStore::release_leases_of`.
    pub(crate) async fn release_all_leases(&self, owner: &str) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE deployments SET locked_by = NULL, locked_at = NULL WHERE locked_by = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error("releasing leases", e))?
        .rows_affected())
    }

    /// See `DeploymentStore::renew_lease`.
    pub(crate) async fn renew(
        &self,
        deployment: &Id,
        owner: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let updated =
            sqlx::query("UPDATE deployments SET locked_at = $3 WHERE id = $1 AND locked_by = $2")
                .bind(deployment.as_str())
                .bind(owner)
                .bind(now.timestamp_millis())
                .execute(&self.pool)
                .await
                .map_err(|e| self.error("renewing a lease", e))?
                .rows_affected();
        Ok(updated > 0)
    }

    /// See `DeploymentStore::save_progress`.
    pub(crate) async fn progress(
        &self,
        deployment: &Id,
        owner: &str,
        stack_state: &serde_json::Value,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE deployments SET stack_state = $3, updated_at = $4 \
             WHERE id = $1 AND locked_by = $2",
        )
        .bind(deployment.as_str())
        .bind(owner)
        .bind(opt_to_json("the stack state", Some(stack_state))?)
        .bind(Utc::now().timestamp_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| self.error("saving a step's progress", e))?
        .rows_affected();
        Ok(updated > 0)
    }

    /// See `DeploymentStore::release_lease`.
    pub(crate) async fn release_one_lease(
        &self,
        deployment: &Id,
        owner: &str,
        next_step_after: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE deployments SET locked_by = NULL, locked_at = NULL, next_step_after = $3 \
             WHERE id = $1 AND locked_by = $2",
        )
        .bind(deployment.as_str())
        .bind(owner)
        .bind(next_step_after.map_or(0, |t| t.timestamp_millis()))
        .execute(&self.pool)
        .await
        .map_err(|e| self.error("releasing a lease", e))?
        .rows_affected();
        Ok(updated > 0)
    }

    /// See `DeploymentStore::silent_pull_deployments`.
    pub(crate) async fn silent_pull(
        &self,
        silent_since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Id>> {
        let ids: Vec<String> = sqlx::query_scalar(AssertSqlSafe(SILENT_SQL.as_str()))
            .bind(silent_since.timestamp_millis())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error("finding silent agents", e))?;
        ids.iter()
            .map(|id| {
                Id::parse(IdKind::Deployment, id)
                    .map_err(|e| StoreError::Corrupt(format!("deployments.id {id}: {e}")))
            })
            .collect()
    }

    /// See `DeploymentStore::record_heartbeat`.
    pub(crate) async fn steady_heartbeat(
        &self,
        deployment: &Id,
        report: &alien_store::SteadyReport,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(AssertSqlSafe(STEADY_SQL.as_str()))
            .bind(deployment.as_str())
            .bind(at.timestamp_millis())
            .bind(report.platform.as_str())
            .bind(report.release.as_str())
            .bind(&report.stack_state)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error("recording a heartbeat", e))?
            .rows_affected();
        Ok(updated > 0)
    }

    pub(crate) async fn heartbeat(&self, deployment: &Id, at: DateTime<Utc>) -> StoreResult<bool> {
        let updated = sqlx::query("UPDATE deployments SET last_heartbeat_at = $2 WHERE id = $1")
            .bind(deployment.as_str())
            .bind(at.timestamp_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| self.error("recording a heartbeat", e))?
            .rows_affected();
        Ok(updated > 0)
    }
}

/// The one statement of `acquire`: picks the due rows once (`MATERIALIZED`), skipping rows
/// another replica is leasing right now, and leases exactly those.
fn acquire_query(
    prefix: &'static str,
    owner: &str,
    now: DateTime<Utc>,
    limit: u32,
    stale_after: Duration,
    filter: &AcquireFilter,
) -> QueryBuilder<Postgres> {
    let now = now.timestamp_millis();
    let stale = now.saturating_sub(i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX));
    // The due rows are picked and locked once (`MATERIALIZED`), skipping rows another
    // replica is leasing right now; the update then leases exactly those. Only fixed
    // fragments are put together; every value is bound.
    let mut query = QueryBuilder::<Postgres>::new(prefix);
    query.push("WITH picked AS MATERIALIZED (SELECT id FROM deployments");
    // A push deployment with work to do (a due status, or a retry request) whose
    // `nextStepAfter` passed, not leased or leased before `stale`.
    query
        .push(" WHERE deployment_model = ")
        .push(format_args!("'{}'", DeploymentModel::Push.as_str()))
        .push(" AND next_step_after <= ")
        .push_bind(now)
        .push(" AND (locked_by IS NULL OR locked_at < ")
        .push_bind(stale)
        .push(") AND ((status IN (")
        .push(DUE_STATUSES.as_str())
        .push(") AND (status <> ")
        .push(format_args!("'{}'", DeploymentStatus::Pending.as_str()))
        .push(" OR desired_release_id IS NOT NULL)) OR retry_requested)");
    if let Some(group) = &filter.deployment_group_id {
        query.push(" AND deployment_group_id = ").push_bind(group.to_string());
    }
    if let Some(platforms) = &filter.platforms {
        let names: Vec<String> = platforms.iter().map(|p| p.as_str().to_owned()).collect();
        query.push(" AND platform = ANY(").push_bind(names).push(")");
    }
    if let Some(ids) = &filter.deployment_ids {
        let ids: Vec<String> = ids.iter().map(Id::to_string).collect();
        query.push(" AND id = ANY(").push_bind(ids).push(")");
    }
    query
        .push(" ORDER BY next_step_after, updated_at, id LIMIT ")
        .push_bind(i64::from(limit))
        .push(" FOR UPDATE SKIP LOCKED) UPDATE deployments SET locked_by = ")
        .push_bind(owner)
        .push(", locked_at = ")
        .push_bind(now)
        .push(" WHERE id IN (SELECT id FROM picked) RETURNING ")
        .push(deployment_columns!());
    query
}

impl PostgresStore {
    /// The plan PostgreSQL chooses for `acquire_due` (tests check that a loop tick reads the
    /// partial indexes, never the whole table).
    #[doc(hidden)]
    pub async fn explain_acquire_due(&self) -> StoreResult<Vec<String>> {
        let filter = AcquireFilter::default();
        let mut query =
            acquire_query("EXPLAIN ", "explain", Utc::now(), 8, Duration::from_secs(300), &filter);
        let rows: Vec<(String,)> = query
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error("explaining acquire_due", e))?;
        Ok(rows.into_iter().map(|(line,)| line).collect())
    }
}
