//! API tokens: stored as their SHA-256 hash and display prefix only, found by hash (through the
//! one-second cache of alien-store), revoked rather than deleted, and their last use recorded in
//! batches.
//!
//! Several replicas share the tokens, so the cache must forget a token revoked by any of them at
//! once, not after its second: every revocation sends `NOTIFY alien_tokens` in its transaction
//! (delivered when it commits), and every replica's [`TokenWatch`] listens and empties its cache.
//! The cache is trusted only while the listener is known to be connected: after a lost
//! connection it is bypassed until the listener hears the store's own probe again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alien_store::token_cache::TokenCache;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

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

/// The channel revocations are announced on.
const TOKENS_CHANNEL: &str = "alien_tokens";
/// What the probe sends (a revocation sends an empty payload).
const PROBE: &str = "probe";
/// How often a listener not known to be connected probes.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// This replica's cache of found tokens and what keeps it honest across replicas.
pub(crate) struct TokenWatch {
    cache: Arc<TokenCache>,
    /// Whether the listener is connected (so a revocation anywhere would reach the cache).
    live: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TokenWatch {
    /// Listens on `alien_tokens` over a connection of its own, and probes through `pool` until
    /// it hears itself.
    pub(crate) fn start(pool: &PgPool, options: PgConnectOptions) -> TokenWatch {
        let cache = Arc::new(TokenCache::default());
        let live = Arc::new(AtomicBool::new(false));
        let listening = PgPoolOptions::new().max_connections(1).connect_lazy_with(options);
        let tasks = vec![
            tokio::spawn(listen(listening, cache.clone(), live.clone())),
            tokio::spawn(probe(pool.clone(), live.clone())),
        ];
        TokenWatch { cache, live, tasks }
    }

    /// Stops listening (the store is closing).
    pub(crate) fn stop(&self) {
        self.live.store(false, Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
    }

    fn cache(&self) -> Option<&TokenCache> {
        self.live.load(Ordering::SeqCst).then_some(self.cache.as_ref())
    }
}

impl Drop for TokenWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn listen(pool: PgPool, cache: Arc<TokenCache>, live: Arc<AtomicBool>) {
    let mut listener = loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(TOKENS_CHANNEL).await {
                Ok(()) => break listener,
                Err(err) => tracing::debug!(error = %err, "LISTEN alien_tokens"),
            },
            Err(err) => tracing::debug!(error = %err, "token listener: connecting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                if notification.payload() == PROBE {
                    live.store(true, Ordering::SeqCst);
                } else {
                    cache.revoked();
                }
            }
            Ok(None) => {
                // Lost (the next call reconnects): revocations meanwhile would go unheard.
                live.store(false, Ordering::SeqCst);
                cache.revoked();
                tracing::warn!(
                    "token listener lost its connection: the token cache is off until it is back"
                );
            }
            Err(err) => {
                live.store(false, Ordering::SeqCst);
                cache.revoked();
                tracing::debug!(error = %err, "token listener: retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// While the listener is not known to be connected, sends it a probe: hearing one proves that a
/// revocation sent from now on would be heard too.
async fn probe(pool: PgPool, live: Arc<AtomicBool>) {
    loop {
        if !live.load(Ordering::SeqCst) {
            let _ = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(TOKENS_CHANNEL)
                .bind(PROBE)
                .execute(&pool)
                .await;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Announces a revocation to every replica's cache, in `tx` (sent when it commits).
pub(crate) async fn announce_revocation(
    store: &PostgresStore,
    tx: &mut PgConnection,
) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(TOKENS_CHANNEL)
        .execute(tx)
        .await
        .map_err(|e| store.error("announcing a revocation", e))?;
    Ok(())
}

impl PostgresStore {
    /// Whether found tokens are being cached (the revocation listener is connected).
    #[doc(hidden)]
    pub fn token_cache_is_live(&self) -> bool {
        self.tokens.cache().is_some()
    }

    /// Empties this replica's cache after a revocation committed (the others hear the notice).
    pub(crate) fn forget_tokens(&self) {
        self.tokens.cache.revoked();
    }

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
        if updated > 0 {
            announce_revocation(self, &mut tx).await?;
        }
        tx.commit().await.map_err(|e| self.error("committing a revocation", e))?;
        if updated > 0 {
            self.forget_tokens();
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
        let cache = self.tokens.cache();
        let generation = match cache.map(|c| c.get(hash, now)) {
            Some((Some(hit), _)) => return Ok(Some(hit)),
            Some((None, generation)) => Some(generation),
            None => None,
        };
        let found = sqlx::query_as::<_, TokenRow>(concat!(
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
        .transpose()?;
        if let (Some(record), Some(cache), Some(generation)) = (&found, cache, generation) {
            cache.put(hash, record, generation);
        }
        Ok(found)
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
        let mut tx = self.begin("revoking admin tokens").await?;
        let revoked = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE token_type = 'admin' AND revoked_at IS NULL",
        )
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error("revoking admin tokens", e))?
        .rows_affected();
        announce_revocation(self, &mut tx).await?;
        tx.commit().await.map_err(|e| self.error("committing a revocation", e))?;
        self.forget_tokens();
        Ok(revoked)
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
