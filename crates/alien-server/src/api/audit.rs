//! The audit log: every mutating call (who, what, target, outcome) is appended after it ran;
//! `GET /v1/audit` reads it. Entries never hold bodies, so never secrets.

use alien_core::{ApiError, Id};
use alien_store::{AuditEntry, NewAuditEntry, Page};
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;

use super::{ApiState, PageQuery};
use crate::HttpError;
use crate::auth::Subject;
use crate::policy::{Action, Target};

/// Set on a response by a handler that created something, so the audit entry names it.
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// The error code a response carried, set by [`crate::HttpError`].
#[derive(Debug, Clone)]
pub struct AuditOutcome(pub String);

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/audit", get(list_audit))
}

/// Machine traffic that is not audited: an agent's sync every few seconds (its status changes
/// are the deployment's events), a driver's lease renewal, and a receiver's lease polls (the
/// commands they lease are audited when created). At 100,000 agents these would be hundreds of
/// millions of rows a day and a disk commit on every heartbeat.
const MACHINE_ROUTES: [&str; 3] = ["/v1/sync", "/v1/sync/renew", "/v1/commands/leases"];

/// Middleware: appends an audit entry for every POST, PUT, PATCH and DELETE, but
/// [`MACHINE_ROUTES`].
pub async fn record(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    if !matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        return next.run(request).await;
    }
    let subject = request.extensions().get::<Subject>().cloned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path().to_owned(), |p| p.as_str().to_owned());
    if MACHINE_ROUTES.contains(&route.as_str()) {
        return next.run(request).await;
    }
    let path_target =
        request.uri().path().split('/').find_map(|segment| Id::parse_any(segment).ok());
    let response = next.run(request).await;
    let target = response
        .extensions()
        .get::<AuditTarget>()
        .map(|t| t.0.clone())
        .or_else(|| path_target.map(|id| id.to_string()));
    let outcome = match response.extensions().get::<AuditOutcome>() {
        Some(code) => code.0.clone(),
        None if response.status().is_success() => "success".to_owned(),
        None => format!("http {}", response.status().as_u16()),
    };
    let entry = NewAuditEntry {
        at: Utc::now(),
        token_id: subject.as_ref().map(|s| s.token_id.clone()),
        token_type: subject.as_ref().map(|s| s.token_type),
        action: format!("{method} {route}"),
        target_id: target,
        status: response.status().as_u16(),
        outcome,
    };
    if let Err(err) = state.store.append_audit(entry).await {
        tracing::error!(error = %err, "could not append to the audit log");
    }
    response
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(PageQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = ApiError)))]
pub async fn list_audit(
    State(state): State<ApiState>,
    subject: Subject,
    Query(query): Query<PageQuery>,
) -> Result<Json<Page<AuditEntry>>, HttpError> {
    state.authz.authorize(&subject, Action::ReadAudit, Target::none())?;
    Ok(Json(
        state
            .store
            .list_audit(&query.page(alien_store::MAX_PAGE, None)?)
            .await
            .map_err(crate::error::store_error)?,
    ))
}
