//! The server skeleton over real HTTP on 127.0.0.1: operational routes, JSON error bodies for
//! every failure class, metrics, request ids, compression, timeouts, panics and graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alien_config::{ManagerConfig, Secret};
use alien_server::{ApiJson, ManagerBuilder, ReadinessCheck};
use axum::Router;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::Notify;

struct Running {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), alien_server::ServerError>>,
}

impl Running {
    async fn shutdown(mut self) -> Duration {
        let start = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
        start.elapsed()
    }
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Echo {
    name: String,
    count: u32,
}

fn test_routes() -> Router {
    Router::new()
        .route("/v1/echo", post(|ApiJson(body): ApiJson<Echo>| async move { axum::Json(body) }))
        .route(
            "/v1/slow",
            get(|| async {
                // Far beyond the 1 s request timeout of the test that calls it.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "done"
            }),
        )
        .route("/v1/panic", get(panicking))
}

async fn panicking() -> &'static str {
    panic!("boom: /secret/path")
}

fn config() -> ManagerConfig {
    let mut config = ManagerConfig::default();
    config.server.host = "127.0.0.1".into();
    config.server.port = 0;
    config
}

async fn start_with(builder: ManagerBuilder) -> Running {
    let bound = builder.build().bind().await.unwrap();
    let base = format!("http://{}", bound.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    Running { base, stop: Some(tx), task }
}

async fn start(config: ManagerConfig) -> Running {
    start_with(ManagerBuilder::new(config).api_routes(test_routes())).await
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn json_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let ct = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["retryable"].is_boolean(), "{body}");
    body
}

