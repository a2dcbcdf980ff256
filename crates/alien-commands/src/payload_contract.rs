//! The contract suite of the [`PayloadStore`] seam: one function per behaviour, each taking any
//! implementation (and, for presigned URLs, a [`PresignedClient`] that makes the HTTP requests a
//! remote client would make), so the filesystem store and the cloud stores prove the same
//! semantics. Every function assumes an empty store and uses its own keys.
//!
//! The functions panic (through assertions) when the implementation breaks the contract.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};

use crate::payload::{MAX_KEY_LEN, PayloadError, PayloadStore, PayloadStream};
use crate::wire::{PresignedOperation, PresignedRequest};

/// Makes the HTTP request of a presigned URL, as a remote client would (reqwest against a real
/// endpoint, or a direct call of the route that serves the URLs).
#[async_trait::async_trait]
pub trait PresignedClient: Send + Sync {
    /// Sends `method` to `url` with `headers` and `body`; returns the status and response body,
    /// or a description of a transport failure.
    async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &BTreeMap<String, String>,
        body: Bytes,
    ) -> Result<(u16, Bytes), String>;
}

/// Deterministic, non-repeating test bytes (a repeating pattern would hide reordered chunks).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// `data` as a stream of chunks of alternately `chunk` and `chunk + 7` bytes.
pub fn chunked(data: &[u8], chunk: usize) -> PayloadStream {
    let mut chunks = Vec::new();
    let mut rest = data;
    let mut sizes = [chunk.max(1), chunk.max(1) + 7].into_iter().cycle();
    while let (false, Some(size)) = (rest.is_empty(), sizes.next()) {
        let (head, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(Ok(Bytes::copy_from_slice(head)));
        rest = tail;
    }
    stream::iter(chunks).boxed()
}

/// A body that yields `data` in chunks, then fails as a dropped client connection would.
pub fn failing(data: &[u8], chunk: usize) -> PayloadStream {
    let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away");
    chunked(data, chunk).chain(stream::iter([Err(broken)])).boxed()
}

/// Reads a whole payload stream.
pub async fn collect(stream: PayloadStream) -> Vec<u8> {
    stream
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .expect("reading the payload stream")
}

/// Asserts equality of two payloads without printing megabytes on failure.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}, first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

/// A multi-MiB payload written in many chunks is read back byte for byte, its size is known, and
/// delete removes it (deleting an absent key is fine).
pub async fn write_read_size_delete_round_trip(store: &dyn PayloadStore) {
    let key = "arc/commands/cmd_AZaz09-_.x/params";
    let data = pattern(3 * 1024 * 1024 + 1234, 1);
    let written = store.write(key, chunked(&data, 64 * 1024)).await.unwrap();
    assert_eq!(written, data.len() as u64, "write returns the size");
    assert_eq!(store.size(key).await.unwrap(), Some(data.len() as u64));

    let mut chunks = 0;
    let mut got = Vec::new();
    let mut reader = store.read(key).await.unwrap();
    while let Some(chunk) = reader.next().await {
        got.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    assert_same(&got, &data, "read after write");
    assert!(chunks > 1, "a {} byte payload is streamed, not one chunk", data.len());

    let sibling = "arc/commands/cmd_AZaz09-_.x/response";
    store.write(sibling, chunked(b"response", 3)).await.unwrap();
    store.delete(key).await.unwrap();
    assert_eq!(store.size(key).await.unwrap(), None, "deleted");
    assert!(matches!(store.read(key).await.map(|_| ()), Err(PayloadError::NotFound(_))));
    store.delete(key).await.expect("deleting an absent key is fine");
    assert_eq!(collect(store.read(sibling).await.unwrap()).await, b"response", "sibling kept");
}

/// An empty body is a valid, empty payload.
pub async fn empty_payload(store: &dyn PayloadStore) {
    let key = "empty/payload";
    assert_eq!(store.write(key, stream::empty().boxed()).await.unwrap(), 0);
    assert_eq!(store.size(key).await.unwrap(), Some(0));
    assert!(collect(store.read(key).await.unwrap()).await.is_empty());
}

/// Overwriting replaces the payload atomically: readers opened before or during the write read
/// the whole old or the whole new payload, and reads after it the new one.
pub async fn overwrite_is_atomic(store: &dyn PayloadStore) {
    let key = "atomic/payload";
    let old = vec![b'a'; 2 * 1024 * 1024];
    let new = vec![b'b'; 3 * 1024 * 1024];
    store.write(key, chunked(&old, 256 * 1024)).await.unwrap();

    let uniform = |got: &[u8], what: &str| {
        let whole_old = got.len() == old.len() && got.iter().all(|&b| b == b'a');
        let whole_new = got.len() == new.len() && got.iter().all(|&b| b == b'b');
        assert!(whole_old || whole_new, "{what}: a mix of old and new ({} bytes)", got.len());
    };

    let early = store.read(key).await.unwrap();
    // A slow writer, so that the readers below run while it writes.
    let slow = chunked(&new, 64 * 1024)
        .then(|chunk| async move {
            tokio::task::yield_now().await;
            chunk
        })
        .boxed();
    let write = store.write(key, slow);
    let reads = async {
        for _ in 0..8 {
            uniform(&collect(store.read(key).await.unwrap()).await, "read during the write");
            tokio::task::yield_now().await;
        }
    };
    let (written, ()) = tokio::join!(write, reads);
    assert_eq!(written.unwrap(), new.len() as u64);
    uniform(&collect(early).await, "a read opened before the write");
    assert_same(&collect(store.read(key).await.unwrap()).await, &new, "read after the write");
    assert_eq!(store.size(key).await.unwrap(), Some(new.len() as u64));
}

/// A write whose body fails midway returns an error and leaves the previous payload (or
/// nothing) in place.
pub async fn failed_write_leaves_previous_payload(store: &dyn PayloadStore) {
    let fresh = "failed/fresh";
    let result = store.write(fresh, failing(&pattern(512 * 1024, 2), 64 * 1024)).await;
    assert!(result.is_err(), "a failed body fails the write: {result:?}");
    assert_eq!(store.size(fresh).await.unwrap(), None, "nothing stored");
    assert!(matches!(store.read(fresh).await.map(|_| ()), Err(PayloadError::NotFound(_))));

    let existing = "failed/existing";
    let old = pattern(300 * 1024, 3);
    store.write(existing, chunked(&old, 64 * 1024)).await.unwrap();
    let result = store.write(existing, failing(&pattern(512 * 1024, 4), 64 * 1024)).await;
    assert!(result.is_err(), "a failed body fails the write: {result:?}");
    assert_eq!(store.size(existing).await.unwrap(), Some(old.len() as u64));
    assert_same(&collect(store.read(existing).await.unwrap()).await, &old, "previous payload");
}

/// Reading an absent key is `NotFound`; its size is `None`.
pub async fn absent_key(store: &dyn PayloadStore) {
    let key = "absent/never-written";
    assert!(matches!(store.read(key).await.map(|_| ()), Err(PayloadError::NotFound(_))));
    assert_eq!(store.size(key).await.unwrap(), None);
    // A key whose path is a prefix of stored keys is not a payload either.
    store.write("absent/dir/child", chunked(b"x", 1)).await.unwrap();
    assert!(matches!(store.read("absent/dir").await.map(|_| ()), Err(PayloadError::NotFound(_))));
    assert_eq!(store.size("absent/dir").await.unwrap(), None);
}

/// Keys outside the payload key rule (`crate::payload::valid_key`) are `InvalidKey` for every
/// operation, and nothing is written.
pub async fn invalid_keys(store: &dyn PayloadStore) {
    let too_long = "k".repeat(MAX_KEY_LEN + 1);
    let keys = [
        "",
        "..",
        ".",
        "../escape",
        "a/../b",
        "a/./b",
        "a/..",
        "/absolute",
        "a/",
        "a//b",
        "a\\b",
        "..\\escape",
        "nul\0byte",
        "a b",
        "caf\u{e9}",
        ".hidden",
        "a/.hidden",
        "a?b",
        "a%2Fb",
        too_long.as_str(),
    ];
    let ttl = Duration::from_secs(60);
    for key in keys {
        let shown = key.chars().take(20).collect::<String>();
        let invalid = |r: Result<(), PayloadError>| matches!(r, Err(PayloadError::InvalidKey(_)));
        assert!(invalid(store.read(key).await.map(|_| ())), "read {shown:?}");
        assert!(invalid(store.size(key).await.map(|_| ())), "size {shown:?}");
        let write = store.write(key, chunked(b"payload", 4)).await.map(|_| ());
        assert!(invalid(write), "write {shown:?}");
        assert!(invalid(store.delete(key).await), "delete {shown:?}");
        assert!(invalid(store.presign_put(key, ttl).await.map(|_| ())), "presign_put {shown:?}");
        assert!(invalid(store.presign_get(key, ttl).await.map(|_| ())), "presign_get {shown:?}");
    }
}

/// `presign_put` and `presign_get` describe an HTTP request for the key, with the right
/// operation and method, expiring `expires_in` from now (RFC 3339).
pub async fn presigned_requests_are_well_formed(store: &dyn PayloadStore) {
    let key = "presign/shape/params";
    let ttl = Duration::from_secs(600);
    let cases = [
        (store.presign_put(key, ttl).await.unwrap(), PresignedOperation::Put, "PUT"),
        (store.presign_get(key, ttl).await.unwrap(), PresignedOperation::Get, "GET"),
    ];
    let now = chrono::Utc::now();
    for (request, operation, method) in cases {
        assert_eq!(request.operation, operation);
        assert_eq!(request.backend.backend_type, "http");
        assert_eq!(request.backend.method, method);
        let url = &request.backend.url;
        assert!(url.starts_with("http://") || url.starts_with("https://"), "{url}");
        assert!(url.contains(key), "{url} names the key");
        let expiration = chrono::DateTime::parse_from_rfc3339(&request.expiration)
            .unwrap_or_else(|e| panic!("expiration {:?} is not RFC 3339: {e}", request.expiration));
        let in_secs = (expiration.with_timezone(&chrono::Utc) - now).num_seconds();
        assert!((590..=610).contains(&in_secs), "{method} expires in {in_secs} s, want ~600");
    }
}

/// A payload uploaded through a presigned PUT is in the store, and a presigned GET downloads it.
pub async fn presigned_put_then_get(store: &dyn PayloadStore, client: &dyn PresignedClient) {
    let key = "presign/round-trip/response";
    let data = pattern(1024 * 1024 + 3, 5);
    let put = store.presign_put(key, Duration::from_secs(300)).await.unwrap();
    let (status, _) = send(client, &put, Bytes::from(data.clone())).await;
    assert!((200..300).contains(&status), "presigned PUT: status {status}");
    assert_eq!(store.size(key).await.unwrap(), Some(data.len() as u64));
    assert_same(&collect(store.read(key).await.unwrap()).await, &data, "uploaded payload");

    let get = store.presign_get(key, Duration::from_secs(300)).await.unwrap();
    let (status, body) = send(client, &get, Bytes::new()).await;
    assert_eq!(status, 200, "presigned GET");
    assert_same(&body, &data, "downloaded payload");
}

/// A presigned URL works only for its method and its key.
pub async fn presigned_urls_are_bound_to_method_and_key(
    store: &dyn PayloadStore,
    client: &dyn PresignedClient,
) {
    let key = "presign/bound/one";
    let other = "presign/bound/two";
    let original = b"original".to_vec();
    store.write(key, chunked(&original, 3)).await.unwrap();
    store.write(other, chunked(b"other", 3)).await.unwrap();
    let ttl = Duration::from_secs(300);

    let get = store.presign_get(key, ttl).await.unwrap();
    let mut as_put = get.clone();
    as_put.backend.method = "PUT".into();
    let (status, _) = send(client, &as_put, Bytes::from_static(b"overwritten")).await;
    assert!(!(200..300).contains(&status), "a GET URL used to PUT: status {status}");
    assert_eq!(collect(store.read(key).await.unwrap()).await, original, "not overwritten");

    let put = store.presign_put(key, ttl).await.unwrap();
    let mut as_get = put.clone();
    as_get.backend.method = "GET".into();
    let (status, _) = send(client, &as_get, Bytes::new()).await;
    assert!(!(200..300).contains(&status), "a PUT URL used to GET: status {status}");

    let mut other_key = get.clone();
    other_key.backend.url = get.backend.url.replacen(key, other, 1);
    assert_ne!(other_key.backend.url, get.backend.url);
    let (status, body) = send(client, &other_key, Bytes::new()).await;
    assert!(!(200..300).contains(&status), "a URL moved to another key: status {status}");
    assert_ne!(body.as_ref(), b"other", "another key's payload leaked");
}

/// A working store answers `ping`.
pub async fn ping(store: &dyn PayloadStore) {
    store.ping().await.expect("a fresh store answers ping");
}

async fn send(
    client: &dyn PresignedClient,
    request: &PresignedRequest,
    body: Bytes,
) -> (u16, Bytes) {
    let backend = &request.backend;
    client
        .send(&backend.method, &backend.url, &backend.headers, body)
        .await
        .unwrap_or_else(|e| panic!("{} {}: {e}", backend.method, backend.url))
}

/// Makes the presigned requests over HTTP with reqwest, as a receiver does (no header of its
/// own): for stores whose URLs a real endpoint serves (S3, GCS, Azure Blob and their emulators).
#[derive(Debug, Clone, Default)]
pub struct HttpClient(pub reqwest::Client);

impl HttpClient {
    /// A client for any store (the contract macro's `client` argument).
    pub fn for_store<S: ?Sized>(_store: &S) -> HttpClient {
        HttpClient::default()
    }
}

#[async_trait::async_trait]
impl PresignedClient for HttpClient {
    async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &BTreeMap<String, String>,
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut request = self.0.request(method, url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await.map_err(|e| e.to_string())?))
    }
}

