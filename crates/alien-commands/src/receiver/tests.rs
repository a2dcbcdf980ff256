//! Unit tests of the receiver: configuration from the environment, budgets, backoff, and the
//! retry rules of submissions against a scripted HTTP peer. The end-to-end behaviour against a
//! real manager is in `crates/alien-server/tests/receiver.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alien_core::command::wire::{CommandResponse, CommandTarget};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use super::transport::{self, TransportError, retryable};
use super::*;

fn vars(pairs: &[(&'static str, &str)]) -> Result<ReceiverConfig, ReceiverError> {
    let map: HashMap<&'static str, String> =
        pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    ReceiverConfig::from_vars(|var| Ok(map.get(var).cloned()))
}

const ALL: [(&str, &str); 4] = [
    (env::COMMANDS_URL, "http://127.0.0.1:8080/v1/"),
    (env::COMMANDS_TOKEN, "tok"),
    (env::DEPLOYMENT_ID, "dep_1"),
    (env::TARGET_RESOURCE_ID, "api"),
];

#[test]
fn config_from_env_reads_every_variable_with_defaults() {
    let config = vars(&ALL).unwrap();
    assert_eq!(config.commands_url, "http://127.0.0.1:8080/v1", "trailing slash trimmed");
    assert_eq!(config.token, "tok");
    assert_eq!(config.deployment_id, "dep_1");
    assert_eq!(
        config.target,
        CommandTarget { resource_id: "api".into(), resource_type: "container".into() }
    );
    assert_eq!((config.capacity, config.lease_seconds, config.wait_seconds), (4, 60, 20));
    assert!(config.validate().is_ok());
    assert!(!format!("{config:?}").contains("tok\""), "the token is not in Debug output");

    let mut with_type = ALL.to_vec();
    with_type.push((env::TARGET_RESOURCE_TYPE, "function"));
    assert_eq!(vars(&with_type).unwrap().target.resource_type, "function");
}

#[test]
fn config_from_env_names_the_missing_or_bad_variable() {
    for (i, (var, _)) in ALL.iter().enumerate() {
        let mut missing = ALL.to_vec();
        missing.remove(i);
        let err = vars(&missing).unwrap_err();
        assert!(matches!(err, ReceiverError::MissingEnv(v) if v == *var), "{err}");
        assert!(err.to_string().contains(var), "{err}");
        // Empty counts as missing.
        let mut empty = ALL.to_vec();
        empty[i].1 = "  ";
        assert!(matches!(vars(&empty).unwrap_err(), ReceiverError::MissingEnv(v) if v == *var));
    }
    let mut bad = ALL.to_vec();
    bad[0].1 = "127.0.0.1:8080/v1";
    let err = vars(&bad).unwrap_err();
    assert!(err.to_string().contains(env::COMMANDS_URL), "{err}");
}

#[test]
fn config_validation_rejects_out_of_range_values() {
    let base = vars(&ALL).unwrap();
    type Change = fn(&mut ReceiverConfig);
    let cases: [(Change, &str); 5] = [
        (|c| c.capacity = 0, "capacity"),
        (|c| c.lease_seconds = 5, "lease_seconds"),
        (|c| c.lease_seconds = 3601, "lease_seconds"),
        (|c| c.wait_seconds = 31, "wait_seconds"),
        (|c| c.commands_url = "ftp://x".into(), "commands_url"),
    ];
    for (change, field) in cases {
        let mut config = base.clone();
        change(&mut config);
        let err = config.validate().unwrap_err();
        assert!(
            matches!(err, ReceiverError::InvalidConfig { field: f, .. } if f == field),
            "{err}"
        );
    }
}

#[test]
fn budget_is_the_earliest_of_deadline_and_lease_end_minus_margin() {
    let now = Instant::now();
    let wall = Utc::now();
    let secs = |s: i64| chrono::Duration::seconds(s);
    // Lease only: leaseExpiresAt - 5 s.
    let end = budget_end(now, 60, Some(wall + secs(60)), None, now, wall);
    assert_eq!(end, now + Duration::from_secs(55));
    // An earlier deadline wins.
    let end = budget_end(now, 60, Some(wall + secs(60)), Some(wall + secs(10)), now, wall);
    assert_eq!(end, now + Duration::from_secs(10));
    // A wall clock that lags the manager's cannot stretch the lease: the monotonic bound holds.
    let end = budget_end(now, 60, Some(wall + secs(600)), None, now, wall);
    assert_eq!(end, now + Duration::from_secs(55));
    // Passed times give no budget at all.
    let end = budget_end(now, 60, Some(wall + secs(60)), Some(wall - secs(1)), now, wall);
    assert_eq!(end, now);
    let end = budget_end(now, 60, Some(wall + secs(3)), None, now, wall);
    assert_eq!(end, now);
}

#[test]
fn backoff_doubles_with_jitter_and_is_capped() {
    let policy = RetryPolicy {
        attempts: 5,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    for _ in 0..50 {
        for (retry, full) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1000), (40, 1000)] {
            let d = policy.delay(retry);
            let full = Duration::from_millis(full);
            assert!(
                d >= full / 2 && d <= full,
                "retry {retry}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
    }
}

#[test]
fn only_timeouts_throttling_and_server_errors_are_retried() {
    for status in [408, 429, 500, 502, 503, 504, 599] {
        assert!(retryable(status), "{status}");
    }
    for status in [200, 400, 401, 403, 404, 409, 413, 422] {
        assert!(!retryable(status), "{status}");
    }
}

#[test]
fn handler_errors_carry_message_and_details() {
    let err = HandlerError::new("boom").with_details(serde_json::json!({"row": 3}));
    assert_eq!(err.message(), "boom");
    assert_eq!(err.details(), Some(&serde_json::json!({"row": 3})));
    assert_eq!(HandlerError::from("x").to_string(), "x");
    assert_eq!(HandlerError::from(String::from("y")).details(), None);
}

/// An HTTP/1.1 peer that answers the n-th request with `script[n]` (status, extra header lines;
/// then 200) and the body `{}` after 5 ms, one connection per request; returns its URL and the request count.
async fn scripted_peer(script: Vec<(u16, &'static str)>) -> (String, Arc<AtomicUsize>) {
    scripted_peer_with_body(script, "{}").await
}

/// [`scripted_peer`] answering with `body`.
async fn scripted_peer_with_body(
    script: Vec<(u16, &'static str)>,
    body: &'static str,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/commands/cmd_x/response", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (status, extra) = script.get(n).copied().unwrap_or((200, ""));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let read = socket.read(&mut chunk).await.unwrap_or(0);
                if read == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..read]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            // Some latency, as over a real network.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (url, hits)
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

fn error_response() -> CommandResponse {
    CommandResponse::Error { code: HANDLER_ERROR.into(), message: "x".into(), details: None }
}

#[tokio::test]
async fn submissions_retry_server_errors_and_throttling_until_accepted() {
    let (url, hits) =
        scripted_peer(vec![(503, ""), (429, "retry-after: 0\r\n"), (408, ""), (200, "")]).await;
    let client = reqwest::Client::new();
    transport::submit(&client, &fast_policy(), &url, &error_response(), "submit").await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn submissions_are_not_retried_on_other_client_errors() {
    let (url, hits) = scripted_peer(vec![(400, "")]).await;
    let client = reqwest::Client::new();
    let err = transport::submit(&client, &fast_policy(), &url, &error_response(), "submit")
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Refused { status: 400, .. }), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn submissions_give_up_after_the_bounded_attempts() {
    let (url, hits) = scripted_peer(vec![(500, ""); 10]).await;
    let client = reqwest::Client::new();
    let err = transport::submit(&client, &fast_policy(), &url, &error_response(), "submit")
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::GaveUp { attempts: 4, .. }), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    // Nothing listening: transport errors are retried the same way, then reported with the cause.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = transport::submit(
        &client,
        &fast_policy(),
        &format!("http://{closed}/x"),
        &error_response(),
        "submit",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TransportError::GaveUp { attempts: 4, .. }), "{err}");
}

#[tokio::test]
async fn invalid_configuration_stops_run_before_any_request() {
    let mut config = vars(&ALL).unwrap();
    config.capacity = 0;
    let err = Receiver::new(config).run(std::future::pending::<()>()).await.unwrap_err();
    assert!(matches!(err, ReceiverError::InvalidConfig { field: "capacity", .. }), "{err}");
}

#[tokio::test]
async fn a_manager_that_does_not_long_poll_is_not_hammered() {
    // Empty answers at once (waitSeconds 0, or a manager without long polls): about one lease
    // request per second, not a tight loop.
    let (url, hits) = scripted_peer_with_body(Vec::new(), r#"{"leases":[]}"#).await;
    let base = url.trim_end_matches("/commands/cmd_x/response").to_owned();
    for wait_seconds in [0, 20] {
        hits.store(0, Ordering::SeqCst);
        let mut config = vars(&ALL).unwrap();
        config.commands_url = base.clone();
        config.wait_seconds = wait_seconds;
        Receiver::new(config).run(tokio::time::sleep(Duration::from_millis(1500))).await.unwrap();
        let requests = hits.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&requests),
            "waitSeconds {wait_seconds}: {requests} requests in 1.5 s"
        );
    }
}

#[test]
fn loopback_urls_of_an_envelope_follow_the_commands_url() {
    let envelope: Envelope = serde_json::from_value(serde_json::json!({
        "protocol": "arc.v1", "deploymentId": "dep_1", "commandId": "cmd_1", "attempt": 1,
        "target": {"resourceId": "api", "resourceType": "container"}, "command": "echo",
        "params": {"mode": "storage", "size": 3, "storageGetRequest": {"backend": {"type": "http", "url": "http://localhost:8080/v1/payloads/a?exp=1&sig=s", "method": "GET", "headers": {}}, "expiration": "2030-01-01T00:00:00Z", "operation": "get", "path": "a"}},
        "responseHandling": {"maxInlineBytes": 10, "submitResponseUrl": "http://127.0.0.1:8080/v1/commands/cmd_1/response?response_token=t&expires=9",
            "storageUploadRequest": {"backend": {"type": "http", "url": "http://localhost:8080/v1/payloads/b?exp=1&sig=s", "method": "PUT", "headers": {}}, "expiration": "2030-01-01T00:00:00Z", "operation": "put", "path": "b"}}
    }))
    .unwrap();
    let mut through_gateway = envelope.clone();
    reach_through(&mut through_gateway, "http://10.0.2.2:8080/v1");
    let handling = &through_gateway.response_handling;
    assert_eq!(
        handling.submit_response_url,
        "http://10.0.2.2:8080/v1/commands/cmd_1/response?response_token=t&expires=9"
    );
    assert_eq!(
        handling.storage_upload_request.backend.url,
        "http://10.0.2.2:8080/v1/payloads/b?exp=1&sig=s"
    );
    let BodySpec::Storage { storage_get_request: Some(get), .. } = &through_gateway.params else {
        panic!("storage params")
    };
    assert_eq!(get.backend.url, "http://10.0.2.2:8080/v1/payloads/a?exp=1&sig=s");
    // A receiver on the manager's own machine keeps the URLs as they are.
    let mut local = envelope.clone();
    reach_through(&mut local, "http://127.0.0.1:8080/v1");
    assert_eq!(
        local.response_handling.submit_response_url,
        envelope.response_handling.submit_response_url
    );
}
