//! Every function of `alien_commands::payload_contract` against [`FsPayloadStore`], each on a
//! fresh directory. Presigned URLs are exercised through the same steps as the server's
//! `/v1/payloads/{key}` route: parse, [`FsPayloadStore::verify_url`], then read or write.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::SystemTime;

use alien_commands::payload_contract::{self, PresignedClient};
use alien_commands::{PayloadError, PayloadStore, UrlSigner};
use alien_local::FsPayloadStore;
use bytes::Bytes;
use futures_util::{StreamExt, stream};

const BASE_URL: &str = "http://127.0.0.1:8080";

fn store(dir: &tempfile::TempDir) -> FsPayloadStore {
    FsPayloadStore::new(
        dir.path().join("commands_storage"),
        BASE_URL.into(),
        UrlSigner::new([9; 32]),
    )
}

/// Serves presigned URLs the way the payload route does, without HTTP.
struct Route<'a>(&'a FsPayloadStore);

#[async_trait::async_trait]
impl PresignedClient for Route<'_> {
    async fn send(
        &self,
        method: &str,
        url: &str,
        _headers: &BTreeMap<String, String>,
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let rest = url
            .strip_prefix(BASE_URL)
            .and_then(|rest| rest.strip_prefix("/v1/payloads/"))
            .ok_or_else(|| format!("{url} is not a payload URL"))?;
        let Some((key, query)) = rest.split_once('?') else { return Ok((400, Bytes::new())) };
        let params: BTreeMap<&str, &str> =
            query.split('&').filter_map(|pair| pair.split_once('=')).collect();
        let (Some(exp), Some(sig)) =
            (params.get("exp").and_then(|e| e.parse::<u64>().ok()), params.get("sig"))
        else {
            return Ok((400, Bytes::new()));
        };
        match self.0.verify_url(method, key, exp, sig, SystemTime::now()) {
            Ok(()) => {}
            Err(PayloadError::BadSignature) => return Ok((403, Bytes::new())),
            Err(_) => return Ok((400, Bytes::new())),
        }
        match method {
            "PUT" => match self.0.write(key, stream::iter([Ok(body)]).boxed()).await {
                Ok(_) => Ok((200, Bytes::new())),
                Err(e) => Err(e.to_string()),
            },
            "GET" => match self.0.read(key).await {
                Ok(stream) => Ok((200, payload_contract::collect(stream).await.into())),
                Err(PayloadError::NotFound(_)) => Ok((404, Bytes::new())),
                Err(e) => Err(e.to_string()),
            },
            _ => Ok((405, Bytes::new())),
        }
    }
}

async fn fresh() -> (tempfile::TempDir, FsPayloadStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    (dir, store)
}

alien_commands::payload_contract_tests!(
    fresh: fresh,
    client: Route,
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
