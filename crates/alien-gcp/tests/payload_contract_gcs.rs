//! Every function of `alien_commands::payload_contract` against [`GcsPayloadStore`] on
//! gcp-storage-emulator, each on a fresh bucket, signed URLs used by a real HTTP client
//! (reqwest), as a receiver would use them.
//!
//! gcp-storage-emulator verifies no signature (any signature, or none, is accepted:
//! docs/research/gcp-emulators §2), so `presigned_urls_are_bound_to_method_and_key` cannot pass
//! against it. `signatures_bind_method_key_and_expiry` stands in: it verifies the URLs'
//! signatures with the signing key's public half, and shows that moving a URL to another method,
//! key or expiry breaks it (what GCS checks); the signer itself matches Google's byte for byte
//! (the golden-vector unit test in `gcs.rs`).
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;

use alien_commands::PayloadStore;
use alien_commands::payload_contract;
use alien_gcp::emulators::{Emulator, test_key, unique_name};
use alien_gcp::{GcsPayloadStore, Service};

async fn fresh() -> (Emulator, GcsPayloadStore) {
    let emulator = Emulator::storage().await.unwrap();
    let store =
        GcsPayloadStore::new(&unique_name("payloads"), &emulator.settings(Service::Storage));
    store.client().create_bucket("demo").await.unwrap();
    (emulator, store)
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
    // The emulator verifies no signature: `signatures_bind_method_key_and_expiry` stands in.
    not_run: [presigned_urls_are_bound_to_method_and_key],
);

/// What GCS recomputes from a V4 URL it receives for `method`: the string to sign.
fn string_to_sign(method: &str, url: &url::Url) -> String {
    use sha2::Digest as _;
    let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let canonical_query = url
        .query()
        .unwrap()
        .split('&')
        .filter(|p| !p.starts_with("X-Goog-Signature="))
        .collect::<Vec<_>>()
        .join("&");
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap()),
        None => url.host_str().unwrap().to_owned(),
    };
    let canonical = format!(
        "{method}\n{}\n{canonical_query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD",
        url.path()
    );
    let datetime = &query["X-Goog-Date"];
    format!(
        "GOOG4-RSA-SHA256\n{datetime}\n{}/auto/storage/goog4_request\n{}",
        &datetime[..8],
        hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
    )
}

/// Stands in for `presigned_urls_are_bound_to_method_and_key` (the emulator checks no
/// signature): each URL's signature verifies with the key's public half for its own method,
/// key and expiry, and not once any of them is changed.
#[tokio::test]
async fn signatures_bind_method_key_and_expiry() {
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    let settings = alien_gcp::GcsPayloadStore::new(
        "alien-payloads",
        &alien_gcp::GcpSettings { tokens: test_key(), endpoints: Vec::new() }
            .with_endpoint(Service::Storage, Some("http://127.0.0.1:9")),
    );
    let ttl = std::time::Duration::from_secs(600);
    let put = settings.presign_put("arc/commands/c1/params", ttl).await.unwrap();
    let get = settings.presign_get("arc/commands/c1/params", ttl).await.unwrap();
    let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, test_key().public_key_der());
    let verifies = |method: &str, url: &url::Url| {
        let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let signature = hex::decode(&query["X-Goog-Signature"]).unwrap();
        public.verify(string_to_sign(method, url).as_bytes(), &signature).is_ok()
    };
    let put_url = url::Url::parse(&put.backend.url).unwrap();
    let get_url = url::Url::parse(&get.backend.url).unwrap();
    assert_eq!(put_url.path(), "/alien-payloads/arc/commands/c1/params", "path style");
    assert!(put.backend.headers.is_empty(), "nothing a receiver must repeat");
    assert!(verifies("PUT", &put_url) && verifies("GET", &get_url), "each URL verifies as given");
    assert!(!verifies("GET", &put_url), "the method is signed");
    let mut other_key = put_url.clone();
    other_key.set_path("/alien-payloads/arc/commands/c2/params");
    assert!(!verifies("PUT", &other_key), "the key is signed");
    let longer = put.backend.url.replace("X-Goog-Expires=600", "X-Goog-Expires=604800");
    assert!(!verifies("PUT", &url::Url::parse(&longer).unwrap()), "the expiry is signed");
}

/// A payload larger than one resumable chunk (8 MiB) goes up in chunks and reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_go_up_in_chunks() {
    let (_emulator, store) = fresh().await;
    let data = payload_contract::pattern(19 * 1024 * 1024 + 7, 3);
    let size = store.write("big/one", payload_contract::chunked(&data, 1 << 20)).await.unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(store.size("big/one").await.unwrap(), Some(size));
    assert!(payload_contract::collect(store.read("big/one").await.unwrap()).await == data);
}

/// A missing bucket: `ping` names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_names_a_missing_bucket() {
    let emulator = Emulator::storage().await.unwrap();
    let store = GcsPayloadStore::new("alien-no-such-bucket", &emulator.settings(Service::Storage));
    let err = store.ping().await.unwrap_err().to_string();
    assert!(err.contains("alien-no-such-bucket") && err.contains("does not exist"), "{err}");
}
