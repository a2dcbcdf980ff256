//! No check passes by accident: against a server that gives one fixed answer to every request,
//! only the checks whose whole point is that answer pass.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;

use alien_registry_conformance::{Target, results_table, run_all};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `status` with `body` to every request on 127.0.0.1; returns the base URL.
async fn fixed_answer_server(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                // Read the head and any body so the client is not cut off mid-send.
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                let head_end = loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut have = request.len() - head_end;
                while have < length {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    have += n;
                }
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    base
}

async fn passing_checks(status: &'static str, body: &'static str) -> BTreeSet<&'static str> {
    let base_url = fixed_answer_server(status, body).await;
    let target = Target { name: "fixed".into(), base_url, credentials: None };
    let results = run_all(&target).await;
    println!("{}", results_table(&results));
    results.iter().filter(|r| r.outcome.is_ok()).map(|r| r.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_always_says_ok_passes_only_the_version_checks() {
    let passing = passing_checks("200 OK", "{}").await;
    assert_eq!(passing, BTreeSet::from(["api_version", "api_version_challenge"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_always_says_not_found_passes_only_the_refusal_checks() {
    let every_code = r#"{"errors":[{"code":"BLOB_UNKNOWN"},{"code":"BLOB_UPLOAD_INVALID"},
        {"code":"BLOB_UPLOAD_UNKNOWN"},{"code":"DIGEST_INVALID"},{"code":"MANIFEST_BLOB_UNKNOWN"},
        {"code":"MANIFEST_INVALID"},{"code":"MANIFEST_UNKNOWN"},{"code":"NAME_INVALID"},
        {"code":"NAME_UNKNOWN"},{"code":"SIZE_INVALID"},{"code":"TAG_INVALID"}]}"#;
    let passing = passing_checks("404 Not Found", every_code).await;
    assert_eq!(passing, BTreeSet::from(["name_invalid", "name_too_long", "repository_unknown"]));
}
