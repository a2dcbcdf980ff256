//! Where release images go: `GET /v1/build-config?platform=` and `GET /v1/platforms`.
//!
//! The [`alien_registry::ArtifactRegistries`] the manager was built with decide: a platform's own
//! registry, else the default (the embedded registry, at `[artifact-registry.default]`
//! `registryUrl` when that is set).

use alien_core::{ApiError, ErrorCode, FieldViolation, Platform};
use alien_registry::ArtifactRegistryError;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub use alien_core::api::{BuildConfig, PlatformDetail, PlatformRegistry, Platforms};

use super::ApiState;
use crate::HttpError;
use crate::auth::Subject;
use crate::policy::{Action, Target};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/build-config", get(build_config))
        .route("/v1/platforms", get(platforms))
}

/// `?platform=&repositories=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuildConfigQuery {
    /// The platform images are built for.
    #[param(required = true, value_type = Platform)]
    pub platform: Option<String>,
    /// The repositories (under `repositoryName`) the client will push, comma-separated, e.g.
    /// `web,worker`: a cloud registry creates them and answers `credentials` that push to them
    /// (and refuses names it cannot hold, such as ECR's longer than 256 with the prefix).
    #[param(
        pattern = "^[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*(,[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*)*$"
    )]
    pub repositories: Option<String>,
}

/// The names of `?repositories=`, each a repository name of the OCI distribution
/// specification, or the violation naming `repositories` and the bad value.
fn repositories(text: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(text) = text else { return Ok(Vec::new()) };
    let mut names = Vec::new();
    for name in text.split(',') {
        // The grammar only: the registry that creates the repository bounds its length.
        if !alien_registry::reference::follows_name_grammar(name) {
            return Err(ApiError::validation(vec![FieldViolation::new(
                "repositories",
                format!(
                    "{name:?} is not a repository name (lowercase letters and digits joined by \
                     '.', '_', '__' or '-', in '/'-separated parts)"
                ),
            )]));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Where the CLI pushes images for `platform`, and with a cloud registry the credentials that
/// push to `repositories` (created if missing).
#[utoipa::path(get, path = "/v1/build-config", tag = "registry", params(BuildConfigQuery),
    responses((status = 200, body = BuildConfig), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub async fn build_config(
    State(state): State<ApiState>,
    subject: Subject,
    Query(query): Query<BuildConfigQuery>,
) -> Result<Json<BuildConfig>, HttpError> {
    state.authz.authorize(&subject, Action::RegistryPush, Target::none())?;
    let Some(platform) = query.platform else {
        return Err(ApiError::validation(vec![FieldViolation::new(
            "platform",
            "required: one of aws, gcp, azure, kubernetes, local",
        )])
        .into());
    };
    let platform = platform
        .parse::<Platform>()
        .map_err(|e| ApiError::validation(vec![FieldViolation::new("platform", e.to_string())]))?;
    let repositories = repositories(query.repositories.as_deref())?;
    let registry = state.registries.for_platform(platform);
    let credentials = registry.push_credentials(&repositories).await.map_err(|e| match e {
        ArtifactRegistryError::InvalidRepository { .. } => {
            ApiError::validation(vec![FieldViolation::new("repositories", e.to_string())])
        }
        ArtifactRegistryError::Unavailable { .. } => {
            tracing::warn!(%platform, error = %e, "no push credentials");
            ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the {} registry of platform {platform} cannot give push credentials: {e}",
                    registry.kind()
                ),
            )
        }
    })?;
    Ok(Json(BuildConfig {
        registry: registry.host().to_owned(),
        repository_name: registry.repository_name().to_owned(),
        credentials,
    }))
}

/// The platforms this manager can deploy to, with the registry and deployer each uses.
#[utoipa::path(get, path = "/v1/platforms", tag = "registry", responses((status = 200, body = Platforms)))]
pub async fn platforms(State(state): State<ApiState>, _: Subject) -> Json<Platforms> {
    let details: Vec<PlatformDetail> = Platform::ALL
        .into_iter()
        .filter_map(|platform| {
            let push = state.deployers.iter().find(|(p, _)| *p == platform).map(|(_, d)| d.clone());
            // The agent (alien-agent) deploys to the container engine of its own host.
            let pull = platform == Platform::Local;
            if push.is_none() && !pull {
                return None;
            }
            let registry = state.registries.for_platform(platform);
            let registry = PlatformRegistry {
                kind: registry.kind().to_owned(),
                host: registry.host().to_owned(),
                repository_name: registry.repository_name().to_owned(),
            };
            Some(PlatformDetail { platform, registry, push, pull })
        })
        .collect();
    Json(Platforms { platforms: details.iter().map(|d| d.platform).collect(), details })
}
