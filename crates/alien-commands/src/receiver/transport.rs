//! The receiver's HTTP side: requests with bounded retries (408, 429, 5xx and transport errors,
//! exponential backoff with jitter, `Retry-After` honoured up to the longest delay), presigned
//! requests (payload downloads and uploads) and response submission.

use std::time::Duration;

use alien_core::command::wire::{CommandResponse, PresignedRequest};
use bytes::Bytes;

use super::RetryPolicy;

/// Per-attempt timeout of a response submission.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Per-attempt timeout of a payload download or upload.
const PAYLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of a refused request's body goes into the error.
const BODY_SNIPPET: usize = 512;

/// Why a request failed for good.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// The peer answered with a status that is not retried (4xx other than 408 and 429).
    #[error("{what}: refused with HTTP {status}: {body}")]
    Refused {
        /// What the request was for.
        what: String,
        /// The status.
        status: u16,
        /// The start of the answer.
        body: String,
    },
    /// Every attempt failed with a retryable status or a transport error.
    #[error("{what}: gave up after {attempts} attempts; last: {last}")]
    GaveUp {
        /// What the request was for.
        what: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The request could not even be built (bad method or header in a presigned request).
    #[error("{what}: {message}")]
    Invalid {
        /// What the request was for.
        what: String,
        /// What is wrong.
        message: String,
    },
}

/// Whether an HTTP status is worth another attempt.
pub(crate) fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// A random number in `0..=u64::MAX` (for jitter; no cryptographic strength needed).
fn random_u64() -> u64 {
    let r = uuid::Uuid::new_v4().as_u128();
    (r >> 64) as u64 ^ r as u64
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0 for the first retry): `initial * 2^retry`
    /// capped at `max_delay`, then a uniform random point in its upper half (jitter).
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX);
        let full = self.initial_delay.saturating_mul(factor).min(self.max_delay);
        let half = full / 2;
        let span = u64::try_from((full - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span == 0 { 0 } else { random_u64() % (span + 1) };
        half + Duration::from_nanos(jitter)
    }
}

/// `Retry-After` in seconds, if the answer carries one.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Sends the request `make` builds, retrying per `policy`. Returns the first successful (2xx)
/// answer; a non-retryable status ends at once with [`TransportError::Refused`].
pub(crate) async fn send_with_retry<F>(
    policy: &RetryPolicy,
    what: &str,
    make: F,
) -> Result<reqwest::Response, TransportError>
where
    F: Fn() -> reqwest::RequestBuilder,
{
    let attempts = policy.attempts.max(1);
    let mut last = String::new();
    for attempt in 0..attempts {
        let mut wait = None;
        match make().send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => {
                let status = response.status().as_u16();
                wait = retry_after(&response);
                let body = snippet(response).await;
                if !retryable(status) {
                    return Err(TransportError::Refused { what: what.to_owned(), status, body });
                }
                last = format!("HTTP {status}: {body}");
            }
            Err(err) => last = error_chain(&err),
        }
        if attempt + 1 < attempts {
            let delay = wait.map_or_else(|| policy.delay(attempt), |w| w.min(policy.max_delay));
            tracing::debug!(what, attempt = attempt + 1, error = %last, ?delay, "retrying");
            tokio::time::sleep(delay).await;
        }
    }
    Err(TransportError::GaveUp { what: what.to_owned(), attempts, last })
}

/// The start of an answer's body, for error messages.
pub(crate) async fn snippet(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let mut end = text.len().min(BODY_SNIPPET);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// An error with its sources (reqwest's own message hides the cause, e.g. "connection refused").
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A validated [`PresignedRequest`], from which each attempt builds its request.
struct Presigned {
    method: reqwest::Method,
    url: String,
    headers: reqwest::header::HeaderMap,
}

impl Presigned {
    /// Checks the method and headers of `request`.
    fn new(request: &PresignedRequest, what: &str) -> Result<Self, TransportError> {
        let invalid = |message: String| TransportError::Invalid { what: what.to_owned(), message };
        let method = reqwest::Method::from_bytes(request.backend.method.as_bytes())
            .map_err(|e| invalid(format!("bad method {:?}: {e}", request.backend.method)))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &request.backend.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| invalid(format!("bad header name {name:?}: {e}")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|e| invalid(format!("bad value for header {name}: {e}")))?;
            headers.insert(name, value);
        }
        Ok(Self { method, url: request.backend.url.clone(), headers })
    }

    /// A fresh request for one attempt.
    fn build(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        client
            .request(self.method.clone(), &self.url)
            .headers(self.headers.clone())
            .timeout(PAYLOAD_TIMEOUT)
    }
}

/// Downloads a payload through a presigned GET. A body that breaks off mid-way is retried like a
/// failed request.
pub(crate) async fn download(
    client: &reqwest::Client,
    policy: &RetryPolicy,
    request: &PresignedRequest,
    what: &str,
) -> Result<Bytes, TransportError> {
    let presigned = Presigned::new(request, what)?;
    let attempts = policy.attempts.max(1);
    let mut last = String::new();
    for attempt in 0..attempts {
        let response = send_with_retry(policy, what, || presigned.build(client)).await?;
        match response.bytes().await {
            Ok(bytes) => return Ok(bytes),
            Err(err) => last = error_chain(&err),
        }
        if attempt + 1 < attempts {
            tokio::time::sleep(policy.delay(attempt)).await;
        }
    }
    Err(TransportError::GaveUp { what: what.to_owned(), attempts, last })
}

/// Uploads a payload through a presigned PUT.
pub(crate) async fn upload(
    client: &reqwest::Client,
    policy: &RetryPolicy,
    request: &PresignedRequest,
    body: Bytes,
    what: &str,
) -> Result<(), TransportError> {
    let presigned = Presigned::new(request, what)?;
    send_with_retry(policy, what, || presigned.build(client).body(body.clone())).await?;
    Ok(())
}

/// Submits a response to the envelope's presigned `submitResponseUrl` (no token needed).
pub(crate) async fn submit(
    client: &reqwest::Client,
    policy: &RetryPolicy,
    url: &str,
    response: &CommandResponse,
    what: &str,
) -> Result<(), TransportError> {
    let body = serde_json::to_vec(response).map_err(|e| TransportError::Invalid {
        what: what.to_owned(),
        message: format!("cannot encode the response: {e}"),
    })?;
    let body = Bytes::from(body);
    send_with_retry(policy, what, || {
        client
            .put(url)
            .timeout(SUBMIT_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
    })
    .await?;
    Ok(())
}
