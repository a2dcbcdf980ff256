//! Snapshots of SQLite files for `alien-manager backup`, and the key check `restore` runs on a
//! snapshot before it puts anything in place.
//!
//! A snapshot is `VACUUM INTO` through a read-only connection: one read transaction, so it holds
//! exactly the commits that preceded it, while a running manager goes on writing (WAL mode lets a
//! reader and the writer run side by side). The copy is written to a new file (mode 0600) and
//! checked with `PRAGMA quick_check` before it is called done.

use std::path::Path;

use alien_store::{StoreError, StoreResult};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

use crate::error::sql_error;
use crate::seal::Sealer;
use crate::{BUSY_TIMEOUT, precheck_key};

/// Copies the SQLite database `src` into the new file `dest` as one consistent snapshot.
///
/// `dest` must not exist. `src` may be open in other processes (a running manager).
pub async fn snapshot(src: &Path, dest: &Path) -> StoreResult<()> {
    let shown = src.display().to_string();
    if !src.is_file() {
        return Err(StoreError::Unavailable(format!("{shown} does not exist")));
    }
    // An empty file of our own first: VACUUM INTO fills an empty file, and the mode stays 0600.
    alien_store::private_fs::new_file_options()
        .open(dest)
        .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dest.display())))?;
    let options =
        SqliteConnectOptions::new().filename(src).busy_timeout(BUSY_TIMEOUT).read_only(true);
    let mut conn = options
        .connect()
        .await
        .map_err(|e| sql_error(&format!("opening {shown} for reading"), e))?;
    let dest_text = dest.to_str().ok_or_else(|| {
        StoreError::Unavailable(format!("{} is not a UTF-8 path", dest.display()))
    })?;
    let copied = sqlx::query("VACUUM INTO ?1").bind(dest_text).execute(&mut conn).await;
    let _ = conn.close().await;
    copied.map_err(|e| sql_error(&format!("copying {shown} to {}", dest.display()), e))?;
    quick_check(dest).await
}

/// `PRAGMA quick_check` on a database file that nothing else has open.
pub async fn quick_check(db_file: &Path) -> StoreResult<()> {
    let shown = db_file.display().to_string();
    let options = SqliteConnectOptions::new().filename(db_file).read_only(true).immutable(true);
    let mut conn = options
        .connect()
        .await
        .map_err(|e| sql_error(&format!("opening {shown} for reading"), e))?;
    let verdict: Result<Vec<String>, _> =
        sqlx::query_scalar("PRAGMA quick_check").fetch_all(&mut conn).await;
    let _ = conn.close().await;
    let verdict = verdict.map_err(|e| sql_error(&format!("checking {shown}"), e))?;
    if verdict.iter().all(|line| line == "ok") {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "{shown} fails its integrity check: {}",
            verdict.join("; ")
        )))
    }
}

/// Whether `sealer`'s key opens the data of the database file `db_file`, read without changing
/// it ([`StoreError::WrongKey`] when it does not).
pub async fn check_key(db_file: &Path, sealer: &Sealer) -> StoreResult<()> {
    precheck_key(db_file, sealer, &db_file.display().to_string()).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::SqliteStore;
    use crate::seal::EncryptionKey;
    use alien_store::DeploymentStore as _;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(EncryptionKey::from_hex(&hex::encode([byte; 32])).unwrap())
    }

    #[tokio::test]
    async fn a_snapshot_of_an_open_store_holds_its_commits_and_opens_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let store = SqliteStore::open(&db, sealer(1)).await.unwrap();
        let group = store.create_group("g", 10).await.unwrap();
        // Taken while the store is open (its writes still in the WAL).
        let copy = dir.path().join("copy.db");
        snapshot(&db, &copy).await.unwrap();
        store.close().await;
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(check_key(&copy, &sealer(2)).await, Err(StoreError::WrongKey(_))));
        check_key(&copy, &sealer(1)).await.unwrap();
        let reopened = SqliteStore::open(&copy, sealer(1)).await.unwrap();
        assert_eq!(reopened.get_group(&group.id).await.unwrap().unwrap().name, group.name);
        reopened.close().await;
    }

    #[tokio::test]
    async fn a_snapshot_refuses_a_missing_source_and_an_existing_destination() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.db");
        let dest = dir.path().join("dest.db");
        assert!(snapshot(&missing, &dest).await.is_err());
        assert!(!dest.exists(), "nothing created for a missing source");
        let db = dir.path().join("store.db");
        SqliteStore::open(&db, sealer(1)).await.unwrap().close().await;
        std::fs::write(&dest, b"kept").unwrap();
        assert!(snapshot(&db, &dest).await.is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"kept");
    }

    #[tokio::test]
    async fn quick_check_finds_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        SqliteStore::open(&db, sealer(1)).await.unwrap().close().await;
        let mut bytes = std::fs::read(&db).unwrap();
        let len = bytes.len();
        bytes[len / 2..].fill(0x55);
        std::fs::write(&db, &bytes).unwrap();
        assert!(quick_check(&db).await.is_err());
    }
}
