//! Token endpoints: the managed-identity endpoint of App Service and Container Apps, IMDS and
//! Entra ID's v2.0 token endpoint (client credentials with a secret or a client assertion).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Answer, Call, StubState, TokenInfo};
use crate::entra::{
    IDENTITY_ENDPOINT_API_VERSION, IMDS_API_VERSION, JWT_BEARER_ASSERTION, TOKEN_EXCHANGE_AUDIENCE,
};

/// The `IDENTITY_HEADER` secret the stub's managed-identity endpoint expects.
pub const IDENTITY_HEADER: &str = "stub-identity-header-secret";
/// The client id recorded for tokens of a system-assigned identity.
pub const SYSTEM_ASSIGNED: &str = "system-assigned";

/// The tenant managed identities' tokens name (`tid`, and the issuer
/// `https://sts.windows.net/{tenant}/`).
pub const MANAGED_IDENTITY_TENANT: &str = "44444444-4444-4444-4444-444444444444";

/// Lifetime of issued tokens, in seconds.
const LIFETIME: i64 = 3599;

/// Entra ID's OAuth error body (`{"error", "error_description", "error_codes"}`).
fn oauth_error(http: StatusCode, error: &str, description: String) -> Answer {
    (http, Vec::new(), json!({"error": error, "error_description": description}))
}

fn expires_on() -> String {
    (chrono::Utc::now().timestamp() + LIFETIME).to_string()
}

/// `GET {IDENTITY_ENDPOINT}?resource=&api-version=2019-08-01[&client_id=]` with header
/// `X-IDENTITY-HEADER`, as Microsoft Learn's "Managed identities for App Service and Azure
/// Functions" REST protocol documents it (also used by Container Apps): answers
/// `{access_token, expires_on, resource, token_type, client_id}` (`expires_on` in epoch
/// seconds, as a string); a wrong header is 401.
pub(super) fn managed_identity(state: &mut StubState, call: &Call<'_>) -> Answer {
    let header = call.headers.get("x-identity-header").and_then(|v| v.to_str().ok());
    if header != Some(IDENTITY_HEADER) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "X-IDENTITY-HEADER is missing or wrong".into(),
        );
    }
    if call.query.get("api-version").map(String::as_str) != Some(IDENTITY_ENDPOINT_API_VERSION) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "api-version 2019-08-01 is required".into(),
        );
    }
    issue_managed(state, call, "mi")
}

/// `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=[&client_id=]` with
/// `Metadata: true`, as "How to use managed identities on an Azure VM to acquire an access
/// token" documents: `{access_token, expires_in, expires_on, resource, token_type}` (numbers as
/// strings); without the header, 400.
pub(super) fn imds(state: &mut StubState, call: &Call<'_>) -> Answer {
    if call.headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified".into(),
        );
    }
    if call.query.get("api-version").map(String::as_str) != Some(IMDS_API_VERSION) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "bad api-version".into());
    }
    issue_managed(state, call, "imds")
}

fn issue_managed(state: &mut StubState, call: &Call<'_>, prefix: &str) -> Answer {
    let Some(resource) = call.query.get("resource").filter(|r| !r.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "resource is required".into(),
        );
    };
    let client_id =
        call.query.get("client_id").cloned().unwrap_or_else(|| SYSTEM_ASSIGNED.to_owned());
    if state.denied.contains(&client_id) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("Identity not found: {client_id}"),
        );
    }
    let info = TokenInfo {
        client_id: client_id.clone(),
        tenant: None,
        resource: resource.clone(),
        via: None,
    };
    // Shaped as Entra ID's tokens are (a JWT whose claims name the identity); the signature
    // part is the stub's opaque token, which is what the stub looks tokens up by.
    let opaque = state.issue(prefix, info.clone());
    let (principal, resource_id) = state
        .identities
        .get(&client_id)
        .cloned()
        .unwrap_or_else(|| (derived_principal(&client_id), None));
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "aud": resource, "iss": format!("https://sts.windows.net/{MANAGED_IDENTITY_TENANT}/"),
        "tid": MANAGED_IDENTITY_TENANT, "oid": principal, "sub": principal, "appid": client_id,
        "iat": now, "nbf": now - 60, "exp": now + LIFETIME,
    });
    if let Some(id) = resource_id {
        claims["xms_mirid"] = json!(id);
    }
    let token = format!(
        "{}.{}.{}",
        b64(&json!({"typ": "JWT", "alg": "RS256"})),
        b64(&claims),
        b64(&json!(opaque))
    );
    state.tokens.remove(&opaque);
    state.tokens.insert(token.clone(), info);
    let mut body = json!({
        "access_token": token, "expires_on": expires_on(), "resource": resource,
        "token_type": "Bearer", "client_id": client_id,
    });
    if prefix == "imds" {
        body["expires_in"] = json!(LIFETIME.to_string());
    }
    (StatusCode::OK, Vec::new(), body)
}

