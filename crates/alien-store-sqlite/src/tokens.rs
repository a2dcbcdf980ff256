//! API tokens: stored as their SHA-256 hash and display prefix only, found by hash, revoked
//! rather than deleted, and their last use recorded in batches.
//!
//! Found tokens are cached ([`TokenCache::trusting`]): every revocation through this store
//! empties the cache at once, and a trigger bumps `meta.token_epoch` with every change that can
//! end a token's validity, whoever commits it (another manager on the same file too); lookups
//! read the epoch at most once a second ([`TOKEN_CACHE_TTL`]) and empty the cache when it moved.
//! So a revocation elsewhere is seen within a second, as before, while a fleet's tokens stay
//! found between its syncs.

use alien_core::{Id, TokenRecord, TokenType};
use alien_store::sql::insert::bind_new_token;
use alien_store::sql::rows::{TokenRow, new_token_record, token_columns};
use alien_store::{NewToken, StoreError, StoreResult, TokenStore};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;

use std::sync::atomic::{AtomicI64, Ordering};

use alien_store::token_cache::TOKEN_CACHE_TTL;

use crate::SqliteStore;
use crate::codec::now_millis;
use crate::error::{is_unique_violation, sql_error};

pub(crate) async fn insert_token(
    conn: &mut SqliteConnection,
    token: &NewToken,
    now: i64,
) -> StoreResult<TokenRecord> {
    let record = new_token_record(token, now)?;
    bind_new_token!(
        sqlx::query(
            "INSERT INTO tokens (id, token_type, key_hash, key_prefix, deployment_group_id, \
             deployment_id, name, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        ),
        &record,
        now
    )
    .execute(conn)
    .await
    .map_err(|err| {
        if is_unique_violation(&err, "tokens.key_hash") {
            StoreError::Conflict("a token with this value already exists".into())
        } else if is_unique_violation(&err, "tokens.id") {
            StoreError::Conflict(format!("token {} already exists", record.id))
        } else {
            sql_error("storing a token", err)
        }
    })?;
    Ok(record)
}

/// The token epoch last read and when (ms since the epoch) it is read next.
pub(crate) struct TokenEpoch {
    seen: AtomicI64,
    next_check: AtomicI64,
}

impl Default for TokenEpoch {
    fn default() -> Self {
        // Nothing seen yet: the first lookup reads it.
        TokenEpoch { seen: AtomicI64::new(i64::MIN), next_check: AtomicI64::new(0) }
    }
}

impl SqliteStore {
    /// Reads the token epoch when it is due (one caller at a time; the others go on with the
    /// cache), and empties the token cache when it moved or cannot be read.
    async fn check_token_epoch(&self) {
        let now = now_millis();
        let due = self.token_epoch.next_check.load(Ordering::Acquire);
        let every = i64::try_from(TOKEN_CACHE_TTL.as_millis()).unwrap_or(1000);
        if now < due
            || self
                .token_epoch
                .next_check
                .compare_exchange(due, now + every, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let read: Result<Option<String>, _> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'token_epoch'")
                .fetch_optional(&self.readers)
                .await;
        match read.map(|v| v.and_then(|v| v.parse::<i64>().ok())) {
            Ok(Some(epoch)) => {
                if self.token_epoch.seen.swap(epoch, Ordering::AcqRel) != epoch {
                    self.tokens.revoked();
                }
            }
            // Unknown: trust nothing cached, and look again on the next lookup.
            Ok(None) | Err(_) => {
                self.tokens.revoked();
                self.token_epoch.next_check.store(0, Ordering::Release);
            }
        }
    }
}

#[async_trait::async_trait]
impl TokenStore for SqliteStore {
    async fn create_token(&self, token: NewToken) -> StoreResult<TokenRecord> {
        let mut conn = self.writer.acquire().await.map_err(|e| sql_error("storing a token", e))?;
        insert_token(&mut conn, &token, now_millis()).await
    }

    async fn find_token(&self, hash: &str, now: DateTime<Utc>) -> StoreResult<Option<TokenRecord>> {
        self.check_token_epoch().await;
        let (hit, generation) = self.tokens.get(hash, now);
        if hit.is_some() {
            return Ok(hit);
        }
        let found = sqlx::query_as::<_, TokenRow>(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE key_hash = ?1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > ?2)"
        ))
        .bind(hash)
        .bind(now.timestamp_millis())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| sql_error("looking up a token", e))?
        .map(TokenRow::into_record)
        .transpose()?;
        if let Some(record) = &found {
            self.tokens.put(hash, record, generation);
        }
        Ok(found)
    }

    async fn get_token(&self, token: &Id) -> StoreResult<Option<TokenRecord>> {
        sqlx::query_as::<_, TokenRow>(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE id = ?1 AND revoked_at IS NULL"
        ))
        .bind(token.as_str())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| sql_error("reading a token", e))?
        .map(TokenRow::into_record)
        .transpose()
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        sqlx::query_as::<_, TokenRow>(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?1) \
             ORDER BY created_at, id"
        ))
        .bind(now_millis())
        .fetch_all(&self.readers)
        .await
        .map_err(|e| sql_error("listing tokens", e))?
        .into_iter()
        .map(TokenRow::into_record)
        .collect()
    }

    async fn revoke_token(&self, token: &Id) -> StoreResult<bool> {
        // One statement (the single writer makes it atomic): an admin token goes only while
        // another live admin token stays (an expired one may go anyway: it opens nothing).
        let now = now_millis();
        let updated = sqlx::query(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL \
             AND (token_type <> 'admin' OR (expires_at IS NOT NULL AND expires_at <= ?2) \
                  OR EXISTS (SELECT 1 FROM tokens o WHERE o.token_type = 'admin' \
                             AND o.id <> ?1 AND o.revoked_at IS NULL \
                             AND (o.expires_at IS NULL OR o.expires_at > ?2)))",
        )
        .bind(token.as_str())
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(|e| sql_error("revoking a token", e))?
        .rows_affected();
        self.tokens.revoked();
        if updated > 0 {
            return Ok(true);
        }
        let live_admin: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM tokens WHERE id = ?1 AND revoked_at IS NULL AND token_type = 'admin'",
        )
        .bind(token.as_str())
        .fetch_optional(&self.writer)
        .await
        .map_err(|e| sql_error("revoking a token", e))?;
        match live_admin {
            Some(_) => Err(StoreError::LastAdminToken(token.clone())),
            None => Ok(false),
        }
    }

    async fn revoke_admin_tokens(&self) -> StoreResult<u64> {
        let revoked = sqlx::query(
            "UPDATE tokens SET revoked_at = ?1 WHERE token_type = 'admin' AND revoked_at IS NULL",
        )
        .bind(now_millis())
        .execute(&self.writer)
        .await
        .map_err(|e| sql_error("revoking admin tokens", e))?
        .rows_affected();
        self.tokens.revoked();
        Ok(revoked)
    }

    async fn count_tokens(&self, kind: TokenType) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tokens WHERE token_type = ?1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > ?2)",
        )
        .bind(kind.as_str())
        .bind(now_millis())
        .fetch_one(&self.readers)
        .await
        .map_err(|e| sql_error("counting tokens", e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn record_token_use(&self, uses: &[(Id, DateTime<Utc>)]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin("recording token use").await?;
        for (token, at) in uses {
            // Never moves backwards when batches arrive out of order.
            sqlx::query(
                "UPDATE tokens SET last_used_at = MAX(COALESCE(last_used_at, ?2), ?2) WHERE id = ?1",
            )
            .bind(token.as_str())
            .bind(at.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("recording token use", e))?;
        }
        tx.commit().await.map_err(|e| sql_error("committing token use", e))
    }
}
