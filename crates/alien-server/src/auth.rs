//! Authentication: a layer that turns `Authorization: Bearer <token>` (or `Basic` with the token
//! as password, for registry clients) into a [`Subject`] on the request, or answers 401.
//!
//! Tokens are looked up by SHA-256 hash; revoked and expired tokens fail at once. When a token
//! was last used is recorded in memory and written in batches ([`TokenUses`]), so a request costs
//! no write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alien_core::{ApiError, ErrorCode, Id, TokenType, token::hash_token};
use alien_store::Store;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;

use crate::HttpError;

/// Who is calling: the token and what it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The token's id.
    pub token_id: Id,
    /// Its kind.
    pub token_type: TokenType,
    /// Its group (group tokens, deployment tokens).
    pub deployment_group_id: Option<Id>,
    /// Its deployment (deployment tokens).
    pub deployment_id: Option<Id>,
}

impl<S: Send + Sync> FromRequestParts<S> for Subject {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Subject>()
            .cloned()
            .ok_or_else(|| HttpError(unauthorized("missing token")))
    }
}

/// State of the authentication layer.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    uses: TokenUses,
}

impl Authenticator {
    /// Authenticates against `store`, recording uses in `uses`.
    pub fn new(store: Arc<dyn Store>, uses: TokenUses) -> Self {
        Self { store, uses }
    }

    /// The subject of a presented raw token, if it is live.
    pub async fn subject_of(&self, raw: &str) -> Result<Option<Subject>, ApiError> {
        if TokenType::of_raw(raw).is_none() {
            return Ok(None);
        }
        let hash = hash_token(raw);
        let Some(record) =
            self.store.find_token(&hash, Utc::now()).await.map_err(crate::error::store_error)?
        else {
            return Ok(None);
        };
        // The lookup was by hash; compare again in constant time so timing says nothing.
        if !bool::from(record.key_hash.as_bytes().ct_eq(hash.as_bytes())) {
            return Ok(None);
        }
        self.uses.record(&record.id);
        Ok(Some(Subject {
            token_id: record.id,
            token_type: record.token_type,
            deployment_group_id: record.deployment_group_id,
            deployment_id: record.deployment_id,
        }))
    }
}

/// The raw token of an `Authorization` header: `Bearer T`, or `Basic base64(user:T)`.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, password)| password.to_owned());
    }
    None
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message).with_hint(
        "send `Authorization: Bearer <token>` with an admin, deployment-group or deployment token",
    )
}

/// Middleware: 401 without a live token; else the [`Subject`] goes into the request extensions.
pub async fn require_token(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(raw) = presented_token(request.headers()) else {
        return HttpError(unauthorized("missing token")).into_response();
    };
    match auth.subject_of(&raw).await {
        Ok(Some(subject)) => {
            request.extensions_mut().insert(subject);
            next.run(request).await
        }
        Ok(None) => HttpError(unauthorized("invalid, revoked or expired token")).into_response(),
        Err(err) => HttpError(err).into_response(),
    }
}

/// Last-use times of tokens, kept in memory and flushed to the store in batches.
#[derive(Clone, Default)]
pub struct TokenUses {
    pending: Arc<Mutex<HashMap<Id, DateTime<Utc>>>>,
}

impl TokenUses {
    /// Notes that `token` was used now.
    pub fn record(&self, token: &Id) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(token.clone(), Utc::now());
        }
    }

    /// Writes what was noted since the last flush.
    pub async fn flush(&self, store: &dyn Store) {
        let batch: Vec<(Id, DateTime<Utc>)> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return,
        };
        if batch.is_empty() {
            return;
        }
        if let Err(err) = store.record_token_use(&batch).await {
            tracing::warn!(error = %err, tokens = batch.len(), "could not record token use; will retry");
            if let Ok(mut pending) = self.pending.lock() {
                for (id, at) in batch {
                    pending.entry(id).or_insert(at);
                }
            }
        }
    }

    /// Flushes every `every` until the process ends.
    pub fn spawn_flusher(
        &self,
        store: Arc<dyn Store>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let uses = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                uses.flush(store.as_ref()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        assert_eq!(presented_token(&headers("Bearer abc")).as_deref(), Some("abc"));
        assert_eq!(presented_token(&headers("bearer  abc ")).as_deref(), Some("abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:tok");
        assert_eq!(presented_token(&headers(&format!("Basic {basic}"))).as_deref(), Some("tok"));
        assert_eq!(presented_token(&headers("Basic !!!")), None);
        assert_eq!(presented_token(&headers("Token abc")), None);
        assert_eq!(presented_token(&HeaderMap::new()), None);
    }
}
