//! Database errors as [`StoreError`]s: what the operator can wait out or fix outside the process
//! (a lock held elsewhere, a read-only file, a full disk, I/O) is `Unavailable`, a damaged file
//! is `Corrupt`, anything else `Database`; constraint violations are told apart by the index they
//! hit.

use alien_store::StoreError;
use sqlx::error::ErrorKind;

/// Maps a database error: locks, read-only files, I/O and pool exhaustion are `Unavailable`.
pub(crate) fn sql_error(context: &str, err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            // Primary result codes: BUSY 5, LOCKED 6, READONLY 8, IOERR 10, CORRUPT 11, FULL 13,
            // CANTOPEN 14, PROTOCOL 15, NOTADB 26.
            match code & 0xff {
                5 | 6 | 8 | 10 | 13 | 14 | 15 => {
                    StoreError::Unavailable(format!("{context}: {err}"))
                }
                11 | 26 => StoreError::Corrupt(format!("{context}: {err}")),
                _ => StoreError::Database(format!("{context}: {err}")),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => StoreError::Unavailable(format!("{context}: {err}")),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt(format!("{context}: {err}"))
        }
        _ => StoreError::Database(format!("{context}: {err}")),
    }
}

pub(crate) fn is_unique_violation(err: &sqlx::Error, index_hint: &str) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.kind() == ErrorKind::UniqueViolation && db.message().contains(index_hint))
}

pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == ErrorKind::ForeignKeyViolation)
}
