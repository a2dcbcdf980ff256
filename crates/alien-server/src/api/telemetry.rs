//! OTLP/HTTP ingest (`POST /v1/traces|logs|metrics`, deployment tokens only) and the recent logs
//! of a deployment (`GET /v1/deployments/{id}/logs`). Decoding, enrichment and forwarding are
//! [`alien_telemetry`]'s; this module authenticates, finds the sender's identity and maps errors.

use std::sync::Arc;

use alien_core::{ApiError, ErrorCode, IdKind};
use alien_store::Store;
use alien_telemetry::{
    DeploymentIdentity, IngestError, Ingestor, MAX_DECOMPRESSED_BYTES, RecentLogs, RecentLogsPage,
    Signal,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::HttpError;
use crate::auth::{Authenticator, Subject, require_token};
use crate::error::KeepErrorBody;
use crate::policy::Action;

/// The telemetry settings of the `[telemetry]` section, for [`alien_telemetry::build_sink`] and
/// [`alien_telemetry::init_self_telemetry`].
pub fn settings(config: &alien_config::TelemetryConfig) -> alien_telemetry::TelemetrySettings {
    alien_telemetry::TelemetrySettings {
        otlp_endpoint: config.otlp_endpoint.clone(),
        headers: config.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())).collect(),
        gzip: config.compression == alien_config::Compression::Gzip,
        timeout_secs: config.timeout_secs,
        queue_bytes: config.queue_bytes,
        self_telemetry: config.self_telemetry,
    }
}

/// Bodies at least this large are decoded on the blocking pool, not on a runtime worker.
const DECODE_INLINE_MAX: usize = 256 * 1024;
/// Log records `GET .../logs` returns by default and at most.
const DEFAULT_LOGS: usize = 100;
/// Most recent log records one read returns.
const MAX_LOGS: u32 = 1000;

/// What the telemetry routes share.
#[derive(Clone)]
pub struct TelemetryState {
    /// Decodes, stamps and queues.
    pub ingestor: Arc<Ingestor>,
    /// The last log records of each deployment.
    pub recent: Arc<RecentLogs>,
    /// Deployments (the sender's identity, authorization of log reads).
    pub store: Arc<dyn Store>,
    /// Decides access.
    pub authz: Arc<dyn crate::policy::Authz>,
}

/// The routes, behind token authentication; OTLP bodies may be 16 MiB.
pub fn router(state: TelemetryState, auth: Authenticator) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .layer(DefaultBodyLimit::max(MAX_DECOMPRESSED_BYTES))
        .route("/v1/deployments/{id}/logs", get(recent_logs))
        .layer(axum::middleware::from_fn_with_state(auth, require_token))
        .with_state(state)
}

/// Receives spans.
#[utoipa::path(post, path = "/v1/traces", tag = "telemetry",
    request_body(content = String, description = "ExportTraceServiceRequest", content_type = "application/x-protobuf"),
    responses((status = 200, description = "ExportTraceServiceResponse"), (status = 400), (status = 403, body = ApiError), (status = 413), (status = 415), (status = 429, description = "queue full; Retry-After")))]
pub async fn traces(
    State(state): State<TelemetryState>,
    subject: Subject,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ingest(state, subject, Signal::Traces, headers, body).await
}

/// Receives log records.
#[utoipa::path(post, path = "/v1/logs", tag = "telemetry",
    request_body(content = String, description = "ExportLogsServiceRequest", content_type = "application/x-protobuf"),
    responses((status = 200, description = "ExportLogsServiceResponse"), (status = 400), (status = 403, body = ApiError), (status = 413), (status = 415), (status = 429, description = "queue full; Retry-After")))]
pub async fn logs(
    State(state): State<TelemetryState>,
    subject: Subject,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ingest(state, subject, Signal::Logs, headers, body).await
}

