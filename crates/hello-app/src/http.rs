//! The HTTP routes: `GET /` says which message, deployment and replica answered (and logs the
//! request over OTLP when export is on); `GET /health` answers 200 `ok`, or 500 under
//! `HELLO_FAIL_HEALTH=1`. For tests of the platform: `GET /call/{id}?port=&path=` calls the
//! container `id` this one links through its binding (`ALIEN_<ID>_BINDING`), `GET /slow?ms=`
//! answers after a while, and `POST /write?path=&bytes=` writes a file of that size.

use std::sync::Arc;

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::otlp::LogSink;
use crate::settings::Settings;

/// What the routes share.
#[derive(Debug)]
pub struct AppState {
    /// The environment, read at start.
    pub settings: Settings,
    /// Whether the command receiver runs.
    pub commands: bool,
    /// OTLP log export, when configured.
    pub logs: Option<LogSink>,
    /// Calls to linked containers.
    pub http: reqwest::Client,
}

/// The app's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/call/{id}", get(call))
        .route("/slow", get(slow))
        .route("/write", post(write))
        .with_state(state)
}

/// `GET /`: the greeting and where it runs, as JSON.
async fn index(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let s = &state.settings;
    if let Some(logs) = &state.logs {
        logs.emit(
            format!("GET / answered: {}", s.message),
            &[("http.request.method", "GET"), ("url.path", "/"), ("hello.message", &s.message)],
        );
    }
    Json(serde_json::json!({
        "app": "hello-app",
        "version": env!("CARGO_PKG_VERSION"),
        "message": s.message,
        "deploymentId": s.deployment_id,
        "deploymentName": s.deployment_name,
        "hostname": s.hostname,
        "commands": state.commands,
    }))
}

/// `GET /health`: 200 `ok`, or 500 when the app was told to be unhealthy.
async fn health(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    if state.settings.fail_health {
        (StatusCode::INTERNAL_SERVER_ERROR, "unhealthy (HELLO_FAIL_HEALTH is set)")
    } else {
        (StatusCode::OK, "ok")
    }
}

type Failure = (StatusCode, String);

fn bad_request(message: String) -> Failure {
    (StatusCode::BAD_REQUEST, message)
}

/// `GET /call/{id}?port=&path=`: reads the binding of linked container `id`
/// (`ALIEN_<ID>_BINDING`), calls its `internalUrl` (or the address of `port` from its
/// `internalPorts`) with `path`, and answers the binding and what came back.
async fn call(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, Failure> {
    let var = format!("ALIEN_{}_BINDING", id.to_ascii_uppercase().replace('-', "_"));
    let raw = std::env::var(&var).map_err(|_| bad_request(format!("{var} is not set")))?;
    let binding: serde_json::Value =
        serde_json::from_str(&raw).map_err(|e| bad_request(format!("{var} is not JSON: {e}")))?;
    let base = match query.get("port") {
        Some(port) => binding["internalPorts"][port]
            .as_str()
            .map(|address| format!("http://{address}"))
            .ok_or_else(|| bad_request(format!("{var} has no internalPorts.{port}")))?,
        None => binding["internalUrl"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad_request(format!("{var} has no internalUrl")))?,
    };
    let path = query.get("path").map_or("/", String::as_str);
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let response = state
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("GET {url}: {e}")))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("GET {url}: reading the body: {e}")))?;
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok(Json(serde_json::json!({"binding": binding, "url": url, "status": status, "body": body})))
}

/// `GET /slow?ms=N` (at most 60,000): answers after `N` ms.
async fn slow(Query(query): Query<HashMap<String, String>>) -> Result<&'static str, Failure> {
    let ms: u64 = query
        .get("ms")
        .map_or(Ok(1000), |v| v.parse())
        .map_err(|_| bad_request("ms: expected milliseconds".to_owned()))?;
    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    Ok("slow")
}

/// Most bytes `POST /write` writes.
const MAX_WRITE: u64 = 1 << 30;

/// `POST /write?path=&bytes=N` (a file under `/tmp/`, at most 1 GiB): writes a file of `N` zero
/// bytes; the answer says how much was
/// written, or the error (`No space left on device` past a scratch volume's size).
async fn write(
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, Failure> {
    let path = query.get("path").ok_or_else(|| bad_request("path is required".to_owned()))?;
    // Scratch space only: nothing the app runs from can be overwritten through this route.
    if !path.starts_with("/tmp/") || path.split('/').any(|part| part == "..") {
        return Err(bad_request("path: expected a file under /tmp/".to_owned()));
    }
    let bytes: u64 = query
        .get("bytes")
        .ok_or_else(|| bad_request("bytes is required".to_owned()))?
        .parse()
        .map_err(|_| bad_request("bytes: expected a number".to_owned()))?;
    if bytes > MAX_WRITE {
        return Err(bad_request(format!("bytes: at most {MAX_WRITE}")));
    }
    let path = path.clone();
    let result = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match result {
        Ok(()) => Ok(Json(serde_json::json!({"written": bytes}))),
        Err(e) => Err((
            StatusCode::INSUFFICIENT_STORAGE,
            format!("{e} (os error {})", e.raw_os_error().unwrap_or(0)),
        )),
    }
}
