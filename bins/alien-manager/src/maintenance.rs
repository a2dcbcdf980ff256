//! The maintenance subcommands: `rotate-key`, `admin-token reset` and `registry gc`.

use alien_config::ManagerConfig;
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::keyfile;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};

use crate::failure::Failure;
use crate::state::{AnyStore, KeyInfo};

/// `rotate-key --new-key HEX`.
pub async fn rotate_key(store: AnyStore, keys: KeyInfo, new_key: &str) -> Result<(), Failure> {
    let new = EncryptionKey::from_hex(new_key.trim())
        .map(Sealer::new)
        .map_err(|e| Failure::config(format!("--new-key: {e}")));
    match (new, store) {
        (Err(e), store) => {
            store.close().await;
            Err(e)
        }
        (Ok(new), AnyStore::Sqlite(store)) => {
            let result = rotate_sqlite(&store, &keys, new, new_key).await;
            store.close().await;
            result
        }
        #[cfg(feature = "postgres")]
        (Ok(new), AnyStore::Postgres(store)) => rotate_postgres(store, &keys, new).await,
    }
}

async fn rotate_sqlite(
    store: &SqliteStore,
    keys: &KeyInfo,
    new: Sealer,
    new_key: &str,
) -> Result<(), Failure> {
    match &keys.file {
        None => {
            let count = store.rotate_key(new).await.map_err(|e| Failure::runtime(e.to_string()))?;
            println!("{}", configured_key_note(count));
        }
        Some(file) => {
            let count = keyfile::rotate_key_file(store, file, new_key)
                .await
                .map_err(|e| Failure::runtime(e.to_string()))?;
            println!("re-sealed {count} values; the new key is in {}", file.display());
        }
    }
    Ok(())
}

/// On PostgreSQL the key must be configured: a key file is one replica's, and replacing it
/// cannot be made atomic with the database's commit.
#[cfg(feature = "postgres")]
async fn rotate_postgres(
    store: std::sync::Arc<alien_store_postgres::PostgresStore>,
    keys: &KeyInfo,
    new: Sealer,
) -> Result<(), Failure> {
    if let Some(file) = &keys.file {
        store.close().await;
        return Err(Failure::config(format!(
            "rotate-key on PostgreSQL needs the key in [database] encryption-key (or \
             ALIEN_DATABASE__ENCRYPTION_KEY), not in {}; nothing was changed",
            file.display()
        )));
    }
    let Ok(mut store) = std::sync::Arc::try_unwrap(store) else {
        return Err(Failure::runtime("the store is still in use".to_owned()));
    };
    let result = store.rotate_key(new).await.map_err(|e| Failure::runtime(e.to_string()));
    store.close().await;
    println!("{}", configured_key_note(result?));
    Ok(())
}

fn configured_key_note(count: u64) -> String {
    format!(
        "re-sealed {count} values with the new key; set [database] encryption-key (or \
         ALIEN_DATABASE__ENCRYPTION_KEY) to it before the next start"
    )
}

/// `admin-token reset`.
pub async fn reset_admin(store: AnyStore, keys: KeyInfo) -> Result<(), Failure> {
    let token = alien_server::bootstrap::reset_admin(store.shared().as_ref())
        .await
        .map_err(|e| Failure::runtime(e.to_string()));
    store.close().await;
    let token = token?;
    print!("{}", alien_server::bootstrap::admin_token_banner(&keys.base_url, &token));
    Ok(())
}

/// `registry gc`: one collection pass over the embedded registry's storage.
pub async fn registry_gc(config: &ManagerConfig) -> Result<(), Failure> {
    let blobs = crate::backends::registry_blobs(config).await?;
    let report = alien_registry::gc::collect_garbage(
        &blobs,
        std::time::SystemTime::now(),
        alien_registry::gc::DEFAULT_GRACE,
        alien_registry::gc::DEFAULT_UPLOAD_TTL,
    )
    .await
    .map_err(|e| Failure::runtime(e.message))?;
    println!(
        "removed {} blobs ({} bytes) and {} idle uploads; kept {} blobs",
        report.blobs_removed, report.bytes_freed, report.uploads_removed, report.blobs_kept
    );
    Ok(())
}
