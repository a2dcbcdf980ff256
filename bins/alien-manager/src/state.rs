//! The state directory: creating it (0700), loading or generating the encryption key, opening
//! the database (finishing an interrupted key rotation), and this replica's id.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alien_config::ManagerConfig;
use alien_store::StoreError;
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::keyfile;
use alien_store_sqlite::seal::KeySource;

use crate::failure::Failure;

/// Where the key came from, for rotation.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// The key file, when the key is not configured.
    pub file: Option<PathBuf>,
    /// The effective base URL (for the admin banner).
    pub base_url: String,
}

/// The store `[database]` names: the SQLite file, or PostgreSQL at `url`.
pub enum AnyStore {
    /// `[database] path`.
    Sqlite(Arc<SqliteStore>),
    /// `[database] url`.
    #[cfg(feature = "postgres")]
    Postgres(Arc<alien_store_postgres::PostgresStore>),
}

impl AnyStore {
    /// The store as the server uses it.
    pub fn shared(&self) -> Arc<dyn alien_store::Store> {
        match self {
            Self::Sqlite(store) => store.clone(),
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => store.clone(),
        }
    }

    /// A key for `purpose` derived from the encryption key (the same on every replica).
    pub async fn derive_key(&self, purpose: &str) -> [u8; 32] {
        match self {
            Self::Sqlite(store) => store.derive_key(purpose).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => store.derive_key(purpose),
        }
    }

    /// Closes the store (SQLite checkpoints its WAL into the database file).
    pub async fn close(&self) {
        match self {
            Self::Sqlite(store) => store.close().await,
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => store.close().await,
        }
    }
}

/// An opened store.
pub struct Opened {
    /// The store.
    pub store: AnyStore,
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
    let keys = KeyInfo { file, base_url: config.server.effective_base_url() };
    if let Some(url) = &config.database.url {
        return open_postgres(url.expose(), sealer, keys).await;
    }
    let db_file = config.database.database_file();
    let opened = match &keys.file {
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
    Ok(Opened { store: AnyStore::Sqlite(Arc::new(store)), keys })
}

/// `[database] url`: the store on PostgreSQL. A key that does not open what the database holds
/// (another replica's) is a configuration error (exit 2) and nothing is written.
#[cfg(feature = "postgres")]
async fn open_postgres(
    url: &str,
    sealer: alien_store::seal::Sealer,
    keys: KeyInfo,
) -> Result<Opened, Failure> {
    let store =
        alien_store_postgres::PostgresStore::connect(url, sealer).await.map_err(|e| match e {
            StoreError::WrongKey(_) => Failure::config(format!(
                "{e} (database.url): every replica must use the same [database] encryption-key; \
                 nothing was changed"
            )),
            other => Failure::runtime(format!("cannot open the database (database.url): {other}")),
        })?;
    Ok(Opened { store: AnyStore::Postgres(Arc::new(store)), keys })
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(
    _url: &str,
    _sealer: alien_store::seal::Sealer,
    _keys: KeyInfo,
) -> Result<Opened, Failure> {
    Err(Failure::config(
        "database.url: this build has no PostgreSQL store (feature `postgres`)".to_owned(),
    ))
}

/// Creates the state directory and proves it writable, so that a mount the process cannot write
/// (a volume owned by another user, say) stops the start with one line naming it.
fn prepare_state_dir(dir: &Path) -> Result<(), Failure> {
    alien_store::private_fs::create_dir(dir).map_err(|e| {
        Failure::runtime(format!("cannot create state directory {}: {e}", dir.display()))
    })?;
    tempfile::Builder::new().prefix(".write-test-").tempfile_in(dir).map(drop).map_err(|e| {
        let shown = match std::fs::canonicalize(dir) {
            Ok(real) if real != dir => format!("{} ({})", dir.display(), real.display()),
            _ => dir.display().to_string(),
        };
        Failure::runtime(format!(
            "state directory {shown} is not writable by this process (uid {}): {}",
            current_uid(),
            e.kind()
        ))
    })
}

/// The process's user id, as the kernel reports it (`/proc/self` belongs to it).
fn current_uid() -> String {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").map_or_else(|_| "unknown".to_owned(), |m| m.uid().to_string())
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
    let mut file = open_private(&path).map_err(fail)?;
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

/// The lock file every `serve` holds shared for as long as it runs, and `restore` exclusive.
const LOCK_FILE: &str = "manager.lock";

/// Opens `path` to read and write, creating it (mode 0600) when missing, its contents kept.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    alien_store::private_fs::new_file_options()
        .create_new(false)
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
}

fn open_lock(state_dir: &Path) -> Result<std::fs::File, Failure> {
    let path = state_dir.join(LOCK_FILE);
    open_private(&path).map_err(|e| Failure::runtime(format!("{}: {e}", path.display())))
}

/// Marks the state directory in use by this process until it exits (several managers may share
/// one): `restore` refuses to run while any holds it.
pub fn hold_shared(state_dir: &Path) -> Result<(), Failure> {
    static HELD: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    let file = open_lock(state_dir)?;
    file.lock_shared()
        .map_err(|e| Failure::runtime(format!("{}: {e}", state_dir.join(LOCK_FILE).display())))?;
    let _ = HELD.set(file);
    Ok(())
}

/// The state directory to this process alone, while the returned file is open; refused while a
/// manager runs on it.
pub fn lock_exclusive(state_dir: &Path) -> Result<std::fs::File, Failure> {
    let file = open_lock(state_dir)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Failure::runtime(format!(
            "a manager is running on {}: stop it first; nothing was changed",
            state_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Failure::runtime(format!("{}: {e}", state_dir.join(LOCK_FILE).display())))
        }
    }
}
