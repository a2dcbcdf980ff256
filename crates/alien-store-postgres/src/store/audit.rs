//! The audit log: one row per call, numbered by an identity column, listed newest first.
//!
//! Ids must become visible in their order, or a page read while appends commit could pass over
//! an entry whose lower id committed late (the next page starts below it). So each append takes
//! one transaction-scoped advisory lock before it draws its id and holds it until it commits:
//! appends from every replica take turns, one commit each (the mutating calls only; agents'
//! syncs and receivers' polls are not audited).

use alien_core::TokenType;
use alien_store::codec::{into_page, limit_of, page_start};
use alien_store::sql::rows::{AuditRow, audit_columns};
use alien_store::{AuditEntry, AuditLog, NewAuditEntry, Page, PageRequest, StoreResult};

use super::PostgresStore;

/// The advisory lock appends take turns on (`pg_advisory_xact_lock(bigint)`): "alienaud".
const AUDIT_LOCK: i64 = 0x616c_6965_6e61_7564;

#[async_trait::async_trait]
impl AuditLog for PostgresStore {
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<()> {
        let what = "appending to the audit log";
        let mut tx = self.begin(what).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(what, e))?;
        sqlx::query(
            "INSERT INTO audit_log (at, token_id, token_type, action, target_id, status, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(entry.at.timestamp_millis())
        .bind(entry.token_id.as_ref().map(|id| id.as_str().to_owned()))
        .bind(entry.token_type.map(TokenType::as_str))
        .bind(entry.action)
        .bind(entry.target_id)
        .bind(i32::from(entry.status))
        .bind(entry.outcome)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(what, e))?;
        tx.commit().await.map_err(|e| self.error(what, e))
    }

    async fn list_audit(&self, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        let (before, _) = page_start("a", page, i64::MAX)?;
        let limit = limit_of(page);
        let rows = sqlx::query_as::<_, AuditRow<i32>>(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error("listing the audit log", e))?;
        into_page(rows, limit, AuditRow::<i32>::cursor, AuditRow::<i32>::into_entry)
    }
}
