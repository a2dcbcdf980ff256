//! [`FsPayloadStore`]: the commands [`PayloadStore`] on files under one root directory
//! (`{state-dir}/commands_storage`), reached by remote clients through manager-signed URLs
//! `{base_url}/v1/payloads/{key}?exp={unix}&sig={hex}` that the server's payload route checks
//! with [`FsPayloadStore::verify_url`].
//!
//! A key is a relative path under the root (`alien_commands::payload::valid_key`: no `..`, no
//! absolute or empty segments, no segment starting with `.`, which leaves `.tmp-*` names free
//! for temporary files). Writes stream into a temporary file next to the target, are fsynced
//! and renamed over it, so a reader sees the old or the new payload, never a mix, and a failed
//! or cancelled write leaves no trace. Reads stream in 256 KiB chunks; nothing holds a whole
//! payload in memory. Files are 0600, directories 0700; deleting a payload removes the
//! directories it leaves empty.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use alien_commands::payload::valid_key;
use alien_commands::wire::{HttpBackend, PresignedOperation, PresignedRequest};
use alien_commands::{PayloadError, PayloadStore, PayloadStream, UrlSigner};
use bytes::BytesMut;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

/// Longest validity of a presigned URL (as on S3 and GCS).
pub const MAX_PRESIGN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The path under the manager's base URL where payload URLs point.
pub const ROUTE_PREFIX: &str = "/v1/payloads/";
/// Bytes per chunk of a read stream.
const READ_CHUNK: usize = 256 * 1024;
/// Bytes buffered before a write reaches the file, so small body chunks cost few syscalls.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Prefix of temporary file names; no key segment can start with `.`.
const TEMP_PREFIX: &str = ".tmp-";

/// Command payloads in files under one directory, behind manager-signed URLs.
pub struct FsPayloadStore {
    root: PathBuf,
    base_url: String,
    signer: UrlSigner,
}

impl fmt::Debug for FsPayloadStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsPayloadStore")
            .field("root", &self.root)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl FsPayloadStore {
    /// A store of files under `root` (created, mode 0700, on first write or ping) whose
    /// presigned URLs start with `base_url` (the manager's public URL) and are signed by
    /// `signer`.
    pub fn new(root: PathBuf, base_url: String, signer: UrlSigner) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        Self { root, base_url, signer }
    }

    /// The directory holding the payloads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks a payload URL's `exp` and `sig` for `method` on `key` at `now`: `BadSignature`
    /// when the signature was made for another method, key or expiry, was tampered with, or has
    /// expired; `InvalidKey` for a key no URL can name. The server's `/v1/payloads/{key}` route
    /// calls this before [`PayloadStore::read`] or [`PayloadStore::write`].
    pub fn verify_url(
        &self,
        method: &str,
        key: &str,
        exp: u64,
        sig: &str,
        now: SystemTime,
    ) -> Result<(), PayloadError> {
        check_key(key)?;
        let message = url_message(&method.to_ascii_uppercase(), key, exp);
        if self.signer.verify_until(now, exp, sig, &message) {
            Ok(())
        } else {
            Err(PayloadError::BadSignature)
        }
    }

    fn presign(
        &self,
        operation: PresignedOperation,
        key: &str,
        expires_in: Duration,
    ) -> Result<PresignedRequest, PayloadError> {
        check_key(key)?;
        if expires_in > MAX_PRESIGN_TTL {
            return Err(PayloadError::Backend(format!(
                "a presigned URL for {key} cannot be valid for {expires_in:?}: at most 7 days"
            )));
        }
        let method = match operation {
            PresignedOperation::Put => "PUT",
            PresignedOperation::Get => "GET",
        };
        let (exp, sig) = self
            .signer
            .sign_until(SystemTime::now(), expires_in, |exp| url_message(method, key, exp));
        let expiration = i64::try_from(exp)
            .ok()
            .and_then(|exp| chrono::DateTime::<chrono::Utc>::from_timestamp(exp, 0))
            .ok_or_else(|| PayloadError::Backend(format!("expiry {exp} of {key} is not a date")))?
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Ok(PresignedRequest {
            backend: HttpBackend {
                backend_type: "http".into(),
                // Valid keys are URL path-safe as they are: no escaping needed.
                url: format!("{}{ROUTE_PREFIX}{key}?exp={exp}&sig={sig}", self.base_url),
                method: method.into(),
                headers: Default::default(),
            },
            expiration,
            operation,
        })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, PayloadError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Removes the directories between `dir` and the root that are now empty (a concurrent
    /// write into one of them recreates it, see [`create_temp`]).
    async fn prune_empty_dirs(&self, mut dir: &Path) {
        while dir != self.root && dir.starts_with(&self.root) {
            if tokio::fs::remove_dir(dir).await.is_err() {
                return;
            }
            let Some(parent) = dir.parent() else { return };
            dir = parent;
        }
    }
}

/// The signed message of a payload URL.
fn url_message(method: &str, key: &str, exp: u64) -> String {
    format!("payloads.v1:{method}:{key}:{exp}")
}

#[async_trait::async_trait]
impl PayloadStore for FsPayloadStore {
    fn verify_signed(
        &self,
        method: &str,
        key: &str,
        exp: u64,
        sig: &str,
    ) -> Result<(), PayloadError> {
        self.verify_url(method, key, exp, sig, SystemTime::now())
    }

    async fn presign_put(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<PresignedRequest, PayloadError> {
        self.presign(PresignedOperation::Put, key, expires_in)
    }

    async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<PresignedRequest, PayloadError> {
        self.presign(PresignedOperation::Get, key, expires_in)
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, PayloadError> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(err) if is_absent(&err) => Ok(None),
            Err(err) => Err(io_error("reading the size of payload", key, &path, &err)),
        }
    }

    async fn read(&self, key: &str) -> Result<PayloadStream, PayloadError> {
        let path = self.path_of(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(err) if is_absent(&err) => return Err(PayloadError::NotFound(key.to_owned())),
            Err(err) => return Err(io_error("opening payload", key, &path, &err)),
        };
        let meta =
            file.metadata().await.map_err(|e| io_error("opening payload", key, &path, &e))?;
        if !meta.is_file() {
            return Err(PayloadError::NotFound(key.to_owned()));
        }
        // The open file keeps reading the payload it opened, even if a write renames a new one
        // over it meanwhile.
        let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
            let mut chunk = BytesMut::with_capacity(READ_CHUNK);
            while chunk.len() < READ_CHUNK {
                if file.read_buf(&mut chunk).await? == 0 {
                    break;
                }
            }
            Ok((!chunk.is_empty()).then(|| (chunk.freeze(), file)))
        });
        Ok(chunks.boxed())
    }

    async fn write(&self, key: &str, mut body: PayloadStream) -> Result<u64, PayloadError> {
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        let (file, temp) = create_temp(&dir)
            .await
            .map_err(|e| io_error("creating a temporary file for payload", key, &dir, &e))?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut size = 0u64;
        let copied: Result<(), PayloadError> = async {
            while let Some(chunk) = body.try_next().await.map_err(|e| {
                PayloadError::Backend(format!("reading the body of payload {key}: {e}"))
            })? {
                out.write_all(&chunk)
                    .await
                    .map_err(|e| io_error("writing payload", key, temp.path(), &e))?;
                size += chunk.len() as u64;
            }
            out.flush().await.map_err(|e| io_error("writing payload", key, temp.path(), &e))?;
            out.get_ref()
                .sync_all()
                .await
                .map_err(|e| io_error("syncing payload", key, temp.path(), &e))
        }
        .await;
        drop(out);
        if let Err(err) = copied {
            temp.remove().await;
            return Err(err);
        }
        if let Err(err) = tokio::fs::rename(temp.path(), &path).await {
            temp.remove().await;
            return Err(io_error("storing payload", key, &path, &err));
        }
        temp.disarm();
        // The rename is durable once the directory entry is.
        sync_dir(&dir)
            .await
            .map_err(|e| io_error("syncing the directory of payload", key, &dir, &e))?;
        Ok(size)
    }

    async fn delete(&self, key: &str) -> Result<(), PayloadError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            // A directory is the parent of other payloads, not a payload.
            Err(err) if is_absent(&err) || err.kind() == io::ErrorKind::IsADirectory => {
                return Ok(());
            }
            Err(err) => return Err(io_error("deleting payload", key, &path, &err)),
        }
        if let Some(dir) = path.parent() {
            self.prune_empty_dirs(dir).await;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), PayloadError> {
        let unavailable = |err: io::Error| {
            PayloadError::Unavailable(format!(
                "payload directory {} is not writable: {err}",
                self.root.display()
            ))
        };
        let (file, temp) = create_temp(&self.root).await.map_err(unavailable)?;
        drop(file);
        tokio::fs::remove_file(temp.path()).await.map_err(unavailable)?;
        temp.disarm();
        Ok(())
    }
}

