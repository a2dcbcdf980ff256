//! Releases: immutable rows, each with one `release_platforms` row per platform of its stack. The
//! transaction that stores a release holds the `releases` table lock (its timestamp is strictly
//! increasing, and a deployment being created waits for it, then gets it as desired release),
//! locks the deployments of its platforms that take it, marks them with the statuses of
//! `alien_store::sql::new_release_case`, and starts a new rollout in the staged groups it reaches.

use std::sync::LazyLock;

use alien_core::{Id, IdKind, NewRelease, Platform, Release};
use alien_store::codec::{into_page, limit_of, now_millis, opt_to_json, page_start, time, to_json};
use alien_store::sql::rows::{LATEST_RELEASE, ReleaseRow, release_columns};
use alien_store::sql::{new_release_case, quoted, release_markable};
use alien_store::{CreatedRelease, Page, PageRequest, ReleaseStore, StoreError, StoreResult};
use sqlx::AssertSqlSafe;

use super::{PostgresStore, retrying};

/// One release by id (`$1`), as [`ReleaseRow`].
pub(crate) const RELEASE_BY_ID: &str =
    concat!("SELECT ", release_columns!(), " FROM releases WHERE id = $1");

const LOCK_RELEASES: &str = "LOCK TABLE releases IN EXCLUSIVE MODE";

const INSERT_RELEASE: &str = "INSERT INTO releases \
     (id, stack, git_metadata, version, description, created_at) VALUES ($1, $2, $3, $4, $5, \
     GREATEST($6, COALESCE((SELECT MAX(created_at) FROM releases), 0) + 1)) RETURNING created_at";

const INSERT_PLATFORM: &str =
    "INSERT INTO release_platforms (platform, created_at, release_id) VALUES ($1, $2, $3)";

/// The deployments the release `$1` marks, locked in id order.
static MARKABLE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id FROM deployments \
         WHERE platform IN (SELECT platform FROM release_platforms WHERE release_id = $1) \
         AND status IN ({markable}) ORDER BY id FOR UPDATE",
        markable = quoted(release_markable()),
    )
});

/// Events of the locked deployments `$3` that the release `$1` marks at `$2`.
static RELEASE_EVENTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO deployment_events (deployment_id, from_status, to_status, reason, detail, at) \
         SELECT id, status, {case}, 'release', json_build_object('releaseId', $1::text)::text, $2 \
         FROM deployments WHERE id = ANY($3)",
        case = new_release_case(),
    )
});

/// The marking of the locked deployments `$3` with the release `$1` at `$2`.
static RELEASE_MARK_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE deployments SET status = {case}, desired_release_id = $1, next_step_after = 0, \
         updated_at = $2 WHERE id = ANY($3)",
        case = new_release_case(),
    )
});

const START_ROLLOUTS: &str = "UPDATE deployment_groups SET rollout_batch_begun = 0 \
     WHERE rollout IS NOT NULL AND rollout_batch_begun > 0 AND id IN \
     (SELECT deployment_group_id FROM deployments \
      WHERE desired_release_id = $1 AND status = 'update-pending')";

impl PostgresStore {
    /// One attempt at storing a release; its creation time and how many deployments it marked.
    async fn insert_release(
        &self,
        release_id: &Id,
        release: &NewRelease,
        stack: &str,
        git: Option<&str>,
    ) -> StoreResult<(i64, u64)> {
        let now = now_millis();
        let rel = release_id.as_str();
        let mut tx = self.begin("creating a release").await?;
        sqlx::query(LOCK_RELEASES)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error("locking the releases", e))?;
        let created_at: i64 = sqlx::query_scalar(INSERT_RELEASE)
            .bind(rel)
            .bind(stack)
            .bind(git)
            .bind(release.version.as_deref())
            .bind(release.description.as_deref())
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.error("storing a release", e))?;
        for platform in release.stack.keys() {
            sqlx::query(INSERT_PLATFORM)
                .bind(platform.as_str())
                .bind(created_at)
                .bind(rel)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error("storing a release's platforms", e))?;
        }
        let marked: Vec<String> = sqlx::query_scalar(AssertSqlSafe(MARKABLE_SQL.as_str()))
            .bind(rel)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.error("locking the deployments the release marks", e))?;
        if !marked.is_empty() {
            sqlx::query(AssertSqlSafe(RELEASE_EVENTS_SQL.as_str()))
                .bind(rel)
                .bind(now)
                .bind(&marked)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error("recording the release in deployment events", e))?;
            sqlx::query(AssertSqlSafe(RELEASE_MARK_SQL.as_str()))
                .bind(rel)
                .bind(now)
                .bind(&marked)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error("marking deployments with the release", e))?;
            sqlx::query(START_ROLLOUTS)
                .bind(rel)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error("starting the groups' rollouts", e))?;
        }
        tx.commit().await.map_err(|e| self.error("committing a release", e))?;
        Ok((created_at, u64::try_from(marked.len()).unwrap_or(u64::MAX)))
    }
}

#[async_trait::async_trait]
impl ReleaseStore for PostgresStore {
    async fn create_release(&self, release: NewRelease) -> StoreResult<CreatedRelease> {
        let release_id = Id::try_new(IdKind::Release)
            .map_err(|e| StoreError::Database(format!("generating a release id: {e}")))?;
        let stack = to_json("the release stack", &release.stack)?;
        let git = opt_to_json("the git metadata", release.git_metadata.as_ref())?;
        let (created_at, marked) =
            retrying(|| self.insert_release(&release_id, &release, &stack, git.as_deref())).await?;
        Ok(CreatedRelease {
            release: Release {
                id: release_id,
                stack: release.stack,
                git_metadata: release.git_metadata,
                version: release.version,
                description: release.description,
                created_at: time("releases.created_at", created_at)?,
            },
            marked,
        })
    }

    async fn get_release(&self, release: &Id) -> StoreResult<Option<Release>> {
        sqlx::query_as::<_, ReleaseRow>(RELEASE_BY_ID)
            .bind(release.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error("reading a release", e))?
            .map(ReleaseRow::into_release)
            .transpose()
    }

    async fn latest_release(&self, platform: Option<Platform>) -> StoreResult<Option<Release>> {
        let query = match platform {
            None => sqlx::query_as::<_, ReleaseRow>(LATEST_RELEASE),
            Some(platform) => sqlx::query_as::<_, ReleaseRow>(
                "SELECT r.id, r.stack, r.git_metadata, r.version, r.description, r.created_at \
                 FROM release_platforms p JOIN releases r ON r.id = p.release_id \
                 WHERE p.platform = $1 ORDER BY p.created_at DESC, p.release_id DESC LIMIT 1",
            )
            .bind(platform.as_str()),
        };
        query
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error("reading the latest release", e))?
            .map(ReleaseRow::into_release)
            .transpose()
    }

    async fn list_releases(&self, page: &PageRequest) -> StoreResult<Page<Release>> {
        let (after_millis, after_id) = page_start("r", page, i64::MAX)?;
        let limit = limit_of(page);
        let rows = sqlx::query_as::<_, ReleaseRow>(concat!(
            "SELECT ",
            release_columns!(),
            " FROM releases WHERE (created_at, id) < ($1, $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(after_millis)
        .bind(&after_id)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error("listing releases", e))?;
        into_page(rows, limit, ReleaseRow::cursor, ReleaseRow::into_release)
    }
}
