//! `backup` and `restore`: one archive holding a consistent snapshot of the store and of the
//! local commands KV (see docs/operations.md, "Backups").
//!
//! The archive is a tar file: `backup.json` (what it holds, by which version, when), `store.db`
//! and, when the commands KV is the local one, `commands_kv.db`. Each database is copied with
//! `VACUUM INTO` while the manager runs. The encryption key is never in the archive.
//!
//! `restore` reads the whole archive into a scratch directory, checks every file and that the key
//! opens the store's sealed values, and only then moves the files into place, the old ones kept
//! beside them as `*.pre-restore-{time}`. Any refusal before that point changes nothing.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use alien_config::ManagerConfig;
use alien_store::StoreError;
use alien_store_sqlite::backup as snapshots;
use alien_store_sqlite::seal::{self, KeySource};
use serde::{Deserialize, Serialize};

use crate::failure::Failure;

/// The archive's description of itself.
const MANIFEST: &str = "backup.json";
/// `backup` and `restore` hold the SQLite store and the files beside it; a store on PostgreSQL
/// is backed up by PostgreSQL's own tools (docs/scale-out.md, "Backups").
fn refuse_postgres(config: &ManagerConfig, command: &str) -> Result<(), Failure> {
    if config.database.url.is_some() {
        return Err(Failure::config(format!(
            "{command} covers the SQLite store, but [database] url puts it on PostgreSQL: use \
             pg_dump/pg_restore (or the provider's snapshots) for the database, and the \
             storage's own copies for registry blobs and payloads; nothing was changed"
        )));
    }
    Ok(())
}

/// The archive member holding the store.
const STORE: &str = "store.db";
/// The archive member holding the local commands KV.
const COMMANDS_KV: &str = "commands_kv.db";
/// The format this build writes and reads.
const FORMAT: &str = "alien-manager-backup/1";

/// `backup.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Manifest {
    format: String,
    manager_version: String,
    created_at: chrono::DateTime<chrono::Utc>,
    /// The archive members, in order.
    files: Vec<String>,
}

fn commands_kv_file(config: &ManagerConfig) -> Option<PathBuf> {
    crate::backends::local_kv_dir(config).map(|dir| dir.join(alien_local::kv::FILE_NAME))
}

/// `backup --output FILE [--force]`.
pub async fn backup(config: &ManagerConfig, output: &Path, force: bool) -> Result<(), Failure> {
    refuse_postgres(config, "backup")?;
    let db_file = config.database.database_file();
    if !db_file.is_file() {
        return Err(Failure::config(format!(
            "no database at {}: nothing to back up (check -c and [database] state-dir)",
            db_file.display()
        )));
    }
    if output.exists() && !force {
        return Err(Failure::config(format!(
            "{} already exists; pass --force to replace it",
            output.display()
        )));
    }
    let parent = parent_dir(output);
    let scratch = tempfile::Builder::new()
        .prefix(".alien-manager-backup-")
        .tempdir_in(&parent)
        .map_err(|e| Failure::runtime(format!("cannot write in {}: {e}", parent.display())))?;
    let mut files = vec![(STORE, db_file.clone())];
    if let Some(kv) = commands_kv_file(config).filter(|kv| kv.is_file()) {
        files.push((COMMANDS_KV, kv));
    }
    for (name, source) in &files {
        snapshots::snapshot(source, &scratch.path().join(name))
            .await
            .map_err(|e| Failure::runtime(format!("cannot back up {}: {e}", source.display())))?;
    }
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        manager_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: chrono::Utc::now(),
        files: files.iter().map(|(name, _)| (*name).to_owned()).collect(),
    };
    let partial = scratch.path().join("archive.tar");
    write_archive(&partial, &manifest, scratch.path())
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", partial.display())))?;
    std::fs::rename(&partial, output)
        .and_then(|()| std::fs::File::open(&parent)?.sync_all())
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", output.display())))?;
    let size = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    let sources: Vec<String> = files.iter().map(|(_, path)| path.display().to_string()).collect();
    println!("backed up {} to {} ({size} bytes)", sources.join(" and "), output.display());
    println!("{}", key_reminder(config));
    Ok(())
}

/// Where the key that opens this backup is: it is not in the archive.
fn key_reminder(config: &ManagerConfig) -> String {
    if config.database.encryption_key.is_some() {
        "the encryption key is not in the backup: restore with the same [database] encryption-key"
            .to_owned()
    } else {
        format!(
            "the encryption key is not in the backup: keep a copy of {} with it",
            config.database.state_dir.join(seal::KEY_FILE_NAME).display()
        )
    }
}