/// Receives metric data points.
#[utoipa::path(post, path = "/v1/metrics", tag = "telemetry",
    request_body(content = String, description = "ExportMetricsServiceRequest", content_type = "application/x-protobuf"),
    responses((status = 200, description = "ExportMetricsServiceResponse"), (status = 400), (status = 403, body = ApiError), (status = 413), (status = 415), (status = 429, description = "queue full; Retry-After")))]
pub async fn metrics(
    State(state): State<TelemetryState>,
    subject: Subject,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ingest(state, subject, Signal::Metrics, headers, body).await
}

async fn ingest(
    state: TelemetryState,
    subject: Subject,
    signal: Signal,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let identity = match identity(&state, &subject).await {
        Ok(identity) => identity,
        Err(err) => return HttpError(err).into_response(),
    };
    let result = if body.len() < DECODE_INLINE_MAX {
        state.ingestor.ingest(signal, &headers, body, &identity)
    } else {
        let (ingestor, request_headers) = (state.ingestor.clone(), headers.clone());
        match tokio::task::spawn_blocking(move || {
            ingestor.ingest(signal, &request_headers, body, &identity)
        })
        .await
        {
            Ok(result) => result,
            Err(_) => return HttpError(ApiError::internal()).into_response(),
        }
    };
    match result {
        Ok(done) => ([(header::CONTENT_TYPE, done.content_type)], done.body).into_response(),
        Err(err) => otlp_error(&err, &headers),
    }
}

/// The sender's identity: a deployment token, for a deployment that exists.
async fn identity(
    state: &TelemetryState,
    subject: &Subject,
) -> Result<DeploymentIdentity, ApiError> {
    let Some(deployment_id) = &subject.deployment_id else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only a deployment token may send telemetry",
        )
        .with_hint("export with the ALIEN_* deployment token the deployer injects"));
    };
    let deployment = crate::api::authorized_deployment(
        &*state.store,
        &*state.authz,
        subject,
        Action::IngestTelemetry,
        deployment_id,
    )
    .await?;
    Ok(DeploymentIdentity {
        deployment_id: deployment.id.to_string(),
        deployment_name: deployment.name,
        deployment_group_id: deployment.deployment_group_id.to_string(),
        platform: deployment.platform.to_string(),
        release_id: deployment.current_release_id.map(|r| r.to_string()),
    })
}

/// An OTLP error: the status it names, `Retry-After` when it has one, and a `google.rpc.Status`
/// body in the request's format (kept as it is by the JSON error layer).
fn otlp_error(err: &IngestError, headers: &HeaderMap) -> Response {
    if err.status().is_server_error() || err.status() == StatusCode::TOO_MANY_REQUESTS {
        tracing::debug!(error = %err, "telemetry refused");
    }
    let (body, content_type) = err.otlp_body(headers);
    let mut response = (err.status(), [(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(after) = err.retry_after()
        && let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response.extensions_mut().insert(KeepErrorBody);
    response
}

/// `?limit=` of the recent logs.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Records to return, newest last (1..=1000, default 100; at most what is kept).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The last log records a deployment sent (up to 1,000 are kept per deployment, in memory).
#[utoipa::path(get, path = "/v1/deployments/{id}/logs", tag = "deployments",
    params(("id" = String, Path, description = "dep_... id"), LogsQuery),
    responses((status = 200, body = RecentLogsPage), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn recent_logs(
    State(state): State<TelemetryState>,
    subject: Subject,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<axum::Json<RecentLogsPage>, HttpError> {
    let id = super::path_id(IdKind::Deployment, &id)?;
    super::check_limit(query.limit, MAX_LOGS)?;
    let limit = query.limit.map_or(DEFAULT_LOGS, |l| l as usize).min(state.recent.per_deployment());
    let deployment = crate::api::authorized_deployment(
        &*state.store,
        &*state.authz,
        &subject,
        Action::ReadDeployment,
        &id,
    )
    .await?;
    Ok(axum::Json(state.recent.recent(deployment.id.as_str(), limit)))
}
