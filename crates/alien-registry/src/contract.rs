//! The [`BlobStore`] contract: one function per behaviour, run against every implementation
//! (the local filesystem and memory here; S3, GCS and Azure Blob emulators with the cloud crates).
//! Each function expects an empty store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test suite: failing loudly is the point

use bytes::Bytes;
use futures_util::StreamExt;

use crate::reference::{Digest, RepoName};
use crate::storage::{BlobStore, ByteStream};

fn body(parts: &[&[u8]]) -> ByteStream {
    let parts: Vec<Result<Bytes, std::io::Error>> =
        parts.iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect();
    futures_util::stream::iter(parts).boxed()
}

async fn read_all(
    store: &dyn BlobStore,
    digest: &Digest,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let read = store.read_blob(digest, range).await.unwrap().expect("blob present");
    let mut out = Vec::new();
    let mut stream = read.body;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

/// Chunks append in order, the digest is verified, and the blob reads back whole and by range.
pub async fn chunked_upload_commits_a_readable_blob(store: &dyn BlobStore) {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::sha256_of(&data);
    let id = store.start_upload().await.unwrap();
    assert_eq!(store.upload_offset(&id).await.unwrap(), 0);
    let end = store
        .append_upload(&id, 0, body(&[&data[..1000], &data[1000..100_000]]), None)
        .await
        .unwrap();
    assert_eq!(end, 100_000);
    let end = store.append_upload(&id, end, body(&[&data[100_000..]]), None).await.unwrap();
    assert_eq!(end, data.len() as u64);
    assert_eq!(store.blob_size(&digest).await.unwrap(), None, "not visible before it is committed");
    assert_eq!(store.finish_upload(&id, &digest).await.unwrap(), data.len() as u64);
    assert_eq!(store.blob_size(&digest).await.unwrap(), Some(data.len() as u64));
    assert_eq!(read_all(store, &digest, None).await, data);
    assert_eq!(read_all(store, &digest, Some(10..20)).await, &data[10..20]);
    assert_eq!(read_all(store, &digest, Some(299_990..u64::MAX)).await, &data[299_990..]);
    assert!(
        store.read_blob(&digest, Some(300_000..300_001)).await.is_err(),
        "a range past the end is refused"
    );
    assert!(store.upload_offset(&id).await.is_err(), "the session is gone");
    let listed = store.list_blobs().await.unwrap();
    assert!(listed.iter().any(|b| b.digest == digest && b.size == data.len() as u64), "{listed:?}");
}

/// A wrong digest discards the data and leaves no blob.
pub async fn digest_mismatch_discards_the_upload(store: &dyn BlobStore) {
    let id = store.start_upload().await.unwrap();
    store.append_upload(&id, 0, body(&[b"hello"]), None).await.unwrap();
    let wrong = Digest::sha256_of(b"other");
    let err = store.finish_upload(&id, &wrong).await.unwrap_err();
    assert_eq!(err.code, "DIGEST_INVALID");
    assert_eq!(store.blob_size(&wrong).await.unwrap(), None);
    assert_eq!(store.blob_size(&Digest::sha256_of(b"hello")).await.unwrap(), None);
    assert!(store.upload_offset(&id).await.is_err());
}

/// A chunk that does not start where the upload ends is refused and changes nothing.
pub async fn out_of_order_chunks_are_refused(store: &dyn BlobStore) {
    let id = store.start_upload().await.unwrap();
    store.append_upload(&id, 0, body(&[b"abc"]), None).await.unwrap();
    let err = store.append_upload(&id, 10, body(&[b"xyz"]), None).await.unwrap_err();
    assert_eq!(err.status, http::StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(store.upload_offset(&id).await.unwrap(), 3);
    store.append_upload(&id, 3, body(&[b"def"]), None).await.unwrap();
    store.finish_upload(&id, &Digest::sha256_of(b"abcdef")).await.unwrap();
}

/// A body that fails midway (a client that disconnects) keeps nothing of that chunk.
pub async fn a_failed_body_keeps_nothing(store: &dyn BlobStore) {
    let id = store.start_upload().await.unwrap();
    store.append_upload(&id, 0, body(&[b"good"]), None).await.unwrap();
    let failing: ByteStream = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("client went away")),
    ])
    .boxed();
    assert!(store.append_upload(&id, 4, failing, None).await.is_err());
    assert_eq!(store.upload_offset(&id).await.unwrap(), 4);
    store.append_upload(&id, 4, body(&[b"-rest"]), None).await.unwrap();
    store.finish_upload(&id, &Digest::sha256_of(b"good-rest")).await.unwrap();
    assert_eq!(read_all(store, &Digest::sha256_of(b"good-rest"), None).await, b"good-rest");
}

/// A chunk whose body is not the length it declared is refused and nothing of it kept.
pub async fn declared_length_is_enforced(store: &dyn BlobStore) {
    let id = store.start_upload().await.unwrap();
    store.append_upload(&id, 0, body(&[b"abc"]), Some(3)).await.unwrap();
    let err = store.append_upload(&id, 3, body(&[b"toolong"]), Some(3)).await.unwrap_err();
    assert_eq!(err.code, "SIZE_INVALID");
    assert_eq!(store.upload_offset(&id).await.unwrap(), 3);
    let err = store.append_upload(&id, 3, body(&[b"x"]), Some(3)).await.unwrap_err();
    assert_eq!(err.code, "SIZE_INVALID");
    store.append_upload(&id, 3, body(&[b"def"]), Some(3)).await.unwrap();
    store.finish_upload(&id, &Digest::sha256_of(b"abcdef")).await.unwrap();
}

