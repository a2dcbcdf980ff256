//! A key kept in a file next to the data (`{state-dir}/encryption.key`, see
//! [`load_or_generate`](crate::seal::load_or_generate)): its rotation, and the recovery of a
//! rotation that was interrupted.
//!
//! A rotation writes the new key to `encryption.key.next`, re-seals every value in one
//! transaction, then renames the file over `encryption.key`. After a crash before the commit the
//! old key still opens the data and the next key is dropped; after a crash between the commit and
//! the rename only the next key opens it, and [`open_with_key_file`] finishes the rename.

use std::io::Write;
use std::path::{Path, PathBuf};

use alien_store::StoreError;

use crate::SqliteStore;
use crate::seal::{EncryptionKey, SealError, Sealer};

/// The next key during a rotation of a file-based key.
pub const NEXT_KEY_FILE: &str = "encryption.key.next";

/// Why a rotation of a file-based key failed. The messages name the files and what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The new key is not 64 hex characters.
    #[error("{0}")]
    InvalidKey(#[from] SealError),
    /// The next key file could not be written (nothing was re-sealed).
    #[error("cannot write {}: {source}", path.display())]
    WriteNext {
        /// The next key file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// Re-sealing failed (nothing was re-sealed: the old key still opens the data).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every value was re-sealed, but the next key file could not replace the key file.
    #[error("re-sealed, but cannot replace {}: {source}; rename {} to it", key_file.display(), next.display())]
    Replace {
        /// The key file.
        key_file: PathBuf,
        /// The next key file holding the key that now opens the data.
        next: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// Opens `db_file` with `sealer`, the key read from `key_file`, and finishes or drops a rotation
/// of that file that was interrupted (see the module documentation).
pub async fn open_with_key_file(
    db_file: &Path,
    sealer: Sealer,
    key_file: &Path,
) -> Result<SqliteStore, StoreError> {
    let result = SqliteStore::open(db_file, sealer).await;
    let next = key_file.with_file_name(NEXT_KEY_FILE);
    if !next.exists() {
        return result;
    }
    match result {
        Ok(store) => {
            tracing::warn!("dropping {NEXT_KEY_FILE} of a key rotation that did not commit");
            let _ = std::fs::remove_file(&next);
            Ok(store)
        }
        Err(StoreError::WrongKey(reason)) => {
            let hex = std::fs::read_to_string(&next)
                .map_err(|e| StoreError::WrongKey(format!("{reason}; {NEXT_KEY_FILE}: {e}")))?;
            let sealer = EncryptionKey::from_hex(hex.trim())
                .map(Sealer::new)
                .map_err(|e| StoreError::WrongKey(format!("{reason}; {NEXT_KEY_FILE}: {e}")))?;
            let store = SqliteStore::open(db_file, sealer).await?;
            std::fs::rename(&next, key_file)
                .map_err(|e| StoreError::Database(format!("cannot finish key rotation: {e}")))?;
            tracing::warn!("finished an interrupted key rotation");
            Ok(store)
        }
        Err(other) => Err(other),
    }
}

/// Re-seals every value of `store` with `new_key` (64 hex characters) and makes `key_file` hold
/// it, through [`NEXT_KEY_FILE`] so that a crash at any point leaves a key that opens the data.
/// Returns how many values were re-sealed.
pub async fn rotate_key_file(
    store: &SqliteStore,
    key_file: &Path,
    new_key: &str,
) -> Result<u64, KeyFileError> {
    let new_key = new_key.trim();
    let new = EncryptionKey::from_hex(new_key).map(Sealer::new)?;
    let next = key_file.with_file_name(NEXT_KEY_FILE);
    write_key_file(&next, new_key)
        .map_err(|source| KeyFileError::WriteNext { path: next.clone(), source })?;
    let count = store.rotate_key(new).await?;
    std::fs::rename(&next, key_file).map_err(|source| KeyFileError::Replace {
        key_file: key_file.to_owned(),
        next,
        source,
    })?;
    Ok(count)
}

/// Writes `hex` to a new file `path` (mode 0600, replacing a leftover one) and syncs it.
fn write_key_file(path: &Path, hex: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = alien_store::private_fs::new_file_options().open(path)?;
    file.write_all(hex.as_bytes()).and_then(|()| file.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_key() -> String {
        EncryptionKey::generate().unwrap().expose_hex()
    }

    async fn open(db: &Path, hex: &str) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(db, Sealer::new(EncryptionKey::from_hex(hex).unwrap())).await
    }

    #[tokio::test]
    async fn a_rotation_replaces_the_key_file_and_leaves_no_next_file() {
        let dir = tempfile::tempdir().unwrap();
        let (db, key_file) = (dir.path().join("db"), dir.path().join("encryption.key"));
        let (old, new) = (hex_key(), hex_key());
        std::fs::write(&key_file, &old).unwrap();
        let store = open(&db, &old).await.unwrap();
        assert_eq!(rotate_key_file(&store, &key_file, &format!(" {new}\n")).await.unwrap(), 1);
        store.close().await;
        assert_eq!(std::fs::read_to_string(&key_file).unwrap(), new);
        assert!(!dir.path().join(NEXT_KEY_FILE).exists());
        assert!(matches!(open(&db, &old).await, Err(StoreError::WrongKey(_))));
        open(&db, &new).await.unwrap().close().await;

        let store = open(&db, &new).await.unwrap();
        let err = rotate_key_file(&store, &key_file, "nothex").await.unwrap_err();
        assert!(matches!(err, KeyFileError::InvalidKey(_)), "{err}");
        assert!(!dir.path().join(NEXT_KEY_FILE).exists(), "nothing written for a bad key");
        store.close().await;
    }

    #[tokio::test]
    async fn an_interrupted_rotation_is_finished_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (db, key_file) = (dir.path().join("db"), dir.path().join("encryption.key"));
        let next = dir.path().join(NEXT_KEY_FILE);
        let (old, new) = (hex_key(), hex_key());
        std::fs::write(&key_file, &old).unwrap();
        open(&db, &old).await.unwrap().close().await;

        // Crash before the commit: the old key opens the data, the next key is dropped.
        std::fs::write(&next, &new).unwrap();
        let sealer = Sealer::new(EncryptionKey::from_hex(&old).unwrap());
        open_with_key_file(&db, sealer, &key_file).await.unwrap().close().await;
        assert!(!next.exists());
        assert_eq!(std::fs::read_to_string(&key_file).unwrap(), old);

        // Crash between the commit and the rename: only the next key opens the data.
        let store = open(&db, &old).await.unwrap();
        store.rotate_key(Sealer::new(EncryptionKey::from_hex(&new).unwrap())).await.unwrap();
        store.close().await;
        std::fs::write(&next, &new).unwrap();
        let sealer = Sealer::new(EncryptionKey::from_hex(&old).unwrap());
        open_with_key_file(&db, sealer, &key_file).await.unwrap().close().await;
        assert!(!next.exists());
        assert_eq!(std::fs::read_to_string(&key_file).unwrap(), new);
    }
}
