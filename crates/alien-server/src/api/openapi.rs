//! The OpenAPI 3.1 document of the API (`GET /openapi.json`; committed as `docs/openapi.json`).

use alien_core::IdKind;
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
        crate::ops::health, crate::ops::ready, crate::ops::metrics, crate::install::agent,
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
/// for; 400 where a body, query or path id is parsed; 413 and 415 where a body is; 404 where a path
/// or a body names something; 503 when the database or a backend is unavailable. The document then describes
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
                if has_body || path.contains('{') {
                    add("404", "what the path or the body names does not exist");
                }
                if has_body {
                    add("413", "the body is larger than this route accepts");
                    add("415", "the body's content type is not accepted here");
                }
                add("503", "the database or a backend is unavailable; try again");
            }
        }
    }
}

/// The document as pretty JSON (what `docs/openapi.json` holds): utoipa's, with every id
/// stated by its kind ([`id_kinds`]).
pub fn openapi_json() -> String {
    let Ok(mut doc) = serde_json::to_value(ApiDoc::openapi()) else { return "{}".to_owned() };
    id_kinds(&mut doc);
    field_rules(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_owned())
}

/// What utoipa's field attributes cannot say: rules computed from the code's own tables.
fn field_rules(doc: &mut serde_json::Value) {
    use alien_core::{DeploymentModel, Platform};
    use serde_json::{Value, json};
    let platforms = |model: DeploymentModel| -> Value {
        Platform::ALL.iter().filter(|p| p.allows(model)).map(|p| p.as_str()).collect()
    };
    let all: Value = Platform::ALL.iter().map(|p| p.as_str()).collect();
    let rules = [
        // A release's stacks are keyed by platform, at least one.
        (
            "/components/schemas/CreateRelease/properties/stack",
            json!({"minProperties": 1, "propertyNames": {"enum": all}, "additionalProperties": {"type": "object"}}),
        ),
        // The ALIEN_ prefix is the manager's.
        (
            "/components/schemas/EnvironmentVariable/properties/name",
            json!({"not": {"pattern": "^ALIEN_"}}),
        ),
        // Agents run where pull mode does; drivers lease where push mode does.
        (
            "/components/schemas/InitializeRequest/properties/platform",
            json!({"enum": platforms(DeploymentModel::Pull).as_array().into_iter().flatten().chain([&Value::Null]).cloned().collect::<Value>(), "description": "Platform (default `local`): one where pull mode runs."}),
        ),
        (
            "/components/schemas/AcquireRequest/properties/platforms/items",
            json!({"enum": platforms(DeploymentModel::Push)}),
        ),
    ];
    for (pointer, rule) in rules {
        if let (Some(Value::Object(schema)), Value::Object(rule)) = (doc.pointer_mut(pointer), rule)
        {
            schema.remove("$ref");
            schema.remove("oneOf");
            schema.extend(rule);
        }
    }
}

/// The kind of id a property or parameter named `name` holds, if it names one.
fn id_kind_of(name: &str) -> Option<IdKind> {
    Some(match name {
        "deploymentId" | "deploymentIds" => IdKind::Deployment,
        "deploymentGroupId" => IdKind::DeploymentGroup,
        "releaseId" | "currentReleaseId" | "desiredReleaseId" => IdKind::Release,
        "commandId" => IdKind::Command,
        "tokenId" => IdKind::Token,
        _ => return None,
    })
}

/// The kind of the `id` of schema `schema`, or of path parameter `id` under `path`.
fn own_id_kind(schema_or_path: &str) -> Option<IdKind> {
    Some(match schema_or_path {
        "Deployment" => IdKind::Deployment,
        "DeploymentGroup" => IdKind::DeploymentGroup,
        "Release" => IdKind::Release,
        "TokenRecord" | "WhoAmI" | "GroupTokenCreated" => IdKind::Token,
        path if path.starts_with("/v1/deployments/") => IdKind::Deployment,
        path if path.starts_with("/v1/deployment-groups/") => IdKind::DeploymentGroup,
        path if path.starts_with("/v1/releases/") => IdKind::Release,
        path if path.starts_with("/v1/tokens/") => IdKind::Token,
        path if path.starts_with("/v1/commands/") && !path.starts_with("/v1/commands/leases") => {
            IdKind::Command
        }
        _ => return None,
    })
}