/// Cancelling removes the session; an empty upload commits the empty blob.
pub async fn cancel_and_empty_uploads(store: &dyn BlobStore) {
    let id = store.start_upload().await.unwrap();
    store.append_upload(&id, 0, body(&[b"junk"]), None).await.unwrap();
    store.cancel_upload(&id).await.unwrap();
    assert_eq!(store.upload_offset(&id).await.unwrap_err().code, "BLOB_UPLOAD_UNKNOWN");
    assert!(store.cancel_upload("0123456789abcdef0123456789abcdef").await.is_err());
    let id = store.start_upload().await.unwrap();
    let empty = Digest::sha256_of(b"");
    assert_eq!(store.finish_upload(&id, &empty).await.unwrap(), 0);
    assert_eq!(store.blob_size(&empty).await.unwrap(), Some(0));
    assert_eq!(read_all(store, &empty, None).await, b"");
}

/// Small blobs (manifests) store under their SHA-256 and read back; large ones are refused.
pub async fn small_blobs_round_trip(store: &dyn BlobStore) {
    let digest = store.put_small(Bytes::from_static(b"{\"schemaVersion\":2}")).await.unwrap();
    assert_eq!(digest, Digest::sha256_of(b"{\"schemaVersion\":2}"));
    assert_eq!(
        store.read_small(&digest, 100).await.unwrap().unwrap(),
        Bytes::from_static(b"{\"schemaVersion\":2}")
    );
    assert!(store.read_small(&digest, 3).await.is_err());
    assert!(store.read_small(&Digest::sha256_of(b"none"), 100).await.unwrap().is_none());
}

/// Repository links, manifests, tags and referrers.
pub async fn index_links_tags_and_referrers(store: &dyn BlobStore) {
    let a = repo("team/app");
    let nested = repo("team/app/sub");
    let layer = Digest::sha256_of(b"layer");
    assert!(!store.has_blob_link(&a, &layer).await.unwrap());
    store.link_blob(&a, &layer).await.unwrap();
    assert!(store.has_blob_link(&a, &layer).await.unwrap());
    assert!(!store.has_blob_link(&nested, &layer).await.unwrap());
    let m1 = Digest::sha256_of(b"m1");
    let m2 = Digest::sha256_of(b"m2");
    store.link_manifest(&a, &m1, "application/vnd.oci.image.manifest.v1+json").await.unwrap();
    store.link_manifest(&nested, &m2, "application/vnd.oci.image.index.v1+json").await.unwrap();
    assert_eq!(
        store.manifest_media_type(&a, &m1).await.unwrap().as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(store.manifest_media_type(&a, &m2).await.unwrap(), None);
    for tag in ["v2", "latest", "v1"] {
        store.set_tag(&a, tag, &m1).await.unwrap();
    }
    assert_eq!(store.list_tags(&a).await.unwrap(), ["latest", "v1", "v2"]);
    assert!(
        store.list_tags(&nested).await.unwrap().is_empty(),
        "a nested repository has its own tags"
    );
    assert_eq!(store.resolve_tag(&a, "v1").await.unwrap(), Some(m1.clone()));
    assert!(store.delete_tag(&a, "v2").await.unwrap());
    assert!(!store.delete_tag(&a, "v2").await.unwrap());
    let descriptor =
        serde_json::json!({"digest": m2.to_string(), "artifactType": "application/x-sbom"});
    store.add_referrer(&a, &m1, &m2, &descriptor).await.unwrap();
    assert_eq!(store.list_referrers(&a, &m1).await.unwrap(), vec![descriptor]);
    assert_eq!(store.list_repositories().await.unwrap(), ["team/app", "team/app/sub"]);
    assert!(store.repository_exists(&a).await.unwrap());
    assert!(!store.repository_exists(&repo("team")).await.unwrap());
    assert_eq!(store.list_manifests(&a).await.unwrap(), vec![m1.clone()]);
    assert!(store.unlink_manifest(&a, &m1).await.unwrap());
    assert!(store.list_manifests(&a).await.unwrap().is_empty());
    assert!(store.list_tags(&a).await.unwrap().is_empty(), "deleting a manifest removes its tags");
    assert!(store.unlink_blob(&a, &layer).await.unwrap());
    assert!(!store.unlink_blob(&a, &layer).await.unwrap());
}

/// This file, for the completeness check of [`crate::blobstore_contract_tests`].
#[doc(hidden)]
pub const SOURCE: &str = include_str!("contract.rs");

/// The names of the suite's functions in `source` (its `pub async fn`s).
#[doc(hidden)]
pub fn function_names(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter_map(|line| line.strip_prefix("pub async fn "))
        .filter_map(|rest| rest.split('(').next())
        .collect()
}

/// One `#[tokio::test]` per function of the suite, each on a fresh store, and a test that no
/// function of the suite is left out. `$fresh` is an async fn returning `(guard, store)`: the
/// guard (a temporary directory, an emulator process) lives until the test ends.
#[macro_export]
macro_rules! blobstore_contract_tests {
    ($fresh:path) => {
        $crate::blobstore_contract_tests!(@run $fresh;
            chunked_upload_commits_a_readable_blob, digest_mismatch_discards_the_upload,
            out_of_order_chunks_are_refused, a_failed_body_keeps_nothing,
            declared_length_is_enforced, cancel_and_empty_uploads, small_blobs_round_trip,
            index_links_tags_and_referrers);
    };
    (@run $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = $fresh().await;
                $crate::contract::$name(&store).await;
            }
        )*

        /// Every function of the suite is among those run above.
        #[test]
        fn every_contract_function_runs() {
            let run: &[&str] = &[$(stringify!($name)),*];
            let suite = $crate::contract::function_names($crate::contract::SOURCE);
            assert!(suite.len() >= 8, "found the suite's functions: {suite:?}");
            for name in suite {
                assert!(run.contains(&name), "contract::{name} is not run");
            }
        }
    };
}
