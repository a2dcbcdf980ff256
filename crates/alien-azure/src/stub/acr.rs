//! ACR's token service, as `containerregistry.json` (data plane, 2021-07-01) of
//! azure-rest-api-specs documents it:
//!
//! - `POST /oauth2/exchange`, form `grant_type=access_token`, `service` (the login server),
//!   `tenant?`, `access_token` (an Entra ID token): `{refresh_token}`;
//! - `POST /oauth2/token`, form `grant_type=refresh_token`, `service`, `scope`
//!   (`repository:{name}:pull,push`, space-separated), `refresh_token`: `{access_token}`.
//!
//! Refusals are 401 with the registry's `{"errors": [{code, message}]}`.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::json;

use super::{Answer, Call, StubState};

/// Refresh tokens -> identity, access tokens -> (identity, scopes).
#[derive(Debug, Default)]
pub(super) struct AcrState {
    refresh: BTreeMap<String, String>,
    pub(super) access: BTreeMap<String, (String, Vec<String>)>,
}

fn unauthorized(message: &str) -> Answer {
    (
        StatusCode::UNAUTHORIZED,
        Vec::new(),
        json!({"errors": [{"code": "UNAUTHORIZED", "message": message}]}),
    )
}

pub(super) fn exchange(state: &mut StubState, call: &Call<'_>) -> Answer {
    let field = |name: &str| call.form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    if field("grant_type") != Some("access_token") || field("service").is_none() {
        return unauthorized("grant_type=access_token and service are required");
    }
    let Some(identity) =
        field("access_token").and_then(|t| state.tokens.get(t)).map(|i| i.client_id.clone())
    else {
        return unauthorized("the access token is not valid");
    };
    let refresh = format!("acr-refresh.{identity}.{}", state.id());
    state.acr.refresh.insert(refresh.clone(), identity);
    (StatusCode::OK, Vec::new(), json!({"refresh_token": refresh}))
}

pub(super) fn token(state: &mut StubState, call: &Call<'_>) -> Answer {
    let field = |name: &str| call.form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    if field("grant_type") != Some("refresh_token") || field("service").is_none() {
        return unauthorized("grant_type=refresh_token and service are required");
    }
    let Some(identity) = field("refresh_token").and_then(|t| state.acr.refresh.get(t)).cloned()
    else {
        return unauthorized("the refresh token is not valid");
    };
    let scopes: Vec<String> = field("scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let access = format!("acr-access.{identity}.{}", state.id());
    state.acr.access.insert(access.clone(), (identity, scopes));
    (StatusCode::OK, Vec::new(), json!({"access_token": access}))
}
