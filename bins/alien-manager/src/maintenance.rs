//! The maintenance subcommands: `rotate-key`, `admin-token reset` and `registry gc`.

use alien_config::ManagerConfig;
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::keyfile;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};

use crate::failure::Failure;
use crate::state::KeyInfo;

/// `rotate-key --new-key HEX`.
pub async fn rotate_key(store: SqliteStore, keys: KeyInfo, new_key: &str) -> Result<(), Failure> {
    let result = rotate(&store, &keys, new_key).await;
    store.close().await;
    result
}

async fn rotate(store: &SqliteStore, keys: &KeyInfo, new_key: &str) -> Result<(), Failure> {
    let new = EncryptionKey::from_hex(new_key.trim())
        .map(Sealer::new)
        .map_err(|e| Failure::config(format!("--new-key: {e}")))?;
    match &keys.file {
        None => {
            let count = store.rotate_key(new).await.map_err(|e| Failure::runtime(e.to_string()))?;
            println!(
                "re-sealed {count} values with the new key; set [database] encryption-key (or ALIEN_DATABASE__ENCRYPTION_KEY) to it before the next start"
            );
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

/// `admin-token reset`.
pub async fn reset_admin(store: SqliteStore, keys: KeyInfo) -> Result<(), Failure> {
    let token = alien_server::bootstrap::reset_admin(&store)
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
