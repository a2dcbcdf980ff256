//! The registry's `BlobStore` contract with its blobs in a Blob container on Azurite
//! (object_store's `MicrosoftAzure` over the shared hyper connector), each on a fresh container.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_azure::azurite::{Azurite, create_container, unique_name};
use alien_azure::blob_blob_store;
use alien_azure::storage::EMULATOR_ACCOUNT;

async fn fresh() -> (Azurite, alien_registry::ObjectBlobStore) {
    let azurite = Azurite::start().await.unwrap();
    let container = unique_name("registry");
    create_container(&azurite.blob_url, &container).await.unwrap();
    let store = blob_blob_store(EMULATOR_ACCOUNT, &container, Some(&azurite.blob_url)).unwrap();
    (azurite, store)
}

alien_registry::blobstore_contract_tests!(fresh);
