//! API tokens: stored as their SHA-256 hash and display prefix only, found by hash, revoked
//! rather than deleted, and their last use recorded in batches. No cache of found tokens: a
//! revocation by another replica must hold at once on every replica.

use alien_core::{Id, TokenRecord, TokenType};
use alien_store::codec::now_millis;
use alien_store::sql::insert::bind_new_token;
use alien_store::sql::rows::{TokenRow, new_token_record, token_columns};
use alien_store::{NewToken, StoreError, StoreResult, TokenStore};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;

use super::{PostgresStore, is_unique_violation, retrying, sql_error};

/// Stores `token` created at `now` through `conn`.
pub(crate) async fn insert_token(
    conn: &mut PgConnection,
    token: &NewToken,
    now: i64,
) -> StoreResult<TokenRecord> {
    let record = new_token_record(token, now)?;
    bind_new_token!(
        sqlx::query(
            "INSERT INTO tokens (id, token_type, key_hash, key_prefix, deployment_group_id, \
             deployment_id, name, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ),
        &record,
        now
    )
    .execute(conn)
    .await
    .map_err(|err| {
        if is_unique_violation(&err, "tokens_by_key_hash") {
            StoreError::Conflict("a token with this value already exists".into())
        } else if is_unique_violation(&err, "tokens_pkey") {
            StoreError::Conflict(format!("token {} already exists", record.id))
        } else {
            sql_error("storing a token", err)
        }
    })?;
    Ok(record)
}

// The live admin tokens, locked (in id order) so that two revocations take turns.
const LOCK_ADMINS: &str = "SELECT id FROM tokens WHERE token_type = 'admin' \
     AND revoked_at IS NULL ORDER BY id FOR UPDATE";

// An admin token goes only while another live admin token stays (an expired one may go
// anyway: it opens nothing).
const REVOKE: &str = "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL \
     AND (token_type <> 'admin' OR (expires_at IS NOT NULL AND expires_at <= $2) \
          OR EXISTS (SELECT 1 FROM tokens o WHERE o.token_type = 'admin' \
                     AND o.id <> $1 AND o.revoked_at IS NULL \
                     AND (o.expires_at IS NULL OR o.expires_at > $2)))";

impl PostgresStore {
    /// One attempt at `TokenStore::revoke_token`: `None` when it is the last live admin token.
    async fn revoke_once(&self, token: &Id) -> StoreResult<Option<bool>> {
        let now = now_millis();
        let mut tx = self.begin("revoking a token").await?;
        let kind: Option<String> = sqlx::query_scalar(
            "SELECT token_type FROM tokens WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(token.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.error("revoking a token", e))?;
        let Some(kind) = kind else {
            return Ok(Some(false));
        };
        if kind == TokenType::Admin.as_str() {
            sqlx::query(LOCK_ADMINS)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error("locking the admin tokens", e))?;
        }
        let updated = sqlx::query(REVOKE)
            .bind(token.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error("revoking a token", e))?
            .rows_affected();
        tx.commit().await.map_err(|e| self.error("committing a revocation", e))?;
        if updated > 0 {
            return Ok(Some(true));
        }
        // Not revoked: gone meanwhile, or the last live admin token.
        let live_admin: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM tokens WHERE id = $1 AND revoked_at IS NULL AND token_type = 'admin'",
        )
        .bind(token.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.error("revoking a token", e))?;
        Ok(live_admin.map_or(Some(false), |_| None))
    }
}

#[async_trait::async_trait]
impl TokenStore for PostgresStore {
    async fn create_token(&self, token: NewToken) -> StoreResult<TokenRecord> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.error("storing a token", e))?;
        insert_token(&mut conn, &token, now_millis()).await
    }

    async fn find_token(&self, hash: &str, now: DateTime<Utc>) -> StoreResult<Option<TokenRecord>> {
        sqlx::query_as::<_, TokenRow>(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE key_hash = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)"
        ))
        .bind(hash)
        .bind(now.timestamp_millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.error("looking up a token", e))?
        .map(TokenRow::into_record)
        .transpose()
    }

    async fn get_token(&self, token: &Id) -> StoreResult<Option<TokenRecord>> {
        sqlx::query_as::<_, TokenRow>(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE id = $1 AND revoked_at IS NULL"
        ))
        .bind(token.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.error("reading a token", e))?
        .map(TokenRow::into_record)
        .transpose()
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        sqlx::query_as::<_, TokenRow>(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1) \
             ORDER BY created_at, id"
        ))
        .bind(now_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error("listing tokens", e))?
        .into_iter()
        .map(TokenRow::into_record)
        .collect()
    }

    async fn revoke_token(&self, token: &Id) -> StoreResult<bool> {
        match retrying(|| self.revoke_once(token)).await? {
            Some(revoked) => Ok(revoked),
            None => Err(StoreError::LastAdminToken(token.clone())),
        }
    }

    async fn revoke_admin_tokens(&self) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE token_type = 'admin' AND revoked_at IS NULL",
        )
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| self.error("revoking admin tokens", e))?
        .rows_affected())
    }

    async fn count_tokens(&self, kind: TokenType) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tokens WHERE token_type = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(kind.as_str())
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.error("counting tokens", e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn record_token_use(&self, uses: &[(Id, DateTime<Utc>)]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = uses.iter().map(|(id, _)| id.to_string()).collect();
        let ats: Vec<i64> = uses.iter().map(|(_, at)| at.timestamp_millis()).collect();
        // One statement; never moves backwards when batches arrive out of order.
        sqlx::query(
            "UPDATE tokens t SET last_used_at = GREATEST(COALESCE(t.last_used_at, u.at), u.at) \
             FROM (SELECT id, MAX(at) AS at FROM UNNEST($1::text[], $2::int8[]) AS x (id, at) \
                   GROUP BY id) AS u \
             WHERE t.id = u.id",
        )
        .bind(&ids)
        .bind(&ats)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error("recording token use", e))?;
        Ok(())
    }
}
