//! The JSON API under `/v1`: releases, deployment groups, deployments, tokens, audit, whoami.
//!
//! Handlers extract, authorize through [`crate::policy`], call the store or a domain function,
//! and map errors; every mutating call is written to the audit log by [`audit::record`].

use std::sync::Arc;

use alien_config::ManagerConfig;
use alien_core::{ApiError, ErrorCode, FieldViolation, Id, IdKind};
use alien_store::{PageRequest, Store};
use axum::Router;
use serde::Deserialize;

use crate::auth::{Authenticator, require_token};

pub mod audit;
pub mod build;
pub mod commands;
pub mod credentials;
pub mod deployments;
pub mod groups;
pub mod openapi;
pub mod releases;
pub mod sync;
pub mod sync_lease;
pub mod telemetry;
pub mod tokens;
pub mod whoami;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Persistent state.
    pub store: Arc<dyn Store>,
    /// Effective configuration.
    pub config: Arc<ManagerConfig>,
    /// Decides access ([`crate::policy::PolicyTable`] unless the embedder gave another).
    pub authz: Arc<dyn crate::policy::Authz>,
    /// Short-lived cloud credentials for deployments' targets (`POST /v1/credentials/mint`).
    pub impersonator: Arc<dyn alien_impersonation::Impersonator>,
    /// The platforms the deployment loop deploys to, with what deploys each (`/v1/platforms`).
    pub deployers: Arc<Vec<(alien_core::Platform, String)>>,
    /// Where each platform's release images live.
    pub registries: alien_registry::ArtifactRegistries,
    /// Notified when deployments may have work (a release, retry, redeploy, delete): wakes the
    /// deployment loop.
    pub deployments_changed: DeploymentsChanged,
}

/// Wakes the deployment loop of this replica, and through [`Signals`] those of the others (the
/// replica holding a deployment's lease may be another one).
///
/// [`Signals`]: alien_core::signal::Signals
#[derive(Clone)]
pub struct DeploymentsChanged {
    local: Arc<tokio::sync::Notify>,
    signals: Option<Arc<dyn alien_core::signal::Signals>>,
}

impl DeploymentsChanged {
    /// Wakes `local` (the deployment loop's waker) on this replica; with `signals`, also the
    /// loops of the other replicas, and this one when they signal.
    pub fn new(
        local: Arc<tokio::sync::Notify>,
        signals: Option<Arc<dyn alien_core::signal::Signals>>,
    ) -> Self {
        if let Some(signals) = &signals {
            let woken = local.clone();
            signals.subscribe(Arc::new(move |signal| {
                if *signal == alien_core::signal::Signal::DeploymentsChanged {
                    woken.notify_one();
                }
            }));
        }
        Self { local, signals }
    }

    /// Deployments may have work.
    pub fn notify(&self) {
        self.local.notify_one();
        if let Some(signals) = &self.signals {
            signals.publish(alien_core::signal::Signal::DeploymentsChanged);
        }
    }
}

/// All `/v1` routes of this module, behind authentication and the audit log.
pub fn router(state: ApiState, auth: Authenticator) -> Router {
    Router::new()
        .merge(whoami::routes())
        .merge(build::routes())
        .merge(credentials::routes())
        .merge(groups::routes())
        .merge(releases::routes())
        .merge(deployments::routes())
        .merge(tokens::routes())
        .merge(audit::routes())
        .merge(sync::routes())
        .merge(sync_lease::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::record))
        .layer(axum::middleware::from_fn_with_state(auth, require_token))
        .with_state(state)
}

/// The command routes: authenticated ones behind the token layer and the audit log, presigned
/// ones (response submission, payload URLs) checked by their signatures. They carry no request
/// timeout (leases long-poll up to 30 s) and payload bodies stream without the JSON body limit.
pub fn commands_router(
    commands: commands::CommandsState,
    state: ApiState,
    auth: Authenticator,
) -> Router {
    let authenticated = commands::authenticated_routes()
        .with_state(commands.clone())
        .layer(axum::middleware::from_fn_with_state(state, audit::record))
        .layer(axum::middleware::from_fn_with_state(auth, require_token));
    authenticated.merge(commands::presigned_routes().with_state(commands))
}

/// `?limit=&cursor=` of list routes.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (1..=1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Cursor from the previous page's `nextCursor`.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// As a store page request of at most `max` items of a list of `kind` ids (the audit log:
    /// `None`); a `limit` outside `1..=max` or a cursor of another list is refused.
    pub fn page(&self, max: u32, kind: Option<IdKind>) -> Result<PageRequest, ApiError> {
        check_limit(self.limit, max)?;
        if let Some(cursor) = &self.cursor {
            alien_store::decode_cursor(cursor, kind).map_err(crate::error::store_error)?;
        }
        Ok(PageRequest { limit: self.limit.unwrap_or(0), cursor: self.cursor.clone() })
    }
}

/// A `?limit=` outside `1..=max` is 400 naming it.
pub fn check_limit<T: Into<u64> + Copy>(limit: Option<T>, max: u32) -> Result<(), ApiError> {
    match limit.map(Into::into) {
        Some(limit) if !(1..=u64::from(max)).contains(&limit) => {
            Err(ApiError::validation(vec![FieldViolation::new(
                "limit",
                format!("must be between 1 and {max}, got {limit}"),
            )]))
        }
        _ => Ok(()),
    }
}

/// The deployment `id` when `subject` may do `action` on it: 404 `DEPLOYMENT_NOT_FOUND` when it
/// does not exist, 403 when the policy refuses. Every route that acts on one deployment loads it
/// here, so access to a deployment is decided in one place.
pub async fn authorized_deployment(
    store: &dyn Store,
    authz: &dyn crate::policy::Authz,
    subject: &crate::auth::Subject,
    action: crate::policy::Action,
    id: &Id,
) -> Result<alien_core::Deployment, ApiError> {
    let deployment =
        store.get_deployment(id).await.map_err(crate::error::store_error)?.ok_or_else(|| {
            ApiError::new(ErrorCode::DeploymentNotFound, format!("deployment {id} not found"))
        })?;
    authz.authorize(
        subject,
        action,
        crate::policy::Target::deployment(&deployment.id, &deployment.deployment_group_id),
    )?;
    Ok(deployment)
}

/// A path id of the expected kind, or 400 naming the parameter.
pub fn path_id(kind: IdKind, value: &str) -> Result<Id, ApiError> {
    Id::parse(kind, value)
        .map_err(|e| ApiError::validation(vec![FieldViolation::new("id", e.to_string())]))
}

pub use alien_core::api::Success;

/// The `{"success": true}` answer.
pub fn success() -> axum::Json<Success> {
    axum::Json(Success { success: true })
}

/// An optional JSON body: empty (or `null`) means the default; otherwise it must parse
/// ([`crate::error::decode_json`]).
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    crate::error::decode_json(body)
}
