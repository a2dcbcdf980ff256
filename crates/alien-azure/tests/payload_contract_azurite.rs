//! Every function of `alien_commands::payload_contract` against [`BlobPayloadStore`] on Azurite,
//! each on a container of its own Azurite; SAS URLs used by a real HTTP client (reqwest), as a
//! receiver would use them. Azurite checks SAS signatures, so the URL-binding function runs too.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_azure::BlobPayloadStore;
use alien_azure::azurite::{Azurite, create_container, unique_name};
use alien_azure::storage::EMULATOR_ACCOUNT;
use alien_commands::PayloadStore;
use alien_commands::payload_contract;

async fn fresh() -> (Azurite, BlobPayloadStore) {
    let azurite = Azurite::start().await.unwrap();
    let container = unique_name("payloads");
    create_container(&azurite.blob_url, &container).await.unwrap();
    let store =
        BlobPayloadStore::new(EMULATOR_ACCOUNT, &container, Some(&azurite.blob_url)).unwrap();
    (azurite, store)
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
    with_client: [presigned_put_then_get, presigned_urls_are_bound_to_method_and_key],
    not_run: [],
);

/// A payload larger than one block (8 MiB) goes up in blocks and reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_go_up_in_blocks() {
    let (_azurite, store) = fresh().await;
    let data = payload_contract::pattern(19 * 1024 * 1024 + 7, 3);
    let size = store.write("big/one", payload_contract::chunked(&data, 1 << 20)).await.unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(store.size("big/one").await.unwrap(), Some(size));
    assert!(payload_contract::collect(store.read("big/one").await.unwrap()).await == data);
}

/// A container that does not exist: `ping` names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_names_a_missing_container() {
    let azurite = Azurite::start().await.unwrap();
    let store =
        BlobPayloadStore::new(EMULATOR_ACCOUNT, "alien-no-such-container", Some(&azurite.blob_url))
            .unwrap();
    let err = store.ping().await.unwrap_err().to_string();
    assert!(err.contains("alien-no-such-container") && err.contains("does not exist"), "{err}");
}
