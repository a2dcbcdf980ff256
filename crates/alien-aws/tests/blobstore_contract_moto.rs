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

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_moto, store) = fresh().await;
                alien_registry::contract::$name(&store).await;
            }
        )*
        /// The names run above, to check that none of the suite is missing.
        const RUN: &[&str] = &[$(stringify!($name)),*];
    };
}

contract!(
    chunked_upload_commits_a_readable_blob,
    digest_mismatch_discards_the_upload,
    out_of_order_chunks_are_refused,
    a_failed_body_keeps_nothing,
    declared_length_is_enforced,
    cancel_and_empty_uploads,
    small_blobs_round_trip,
    index_links_tags_and_referrers,
);

#[test]
fn every_contract_function_runs() {
    let suite = include_str!("../../alien-registry/src/contract.rs");
    let public: Vec<&str> = suite
        .lines()
        .filter_map(|line| line.strip_prefix("pub async fn "))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    assert!(public.len() >= 8, "found the suite's functions: {public:?}");
    for name in public {
        assert!(RUN.contains(&name), "contract::{name} is not run against S3");
    }
}