/// States every id of the document by its kind: one schema type (`Id`) serves all kinds in the
/// code, but the server refuses an id of the wrong kind, so each property, parameter and path
/// id gets its kind's pattern (`dep_...`); a client generating requests from the document then
/// sends ids the server can take.
fn id_kinds(doc: &mut serde_json::Value) {
    use serde_json::Value;
    let pattern = |kind: IdKind| Value::String(kind.pattern());
    // A string schema (or a nullable one, or an array of them) narrowed to `kind`.
    fn narrow(schema: &mut Value, pattern: &Value) {
        let Some(object) = schema.as_object_mut() else { return };
        if let Some(Value::Array(options)) = object.get_mut("oneOf") {
            options.iter_mut().for_each(|option| narrow(option, pattern));
        } else if object.get("$ref").and_then(Value::as_str) == Some("#/components/schemas/Id") {
            object.remove("$ref");
            object.insert("type".into(), "string".into());
            object.insert("pattern".into(), pattern.clone());
        } else if let Some(items) = object.get_mut("items") {
            narrow(items, pattern);
        } else if object.get("type").is_some_and(|t| {
            t == "string" || t.as_array().is_some_and(|ts| ts.iter().any(|t| t == "string"))
        }) {
            object.insert("pattern".into(), pattern.clone());
        }
    }
    if let Some(Value::Object(schemas)) = doc.pointer_mut("/components/schemas") {
        for (name, schema) in schemas.iter_mut() {
            let Some(Value::Object(properties)) = schema.get_mut("properties") else { continue };
            for (property, value) in properties.iter_mut() {
                let kind = match property.as_str() {
                    "id" => own_id_kind(name),
                    other => id_kind_of(other),
                };
                if let Some(kind) = kind {
                    narrow(value, &pattern(kind));
                }
            }
        }
    }
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for operation in item.values_mut() {
                let Some(Value::Array(parameters)) = operation.get_mut("parameters") else {
                    continue;
                };
                for parameter in parameters {
                    let name = parameter.get("name").and_then(Value::as_str).unwrap_or_default();
                    let kind = match name {
                        "id" => own_id_kind(path),
                        "cursor" => {
                            // A position in the list: `<millis>.<id>`, or `<sequence>` in the audit log.
                            let kind = own_id_kind(&format!("{path}/"));
                            if let Some(schema) = parameter.get_mut("schema") {
                                narrow(schema, &Value::String(alien_store::cursor_pattern(kind)));
                            }
                            continue;
                        }
                        other => id_kind_of(other),
                    };
                    if let (Some(kind), Some(schema)) = (kind, parameter.get_mut("schema")) {
                        narrow(schema, &pattern(kind));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::Value;

    fn document() -> Value {
        serde_json::from_str(&super::openapi_json()).unwrap()
    }

    /// The patterns written as literals in attributes are the code's own rules.
    #[test]
    fn patterns_in_the_document_are_the_codes() {
        let doc = document();
        let key = doc
            .pointer("/paths/~1v1~1payloads~1{key}/get/parameters/0/schema/pattern")
            .and_then(Value::as_str);
        assert_eq!(key, Some(alien_commands::payload::KEY_PATTERN));
        let cursor = doc
            .pointer("/paths/~1v1~1deployments/get/parameters")
            .and_then(Value::as_array)
            .and_then(|ps| ps.iter().find(|p| p["name"] == "cursor"))
            .and_then(|p| p.pointer("/schema/pattern"))
            .and_then(Value::as_str);
        assert_eq!(
            cursor.map(str::to_owned),
            Some(alien_store::cursor_pattern(Some(alien_core::IdKind::Deployment)))
        );
        let id = doc.pointer("/components/schemas/Deployment/properties/id/pattern");
        assert_eq!(id.and_then(Value::as_str), Some("^dep_[0-9a-z]{28}$"));
    }
}
