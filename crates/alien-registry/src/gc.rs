//! Garbage collection: blobs that no manifest of any repository references, and upload sessions
//! left idle, are removed (`alien-manager registry gc`, and a periodic background pass).
//!
//! Collection runs while the registry serves pushes, so a blob is only removed once it has been
//! unreferenced for a grace period: a client uploads layers before the manifest that references
//! them, and those layers must survive until the manifest arrives.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::error::RegistryError;
use crate::reference::{Digest, RepoName};
use crate::routes::MAX_MANIFEST_BYTES;
use crate::storage::BlobStore;

/// How long an unreferenced blob is kept (covers a push in progress).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60 * 60);
/// How long an idle upload session is kept.
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs kept because a manifest references them (or they are manifests).
    pub blobs_kept: u64,
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Bytes those blobs held.
    pub bytes_freed: u64,
    /// Upload sessions removed.
    pub uploads_removed: u64,
}

/// Removes unreferenced blobs older than `grace` and uploads started before `now - upload_ttl`.
pub async fn collect_garbage(
    store: &dyn BlobStore,
    now: SystemTime,
    grace: Duration,
    upload_ttl: Duration,
) -> Result<GcReport, RegistryError> {
    let mut referenced = BTreeSet::new();
    for name in store.list_repositories().await? {
        let Ok(repo) = RepoName::parse(&name) else { continue };
        for manifest in store.list_manifests(&repo).await? {
            referenced.insert(manifest.clone());
            if let Some(bytes) = store.read_small(&manifest, MAX_MANIFEST_BYTES).await? {
                referenced.extend(references(&bytes));
            }
        }
    }
    let mut report = GcReport::default();
    let cutoff = now.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    for blob in store.list_blobs().await? {
        if referenced.contains(&blob.digest) || blob.modified > cutoff {
            report.blobs_kept += 1;
            continue;
        }
        store.delete_blob(&blob.digest).await?;
        report.blobs_removed += 1;
        report.bytes_freed += blob.size;
    }
    let before = now.checked_sub(upload_ttl).unwrap_or(SystemTime::UNIX_EPOCH);
    for id in store.stale_uploads(before).await? {
        store.cancel_upload(&id).await?;
        report.uploads_removed += 1;
    }
    Ok(report)
}

/// The digests a manifest or index references: config, layers, child manifests.
fn references(bytes: &[u8]) -> Vec<Digest> {
    let Ok(json) = serde_json::from_slice::<Value>(bytes) else { return Vec::new() };
    let mut out = Vec::new();
    let mut push = |d: &Value| {
        if let Some(digest) =
            d.get("digest").and_then(Value::as_str).and_then(|s| Digest::parse(s).ok())
        {
            out.push(digest);
        }
    };
    if let Some(config) = json.get("config") {
        push(config);
    }
    for list in ["layers", "manifests", "blobs"] {
        for d in json.get(list).and_then(Value::as_array).into_iter().flatten() {
            push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectBlobStore;
    use bytes::Bytes;
    use futures_util::StreamExt;

    async fn upload(store: &dyn BlobStore, data: &'static [u8]) -> Digest {
        let id = store.start_upload().await.unwrap();
        let body = futures_util::stream::iter(vec![Ok(Bytes::from_static(data))]).boxed();
        store.append_upload(&id, 0, body, None).await.unwrap();
        let digest = Digest::sha256_of(data);
        store.finish_upload(&id, &digest).await.unwrap();
        digest
    }

    #[tokio::test]
    async fn unreferenced_blobs_and_idle_uploads_go_referenced_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectBlobStore::local(dir.path()).unwrap();
        let repo = RepoName::parse("a/b").unwrap();
        let config = upload(&store, b"config").await;
        let layer = upload(&store, b"layer").await;
        let orphan = upload(&store, b"orphan").await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 6},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 5}]
        });
        let m = store.put_small(Bytes::from(serde_json::to_vec(&manifest).unwrap())).await.unwrap();
        store.link_manifest(&repo, &m, "application/vnd.oci.image.manifest.v1+json").await.unwrap();
        let idle = store.start_upload().await.unwrap();

        // Within the grace period nothing goes (a push may be in progress).
        let now = SystemTime::now();
        let report = collect_garbage(&store, now, DEFAULT_GRACE, DEFAULT_UPLOAD_TTL).await.unwrap();
        assert_eq!((report.blobs_removed, report.uploads_removed), (0, 0));

        let later = now + Duration::from_secs(25 * 60 * 60);
        let report =
            collect_garbage(&store, later, DEFAULT_GRACE, DEFAULT_UPLOAD_TTL).await.unwrap();
        assert_eq!(report.blobs_removed, 1, "{report:?}");
        assert_eq!(report.bytes_freed, 6);
        assert_eq!(report.uploads_removed, 1);
        assert_eq!(store.blob_size(&orphan).await.unwrap(), None);
        for kept in [&config, &layer, &m] {
            assert!(store.blob_size(kept).await.unwrap().is_some());
        }
        assert!(store.upload_offset(&idle).await.is_err());
    }
}