fn write_archive(path: &Path, manifest: &Manifest, dir: &Path) -> std::io::Result<()> {
    let file = alien_store::private_fs::new_file_options().open(path)?;
    let mut archive = tar::Builder::new(file);
    let json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(u64::try_from(manifest.created_at.timestamp()).unwrap_or(0));
    archive.append_data(&mut header, MANIFEST, json.as_slice())?;
    for name in &manifest.files {
        let mut member = std::fs::File::open(dir.join(name))?;
        archive.append_file(name, &mut member)?;
    }
    let mut file = archive.into_inner()?;
    file.flush()?;
    file.sync_all()
}

/// `restore --input FILE [--force]`.
pub async fn restore(config: &ManagerConfig, input: &Path, force: bool) -> Result<(), Failure> {
    refuse_postgres(config, "restore")?;
    let state_dir = &config.database.state_dir;
    let db_file = config.database.database_file();
    let kv_file = commands_kv_file(config);
    // Everything is read and checked in a scratch directory beside the state directory.
    let parent = parent_dir(state_dir);
    std::fs::create_dir_all(&parent)
        .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", parent.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix(".alien-manager-restore-")
        .tempdir_in(&parent)
        .map_err(|e| Failure::runtime(format!("cannot write in {}: {e}", parent.display())))?;
    let manifest = read_archive(input, scratch.path())
        .map_err(|e| Failure::config(format!("{}: {e}; nothing was changed", input.display())))?;
    let restored_store = scratch.path().join(STORE);
    snapshots::quick_check(&restored_store)
        .await
        .map_err(|e| Failure::config(format!("{}: {e}; nothing was changed", input.display())))?;
    let restored_kv =
        manifest.files.iter().any(|f| f == COMMANDS_KV).then(|| scratch.path().join(COMMANDS_KV));
    if let Some(kv) = &restored_kv {
        snapshots::quick_check(kv).await.map_err(|e| {
            Failure::config(format!("{}: {e}; nothing was changed", input.display()))
        })?;
    }
    if restored_kv.is_some() && kv_file.is_none() {
        return Err(Failure::config(
            "the backup holds a local commands KV, but [commands] kv is not the local one; \
             nothing was changed",
        ));
    }
    // The key it was sealed with: configured, or the key file already in the state directory.
    let configured = config.database.encryption_key.as_ref().map(|k| k.expose().to_owned());
    let (sealer, source) = seal::load_existing(state_dir, configured.as_deref())
        .map_err(|e| Failure::config(format!("encryption key: {e}; nothing was changed")))?
        .ok_or_else(|| {
            Failure::config(format!(
                "no encryption key to open the backup with: set [database] encryption-key to the \
                 key it was made with, or copy its encryption.key into {}; nothing was changed",
                state_dir.display()
            ))
        })?;
    snapshots::check_key(&restored_store, &sealer).await.map_err(|e| match e {
        StoreError::WrongKey(_) => Failure::config(format!(
            "the backup's sealed values do not open with {}: restore with the key it was made \
             with; nothing was changed",
            match &source {
                KeySource::Configured => "the configured encryption-key".to_owned(),
                KeySource::KeyFile(path) | KeySource::Generated(path) => path.display().to_string(),
            }
        )),
        other => Failure::config(format!("{}: {other}; nothing was changed", input.display())),
    })?;
    let targets: Vec<&Path> =
        std::iter::once(db_file.as_path()).chain(kv_file.as_deref()).collect();
    let occupied: Vec<String> = targets
        .iter()
        .filter(|path| std::fs::metadata(path).is_ok_and(|m| m.len() > 0))
        .map(|path| path.display().to_string())
        .collect();
    if !occupied.is_empty() && !force {
        return Err(Failure::config(format!(
            "{} already holds data ({}); pass --force to replace it (the old files are kept \
             beside the new ones); nothing was changed",
            state_dir.display(),
            occupied.join(", ")
        )));
    }
    alien_store::private_fs::create_dir(state_dir).map_err(|e| {
        Failure::runtime(format!("cannot create state directory {}: {e}", state_dir.display()))
    })?;
    let _lock = crate::state::lock_exclusive(state_dir)?;
    let suffix = format!("pre-restore-{}", manifest_time_now());
    let mut kept = Vec::new();
    for target in &targets {
        kept.extend(set_aside(target, &suffix)?);
    }
    put_in_place(&restored_store, &db_file)?;
    if let (Some(from), Some(to)) = (&restored_kv, &kv_file) {
        if let Some(dir) = to.parent() {
            alien_store::private_fs::create_dir(dir)
                .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", dir.display())))?;
        }
        put_in_place(from, to)?;
    }
    // Opening migrates a backup of an older version, and proves the manager will start on it.
    let opened = match &source {
        KeySource::Configured => alien_store_sqlite::SqliteStore::open(&db_file, sealer).await,
        KeySource::KeyFile(path) | KeySource::Generated(path) => {
            alien_store_sqlite::keyfile::open_with_key_file(&db_file, sealer, path).await
        }
    };
    let store = opened.map_err(|e| {
        Failure::runtime(format!("the restored database {} does not open: {e}", db_file.display()))
    })?;
    store.close().await;
    println!(
        "restored {} (made {} by alien-manager {}) into {}",
        input.display(),
        manifest.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        manifest.manager_version,
        state_dir.display()
    );
    if !kept.is_empty() {
        println!("the replaced files are kept as: {}", kept.join(", "));
    }
    Ok(())
}

