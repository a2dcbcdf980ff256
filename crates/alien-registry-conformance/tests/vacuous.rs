//! No check passes by accident: against a server that gives one fixed answer to every request,
//! only the checks whose whole point is that answer pass, in a lenient run and in a strict one.
//! Every refusal check first makes a request the registry must accept, so a server refusing
//! everything (404 with every error code in its body, 400 `NAME_INVALID`, 401, ...) passes none.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::sync::Arc;

use alien_registry_conformance::{CheckResult, Strictness, Target, results_table, run_all};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A body naming every error code the checks look for.
const EVERY_CODE: &str = r#"{"errors":[{"code":"BLOB_UNKNOWN"},{"code":"BLOB_UPLOAD_INVALID"},
    {"code":"BLOB_UPLOAD_UNKNOWN"},{"code":"DIGEST_INVALID"},{"code":"MANIFEST_BLOB_UNKNOWN"},
    {"code":"MANIFEST_INVALID"},{"code":"MANIFEST_UNKNOWN"},{"code":"NAME_INVALID"},
    {"code":"NAME_UNKNOWN"},{"code":"SIZE_INVALID"},{"code":"TAG_INVALID"},
    {"code":"UNAUTHORIZED"},{"code":"DENIED"},{"code":"UNSUPPORTED"}]}"#;

/// One answer given to every request: status line, extra headers, body.
#[derive(Clone, Copy, Debug)]
struct Answer {
    status: &'static str,
    headers: &'static str,
    body: &'static str,
}

const fn answer(status: &'static str, body: &'static str) -> Answer {
    Answer { status, headers: "", body }
}

/// Serves `answer` to every request on 127.0.0.1; returns the base URL.
async fn fixed_answer_server(answer: Answer) -> String {
    server(Arc::new(move |_: &str| answer)).await
}

/// Answers each request with `respond(<request line>)` on 127.0.0.1; returns the base URL.
async fn server(respond: Arc<dyn Fn(&str) -> Answer + Send + Sync>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let respond = respond.clone();
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
                let original = String::from_utf8_lossy(&request[..head_end]);
                let request_line = original.lines().next().unwrap_or_default();
                let Answer { status, headers, body } = respond(request_line);
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}\
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

/// The checks that pass against a server giving `answer` to everything.
async fn passing_checks(
    answer: Answer,
    strictness: Strictness,
    credentials: bool,
) -> BTreeSet<&'static str> {
    let base_url = fixed_answer_server(answer).await;
    let mut target = Target::new("fixed", base_url).with_strictness(strictness);
    if credentials {
        target = target.with_credentials("x", "a-token");
    }
    let results = run_all(&target).await;
    let passing: BTreeSet<&'static str> =
        results.iter().filter(|r| r.outcome.is_ok()).map(|r| r.name).collect();
    if !passing.is_empty() {
        println!("{answer:?}, {strictness}:\n{}", results_table(&results));
    }
    passing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_always_says_ok_passes_only_the_version_checks() {
    let ok = answer("200 OK", "{}");
    let lenient = passing_checks(ok, Strictness::Lenient, false).await;
    assert_eq!(lenient, BTreeSet::from(["api_version", "api_version_challenge"]));
    // Strict: the embedded registry demands credentials, so an open one fails the challenge.
    let strict = passing_checks(ok, Strictness::Strict, false).await;
    assert_eq!(strict, BTreeSet::from(["api_version"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_always_says_not_found_passes_no_check() {
    for body in [EVERY_CODE, "{}", r#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#, ""] {
        for strictness in [Strictness::Lenient, Strictness::Strict] {
            let passing = passing_checks(answer("404 Not Found", body), strictness, true).await;
            assert!(passing.is_empty(), "404 with {body:?}, {strictness}: {passing:?} pass");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_always_refuses_passes_no_check() {
    let answers = [
        answer("400 Bad Request", EVERY_CODE),
        answer("400 Bad Request", r#"{"errors":[{"code":"NAME_INVALID"}]}"#),
        answer("400 Bad Request", r#"{"errors":[{"code":"TAG_INVALID"}]}"#),
        answer("403 Forbidden", r#"{"errors":[{"code":"DENIED"}]}"#),
        answer("405 Method Not Allowed", r#"{"errors":[{"code":"UNSUPPORTED"}]}"#),
        answer("416 Range Not Satisfiable", EVERY_CODE),
        answer("500 Internal Server Error", EVERY_CODE),
        Answer {
            status: "401 Unauthorized",
            headers: "WWW-Authenticate: Basic realm=\"fixed\"\r\n",
            body: r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
        },
    ];
    for answer in answers {
        for strictness in [Strictness::Lenient, Strictness::Strict] {
            let passing = passing_checks(answer, strictness, true).await;
            assert!(passing.is_empty(), "{answer:?}, {strictness}: {passing:?} pass");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_always_accepts_passes_no_check() {
    let answers = [
        answer("201 Created", ""),
        answer("202 Accepted", ""),
        Answer {
            status: "202 Accepted",
            headers: "Location: /v2/fixed/blobs/uploads/1\r\nRange: 0-0\r\n",
            body: "",
        },
        answer("204 No Content", ""),
    ];
    for answer in answers {
        for strictness in [Strictness::Lenient, Strictness::Strict] {
            let passing = passing_checks(answer, strictness, true).await;
            assert!(passing.is_empty(), "{answer:?}, {strictness}: {passing:?} pass");
        }
    }
}

/// A registry that opens upload sessions for valid names and answers 404 to everything else,
/// invalid names included (a lenient reading allows that): what strictness is for.
fn not_found_for_invalid_names(request_line: &str) -> Answer {
    let path = request_line.split(' ').nth(1).unwrap_or_default();
    let Some(name) = path.strip_prefix("/v2/").and_then(|p| p.strip_suffix("/blobs/uploads/"))
    else {
        return answer("404 Not Found", EVERY_CODE);
    };
    let invalid = name.len() > 255
        || name.bytes().any(|b| b.is_ascii_uppercase())
        || ["..", "/-", "-/"].iter().any(|s| name.contains(s))
        || name.ends_with('-');
    if invalid || !request_line.starts_with("POST ") {
        answer("404 Not Found", EVERY_CODE)
    } else {
        Answer {
            status: "202 Accepted",
            headers: "Location: /v2/x/blobs/uploads/1\r\nRange: 0-0\r\n",
            body: "",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_answered_404_pass_only_a_lenient_run() {
    let base_url = server(Arc::new(not_found_for_invalid_names)).await;
    let outcome = |results: &[CheckResult], name: &str| {
        results.iter().find(|r| r.name == name).unwrap().outcome.clone()
    };
    let lenient = run_all(&Target::new("fixed", base_url.clone())).await;
    let strict = run_all(&Target::new("fixed", base_url).with_strictness(Strictness::Strict)).await;
    for check in ["name_invalid", "name_too_long"] {
        assert_eq!(outcome(&lenient, check), Ok(()), "{}", results_table(&lenient));
        let error = outcome(&strict, check).unwrap_err();
        assert!(
            error
                .contains("expected status 400 with error code NAME_INVALID and no other, got 404"),
            "{check}: {error}"
        );
    }
}