/// This file, for [`function_names`].
#[doc(hidden)]
pub const SOURCE: &str = include_str!("payload_contract.rs");

/// The names of the suite's functions (its `pub async fn`s but [`collect`]).
#[doc(hidden)]
pub fn function_names() -> Vec<&'static str> {
    crate::kv_contract::function_names(SOURCE).into_iter().filter(|n| *n != "collect").collect()
}

/// One `#[tokio::test]` per function of the suite, each on a fresh store, and a test that every
/// function of the suite is either run or named in `not_run` (with, in the calling file, the
/// test that stands in for it). `fresh` is an async fn returning `(guard, store)`; `client` a fn
/// from `&store` to the [`PresignedClient`] of the functions in `with_client`.
///
/// ```ignore
/// alien_commands::payload_contract_tests!(
///     fresh: fresh, client: alien_commands::payload_contract::HttpClient::for_store,
///     stores: [write_read_size_delete_round_trip, ...],
///     with_client: [presigned_put_then_get],
///     not_run: [presigned_urls_are_bound_to_method_and_key],
/// );
/// ```
#[macro_export]
macro_rules! payload_contract_tests {
    (fresh: $fresh:path, client: $client:path,
     stores: [$($name:ident),* $(,)?], with_client: [$($client_name:ident),* $(,)?],
     not_run: [$($skipped:ident),* $(,)?] $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = $fresh().await;
                $crate::payload_contract::$name(&store).await;
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $client_name() {
                let (_guard, store) = $fresh().await;
                let client = $client(&store);
                $crate::payload_contract::$client_name(&store, &client).await;
            }
        )*

        /// Every function of the suite is run above or named as not run.
        #[test]
        fn every_contract_function_runs() {
            let run: &[&str] = &[$(stringify!($name),)* $(stringify!($client_name),)* $(stringify!($skipped)),*];
            let suite = $crate::payload_contract::function_names();
            assert!(suite.len() >= 8, "found the suite's functions: {suite:?}");
            for name in suite {
                assert!(run.contains(&name), "payload_contract::{name} is not run");
            }
        }
    };
}
