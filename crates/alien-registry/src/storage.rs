//! Where the registry keeps content and its index: the [`BlobStore`] trait and its implementation
//! over `object_store` ([`ObjectBlobStore`]; the local filesystem by default, S3/GCS/Azure Blob by
//! configuration).
//!
//! Layout (like CNCF Distribution's): content-addressed blobs under `blobs/<alg>/<hex>`, upload
//! chunks under `uploads/<id>/<offset>`, and per repository `repositories/<name>/` with
//! `_layers/<alg>/<hex>` (blob membership), `_manifests/revisions/<alg>/<hex>` (manifest
//! membership, holding its media type), `_manifests/tags/<tag>` (holding a digest) and
//! `_referrers/<alg>/<hex>/<alg>/<hex>` (a referrer's descriptor). Blobs are written to an upload
//! object while their digest is computed, verified, then renamed into place, so a reader never
//! sees a partial blob.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};
use sha2::Digest as _;

use crate::error::RegistryError;
use crate::reference::{Algorithm, Digest, RepoName};

/// A stream of body bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// A blob (or a range of it) on its way out.
pub struct BlobRead {
    /// Size of the whole blob.
    pub size: u64,
    /// The byte range being returned.
    pub range: Range<u64>,
    /// The bytes.
    pub body: ByteStream,
}

/// Content, uploads and the per-repository index of the registry.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// Size of a stored blob, if present.
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, RegistryError>;
    /// Reads a blob, or `range` of it (a range past the end is 416).
    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<BlobRead>, RegistryError>;
    /// Reads a small blob (a manifest) whole, refusing more than `limit` bytes.
    async fn read_small(&self, digest: &Digest, limit: u64)
    -> Result<Option<Bytes>, RegistryError>;
    /// Stores a small blob (a manifest) and returns its SHA-256 digest.
    async fn put_small(&self, bytes: Bytes) -> Result<Digest, RegistryError>;
    /// Removes a blob's content.
    async fn delete_blob(&self, digest: &Digest) -> Result<(), RegistryError>;
    /// Every stored blob with its size and last change (for garbage collection).
    async fn list_blobs(&self) -> Result<Vec<BlobInfo>, RegistryError>;
    /// Upload sessions started before `before` (for garbage collection).
    async fn stale_uploads(&self, before: SystemTime) -> Result<Vec<String>, RegistryError>;

    /// Starts an upload session; returns its id.
    async fn start_upload(&self) -> Result<String, RegistryError>;
    /// Bytes received so far by an upload (`BLOB_UPLOAD_UNKNOWN` if there is no such session).
    async fn upload_offset(&self, id: &str) -> Result<u64, RegistryError>;
    /// Appends `body` at `offset` (which must be where the upload ends); returns the new end.
    ///
    /// With `expected_len` (a chunk's declared `Content-Range`), a body of another length is
    /// refused and nothing of it kept.
    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        body: ByteStream,
        expected_len: Option<u64>,
    ) -> Result<u64, RegistryError>;
    /// Verifies the upload against `digest` and commits it as a blob; returns its size. On a
    /// mismatch the data is discarded and `DIGEST_INVALID` returned.
    async fn finish_upload(&self, id: &str, digest: &Digest) -> Result<u64, RegistryError>;
    /// Discards an upload.
    async fn cancel_upload(&self, id: &str) -> Result<(), RegistryError>;

    /// Records that `repo` holds blob `digest`.
    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), RegistryError>;
    /// Whether `repo` holds blob `digest`.
    async fn has_blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<bool, RegistryError>;
    /// Removes `repo`'s link to blob `digest`; `false` if there was none.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, RegistryError>;
    /// Records manifest `digest` in `repo` with its media type.
    async fn link_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
    ) -> Result<(), RegistryError>;
    /// The media type of manifest `digest` in `repo`, if it is there.
    async fn manifest_media_type(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<String>, RegistryError>;
    /// Manifests of `repo`.
    async fn list_manifests(&self, repo: &RepoName) -> Result<Vec<Digest>, RegistryError>;
    /// Removes manifest `digest` from `repo` (its tags too); `false` if it was not there.
    async fn unlink_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, RegistryError>;
    /// Points `tag` at `digest`.
    async fn set_tag(
        &self,
        repo: &RepoName,
        tag: &str,
        digest: &Digest,
    ) -> Result<(), RegistryError>;
    /// The digest `tag` points at.
    async fn resolve_tag(
        &self,
        repo: &RepoName,
        tag: &str,
    ) -> Result<Option<Digest>, RegistryError>;
    /// Removes a tag; `false` if it did not exist.
    async fn delete_tag(&self, repo: &RepoName, tag: &str) -> Result<bool, RegistryError>;
    /// Tags of `repo`, sorted.
    async fn list_tags(&self, repo: &RepoName) -> Result<Vec<String>, RegistryError>;
    /// Records `referrer` (a descriptor JSON) as referring to `subject`.
    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &serde_json::Value,
    ) -> Result<(), RegistryError>;
    /// Descriptors of the manifests referring to `subject`.
    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<serde_json::Value>, RegistryError>;
    /// Whether any repository content exists under this name.
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool, RegistryError>;
    /// Every repository name, sorted.
    async fn list_repositories(&self) -> Result<Vec<String>, RegistryError>;
}

