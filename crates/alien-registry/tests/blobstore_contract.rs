//! The BlobStore contract against the local filesystem and memory implementations, and upload
//! sessions that outlive a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_registry::storage::BlobStore;
use alien_registry::{Digest, ObjectBlobStore};
use bytes::Bytes;
use futures_util::StreamExt;

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = alien_registry::ObjectBlobStore::local(dir.path()).unwrap();
                    alien_registry::contract::$name(&store).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    let store = alien_registry::ObjectBlobStore::new(std::sync::Arc::new(object_store::memory::InMemory::new()));
                    alien_registry::contract::$name(&store).await;
                }
            )*
        }
    };
}

contract_tests!(
    chunked_upload_commits_a_readable_blob,
    digest_mismatch_discards_the_upload,
    out_of_order_chunks_are_refused,
    a_failed_body_keeps_nothing,
    declared_length_is_enforced,
    cancel_and_empty_uploads,
    small_blobs_round_trip,
    index_links_tags_and_referrers,
);

#[tokio::test]
async fn upload_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = ObjectBlobStore::local(dir.path()).unwrap();
    let id = first.start_upload().await.unwrap();
    let chunk =
        |b: &'static [u8]| futures_util::stream::iter(vec![Ok(Bytes::from_static(b))]).boxed();
    first.append_upload(&id, 0, chunk(b"before "), None).await.unwrap();
    drop(first);
    let second = ObjectBlobStore::local(dir.path()).unwrap();
    assert_eq!(second.upload_offset(&id).await.unwrap(), 7);
    second.append_upload(&id, 7, chunk(b"after"), None).await.unwrap();
    let digest = Digest::sha256_of(b"before after");
    second.finish_upload(&id, &digest).await.unwrap();
    assert_eq!(
        second.read_small(&digest, 100).await.unwrap().unwrap(),
        Bytes::from_static(b"before after")
    );
}
