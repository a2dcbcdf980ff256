//! SQL generated from the domain rules, so that they live only in alien-core: the status mapping
//! of a new release is `DeploymentStatus::transition(NewDesiredRelease)` written as a `CASE`, and
//! the statuses the push loop acquires are those of `DeploymentStatus::is_due`. Only fixed fragments are put
//! together here; every value is bound.

use std::sync::LazyLock;

use alien_core::{DeploymentModel, DeploymentStatus, Id};
use alien_store::sql::rows::deployment_columns;
use alien_store::{AcquireFilter, StoreResult};
use sqlx::Sqlite;

use crate::codec::to_json;
pub(crate) use alien_store::sql::{new_release_case, quoted, release_markable};

/// The update of a transition (and of a report of an unchanged status): `?1` the new status,
/// `?2..?9` the patch, `?10` the id, `?11` the status it must still have; `$returning` appended.
macro_rules! patch_deployment_sql {
    ($returning:expr) => {
        concat!(
            "UPDATE deployments SET status = ?1, \
             desired_release_id = COALESCE(?2, desired_release_id), \
             current_release_id = COALESCE(?3, current_release_id), \
             stack_state = COALESCE(?4, stack_state), \
             error = CASE WHEN ?5 THEN ?6 ELSE error END, \
             retry_requested = COALESCE(?7, retry_requested), \
             last_heartbeat_at = COALESCE(?8, last_heartbeat_at), \
             updated_at = ?9 \
             WHERE id = ?10 AND status = ?11",
            $returning
        )
    };
}
pub(crate) use patch_deployment_sql;

pub(crate) static RELEASE_EVENTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO deployment_events (deployment_id, from_status, to_status, reason, detail, at) \
         SELECT id, status, {case}, 'release', json_object('releaseId', ?1), ?2 FROM deployments \
         WHERE platform IN (SELECT platform FROM release_platforms WHERE release_id = ?1) \
         AND status IN ({markable})",
        case = new_release_case(),
        markable = quoted(release_markable()),
    )
});

pub(crate) static RELEASE_MARK_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE deployments SET status = {case}, desired_release_id = ?1, next_step_after = 0, \
         updated_at = ?2 \
         WHERE platform IN (SELECT platform FROM release_platforms WHERE release_id = ?1) \
         AND status IN ({markable})",
        case = new_release_case(),
        markable = quoted(release_markable()),
    )
});

/// Push deployments with work to do, due and not leased (or leased before `?3`): `?2` = now.
/// `filter` holds further conditions (fixed fragments with bound values) applied to both halves.
pub(crate) fn due_sql(filter: &str) -> String {
    let push = DeploymentModel::Push.as_str();
    let pending = DeploymentStatus::Pending.as_str();
    format!(
        "SELECT id, next_step_after, updated_at FROM deployments \
         WHERE deployment_model = '{push}' AND status IN ({statuses}) AND next_step_after <= ?2 \
         AND (status <> '{pending}' OR desired_release_id IS NOT NULL) \
         AND (locked_by IS NULL OR locked_at < ?3){filter} \
         UNION \
         SELECT id, next_step_after, updated_at FROM deployments \
         WHERE deployment_model = '{push}' AND retry_requested = 1 AND next_step_after <= ?2 \
         AND (locked_by IS NULL OR locked_at < ?3){filter}",
        statuses = quoted(DeploymentStatus::ALL.into_iter().filter(|s| s.is_due())),
    )
}

/// Leases the first `?4` due deployments to `?1` at `?2`.
pub(crate) fn acquire_sql(filter: &str) -> String {
    format!(
        "UPDATE deployments SET locked_by = ?1, locked_at = ?2 WHERE id IN ( \
         SELECT id FROM ({due}) ORDER BY next_step_after, updated_at, id LIMIT ?4) \
         RETURNING {columns}",
        due = due_sql(filter),
        columns = deployment_columns!(),
    )
}

/// The deployment loop's acquisition (no filter), built once.
pub(crate) static ACQUIRE_SQL: LazyLock<String> = LazyLock::new(|| acquire_sql(""));