/// `POST {authority}/{tenant}/oauth2/v2.0/token`, the client-credentials grant of "Microsoft
/// identity platform and the OAuth 2.0 client credentials flow": form `client_id`,
/// `scope` (`{resource}/.default`), `grant_type=client_credentials`, and `client_secret` or
/// `client_assertion_type` (`...:jwt-bearer`) with `client_assertion`. Answers
/// `{token_type, expires_in, access_token}`; refusals are 400/401 with
/// `{error, error_description}` (`unauthorized_client` for an application not in the tenant,
/// `invalid_client` for a bad assertion).
pub(super) fn token(state: &mut StubState, call: &Call<'_>) -> Answer {
    let tenant = call.segment(0).to_owned();
    let form = call.form;
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: grant_type must be client_credentials".into(),
        );
    }
    let (Some(client_id), Some(scope)) = (field("client_id"), field("scope")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: client_id and scope are required".into(),
        );
    };
    let Some(resource) = scope.strip_suffix("/.default") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: the client credentials flow takes {resource}/.default".into(),
        );
    };
    if state.denied.contains(client_id) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the \
                 directory '{tenant}'."
            ),
        );
    }
    let via =
        match (field("client_secret"), field("client_assertion_type"), field("client_assertion")) {
            (Some(_), None, None) => None,
            (None, Some(JWT_BEARER_ASSERTION), Some(assertion)) => {
                match assertion_identity(state, client_id, assertion) {
                    Ok(via) => Some(via),
                    Err(description) => {
                        return oauth_error(
                            StatusCode::UNAUTHORIZED,
                            "invalid_client",
                            description,
                        );
                    }
                }
            }
            _ => {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "AADSTS7000216: client_assertion, client_secret or certificate is required"
                        .into(),
                );
            }
        };
    let info = TokenInfo {
        client_id: client_id.to_owned(),
        tenant: Some(tenant),
        resource: format!("{resource}/"),
        via,
    };
    let token = state.issue("entra", info);
    (
        StatusCode::OK,
        Vec::new(),
        json!({"token_type": "Bearer", "expires_in": LIFETIME, "ext_expires_in": LIFETIME, "access_token": token}),
    )
}

/// The identity behind a client assertion: a stub token for [`TOKEN_EXCHANGE_AUDIENCE`], or a
/// projected service-account JWT (workload identity: its `sub`).
fn assertion_identity(
    state: &StubState,
    client_id: &str,
    assertion: &str,
) -> Result<String, String> {
    let via = if let Some(info) = state.tokens.get(assertion) {
        if info.resource.trim_end_matches('/') != TOKEN_EXCHANGE_AUDIENCE {
            return Err(format!(
                "AADSTS700212: the assertion's audience is {}, not {TOKEN_EXCHANGE_AUDIENCE}",
                info.resource
            ));
        }
        info.client_id.clone()
    } else {
        jwt_subject(assertion)
            .ok_or_else(|| "AADSTS50027: the assertion is not a JWT".to_owned())?
    };
    if let Some(trusted) = state.trusts.get(client_id)
        && !trusted.contains(&via)
    {
        return Err(format!(
            "AADSTS70021: No matching federated identity record found for presented assertion \
             (subject {via}) on {client_id}"
        ));
    }
    Ok(via)
}

/// The `sub` claim of an unverified JWT.
fn jwt_subject(jwt: &str) -> Option<String> {
    crate::identity::jwt_claims(jwt)?.get("sub").and_then(Value::as_str).map(str::to_owned)
}

fn b64(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A principal id for an identity the test did not register: a GUID fixed by its client id.
fn derived_principal(client_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("principal|{client_id}").as_bytes());
    let hex = hex::encode(&digest[..16]);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}
