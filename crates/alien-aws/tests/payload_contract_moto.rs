//! Every function of `alien_commands::payload_contract` against [`S3PayloadStore`] on moto,
//! each on a fresh bucket, presigned URLs used by a real HTTP client (reqwest), as a receiver
//! would use them.
//!
//! moto does not verify presigned URLs (any signature, method, key or expiry is accepted:
//! docs/research/aws-moto §2), so `presigned_urls_are_bound_to_method_and_key` cannot pass
//! against it. What binds a URL here is SigV4: `presigned_urls_sign_method_key_and_expiry`
//! checks that the signature covers the method, the key and the expiry; the contract function
//! itself is the one listed as not run on moto below.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use alien_aws::S3PayloadStore;
use alien_aws::moto::{Moto, unique_name};
use alien_commands::PayloadStore;
use alien_commands::payload_contract;

async fn fresh() -> (Moto, S3PayloadStore) {
    let moto = Moto::start().await.unwrap();
    let store = S3PayloadStore::connect(&unique_name("payloads"), &moto.settings()).await;
    store.create_bucket().await.unwrap();
    (moto, store)
}

alien_commands::payload_contract_tests!(
    fresh: fresh,
    client: payload_contract::HttpClient::for_store,
    stores: [
        write_read_size_delete_round_trip,
        empty_payload,
        overwrite_is_atomic,
        failed_write_leaves_previous_payload,
        absent_key,
        invalid_keys,
        presigned_requests_are_well_formed,
        ping,
    ],
    with_client: [presigned_put_then_get],
    // moto verifies no presigned URL: `presigned_urls_sign_method_key_and_expiry` stands in.
    not_run: [presigned_urls_are_bound_to_method_and_key],
);

/// Stands in for `presigned_urls_are_bound_to_method_and_key` (moto checks no signature): the
/// URLs are path-style, SigV4 with only `host` signed, expire as asked, and their signatures
/// differ between methods and keys (the signature covers both, so S3 refuses a URL moved to
/// another method or key). Needs no peer.
#[tokio::test]
async fn presigned_urls_sign_method_key_and_expiry() {
    let mut settings = alien_aws::AwsSettings::new(Some("us-east-1"), Some("http://127.0.0.1:9"));
    settings.credentials = Some(alien_aws::moto::test_credentials());
    let store = S3PayloadStore::connect("alien-payloads", &settings).await;
    let ttl = Duration::from_secs(600);
    let put = store.presign_put("arc/commands/c1/params", ttl).await.unwrap();
    let get = store.presign_get("arc/commands/c1/params", ttl).await.unwrap();
    let other = store.presign_get("arc/commands/c2/params", ttl).await.unwrap();
    for request in [&put, &get, &other] {
        let url = url::Url::parse(&request.backend.url).unwrap();
        assert!(url.path().starts_with("/alien-payloads/arc/commands/"), "path style: {url}");
        let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(query["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(query["X-Amz-Expires"], "600");
        assert_eq!(query["X-Amz-SignedHeaders"], "host", "nothing a receiver must repeat");
        assert!(!query.keys().any(|k| k.starts_with("x-amz-checksum")), "{url}");
        assert_eq!(query["X-Amz-Signature"].len(), 64);
    }
    let signature = |r: &alien_core::command::wire::PresignedRequest| {
        url::Url::parse(&r.backend.url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "X-Amz-Signature")
            .unwrap()
            .1
            .into_owned()
    };
    assert_eq!((put.backend.method.as_str(), get.backend.method.as_str()), ("PUT", "GET"));
    assert_ne!(signature(&put), signature(&get), "the method is signed");
    assert_ne!(signature(&get), signature(&other), "the key is signed");
}

/// A payload larger than one multipart part (8 MiB) goes up in parts and reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_go_up_in_parts() {
    let (_moto, store) = fresh().await;
    let data = payload_contract::pattern(19 * 1024 * 1024 + 7, 3);
    let size = store.write("big/one", payload_contract::chunked(&data, 1 << 20)).await.unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(store.size("big/one").await.unwrap(), Some(size));
    assert!(payload_contract::collect(store.read("big/one").await.unwrap()).await == data);
}

/// A missing bucket: `ping` names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_names_a_missing_bucket() {
    let moto = Moto::start().await.unwrap();
    let store = S3PayloadStore::connect("alien-no-such-bucket", &moto.settings()).await;
    let err = store.ping().await.unwrap_err().to_string();
    assert!(err.contains("alien-no-such-bucket") && err.contains("does not exist"), "{err}");
}
