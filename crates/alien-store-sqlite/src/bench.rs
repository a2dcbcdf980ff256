//! Seeding for the benchmarks (feature `bench`): fleets of deployments inserted in one statement,
//! far faster than creating them one by one, so that a benchmark measures what it names.

use alien_core::{Id, IdKind, Platform, RawToken, TokenType};
use alien_store::{StoreError, StoreResult};

use crate::SqliteStore;
use crate::codec::{now_millis, seal, to_json, token_aad};
use crate::error::sql_error;

impl SqliteStore {
    /// For benchmarks only: inserts `count` running push-mode deployments on `platform` into
    /// `group` in one statement (no tokens, no variables), returning the first one's id.
    #[doc(hidden)]
    pub async fn seed_running_deployments(
        &self,
        group: &Id,
        platform: Platform,
        count: u32,
    ) -> StoreResult<Id> {
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3) \
             INSERT INTO deployments (id, name, platform, deployment_model, deployment_group_id, \
             status, created_at, updated_at) \
             SELECT printf('dep_%028d', i), printf('seed-%d', i), ?2, 'push', ?1, 'running', i, i FROM n",
        )
        .bind(group.as_str())
        .bind(platform.as_str())
        .bind(i64::from(count))
        .execute(&self.writer)
        .await
        .map_err(|e| sql_error("seeding deployments", e))?;
        Id::parse(IdKind::Deployment, &format!("dep_{:028}", 1))
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// For benchmarks only: the reference of release marking, one plain UPDATE of every
    /// deployment row (a column nothing reads), committed as every write is; how long it took.
    #[doc(hidden)]
    pub async fn bench_plain_update_all(&self) -> StoreResult<std::time::Duration> {
        let started = std::time::Instant::now();
        sqlx::query("UPDATE deployments SET next_step_after = next_step_after + 1")
            .execute(&self.writer)
            .await
            .map_err(|e| sql_error("updating every deployment", e))?;
        Ok(started.elapsed())
    }

    /// For benchmarks only: inserts `count` pull-mode deployments on `platform` into `group` in
    /// one transaction, each running `release` with `stack_state`, its agent heard from now, and
    /// its own deployment token stored as `create_deployment` stores it (hash in `tokens`, raw
    /// value sealed in the row). Returns each deployment's id and raw token, for the simulated
    /// agents to sync with.
    #[doc(hidden)]
    pub async fn seed_pull_deployments(
        &self,
        group: &Id,
        platform: Platform,
        release: &Id,
        stack_state: &serde_json::Value,
        count: u32,
    ) -> StoreResult<Vec<(Id, RawToken)>> {
        let now = now_millis();
        let sealer = self.sealer.read().await;
        let mut agents = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..count {
            let id = Id::new(IdKind::Deployment);
            let raw = RawToken::generate(TokenType::Deployment)
                .map_err(|e| StoreError::Database(format!("generating a deployment token: {e}")))?;
            let sealed = seal(&sealer, &token_aad(id.as_str()), raw.expose().as_bytes())?;
            let token_id = Id::new(IdKind::Token);
            rows.push([id.to_string(), token_id.to_string(), raw.hash(), raw.key_prefix(), sealed]);
            agents.push((id, raw));
        }
        let rows = to_json("the seeded rows", &rows)?;
        let mut tx = self.begin("seeding pull deployments").await?;
        sqlx::query(
            "INSERT INTO deployments (id, name, platform, deployment_model, deployment_group_id, \
             status, current_release_id, desired_release_id, stack_state, token, last_heartbeat_at, \
             created_at, updated_at) \
             SELECT json_extract(value, '$[0]'), 'agent-' || substr(json_extract(value, '$[0]'), 5), \
             ?2, 'pull', ?1, 'running', ?3, ?3, ?4, json_extract(value, '$[4]'), ?5, ?5, ?5 \
             FROM json_each(?6)",
        )
        .bind(group.as_str())
        .bind(platform.as_str())
        .bind(release.as_str())
        .bind(to_json("the stack state", stack_state)?)
        .bind(now)
        .bind(&rows)
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_error("seeding pull deployments", e))?;
        sqlx::query(
            "INSERT INTO tokens (id, token_type, key_hash, key_prefix, deployment_group_id, \
             deployment_id, created_at) \
             SELECT json_extract(value, '$[1]'), 'deployment', json_extract(value, '$[2]'), \
             json_extract(value, '$[3]'), ?1, json_extract(value, '$[0]'), ?2 FROM json_each(?3)",
        )
        .bind(group.as_str())
        .bind(now)
        .bind(&rows)
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_error("seeding deployment tokens", e))?;
        tx.commit().await.map_err(|e| sql_error("committing seeded deployments", e))?;
        Ok(agents)
    }
}