fn check_key(key: &str) -> Result<(), PayloadError> {
    if valid_key(key) { Ok(()) } else { Err(PayloadError::InvalidKey(key.to_owned())) }
}

/// Not there: missing, or a parent path component is a file.
fn is_absent(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

fn io_error(what: &str, key: &str, path: &Path, err: &io::Error) -> PayloadError {
    let message = format!("{what} {key} ({}): {err}", path.display());
    match err.kind() {
        io::ErrorKind::StorageFull
        | io::ErrorKind::ReadOnlyFilesystem
        | io::ErrorKind::PermissionDenied
        | io::ErrorKind::QuotaExceeded => PayloadError::Unavailable(message),
        _ => PayloadError::Backend(message),
    }
}

/// A temporary file that is removed unless [`TempFile::disarm`]ed: explicitly on errors, and
/// from `Drop` when the write is cancelled (its future dropped by a client that went away).
struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Keeps the file (it was renamed into place).
    fn disarm(mut self) {
        self.path = None;
    }

    /// Removes the file now.
    async fn remove(mut self) {
        if let Some(path) = self.path.take()
            && let Err(err) = tokio::fs::remove_file(&path).await
        {
            tracing::warn!(
                path = %path.display(), error = %err, "cannot remove a temporary payload file"
            );
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else { return };
        let remove = move || {
            let _ = std::fs::remove_file(&path);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Creates a new temporary file (0600) in `dir`, creating `dir` (0700) when it is missing,
/// also when a concurrent delete pruned it between the two steps.
async fn create_temp(dir: &Path) -> io::Result<(tokio::fs::File, TempFile)> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let random =
            getrandom::u64().map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
        let path = dir.join(format!("{TEMP_PREFIX}{random:016x}"));
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        match options.open(&path).await {
            Ok(file) => return Ok((file, TempFile { path: Some(path) })),
            Err(err) if attempts < 4 && err.kind() == io::ErrorKind::NotFound => {
                create_private_dirs(dir).await?;
            }
            Err(err) if attempts < 4 && err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
}

async fn create_private_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).await
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| io::Error::other(format!("directory sync task failed: {e}")))?
}
