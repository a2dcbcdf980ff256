//! IAM Service Account Credentials v1, as
//! <https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts>
//! documents it (`google/iam/credentials/v1/common.proto`):
//! - `:generateAccessToken` `{scope[], lifetime, delegates?}` -> `{accessToken, expireTime}`;
//!   tokens read `stub-token.{email}.{n}` so tests tell identities apart; 403
//!   `PERMISSION_DENIED` for refused accounts (or delegates), 404 for unknown ones when the test
//!   lists the known ones, 400 for a missing scope, a malformed delegate or a lifetime outside
//!   1..=3600 s;
//! - `:signBlob` `{payload}` -> `{keyId, signedBlob}`: RSASSA-PKCS1-v1_5 SHA-256 with a fixed
//!   throwaway key ([`verify_signed_blob`] checks it), which proves the client sent the bytes it
//!   meant to sign and used the signature as returned, not that Google's key would verify.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

use super::{Answer, Call, StubState, error, invalid};

/// The `keyId` of every signature.
pub const SIGNING_KEY_ID: &str = "stub-throwaway-key-1";

/// A 2048-bit RSA key made for this stub only; it signs nothing anyone trusts.
const SIGNING_KEY: &str = include_str!("throwaway-signing-key.pem");

/// The IAM Credentials part of the stub's state.
#[derive(Debug, Default)]
pub(super) struct IamState {
    pub(super) denied: BTreeSet<String>,
    pub(super) known: Option<BTreeSet<String>>,
    /// Token -> the account it was minted for.
    pub(super) tokens: BTreeMap<String, String>,
    minted: u64,
}

fn key_pair() -> Option<RsaKeyPair> {
    let der = PrivateKeyDer::from_pem_slice(SIGNING_KEY.as_bytes()).ok()?;
    RsaKeyPair::from_pkcs8(der.secret_der()).ok()
}

/// Whether `signature` is the stub's signature of `payload`.
pub fn verify_signed_blob(payload: &[u8], signature: &[u8]) -> bool {
    let Some(pair) = key_pair() else { return false };
    use ring::signature::KeyPair as _;
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        pair.public_key().as_ref(),
    );
    public.verify(payload, signature).is_ok()
}

fn sign(payload: &[u8]) -> Option<Vec<u8>> {
    let pair = key_pair()?;
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), payload, &mut signature).ok()?;
    Some(signature)
}

fn denied(email: &str) -> Answer {
    error(
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        format!(
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not \
             exist): projects/-/serviceAccounts/{email}"
        ),
    )
}

/// Checks the account and its delegation chain: `None` when the call may go on.
fn refuse(state: &StubState, email: &str, body: &Value) -> Option<Answer> {
    if let Some(known) = &state.iam.known
        && !known.contains(email)
    {
        return Some(error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Service account projects/-/serviceAccounts/{email} not found."),
        ));
    }
    let delegates = body.get("delegates").and_then(Value::as_array).cloned().unwrap_or_default();
    for delegate in &delegates {
        let Some(account) =
            delegate.as_str().and_then(|d| d.strip_prefix("projects/-/serviceAccounts/"))
        else {
            return Some(invalid(format!(
                "delegates: {delegate} is not projects/-/serviceAccounts/{{email}}"
            )));
        };
        if state.iam.denied.contains(account) {
            return Some(denied(account));
        }
    }
    state.iam.denied.contains(email).then(|| denied(email))
}

pub(super) fn handle(state: &mut StubState, call: &Call<'_>) -> Answer {
    let last = call.segments.last().map(String::as_str).unwrap_or_default();
    let Some((email, verb)) = last.split_once(':') else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such IAM Credentials method");
    };
    if *call.method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "UNIMPLEMENTED", "only POST");
    }
    if let Some(answer) = refuse(state, email, call.body) {
        return answer;
    }
    match verb {
        "generateAccessToken" => generate_access_token(state, email, call.body),
        "signBlob" => sign_blob(call.body),
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such IAM Credentials method"),
    }
}

fn generate_access_token(state: &mut StubState, email: &str, body: &Value) -> Answer {
    let scopes = body.get("scope").and_then(Value::as_array).map_or(0, Vec::len);
    if scopes == 0 {
        return invalid("scope: at least one scope is required");
    }
    let seconds = match body.get("lifetime").and_then(Value::as_str) {
        None => 3600,
        Some(text) => match text.strip_suffix('s').and_then(|n| n.parse::<i64>().ok()) {
            Some(n) if (1..=3600).contains(&n) => n,
            _ => return invalid(format!("lifetime '{text}' must be 1s to 3600s")),
        },
    };
    state.iam.minted += 1;
    let token = format!("stub-token.{email}.{}", state.iam.minted);
    state.iam.tokens.insert(token.clone(), email.to_owned());
    let expire = chrono::Utc::now() + chrono::TimeDelta::seconds(seconds);
    let expire_time = expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (StatusCode::OK, json!({"accessToken": token, "expireTime": expire_time}))
}

fn sign_blob(body: &Value) -> Answer {
    let Some(payload) = body.get("payload").and_then(Value::as_str) else {
        return invalid("payload is required");
    };
    let Ok(bytes) = STANDARD.decode(payload) else { return invalid("payload is not base64") };
    match sign(&bytes) {
        Some(signature) => (
            StatusCode::OK,
            json!({"keyId": SIGNING_KEY_ID, "signedBlob": STANDARD.encode(signature)}),
        ),
        None => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "the stub's key does not load")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stub_key_signs_and_verifies() {
        let signature = sign(b"to be signed").unwrap_or_default();
        assert!(verify_signed_blob(b"to be signed", &signature));
        assert!(!verify_signed_blob(b"something else", &signature));
    }
}
