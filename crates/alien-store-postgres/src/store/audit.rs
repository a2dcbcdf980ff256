//! The audit log: one row per call, numbered by an identity column, listed newest first. Each
//! append is its own statement (PostgreSQL's group commit batches the disk syncs of concurrent
//! appends, across replicas too).

use alien_core::TokenType;
use alien_store::codec::{into_page, limit_of, page_start};
use alien_store::sql::rows::{AuditRow, audit_columns};
use alien_store::{AuditEntry, AuditLog, NewAuditEntry, Page, PageRequest, StoreResult};

use super::PostgresStore;

#[async_trait::async_trait]
impl AuditLog for PostgresStore {
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<()> {
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
        .execute(&self.pool)
        .await
        .map_err(|e| self.error("appending to the audit log", e))?;
        Ok(())
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
