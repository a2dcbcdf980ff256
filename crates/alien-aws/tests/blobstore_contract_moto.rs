//! The registry's `BlobStore` contract with its blobs in an S3 bucket on moto (object_store's
//! `AmazonS3` over this crate's connector), each function on a fresh bucket.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_aws::moto::{Moto, unique_name};
use alien_aws::{S3BlobSettings, S3PayloadStore, s3_blob_store};

async fn fresh() -> (Moto, alien_registry::ObjectBlobStore) {
    let moto = Moto::start().await.unwrap();
    let bucket = unique_name("registry");
    // The payload store's client makes the bucket; the registry only reads and writes in it.
    S3PayloadStore::connect(&bucket, &moto.settings()).await.create_bucket().await.unwrap();
    let store = s3_blob_store(&S3BlobSettings { bucket, aws: moto.settings() }).await.unwrap();
    (moto, store)
}

alien_registry::blobstore_contract_tests!(fresh);