/// A stored blob, as garbage collection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// Part size for streaming writes.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Read size for serving local files.
const READ_CHUNK: usize = 1024 * 1024;
/// Chunks read ahead of the connection per download.
const READ_AHEAD: usize = 4;

struct Session {
    /// Bytes received.
    offset: u64,
    /// SHA-256 over everything received, when known (lost on restart; recomputed then).
    hasher: Option<sha2::Sha256>,
    /// Chunk objects in order.
    chunks: Vec<Path>,
}

/// [`BlobStore`] over any `object_store`.
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl ObjectBlobStore {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, sessions: Mutex::new(HashMap::new()) }
    }

    /// A registry in a local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RegistryError::internal(format!("creating {}: {e}", dir.display())))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
        Ok(Self::new(Arc::new(fs)))
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session as its chunk objects tell it: the store is the truth, since another replica
    /// sharing it may have appended since (or after a restart). The running hash kept here is
    /// reused only when the chunks are still exactly those it covered.
    async fn session_offset(&self, id: &str) -> Result<Option<(u64, usize)>, RegistryError> {
        if !valid_upload_id(id) {
            return Ok(None);
        }
        let marker = upload_marker(id);
        if self.store.head(&marker).await.is_err() {
            // Committed or cancelled, perhaps through another replica.
            self.sessions().remove(id);
            return Ok(None);
        }
        let mut chunks: Vec<(u64, Path, u64)> = Vec::new();
        let prefix = Path::from(format!("uploads/{id}/chunks"));
        let mut list = self.store.list(Some(&prefix));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            if let Some(start) = meta.location.filename().and_then(|n| n.parse::<u64>().ok()) {
                chunks.push((start, meta.location, meta.size));
            }
        }
        chunks.sort_by_key(|c| c.0);
        let offset = chunks.iter().map(|c| c.2).sum();
        let count = chunks.len();
        let chunks: Vec<Path> = chunks.into_iter().map(|c| c.1).collect();
        let mut sessions = self.sessions();
        match sessions.get(id) {
            Some(known) if known.offset == offset && known.chunks == chunks => {}
            _ => {
                sessions.insert(id.to_owned(), Session { offset, hasher: None, chunks });
            }
        }
        Ok(Some((offset, count)))
    }

    async fn exists(&self, path: &Path) -> Result<bool, RegistryError> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_text(&self, path: &Path) -> Result<Option<String>, RegistryError> {
        match self.store.get(path).await {
            Ok(result) => {
                let bytes = result.bytes().await?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `path`; `false` when it was not there. (Object stores like S3 answer success for
    /// a missing key, so existence is asked first.)
    async fn delete_if_exists(&self, path: &Path) -> Result<bool, RegistryError> {
        if !self.exists(path).await? {
            return Ok(false);
        }
        match self.store.delete(path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_prefix(&self, prefix: &Path) -> Result<(), RegistryError> {
        let mut list = self.store.list(Some(prefix));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            self.delete_if_exists(&meta.location).await?;
        }
        Ok(())
    }

    /// Hashes the chunks of an upload with `algorithm`.
    async fn hash_chunks(
        &self,
        chunks: &[Path],
        algorithm: Algorithm,
    ) -> Result<Digest, RegistryError> {
        let mut sha256 = sha2::Sha256::new();
        let mut sha512 = sha2::Sha512::new();
        for chunk in chunks {
            let mut stream = self.store.get(chunk).await?.into_stream();
            while let Some(bytes) = stream.next().await {
                let bytes = bytes?;
                match algorithm {
                    Algorithm::Sha256 => sha256.update(&bytes),
                    Algorithm::Sha512 => sha512.update(&bytes),
                }
            }
        }
        Ok(match algorithm {
            Algorithm::Sha256 => Digest::from_raw(algorithm, &sha256.finalize()),
            Algorithm::Sha512 => Digest::from_raw(algorithm, &sha512.finalize()),
        })
    }
}

fn blob_path(digest: &Digest) -> Path {
    Path::from(format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex()))
}

fn repo_path(repo: &RepoName, rest: &str) -> Path {
    Path::from(format!("repositories/{}/{rest}", repo.as_str()))
}

fn upload_marker(id: &str) -> Path {
    Path::from(format!("uploads/{id}/started"))
}

fn valid_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn new_upload_id() -> Result<String, RegistryError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| RegistryError::internal(format!("random: {e}")))?;
    Ok(hex::encode(bytes))
}

#[async_trait::async_trait]
impl BlobStore for ObjectBlobStore {
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        match self.store.head(&blob_path(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<BlobRead>, RegistryError> {
        let path = blob_path(digest);
        let size = match self.blob_size(digest).await? {
            Some(size) => size,
            None => return Ok(None),
        };
        if let Some(r) = &range
            && (r.start >= size || r.start >= r.end)
        {
            return Err(RegistryError::range_not_satisfiable(size));
        }
        let range = range.map(|r| r.start..r.end.min(size));
        if size == 0 {
            return Ok(Some(BlobRead {
                size,
                range: 0..0,
                body: futures_util::stream::empty().boxed(),
            }));
        }
        let options =
            GetOptions { range: range.clone().map(GetRange::Bounded), ..Default::default() };
        let result = match self.store.get_opts(&path, options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let served = result.range.clone();
        let body = match result.payload {
            GetResultPayload::File(file, _) => file_stream(file, served.clone()),
            GetResultPayload::Stream(stream) => {
                stream.map(|r| r.map_err(std::io::Error::other)).boxed()
            }
        };
        Ok(Some(BlobRead { size, range: served, body }))
    }

    async fn read_small(
        &self,
        digest: &Digest,
        limit: u64,
    ) -> Result<Option<Bytes>, RegistryError> {
        match self.blob_size(digest).await? {
            None => Ok(None),
            Some(size) if size > limit => {
                Err(RegistryError::size_invalid(format!("{digest} is larger than {limit} bytes")))
            }
            Some(_) => match self.store.get(&blob_path(digest)).await {
                Ok(result) => Ok(Some(result.bytes().await?)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    async fn put_small(&self, bytes: Bytes) -> Result<Digest, RegistryError> {
        let digest = Digest::sha256_of(&bytes);
        let path = blob_path(&digest);
        if !self.exists(&path).await? {
            self.store.put(&path, PutPayload::from(bytes)).await?;
        }
        Ok(digest)
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<(), RegistryError> {
        self.delete_if_exists(&blob_path(digest)).await.map(|_| ())
    }

    async fn list_blobs(&self) -> Result<Vec<BlobInfo>, RegistryError> {
        let mut out = Vec::new();
        let mut list = self.store.list(Some(&Path::from("blobs")));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            let parts: Vec<_> = meta.location.parts().collect();
            if let [_, alg, hex] = parts.as_slice()
                && let Ok(digest) = Digest::parse(&format!("{}:{}", alg.as_ref(), hex.as_ref()))
            {
                out.push(BlobInfo { digest, size: meta.size, modified: meta.last_modified.into() });
            }
        }
        Ok(out)
    }

    async fn stale_uploads(&self, before: SystemTime) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        let mut list = self.store.list(Some(&Path::from("uploads")));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            let parts: Vec<String> = meta.location.parts().map(|p| p.as_ref().to_owned()).collect();
            if let [_, id, marker] = parts.as_slice()
                && marker == "started"
                && SystemTime::from(meta.last_modified) < before
            {
                out.push(id.clone());
            }
        }
        Ok(out)
    }

    async fn start_upload(&self) -> Result<String, RegistryError> {
        let id = new_upload_id()?;
        self.store.put(&upload_marker(&id), PutPayload::from_static(b"")).await?;
        self.sessions().insert(
            id.clone(),
            Session { offset: 0, hasher: Some(sha2::Sha256::new()), chunks: Vec::new() },
        );
        Ok(id)
    }

    async fn upload_offset(&self, id: &str) -> Result<u64, RegistryError> {
        self.session_offset(id)
            .await?
            .map(|(offset, _)| offset)
            .ok_or_else(RegistryError::upload_unknown)
    }

    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        mut body: ByteStream,
        expected_len: Option<u64>,
    ) -> Result<u64, RegistryError> {
        let (current, _) =
            self.session_offset(id).await?.ok_or_else(RegistryError::upload_unknown)?;
        if offset != current {
            return Err(RegistryError::range_invalid(current));
        }
        let mut hasher = self.sessions().get_mut(id).and_then(|s| s.hasher.take());
        let chunk = Path::from(format!("uploads/{id}/chunks/{offset:020}"));
        let upload = self.store.put_multipart(&chunk).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut written: u64 = 0;
        while let Some(piece) = body.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(e) => {
                    // The client went away or sent a bad body: nothing of this chunk is kept.
                    let _ = writer.abort().await;
                    if let Some(s) = self.sessions().get_mut(id) {
                        s.hasher = None;
                    }
                    return Err(RegistryError::upload_invalid(format!("upload body failed: {e}")));
                }
            };
            if let Some(h) = hasher.as_mut() {
                h.update(&piece);
            }
            written += piece.len() as u64;
            writer.wait_for_capacity(2).await?;
            writer.write(&piece);
        }
        if let Some(expected) = expected_len
            && expected != written
        {
            let _ = writer.abort().await;
            if let Some(s) = self.sessions().get_mut(id) {
                s.hasher = None;
            }
            return Err(RegistryError::size_invalid(format!(
                "the chunk declared {expected} bytes but {written} arrived"
            )));
        }
        if written == 0 {
            let _ = writer.abort().await;
        } else {
            writer.finish().await?;
        }
        let mut sessions = self.sessions();
        let session = sessions.get_mut(id).ok_or_else(RegistryError::upload_unknown)?;
        if written > 0 {
            session.chunks.push(chunk);
        }
        session.offset += written;
        session.hasher = hasher;
        Ok(session.offset)
    }

    async fn finish_upload(&self, id: &str, digest: &Digest) -> Result<u64, RegistryError> {
        self.session_offset(id).await?.ok_or_else(RegistryError::upload_unknown)?;
        let (size, chunks, hasher) = {
            let mut sessions = self.sessions();
            let session = sessions.remove(id).ok_or_else(RegistryError::upload_unknown)?;
            (session.offset, session.chunks, session.hasher)
        };
        let actual = match (digest.algorithm(), hasher) {
            (Algorithm::Sha256, Some(h)) => Digest::from_raw(Algorithm::Sha256, &h.finalize()),
            (algorithm, _) => self.hash_chunks(&chunks, algorithm).await?,
        };
        if actual != *digest {
            self.delete_prefix(&Path::from(format!("uploads/{id}"))).await?;
            return Err(RegistryError::digest_invalid(digest));
        }
        let target = blob_path(digest);
        if self.exists(&target).await? {
            // Content-addressed: the same bytes are already there.
        } else if chunks.is_empty() {
            self.store.put(&target, PutPayload::from_static(b"")).await?;
        } else if let [only] = chunks.as_slice() {
            self.store.rename(only, &target).await?;
        } else {
            let upload = self.store.put_multipart(&target).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            for chunk in &chunks {
                let mut stream = self.store.get(chunk).await?.into_stream();
                while let Some(piece) = stream.next().await {
                    let piece = piece?;
                    writer.wait_for_capacity(2).await?;
                    writer.write(&piece);
                }
            }
            writer.finish().await?;
        }
        self.delete_prefix(&Path::from(format!("uploads/{id}"))).await?;
        Ok(size)
    }

    async fn cancel_upload(&self, id: &str) -> Result<(), RegistryError> {
        self.session_offset(id).await?.ok_or_else(RegistryError::upload_unknown)?;
        self.sessions().remove(id);
        self.delete_prefix(&Path::from(format!("uploads/{id}"))).await
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), RegistryError> {
        let path =
            repo_path(repo, &format!("_layers/{}/{}", digest.algorithm().as_str(), digest.hex()));
        self.store.put(&path, PutPayload::from_static(b"")).await?;
        Ok(())
    }

    async fn has_blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<bool, RegistryError> {
        let path =
            repo_path(repo, &format!("_layers/{}/{}", digest.algorithm().as_str(), digest.hex()));
        self.exists(&path).await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, RegistryError> {
        let path =
            repo_path(repo, &format!("_layers/{}/{}", digest.algorithm().as_str(), digest.hex()));
        self.delete_if_exists(&path).await
    }

    async fn link_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let path = repo_path(
            repo,
            &format!("_manifests/revisions/{}/{}", digest.algorithm().as_str(), digest.hex()),
        );
        self.store.put(&path, PutPayload::from(media_type.to_owned())).await?;
        Ok(())
    }

    async fn manifest_media_type(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<String>, RegistryError> {
        let path = repo_path(
            repo,
            &format!("_manifests/revisions/{}/{}", digest.algorithm().as_str(), digest.hex()),
        );
        self.read_text(&path).await
    }

    async fn list_manifests(&self, repo: &RepoName) -> Result<Vec<Digest>, RegistryError> {
        let mut out = Vec::new();
        let mut list = self.store.list(Some(&repo_path(repo, "_manifests/revisions")));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            let parts: Vec<String> = meta.location.parts().map(|p| p.as_ref().to_owned()).collect();
            if let [.., alg, hex] = parts.as_slice()
                && let Ok(digest) = Digest::parse(&format!("{alg}:{hex}"))
            {
                out.push(digest);
            }
        }
        Ok(out)
    }

    async fn unlink_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let path = repo_path(
            repo,
            &format!("_manifests/revisions/{}/{}", digest.algorithm().as_str(), digest.hex()),
        );
        let existed = self.delete_if_exists(&path).await?;
        for tag in self.list_tags(repo).await? {
            if self.resolve_tag(repo, &tag).await?.as_ref() == Some(digest) {
                self.delete_tag(repo, &tag).await?;
            }
        }
        // It no longer refers to anything.
        let mut list = self.store.list(Some(&repo_path(repo, "_referrers")));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            let parts: Vec<_> = meta.location.parts().map(|p| p.as_ref().to_owned()).collect();
            if parts.len() >= 2
                && parts[parts.len() - 1] == digest.hex()
                && parts[parts.len() - 2] == digest.algorithm().as_str()
            {
                self.delete_if_exists(&meta.location).await?;
            }
        }
        Ok(existed)
    }

    async fn set_tag(
        &self,
        repo: &RepoName,
        tag: &str,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        self.store
            .put(
                &repo_path(repo, &format!("_manifests/tags/{tag}")),
                PutPayload::from(digest.to_string()),
            )
            .await?;
        Ok(())
    }

    async fn resolve_tag(
        &self,
        repo: &RepoName,
        tag: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        match self.read_text(&repo_path(repo, &format!("_manifests/tags/{tag}"))).await? {
            Some(text) => Digest::parse(text.trim())
                .map(Some)
                .map_err(|_| RegistryError::internal(format!("corrupt tag {repo}:{tag}"))),
            None => Ok(None),
        }
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &str) -> Result<bool, RegistryError> {
        self.delete_if_exists(&repo_path(repo, &format!("_manifests/tags/{tag}"))).await
    }

    async fn list_tags(&self, repo: &RepoName) -> Result<Vec<String>, RegistryError> {
        let mut tags = Vec::new();
        let mut list = self.store.list(Some(&repo_path(repo, "_manifests/tags")));
        while let Some(meta) = list.next().await {
            if let Some(name) = meta?.location.filename() {
                tags.push(name.to_owned());
            }
        }
        tags.sort();
        Ok(tags)
    }

    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &serde_json::Value,
    ) -> Result<(), RegistryError> {
        let path = repo_path(
            repo,
            &format!(
                "_referrers/{}/{}/{}/{}",
                subject.algorithm().as_str(),
                subject.hex(),
                referrer.algorithm().as_str(),
                referrer.hex()
            ),
        );
        let bytes = serde_json::to_vec(descriptor).map_err(RegistryError::internal)?;
        self.store.put(&path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<serde_json::Value>, RegistryError> {
        let prefix = repo_path(
            repo,
            &format!("_referrers/{}/{}", subject.algorithm().as_str(), subject.hex()),
        );
        let mut out = Vec::new();
        let mut list = self.store.list(Some(&prefix));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            if let Some(text) = self.read_text(&meta.location).await?
                && let Ok(value) = serde_json::from_str(&text)
            {
                out.push(value);
            }
        }
        out.sort_by(|a: &serde_json::Value, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        Ok(out)
    }

    async fn repository_exists(&self, repo: &RepoName) -> Result<bool, RegistryError> {
        let mut list =
            self.store.list(Some(&Path::from(format!("repositories/{}", repo.as_str()))));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            // Only this repository's own entries, not a nested repository's.
            let rest: Vec<_> =
                meta.location.parts().skip(1 + repo.as_str().split('/').count()).collect();
            if rest.first().is_some_and(|p| p.as_ref().starts_with('_')) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn list_repositories(&self) -> Result<Vec<String>, RegistryError> {
        let mut names = std::collections::BTreeSet::new();
        let mut list = self.store.list(Some(&Path::from("repositories")));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            let parts: Vec<String> =
                meta.location.parts().skip(1).map(|p| p.as_ref().to_owned()).collect();
            if let Some(i) = parts.iter().position(|p| p.starts_with('_'))
                && i > 0
            {
                names.insert(parts[..i].join("/"));
            }
        }
        Ok(names.into_iter().collect())
    }
}

/// Streams `range` of a local file: a blocking reader reads ahead in large chunks while the
/// connection sends the previous ones, so disk and network overlap.
fn file_stream(file: std::fs::File, range: Range<u64>) -> ByteStream {
    use std::io::{Read, Seek, SeekFrom};
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        if let Err(e) = file.seek(SeekFrom::Start(range.start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = range.end - range.start;
        while left > 0 {
            let want = left.min(READ_CHUNK as u64);
            // read_to_end fills spare capacity without zeroing it first.
            let mut buf = Vec::with_capacity(READ_CHUNK);
            match (&mut file).take(want).read_to_end(&mut buf) {
                Ok(n) if n as u64 == want => {}
                Ok(_) => {
                    let _ = tx.blocking_send(Err(std::io::Error::from(
                        std::io::ErrorKind::UnexpectedEof,
                    )));
                    return;
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
            left -= want;
            // The receiver is gone when the client disconnected: stop reading.
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
        .boxed()
}
