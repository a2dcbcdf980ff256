//! The BlobStore contract against the local filesystem and memory implementations, and upload
//! sessions that outlive a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_registry::storage::BlobStore;
use alien_registry::{Digest, ObjectBlobStore};
use bytes::Bytes;
use futures_util::StreamExt;

mod local {
    async fn fresh() -> (tempfile::TempDir, alien_registry::ObjectBlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = alien_registry::ObjectBlobStore::local(dir.path()).unwrap();
        (dir, store)
    }

    alien_registry::blobstore_contract_tests!(fresh);
}

mod memory {
    async fn fresh() -> ((), alien_registry::ObjectBlobStore) {
        let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
        ((), alien_registry::ObjectBlobStore::new(memory))
    }

    alien_registry::blobstore_contract_tests!(fresh);
}

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

/// Two replicas over one object store take turns on one upload: each sees what the other
/// appended (the offset is read from the store, not from a replica's memory), and the blob
/// committed through either holds every chunk in order.
#[tokio::test]
async fn replicas_sharing_the_storage_continue_each_others_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let a = ObjectBlobStore::local(dir.path()).unwrap();
    let b = ObjectBlobStore::local(dir.path()).unwrap();
    let chunk =
        |b: &'static [u8]| futures_util::stream::iter(vec![Ok(Bytes::from_static(b))]).boxed();
    let id = a.start_upload().await.unwrap();
    assert_eq!(a.append_upload(&id, 0, chunk(b"one "), None).await.unwrap(), 4);
    assert_eq!(b.upload_offset(&id).await.unwrap(), 4);
    assert_eq!(b.append_upload(&id, 4, chunk(b"two "), None).await.unwrap(), 8);
    // A still remembers offset 4; the store says 8.
    assert_eq!(a.upload_offset(&id).await.unwrap(), 8);
    assert!(a.append_upload(&id, 4, chunk(b"stale"), None).await.is_err(), "offset 4 is past");
    assert_eq!(a.append_upload(&id, 8, chunk(b"three"), None).await.unwrap(), 13);
    let digest = Digest::sha256_of(b"one two three");
    assert_eq!(b.finish_upload(&id, &digest).await.unwrap(), 13);
    assert_eq!(
        a.read_small(&digest, 100).await.unwrap().unwrap(),
        Bytes::from_static(b"one two three")
    );
    assert!(a.upload_offset(&id).await.is_err(), "committed through B: gone for A too");
}
