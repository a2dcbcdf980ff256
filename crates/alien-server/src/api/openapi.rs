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
    modifiers(&BearerAuth, &CommonErrors),
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

/// The error answers every route can give, added where an operation does not list them: 401
/// (no or a bad token, or a bad signed URL) on every `/v1` route; 403 where a token is asked
/// for; 400 where a body, query or path id is parsed; 413 and 415 where a body is; 404 where a path names
/// something; 503 when the database or a backend is unavailable. The document then describes
/// what the server answers (checked by schemathesis's "undocumented status" check).
struct CommonErrors;

impl utoipa::Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, RefOr, Response};
        let error = |description: &str| {
            let body = Content::new(Some(Ref::from_schema_name("ApiError")));
            RefOr::T(
                Response::builder()
                    .description(description)
                    .content("application/json", body)
                    .build(),
            )
        };
        for (path, item) in &mut openapi.paths.paths {
            if !path.starts_with("/v1/") {
                continue;
            }
            let signed_url_only = path.starts_with("/v1/payloads/");
            let operations = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let has_query = operation.parameters.as_ref().is_some_and(|p| {
                    p.iter().any(|p| matches!(p, RefOr::T(p) if p.parameter_in == utoipa::openapi::path::ParameterIn::Query))
                });
                let mut add = |status: &str, description: &str| {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description));
                };
                add(
                    "401",
                    "no token, or one that is invalid, revoked or expired (a bad signed URL)",
                );
                if !signed_url_only {
                    add("403", "the token may not do this");
                }
                if has_body || has_query || path.contains('{') {
                    add("400", "the body, a query parameter or a path id is malformed or invalid");
                }
                if has_body {
                    add("413", "the body is larger than this route accepts");
                    add("415", "the body's content type is not accepted here");
                }
                if path.contains('{') {
                    add("404", "what the path names does not exist");
                }
                add("503", "the database or a backend is unavailable; try again");
            }
        }
    }
}

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".to_owned())
}