/// The conditions of `filter` as SQL, numbered from `?5` and bound in the same order by
/// [`bind_acquire_filter`]. Lists are bound as JSON arrays.
pub(crate) fn acquire_filter_sql(filter: &AcquireFilter) -> String {
    let mut sql = String::new();
    let mut n = 4;
    if filter.deployment_group_id.is_some() {
        n += 1;
        sql.push_str(&format!(" AND deployment_group_id = ?{n}"));
    }
    if filter.platforms.is_some() {
        n += 1;
        sql.push_str(&format!(" AND platform IN (SELECT value FROM json_each(?{n}))"));
    }
    if filter.deployment_ids.is_some() {
        n += 1;
        sql.push_str(&format!(" AND id IN (SELECT value FROM json_each(?{n}))"));
    }
    sql
}

pub(crate) fn bind_acquire_filter<'q, O>(
    mut query: sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments>,
    filter: &AcquireFilter,
) -> StoreResult<sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments>> {
    if let Some(group) = &filter.deployment_group_id {
        query = query.bind(group.to_string());
    }
    if let Some(platforms) = &filter.platforms {
        let names: Vec<&str> = platforms.iter().map(|p| p.as_str()).collect();
        query = query.bind(to_json("the platforms to acquire", &names)?);
    }
    if let Some(ids) = &filter.deployment_ids {
        let ids: Vec<&str> = ids.iter().map(Id::as_str).collect();
        query = query.bind(to_json("the deployments to acquire", &ids)?);
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;
    use crate::seal::{EncryptionKey, Sealer};
    use sqlx::AssertSqlSafe;

    #[test]
    fn generated_sql_follows_the_domain_names() {
        assert_eq!(DeploymentModel::Push.as_str(), "push");
        let case = new_release_case();
        assert!(case.contains("WHEN 'running' THEN 'update-pending'"), "{case}");
        assert!(!case.contains("delete"), "{case}");
        let markable: Vec<_> = release_markable().collect();
        assert!(markable.contains(&DeploymentStatus::Stale));
        assert!(!markable.iter().any(|s| s.is_deleting()));
    }

    /// A new store in a directory of its own (kept while the directory lives).
    async fn open_store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::new(EncryptionKey::generate().unwrap());
        let store = SqliteStore::open(&dir.path().join("db"), sealer).await.unwrap();
        (store, dir)
    }

    /// A loop tick must not scan the deployments table, whatever its size.
    #[tokio::test]
    async fn the_due_query_uses_indexes_only() {
        let (store, _dir) = open_store().await;
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {}", &*ACQUIRE_SQL)))
                .bind("owner")
                .bind(0i64)
                .bind(0i64)
                .bind(10i64)
                .fetch_all(&store.readers)
                .await
                .unwrap();
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(details.iter().any(|d| d.contains("deployments_due")), "{details:#?}");
        assert!(details.iter().any(|d| d.contains("deployments_retry")), "{details:#?}");
        assert!(!details.iter().any(|d| d.starts_with("SCAN deployments")), "{details:#?}");
        store.close().await;
    }

    /// The due index holds the statuses of `DeploymentStatus::is_due`, written out in migration
    /// 0004 in the order the due query lists them (SQLite uses a partial index only when the
    /// query's terms are the index's own).
    #[tokio::test]
    async fn the_due_index_holds_the_due_statuses() {
        let (store, _dir) = open_store().await;
        let index: String = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'deployments_due'",
        )
        .fetch_one(&store.readers)
        .await
        .unwrap();
        let statuses = quoted(DeploymentStatus::ALL.into_iter().filter(|s| s.is_due()));
        let expected = format!("status IN ({statuses})");
        assert!(index.contains(&expected), "{index}\nexpected {expected}");
        store.close().await;
    }

    /// A release finds its deployments through the platform index (no status index entry
    /// moves when they are marked) and never scans the table for them.
    #[tokio::test]
    async fn release_marking_reads_the_platform_index() {
        let (store, _dir) = open_store().await;
        for sql in [&*RELEASE_MARK_SQL, &*RELEASE_EVENTS_SQL] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind("rel_x")
                    .bind(0i64)
                    .fetch_all(&store.readers)
                    .await
                    .unwrap();
            let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
            assert!(
                details
                    .iter()
                    .any(|d| d.contains("USING INDEX deployments_by_platform (platform=?)")),
                "{details:#?}"
            );
        }
        store.close().await;
    }
}
