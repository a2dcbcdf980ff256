//! Opening the store (state directory, encryption key, first-run checks) and the maintenance
//! subcommands `rotate-key` and `admin-token reset`.

use std::path::{Path, PathBuf};

use alien_config::ManagerConfig;
use alien_store::StoreError;
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::keyfile;
use alien_store_sqlite::seal::{EncryptionKey, KeySource, Sealer};

/// Exit status for configuration errors (also a key that does not open the data).
pub const EXIT_CONFIG: u8 = 2;

/// A failure with the exit status it ends the process with.
#[derive(Debug)]
pub struct Failure {
    /// Exit status.
    pub code: u8,
    /// What to tell the operator.
    pub message: String,
}

impl Failure {
    /// A configuration problem: exit 2.
    pub fn config(message: impl Into<String>) -> Self {
        Self { code: EXIT_CONFIG, message: message.into() }
    }

    /// A runtime problem: exit 1.
    pub fn runtime(message: impl Into<String>) -> Self {
        Self { code: 1, message: message.into() }
    }
}

/// Where the key came from, for rotation.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// The key file, when the key is not configured.
    pub file: Option<PathBuf>,
    /// The effective base URL (for the admin banner).
    pub base_url: String,
}

/// An opened store.
pub struct Opened {
    /// The store.
    pub store: SqliteStore,
    /// Its key's origin.
    pub keys: KeyInfo,
}

/// Creates the state directory (0700), loads or generates the key, opens the database.
pub async fn open_store(config: &ManagerConfig) -> Result<Opened, Failure> {
    let state_dir = &config.database.state_dir;
    prepare_state_dir(state_dir)?;
    let configured = config.database.encryption_key.as_ref().map(|k| k.expose().to_owned());
    let (sealer, source) =
        alien_store_sqlite::seal::load_or_generate(state_dir, configured.as_deref())
            .map_err(|e| Failure::config(format!("encryption key: {e}")))?;
    let file = match source {
        KeySource::Configured => None,
        KeySource::Generated(path) => {
            tracing::warn!(path = %path.display(), "generated an encryption key next to the data; set [database] encryption-key to keep it elsewhere");
            Some(path)
        }
        KeySource::KeyFile(path) => {
            tracing::warn!(path = %path.display(), "the encryption key lives next to the data; set [database] encryption-key to keep it elsewhere");
            Some(path)
        }
    };
    let db_file = config.database.database_file();
    let opened = match &file {
        Some(key_file) => keyfile::open_with_key_file(&db_file, sealer, key_file).await,
        None => SqliteStore::open(&db_file, sealer).await,
    };
    let store = opened.map_err(|e| match e {
        StoreError::WrongKey(_) => {
            Failure::config(format!("{e} (database {}); nothing was changed", db_file.display()))
        }
        other => {
            Failure::runtime(format!("cannot open the database {}: {other}", db_file.display()))
        }
    })?;
    Ok(Opened { store, keys: KeyInfo { file, base_url: config.server.effective_base_url() } })
}

fn prepare_state_dir(dir: &Path) -> Result<(), Failure> {
    alien_store::private_fs::create_dir(dir).map_err(|e| {
        Failure::runtime(format!("cannot create state directory {}: {e}", dir.display()))
    })
}

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
    let blobs = crate::backends::registry_blobs(config)?;
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

/// This replica's lease owner name, kept in `{state-dir}/replica-id` so that a manager restarted
/// after a crash takes its own leases back at once instead of waiting for them to go stale. The
/// file stays locked while the process runs: a second process on the same state directory (an
/// overlapping restart) gets a fresh name of its own, so two processes never share leases.
pub fn replica_id(config: &ManagerConfig) -> Result<String, Failure> {
    use std::io::{Read, Seek, Write};
    static HELD: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    let path = config.database.state_dir.join("replica-id");
    let fail = |e: std::io::Error| Failure::runtime(format!("{}: {e}", path.display()));
    let mut file = alien_store::private_fs::new_file_options()
        .create_new(false)
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .map_err(fail)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let fresh = format!("manager-{}", uuid::Uuid::new_v4().simple());
            tracing::warn!(path = %path.display(), owner = %fresh, "another manager process holds this state directory's replica id; using a fresh one");
            return Ok(fresh);
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
    }
    let mut id = String::new();
    file.read_to_string(&mut id).map_err(fail)?;
    let id = match id.trim() {
        "" => {
            let id = format!("manager-{}", uuid::Uuid::new_v4().simple());
            file.set_len(0).map_err(fail)?;
            file.rewind().map_err(fail)?;
            file.write_all(id.as_bytes()).and_then(|()| file.sync_all()).map_err(fail)?;
            id
        }
        existing => existing.to_owned(),
    };
    let _ = HELD.set(file);
    Ok(id)
}

/// The deployment loop of this replica over `deployers`.
pub fn deployment_loop(
    config: &ManagerConfig,
    store: std::sync::Arc<dyn alien_store::Store>,
    deployers: std::collections::HashMap<
        alien_core::Platform,
        std::sync::Arc<dyn alien_deployer::PlatformDeployer>,
    >,
    manager_url: String,
    owner: String,
) -> std::sync::Arc<alien_deployer::DeploymentLoop> {
    let mut loop_config = alien_deployer::LoopConfig::new(owner, manager_url);
    loop_config.interval = std::time::Duration::from_secs(config.server.deployment_interval_secs);
    std::sync::Arc::new(alien_deployer::DeploymentLoop::new(store, deployers, loop_config))
}
