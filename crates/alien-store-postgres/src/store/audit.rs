//! The audit log: one row per call, numbered by an identity column, listed newest first.
//!
//! Ids must become visible in their order, or a page read while appends commit could pass over
//! an entry whose lower id committed late (the next page starts below it). So each append
//! transaction takes one transaction-scoped advisory lock before it draws its ids and holds it
//! until it commits: appends from every replica take turns (the mutating calls only; agents'
//! syncs and receivers' polls are not audited).
//!
//! Appends commit in groups: one writer task per replica takes every entry queued while it
//! wrote the previous group and inserts them all, in queue order, with one statement and one
//! commit. A caller returns only once its entry is committed.

use alien_core::TokenType;
use alien_store::codec::{into_page, limit_of, page_start};
use alien_store::sql::rows::{AuditRow, audit_columns};
use alien_store::{
    AuditEntry, AuditLog, NewAuditEntry, Page, PageRequest, StoreError, StoreResult,
};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::{PostgresStore, sql_error};

/// The advisory lock appends take turns on (`pg_advisory_xact_lock(bigint)`): "alienaud".
const AUDIT_LOCK: i64 = 0x616c_6965_6e61_7564;
/// Entries inserted together at most.
const MAX_GROUP: usize = 256;
const WHAT: &str = "appending to the audit log";

/// The group's rows in queue order: `WITH ORDINALITY` numbers them, and the identity column
/// draws ids in the order the rows are inserted.
const INSERT: &str = "INSERT INTO audit_log \
     (at, token_id, token_type, action, target_id, status, outcome) \
     SELECT at, token_id, token_type, action, target_id, status, outcome \
     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], \
     $7::text[]) WITH ORDINALITY \
     AS u(at, token_id, token_type, action, target_id, status, outcome, n) ORDER BY n";

/// An audit entry waiting for its group commit, and whom to tell.
pub(super) type QueuedAudit = (NewAuditEntry, oneshot::Sender<StoreResult<()>>);

/// Starts the writer task of `pool`'s audit log; it ends when the returned queue is dropped.
pub(super) fn start_writer(pool: PgPool, shown: String) -> mpsc::UnboundedSender<QueuedAudit> {
    let (queue, mut queued) = mpsc::unbounded_channel::<QueuedAudit>();
    tokio::spawn(async move {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while queued.recv_many(&mut group, MAX_GROUP).await > 0 {
            let written =
                write(&pool, &group).await.map_err(|e| sql_error(&format!("{shown} {WHAT}"), e));
            for (_, reply) in group.drain(..) {
                // A caller that went away meanwhile has nobody to tell.
                let _ = reply.send(written.as_ref().copied().map_err(again));
            }
        }
    });
    queue
}

/// `err` once more, for another caller of the group (a [`StoreError`] is not `Clone`;
/// [`sql_error`] makes only these kinds).
fn again(err: &StoreError) -> StoreError {
    match err {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        other => StoreError::Database(other.to_string()),
    }
}

/// Inserts `group` in one transaction, under the lock.
async fn write(pool: &PgPool, group: &[QueuedAudit]) -> Result<(), sqlx::Error> {
    let n = group.len();
    let (mut at, mut token_id, mut token_type, mut action) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut target_id, mut status, mut outcome) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for (entry, _) in group {
        at.push(entry.at.timestamp_millis());
        token_id.push(entry.token_id.as_ref().map(|id| id.as_str()));
        token_type.push(entry.token_type.map(TokenType::as_str));
        action.push(entry.action.as_str());
        target_id.push(entry.target_id.as_deref());
        status.push(i32::from(entry.status));
        outcome.push(entry.outcome.as_str());
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(AUDIT_LOCK).execute(&mut *tx).await?;
    sqlx::query(INSERT)
        .bind(&at)
        .bind(&token_id)
        .bind(&token_type)
        .bind(&action)
        .bind(&target_id)
        .bind(&status)
        .bind(&outcome)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

#[async_trait::async_trait]
impl AuditLog for PostgresStore {
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<()> {
        let (reply, written) = oneshot::channel();
        let stopped =
            || StoreError::Database(format!("{} {WHAT}: the audit writer stopped", self.shown));
        self.audit.send((entry, reply)).map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?
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
