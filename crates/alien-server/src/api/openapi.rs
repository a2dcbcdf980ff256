//! The OpenAPI 3.1 document of the API (`GET /openapi.json`; committed as `docs/openapi.json`).

use utoipa::OpenApi;

use super::{
    audit, build, commands, credentials, deployments, groups, releases, sync, sync_lease,
    telemetry, tokens, whoami,
};

/// The API document.
#[derive(OpenApi)]
#[openapi(
    info(title = "alien-manager API", description = "Control plane for shipping an application into customer environments."),
    paths(
        whoami::whoami,
        groups::create_group, groups::list_groups, groups::get_group,
        groups::update_group, groups::create_group_token,
        releases::create_release, releases::list_releases, releases::latest_release, releases::get_release,
        deployments::create_deployment, deployments::list_deployments, deployments::get_deployment,
        deployments::deployment_info, deployments::deployment_events, deployments::retry,
        deployments::redeploy, deployments::delete,
        tokens::list_tokens, tokens::revoke_token,
        audit::list_audit,
        build::build_config, build::platforms,
        credentials::mint,
        commands::create, commands::upload_complete, commands::status, commands::lease, commands::release,
        commands::respond, commands::download_payload, commands::upload_payload, commands::get_params, commands::put_params,
        sync::initialize, sync::sync,
        sync_lease::acquire, sync_lease::reconcile, sync_lease::renew, sync_lease::release,
        telemetry::traces, telemetry::logs, telemetry::metrics, telemetry::recent_logs,
        crate::ops::health, crate::ops::ready, crate::ops::metrics,
    ),
    components(schemas(alien_core::ApiError, alien_core::FieldViolation, alien_core::ErrorCode)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".to_owned())
}
