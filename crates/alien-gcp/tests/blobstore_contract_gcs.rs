//! The registry's `BlobStore` contract with its blobs in a GCS bucket on gcp-storage-emulator
//! ([`alien_gcp::GcsObjectStore`] over the JSON API), each function on a fresh bucket.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_gcp::emulators::{Emulator, unique_name};
use alien_gcp::{GcsClient, Service, gcs_blob_store};

async fn fresh() -> (Emulator, alien_registry::ObjectBlobStore) {
    let emulator = Emulator::storage().await.unwrap();
    let bucket = unique_name("registry");
    let settings = emulator.settings(Service::Storage);
    GcsClient::new(&settings, &bucket).create_bucket("demo").await.unwrap();
    (emulator, gcs_blob_store(&settings, &bucket))
}

alien_registry::blobstore_contract_tests!(fresh);

/// A multipart write of more parts than one compose takes (32) composes in levels, reads back
/// whole, and leaves no part behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_writes_compose_in_levels_and_leave_no_parts() {
    use object_store::{ObjectStoreExt, PutPayload};
    let emulator = Emulator::storage().await.unwrap();
    let bucket = unique_name("parts");
    let settings = emulator.settings(Service::Storage);
    let client = GcsClient::new(&settings, &bucket);
    client.create_bucket("demo").await.unwrap();
    let store = alien_gcp::GcsObjectStore::new(&settings, &bucket);
    let path = object_store::path::Path::from("blobs/sha256/ab/whole");
    let mut upload = store.put_multipart(&path).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..40u8 {
        let part = vec![i; 1000 + usize::from(i)];
        expected.extend_from_slice(&part);
        upload.put_part(PutPayload::from(part)).await.unwrap();
    }
    upload.complete().await.unwrap();
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert!(got == expected, "{} bytes back, {} written", got.len(), expected.len());
    let ranged = store.get_range(&path, 1000..1010).await.unwrap();
    assert_eq!(ranged.as_ref(), &expected[1000..1010]);
    let left = client.list("_multipart/", None, None, None).await.unwrap();
    assert!(left.items.is_empty(), "parts left: {:?}", left.items);
}
