//! The audit log: one row per call, numbered by an identity column, listed newest first. Each
//! append is its own statement (PostgreSQL's group commit batches the disk syncs of concurrent
//! appends, across replicas too).

use alien_core::TokenType;
use alien_store::codec::{
    decode_cursor, encode_cursor, into_page, limit_of, opt_id, time, token_type,
};
use alien_store::{
    AuditEntry, AuditLog, NewAuditEntry, Page, PageRequest, StoreError, StoreResult,
};

use super::PostgresStore;

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: i64,
    token_id: Option<String>,
    token_type: Option<String>,
    action: String,
    target_id: Option<String>,
    status: i32,
    outcome: String,
}

impl AuditRow {
    fn into_entry(self) -> StoreResult<AuditEntry> {
        Ok(AuditEntry {
            id: self.id,
            at: time("audit_log.at", self.at)?,
            token_id: opt_id("audit_log.token_id", self.token_id.as_deref())?,
            token_type: self.token_type.as_deref().map(token_type).transpose()?,
            action: self.action,
            target_id: self.target_id,
            status: u16::try_from(self.status).map_err(|_| {
                StoreError::Corrupt(format!("audit_log.status: {} out of range", self.status))
            })?,
            outcome: self.outcome,
        })
    }
}

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
        let before = match &page.cursor {
            Some(cursor) => decode_cursor("a", cursor)?.0,
            None => i64::MAX,
        };
        let limit = limit_of(page);
        let rows = sqlx::query_as::<_, AuditRow>(
            "SELECT id, at, token_id, token_type, action, target_id, status, outcome \
             FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error("listing the audit log", e))?;
        into_page(rows, limit, |a| encode_cursor("a", a.id, ""), AuditRow::into_entry)
    }
}
