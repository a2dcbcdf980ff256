//! The audit log, appended with group commit: concurrent appends join a queue, and whoever holds
//! the flush lock writes everything queued with one multi-row statement (one disk sync) and tells
//! each caller; a caller returns only once its entry is committed. Listed newest first.

use alien_core::TokenType;
use alien_store::sql::rows::{AuditRow, audit_columns};
use alien_store::{
    AuditEntry, AuditLog, NewAuditEntry, Page, PageRequest, StoreError, StoreResult,
};
use sqlx::Sqlite;
use sqlx::sqlite::SqlitePool;

use crate::SqliteStore;
use crate::codec::{into_page, limit_of, page_start};
use crate::error::sql_error;

/// An audit entry waiting for its group commit, and whom to tell.
pub(crate) type QueuedAudit = (NewAuditEntry, tokio::sync::oneshot::Sender<StoreResult<()>>);

impl SqliteStore {
    fn lock_audit_queue(&self) -> std::sync::MutexGuard<'_, Vec<QueuedAudit>> {
        // A panic while holding it cannot leave the queue inconsistent (push and take only).
        self.audit_queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Inserts `batch` with one multi-row statement (one disk sync); a batch of more than a
/// statement's rows is one transaction.
async fn write_audit(writer: &SqlitePool, batch: &[QueuedAudit]) -> StoreResult<()> {
    const ROWS: usize = 1000; // 7 parameters a row: far below SQLite's 32,766 per statement.
    let mut tx = match batch.len() > ROWS {
        true => Some(
            writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| sql_error("appending to the audit log", e))?,
        ),
        false => None,
    };
    for chunk in batch.chunks(ROWS) {
        let mut insert = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO audit_log (at, token_id, token_type, action, target_id, status, outcome) ",
        );
        insert.push_values(chunk, |mut row, (entry, _)| {
            row.push_bind(entry.at.timestamp_millis())
                .push_bind(entry.token_id.as_ref().map(|id| id.as_str().to_owned()))
                .push_bind(entry.token_type.map(TokenType::as_str))
                .push_bind(entry.action.clone())
                .push_bind(entry.target_id.clone())
                .push_bind(i64::from(entry.status))
                .push_bind(entry.outcome.clone());
        });
        let statement = insert.build().persistent(false);
        let done = match tx.as_mut() {
            Some(tx) => statement.execute(&mut **tx).await,
            None => statement.execute(writer).await,
        };
        done.map_err(|e| sql_error("appending to the audit log", e))?;
    }
    if let Some(tx) = tx {
        tx.commit().await.map_err(|e| sql_error("committing the audit log", e))?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl AuditLog for SqliteStore {
    /// Group commit: the entry joins a queue; whoever holds the flush lock writes everything
    /// queued in one transaction (one disk sync) and tells each caller. A caller returns only
    /// once its entry is committed, so an acknowledged call's entry survives a crash.
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<()> {
        let (done, committed) = tokio::sync::oneshot::channel();
        self.lock_audit_queue().push((entry, done));
        {
            let _flushing = self.audit_flush.lock().await;
            let batch = std::mem::take(&mut *self.lock_audit_queue());
            if !batch.is_empty() {
                // A task of its own: a caller whose request is dropped meanwhile must not take
                // the other callers' entries with it.
                let writer = self.writer.clone();
                let flush = tokio::spawn(async move {
                    let result = write_audit(&writer, &batch).await;
                    for (_, done) in batch {
                        let _ = done.send(result.as_ref().map(|_| ()).map_err(|e| {
                            StoreError::Database(format!("appending to the audit log: {e}"))
                        }));
                    }
                });
                // Holding the flush lock until it is written keeps entries in order.
                let _ = flush.await;
            }
        }
        committed.await.unwrap_or_else(|_| {
            Err(StoreError::Database("the audit log writer went away".to_owned()))
        })
    }

    async fn list_audit(&self, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        let (before, _) = page_start("a", page, i64::MAX)?;
        let limit = limit_of(page);
        let rows = sqlx::query_as::<_, AuditRow>(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
        ))
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.readers)
        .await
        .map_err(|e| sql_error("listing the audit log", e))?;
        into_page(rows, limit, AuditRow::cursor, AuditRow::into_entry)
    }
}