fn manifest_time_now() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

/// Reads the archive into `dir`: the manifest first, then exactly the files it names.
fn read_archive(input: &Path, dir: &Path) -> Result<Manifest, String> {
    let file = std::fs::File::open(input).map_err(|e| format!("cannot open it: {e}"))?;
    let mut archive = tar::Archive::new(file);
    let mut entries = archive.entries().map_err(|e| format!("not a backup archive: {e}"))?;
    let mut first = entries
        .next()
        .ok_or("an empty archive, not a backup")?
        .map_err(|e| format!("not a backup archive: {e}"))?;
    if first.path().map_err(|e| e.to_string())?.as_ref() != Path::new(MANIFEST) {
        return Err(format!("not an alien-manager backup (no {MANIFEST} first)"));
    }
    let mut json = String::new();
    first
        .by_ref()
        .take(64 * 1024)
        .read_to_string(&mut json)
        .map_err(|e| format!("{MANIFEST}: {e}"))?;
    let manifest: Manifest = serde_json::from_str(&json).map_err(|e| format!("{MANIFEST}: {e}"))?;
    if manifest.format != FORMAT {
        return Err(format!(
            "{MANIFEST}: format {:?}; this alien-manager reads {FORMAT:?}",
            manifest.format
        ));
    }
    if manifest.files.first().map(String::as_str) != Some(STORE)
        || manifest.files.iter().skip(1).any(|f| f != COMMANDS_KV)
        || manifest.files.len() > 2
    {
        return Err(format!("{MANIFEST}: unexpected files {:?}", manifest.files));
    }
    let mut seen = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("damaged archive: {e}"))?;
        let name = entry.path().map_err(|e| e.to_string())?.display().to_string();
        if !manifest.files.contains(&name) || seen.contains(&name) {
            return Err(format!("unexpected member {name:?}"));
        }
        let mut out = alien_store::private_fs::new_file_options()
            .open(dir.join(&name))
            .map_err(|e| format!("cannot write {name}: {e}"))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| format!("{name}: {e}"))?;
        out.sync_all().map_err(|e| format!("{name}: {e}"))?;
        seen.push(name);
    }
    if seen.len() != manifest.files.len() {
        return Err(format!("truncated: it holds {seen:?} of {:?}", manifest.files));
    }
    Ok(manifest)
}

/// Renames `path` and its `-wal`/`-shm` files to `{name}.{suffix}`; returns the new names.
fn set_aside(path: &Path, suffix: &str) -> Result<Vec<String>, Failure> {
    let mut kept = Vec::new();
    for extra in ["", "-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(extra);
        let from = PathBuf::from(from);
        if !from.exists() {
            continue;
        }
        let mut to = from.as_os_str().to_owned();
        to.push(format!(".{suffix}"));
        let to = PathBuf::from(to);
        std::fs::rename(&from, &to)
            .map_err(|e| Failure::runtime(format!("cannot move {} aside: {e}", from.display())))?;
        kept.push(to.display().to_string());
    }
    Ok(kept)
}

/// Moves a checked file into place (a copy when the two are on different file systems).
fn put_in_place(from: &Path, to: &Path) -> Result<(), Failure> {
    let moved = std::fs::rename(from, to).or_else(|_| {
        std::fs::copy(from, to)
            .and_then(|_| std::fs::File::open(to)?.sync_all())
            .and_then(|()| std::fs::remove_file(from))
    });
    moved.map_err(|e| Failure::runtime(format!("cannot write {}: {e}", to.display())))?;
    if let Some(dir) = to.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// The directory holding `path` (`.` for a bare name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}