#[tokio::test]
async fn health_answers_and_carries_a_request_id() {
    let server = start(config()).await;
    let response = client().get(format!("{}/health", server.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID request id: {id}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "healthy", "version": env!("CARGO_PKG_VERSION")})
    );
    // A request id sent by the client is kept.
    let response = client()
        .get(format!("{}/health", server.base))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-123");
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_route_and_wrong_method_get_json_errors() {
    let server = start(config()).await;
    let body = json_error(
        client().get(format!("{}/nope", server.base)).send().await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("/nope"));
    json_error(
        client().post(format!("{}/health", server.base)).send().await.unwrap(),
        405,
        "METHOD_NOT_ALLOWED",
    )
    .await;
    json_error(
        client().delete(format!("{}/v1/echo", server.base)).send().await.unwrap(),
        405,
        "METHOD_NOT_ALLOWED",
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn json_bodies_are_checked_with_clear_errors() {
    let server = start(config()).await;
    let url = format!("{}/v1/echo", server.base);
    let ok = client()
        .post(&url)
        .json(&serde_json::json!({"name": "a", "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let malformed = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let body = json_error(malformed, 400, "BAD_REQUEST").await;
    assert!(body["message"].as_str().unwrap().contains("malformed JSON"), "{body}");

    let wrong_type = client()
        .post(&url)
        .json(&serde_json::json!({"name": "a", "count": "x"}))
        .send()
        .await
        .unwrap();
    let body = json_error(wrong_type, 400, "VALIDATION_FAILED").await;
    assert_eq!(body["context"]["errors"][0]["path"], "count", "{body}");

    let unknown = client()
        .post(&url)
        .json(&serde_json::json!({"name": "a", "count": 1, "x": 2}))
        .send()
        .await
        .unwrap();
    let body = json_error(unknown, 400, "VALIDATION_FAILED").await;
    assert!(
        body["context"]["errors"][0]["message"].as_str().unwrap().contains("unknown field `x`"),
        "{body}"
    );

    let no_type = client().post(&url).body("{}").send().await.unwrap();
    json_error(no_type, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    let wrong_type =
        client().post(&url).header("content-type", "text/plain").body("{}").send().await.unwrap();
    json_error(wrong_type, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    server.shutdown().await;
}

#[tokio::test]
async fn oversize_bodies_get_413_whether_declared_or_streamed() {
    let mut config = config();
    config.server.max_body_bytes = 4096;
    let server = start(config).await;
    let url = format!("{}/v1/echo", server.base);
    let big = format!("{{\"name\": \"{}\", \"count\": 1}}", "a".repeat(8192));
    let declared = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    json_error(declared, 413, "PAYLOAD_TOO_LARGE").await;
    // Chunked, no Content-Length: the limit must hold while streaming.
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut request = format!(
        "POST /v1/echo HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in big.as_bytes().chunks(1000) {
        request.push_str(&format!("{:x}\r\n{}\r\n", chunk.len(), String::from_utf8_lossy(chunk)));
    }
    request.push_str("0\r\n\r\n");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.write_all(request.as_bytes()).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("\"code\":\"PAYLOAD_TOO_LARGE\""), "{raw}");
    server.shutdown().await;
}

#[tokio::test]
async fn slow_requests_time_out_with_a_json_503() {
    let mut config = config();
    config.server.request_timeout_secs = 1;
    let server = start(config).await;
    let response = client().get(format!("{}/v1/slow", server.base)).send().await.unwrap();
    let body = json_error(response, 503, "UNAVAILABLE").await;
    assert_eq!(body["retryable"], true);
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_gets_a_generic_500_and_the_server_lives_on() {
    let server = start(config()).await;
    let response = client().get(format!("{}/v1/panic", server.base)).send().await.unwrap();
    let body = json_error(response, 500, "INTERNAL_ERROR").await;
    assert!(!body.to_string().contains("/secret/path"), "{body}");
    assert_eq!(client().get(format!("{}/health", server.base)).send().await.unwrap().status(), 200);
    server.shutdown().await;
}

struct Flag(&'static str, Arc<AtomicBool>);

#[async_trait::async_trait]
impl ReadinessCheck for Flag {
    fn name(&self) -> &str {
        self.0
    }

    async fn check(&self) -> Result<(), String> {
        if self.1.load(Ordering::SeqCst) { Ok(()) } else { Err("database is locked".into()) }
    }
}

#[tokio::test]
async fn ready_reports_each_failing_dependency() {
    let store_ok = Arc::new(AtomicBool::new(true));
    let builder = ManagerBuilder::new(config())
        .readiness_check(Arc::new(Flag("store", store_ok.clone())))
        .readiness_check(Arc::new(Flag("kv", Arc::new(AtomicBool::new(true)))));
    let server = start_with(builder).await;
    let url = format!("{}/ready", server.base);
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["store"], "ok");
    store_ok.store(false, Ordering::SeqCst);
    let body = json_error(client().get(&url).send().await.unwrap(), 503, "UNAVAILABLE").await;
    assert_eq!(body["context"]["failed"]["store"], "database is locked");
    assert_eq!(body["context"]["ok"]["kv"], "ok");
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_with_latency_and_process_metrics() {
    let server = start(config()).await;
    for _ in 0..3 {
        client().get(format!("{}/health", server.base)).send().await.unwrap();
    }
    client().get(format!("{}/nope/123", server.base)).send().await.unwrap();
    let response = client().get(format!("{}/metrics", server.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let health = text
        .lines()
        .find(|l| {
            l.starts_with("http_requests_total{")
                && l.contains("route=\"/health\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no /health counter in\n{text}"));
    let count: f64 = health.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{health}");
    assert!(text.contains("route=\"unmatched\""), "unknown paths share one label:\n{text}");
    assert!(!text.contains("/nope/123"), "raw paths never become labels");
    assert!(text.contains("http_request_duration_seconds_bucket{"), "{text}");
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_token_guards_metrics_when_set() {
    let mut config = config();
    config.server.metrics_token = Some(Secret::new("m-token"));
    let server = start(config).await;
    let url = format!("{}/metrics", server.base);
    json_error(client().get(&url).send().await.unwrap(), 401, "UNAUTHORIZED").await;
    json_error(client().get(&url).bearer_auth("wrong").send().await.unwrap(), 401, "UNAUTHORIZED")
        .await;
    assert_eq!(client().get(&url).bearer_auth("m-token").send().await.unwrap().status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let server = start(config()).await;
    let response = client()
        .get(format!("{}/metrics", server.base))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    server.shutdown().await;
}

/// A route that says when a request reached it and answers once the test lets it.
fn held_route(arrived: Arc<Notify>, release: Arc<Notify>) -> Router {
    Router::new().route(
        "/v1/held",
        get(move || {
            let (arrived, release) = (arrived.clone(), release.clone());
            async move {
                arrived.notify_one();
                release.notified().await;
                "done"
            }
        }),
    )
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let routes = held_route(arrived.clone(), release.clone());
    let server = start_with(ManagerBuilder::new(config()).api_routes(routes)).await;
    let url = format!("{}/v1/held", server.base);
    let in_flight =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    arrived.notified().await;
    let base = server.base.clone();
    let shutdown = tokio::spawn(server.shutdown());
    // The shutdown waits for the request it holds (however long the test lets it wait).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!shutdown.is_finished(), "the shutdown did not wait for the in-flight request");
    release.notify_one();
    assert_eq!(in_flight.await.unwrap().unwrap(), 200, "the in-flight request completed");
    shutdown.await.unwrap();
    assert!(client().get(format!("{base}/health")).send().await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_grace_period() {
    let mut config = config();
    config.server.shutdown_timeout_secs = 1;
    config.server.request_timeout_secs = 60;
    // A request that never finishes: only the grace period ends the shutdown.
    let (arrived, never) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let routes = held_route(arrived.clone(), never);
    let server = start_with(ManagerBuilder::new(config).api_routes(routes)).await;
    let url = format!("{}/v1/held", server.base);
    let _stuck = tokio::spawn(async move { client().get(url).send().await });
    arrived.notified().await;
    let took = tokio::time::timeout(Duration::from_secs(60), server.shutdown())
        .await
        .expect("the shutdown ended although the request never finished");
    assert!(took >= Duration::from_millis(900), "shutdown waited for the grace period: {took:?}");
}

/// A manager whose port is bound before it is assembled (`serve_early`, what the binary does
/// while its store opens) answers `/health` at once, `/ready` and the API 503 with
/// `Retry-After`; once handed the manager, the same connections get the manager's answers.
#[tokio::test]
async fn a_starting_manager_answers_health_and_asks_the_rest_to_retry() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = config();
    config.server.port = listener.local_addr().unwrap().port();
    let early =
        alien_server::serve_early(listener, &config.server, std::future::pending()).unwrap();
    let client = client();
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "healthy");
    for path in ["/ready", "/v1/releases", "/test/echo"] {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.headers()["retry-after"], "1", "{path}");
        let body = json_error(response, 503, "UNAVAILABLE").await;
        assert!(body["message"].as_str().unwrap().starts_with("starting"), "{body}");
    }
    let manager = ManagerBuilder::new(config).api_routes(test_routes()).build();
    tokio::spawn(early.run(manager));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = client.get(format!("{base}/ready")).send().await.unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the manager was not served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unknown = client.get(format!("{base}/no-such-route")).send().await.unwrap();
    json_error(unknown, 404, "NOT_FOUND").await;
}
