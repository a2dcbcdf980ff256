//! Operational routes without auth: `GET /health`, `GET /ready`, `GET /metrics`.

use std::sync::Arc;

use alien_core::{ApiError, ErrorCode};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::HttpError;
use crate::builder::AppState;

/// Something `/ready` asks before it answers 200: the store, the KV, the payload store...
#[async_trait::async_trait]
pub trait ReadinessCheck: Send + Sync {
    /// Short name shown in the `/ready` body, e.g. `store`.
    fn name(&self) -> &str;
    /// `Ok` when the dependency answers; `Err` says what failed (no secrets, no paths).
    async fn check(&self) -> Result<(), String>;
}

pub use alien_core::api::Health;

/// The body of `GET /ready` when every check passes.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Always `ready`.
    pub status: &'static str,
    /// Each check by name, with `ok`.
    pub checks: Map<String, Value>,
}

/// `GET /health`: the process is up.
#[utoipa::path(get, path = "/health", tag = "operations", security(()),
    responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    healthy()
}

/// The body of `GET /health`.
pub fn healthy() -> Json<Health> {
    Json(Health { status: "healthy".to_owned(), version: env!("CARGO_PKG_VERSION").to_owned() })
}

/// `GET /ready`: 200 when every readiness check passes, else 503 naming the ones that failed.
#[utoipa::path(get, path = "/ready", tag = "operations", security(()),
    responses((status = 200, body = Readiness), (status = 503, body = ApiError)))]
pub async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<Readiness>, HttpError> {
    let mut checks = Map::new();
    let mut failed = Map::new();
    for check in &state.readiness {
        match check.check().await {
            Ok(()) => {
                checks.insert(check.name().to_owned(), Value::from("ok"));
            }
            Err(reason) => {
                tracing::warn!(check = check.name(), %reason, "readiness check failed");
                failed.insert(check.name().to_owned(), Value::from(reason));
            }
        }
    }
    if failed.is_empty() {
        return Ok(Json(Readiness { status: "ready", checks }));
    }
    let names: Vec<&String> = failed.keys().collect();
    let message =
        format!("not ready: {}", names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "));
    Err(HttpError(
        ApiError::new(ErrorCode::Unavailable, message)
            .with_context(json!({ "failed": failed, "ok": checks })),
    ))
}

/// `GET /metrics`: Prometheus text, behind `[server] metrics-token` when one is set.
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 401, description = "a metrics token is configured and was not presented", body = ApiError)))]
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.server.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.expose().as_bytes())) {
            return HttpError(ApiError::new(
                ErrorCode::Unauthorized,
                "GET /metrics requires the metrics token",
            ))
            .into_response();
        }
    }
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
