//! Releases: immutable rows, each with one `release_platforms` row per platform of its stack (the
//! index behind "the latest release for a platform"). The transaction that stores a release also
//! gives every deployment of those platforms the release as desired release, with the set-based
//! statements of [`crate::sql`], and starts a new rollout in the staged groups it reaches.

use alien_core::{Id, IdKind, NewRelease, Platform, Release};
use alien_store::sql::rows::{LATEST_RELEASE, ReleaseRow, release_columns};
use alien_store::{CreatedRelease, Page, PageRequest, ReleaseStore, StoreError, StoreResult};
use sqlx::AssertSqlSafe;

use crate::SqliteStore;
use crate::codec::{into_page, limit_of, now_millis, opt_to_json, page_start, time, to_json};
use crate::error::sql_error;
use crate::sql::{RELEASE_EVENTS_SQL, RELEASE_MARK_SQL};

/// One release by id (`?1`), as [`ReleaseRow`].
pub(crate) const RELEASE_BY_ID: &str =
    concat!("SELECT ", release_columns!(), " FROM releases WHERE id = ?1");

#[async_trait::async_trait]
impl ReleaseStore for SqliteStore {
    async fn create_release(&self, release: NewRelease) -> StoreResult<CreatedRelease> {
        let release_id = Id::try_new(IdKind::Release)
            .map_err(|e| StoreError::Database(format!("generating a release id: {e}")))?;
        let stack = to_json("the release stack", &release.stack)?;
        let git = opt_to_json("the git metadata", release.git_metadata.as_ref())?;
        let now = now_millis();
        let mut tx = self.begin("creating a release").await?;
        // Strictly increasing, so the latest release is unambiguous even within a millisecond.
        let created_at: i64 = sqlx::query_scalar(
            "INSERT INTO releases (id, stack, git_metadata, version, description, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, MAX(?6, COALESCE((SELECT MAX(created_at) FROM releases), 0) + 1)) \
             RETURNING created_at",
        )
        .bind(release_id.as_str())
        .bind(&stack)
        .bind(git.as_deref())
        .bind(release.version.as_deref())
        .bind(release.description.as_deref())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| sql_error("storing a release", e))?;
        for platform in release.stack.keys() {
            sqlx::query(
                "INSERT INTO release_platforms (platform, created_at, release_id) VALUES (?1, ?2, ?3)",
            )
            .bind(platform.as_str())
            .bind(created_at)
            .bind(release_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("storing a release's platforms", e))?;
        }
        sqlx::query(AssertSqlSafe(RELEASE_EVENTS_SQL.as_str()))
            .bind(release_id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("recording the release in deployment events", e))?;
        let marked = sqlx::query(AssertSqlSafe(RELEASE_MARK_SQL.as_str()))
            .bind(release_id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("marking deployments with the release", e))?
            .rows_affected();
        // A new rollout starts in every staged group the release reaches.
        sqlx::query(
            "UPDATE deployment_groups SET rollout_batch_begun = 0 WHERE rollout IS NOT NULL \
             AND rollout_batch_begun > 0 AND id IN (SELECT deployment_group_id FROM deployments \
             WHERE desired_release_id = ?1 AND status = 'update-pending')",
        )
        .bind(release_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_error("starting the groups' rollouts", e))?;
        tx.commit().await.map_err(|e| sql_error("committing a release", e))?;
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
            .fetch_optional(&self.readers)
            .await
            .map_err(|e| sql_error("reading a release", e))?
            .map(ReleaseRow::into_release)
            .transpose()
    }

    async fn latest_release(&self, platform: Option<Platform>) -> StoreResult<Option<Release>> {
        let query = match platform {
            None => sqlx::query_as::<_, ReleaseRow>(LATEST_RELEASE),
            Some(platform) => sqlx::query_as::<_, ReleaseRow>(
                "SELECT r.id, r.stack, r.git_metadata, r.version, r.description, r.created_at \
                 FROM release_platforms p JOIN releases r ON r.id = p.release_id \
                 WHERE p.platform = ?1 ORDER BY p.created_at DESC, p.release_id DESC LIMIT 1",
            )
            .bind(platform.as_str()),
        };
        query
            .fetch_optional(&self.readers)
            .await
            .map_err(|e| sql_error("reading the latest release", e))?
            .map(ReleaseRow::into_release)
            .transpose()
    }

    async fn list_releases(&self, page: &PageRequest) -> StoreResult<Page<Release>> {
        let (after_millis, after_id) = page_start("r", page, i64::MAX)?;
        let limit = limit_of(page);
        let rows = sqlx::query_as::<_, ReleaseRow>(concat!(
            "SELECT ",
            release_columns!(),
            " FROM releases WHERE (created_at, id) < (?1, ?2) \
             ORDER BY created_at DESC, id DESC LIMIT ?3"
        ))
        .bind(after_millis)
        .bind(&after_id)
        .bind(limit + 1)
        .fetch_all(&self.readers)
        .await
        .map_err(|e| sql_error("listing releases", e))?;
        into_page(rows, limit, ReleaseRow::cursor, ReleaseRow::into_release)
    }
}
