//! Google's OAuth 2.0 token endpoint for service accounts: the JWT-bearer grant of
//! <https://developers.google.com/identity/protocols/oauth2/service-account#httprest>.
//!
//! `POST /token` with the form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and
//! `assertion` (a JWT signed RS256 with the account's key, claims `iss`, `scope`, `aud`, `iat`,
//! `exp`) answers `{access_token, expires_in, token_type}`; a bad grant answers 400
//! `{error: "invalid_grant", error_description}`. The stub verifies the signature with the
//! public half of the tests' key (`emulators::test_key`), so a manager started with that key
//! file proves it signs its assertions correctly.

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

use super::{Answer, StubState};

fn refuse(description: &str) -> Answer {
    (StatusCode::BAD_REQUEST, json!({"error": "invalid_grant", "error_description": description}))
}

/// Answers a token request whose form body is `raw`.
pub(super) fn token(state: &mut StubState, raw: &[u8]) -> Answer {
    let form: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(raw).into_owned().collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return refuse("unsupported grant_type");
    }
    let Some(assertion) = form.get("assertion") else { return refuse("no assertion") };
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else { return refuse("not a JWT") };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
    let (Some(header_json), Some(claims_json), Some(signature)) =
        (decode(header), decode(claims), decode(signature))
    else {
        return refuse("a JWT part is not base64url");
    };
    let header: Value = serde_json::from_slice(&header_json).unwrap_or_default();
    let claims: Value = serde_json::from_slice(&claims_json).unwrap_or_default();
    if header["alg"] != "RS256" {
        return refuse("alg must be RS256");
    }
    let public = UnparsedPublicKey::new(
        &RSA_PKCS1_2048_8192_SHA256,
        crate::emulators::test_key().public_key_der(),
    );
    let signed = format!("{header}.{claims}", header = parts[0], claims = parts[1]);
    if public.verify(signed.as_bytes(), &signature).is_err() {
        return refuse("Invalid JWT Signature.");
    }
    let now = chrono::Utc::now().timestamp();
    let (Some(iss), Some(exp)) = (claims["iss"].as_str(), claims["exp"].as_i64()) else {
        return refuse("iss and exp are required");
    };
    if exp <= now || exp > now + 3700 || claims["scope"].as_str().is_none_or(str::is_empty) {
        return refuse("Invalid JWT: exp or scope");
    }
    state.next_id += 1;
    let access_token = format!("manager-token.{iss}.{}", state.next_id);
    state.iam.tokens.insert(access_token.clone(), iss.to_owned());
    (
        StatusCode::OK,
        json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}),
    )
}
