//! The HTTP routes: `GET /` says which message, deployment and replica answered (and logs the
//! request over OTLP when export is on); `GET /health` answers 200 `ok`, or 500 under
//! `HELLO_FAIL_HEALTH=1`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
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
}

/// The app's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new().route("/", get(index)).route("/health", get(health)).with_state(state)
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
