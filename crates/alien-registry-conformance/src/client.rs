//! The HTTP side of the suite: one [`Registry`] per run (base URL, Basic credentials, a reqwest
//! client) and a fully read [`Response`] with the assertions every check uses. Assertions return
//! `Err(String)` naming the request, what was expected and what came back; nothing here panics.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use url::Url;

use crate::{Strictness, Target};

/// How much of an unexpected response body an error message quotes.
const BODY_SNIPPET: usize = 300;

/// A registry under test, as seen by a client.
pub(crate) struct Registry {
    http: reqwest::Client,
    base: Url,
    credentials: Option<(String, String)>,
    strictness: Strictness,
}

impl Registry {
    /// Builds the client for `target`; fails on an unparsable base URL.
    pub(crate) fn new(target: &Target) -> Result<Self, String> {
        let base = Url::parse(target.base_url.trim_end_matches('/'))
            .map_err(|e| format!("target {}: base URL {:?}: {e}", target.name, target.base_url))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            // Blob GETs may be redirected to storage, as docker and other clients allow.
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Self {
            http,
            base,
            credentials: target.credentials.clone(),
            strictness: target.strictness,
        })
    }

    /// `path` (starting with `/v2/`, query included) on the registry's origin.
    pub(crate) fn url(&self, path: &str) -> Result<Url, String> {
        self.base.join(path).map_err(|e| format!("cannot build URL for {path:?}: {e}"))
    }

    /// A `Location` header value, absolute or relative, resolved against the registry.
    pub(crate) fn resolve(&self, location: &str) -> Result<Url, String> {
        self.base.join(location).map_err(|e| format!("unusable Location {location:?}: {e}"))
    }

    /// A request to `path` with the target's credentials.
    pub(crate) fn request(&self, method: Method, path: &str) -> Result<Request, String> {
        let url = self.url(path)?;
        Ok(self.request_url(method, url))
    }

    /// A request to an absolute URL (an upload `Location`) with the target's credentials.
    pub(crate) fn request_url(&self, method: Method, url: Url) -> Request {
        self.request_with(method, url, self.credentials.as_ref())
    }

    /// A request without any credentials, to see the challenge.
    pub(crate) fn anonymous(&self, method: Method, path: &str) -> Result<Request, String> {
        let url = self.url(path)?;
        Ok(self.request_with(method, url, None))
    }

    /// A request with the given credentials instead of the target's.
    pub(crate) fn with_credentials(
        &self,
        method: Method,
        path: &str,
        credentials: &(String, String),
    ) -> Result<Request, String> {
        let url = self.url(path)?;
        Ok(self.request_with(method, url, Some(credentials)))
    }

    fn request_with(
        &self,
        method: Method,
        url: Url,
        credentials: Option<&(String, String)>,
    ) -> Request {
        let what = format!("{method} {}", display_url(&url));
        let mut builder = self.http.request(method, url);
        if let Some((user, password)) = credentials {
            builder = builder.basic_auth(user, Some(password));
        }
        Request { builder, what, strictness: self.strictness }
    }

    /// Whether the run has credentials (and so the registry is expected to demand them).
    pub(crate) fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// How the run reads answers.
    pub(crate) fn strictness(&self) -> Strictness {
        self.strictness
    }
}

/// Path and query of a URL, which is what error messages need.
/// Long queries (an upload's opaque state) are cut short.
fn display_url(url: &Url) -> String {
    const QUERY_CHARS: usize = 100;
    match url.query() {
        Some(q) if q.chars().count() > QUERY_CHARS => {
            format!("{}?{}…", url.path(), q.chars().take(QUERY_CHARS).collect::<String>())
        }
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// A request being built; `send` reads the whole response.
pub(crate) struct Request {
    builder: reqwest::RequestBuilder,
    what: String,
    strictness: Strictness,
}

impl Request {
    /// Adds a header.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// Sets a body with its `Content-Length` (and `Content-Length: 0` for an empty body, which
    /// some servers want on PUT/PATCH/POST).
    pub(crate) fn body(mut self, body: Vec<u8>) -> Self {
        if body.is_empty() {
            self.builder = self.builder.header("Content-Length", "0");
        }
        self.builder = self.builder.body(body);
        self
    }

    /// Sends the request and reads the response in full.
    pub(crate) async fn send(self) -> Result<Response, String> {
        let (what, strictness) = (self.what, self.strictness);
        let response =
            self.builder.send().await.map_err(|e| format!("{what}: request failed: {e}"))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("{what}: reading the response body failed: {e}"))?
            .to_vec();
        Ok(Response { what, status, headers, body, strictness })
    }
}

/// A response read in full, with the request it answers.
pub(crate) struct Response {
    /// `METHOD /path?query` of the request.
    pub(crate) what: String,
    /// The status code.
    pub(crate) status: StatusCode,
    headers: HeaderMap,
    /// The body.
    pub(crate) body: Vec<u8>,
    strictness: Strictness,
}

impl Response {
    /// Status, error codes and the start of the body, for messages.
    pub(crate) fn summary(&self) -> String {
        let mut s = format!("{}", self.status);
        if !self.body.is_empty() {
            let text = String::from_utf8_lossy(&self.body);
            let mut snippet: String = text.chars().take(BODY_SNIPPET).collect();
            if text.chars().count() > BODY_SNIPPET {
                snippet.push('…');
            }
            s.push_str(&format!(", body {:?}", snippet.trim_end()));
        }
        s
    }

    /// A failure message: `<request>: expected <expected>, got <summary>`.
    pub(crate) fn fail(&self, expected: &str) -> String {
        format!("{}: expected {expected}, got {}", self.what, self.summary())
    }

    /// Fails unless the status is one of `allowed`.
    pub(crate) fn expect_status(&self, allowed: &[u16]) -> Result<(), String> {
        if allowed.contains(&self.status.as_u16()) {
            Ok(())
        } else {
            Err(self.fail(&format!("status {}", list_statuses(allowed))))
        }
    }

    /// Fails unless the status is one of `allowed` and the JSON error body carries one of
    /// `codes`; in a strict run, carries no other code either.
    pub(crate) fn expect_error(&self, allowed: &[u16], codes: &[&str]) -> Result<(), String> {
        let strict = self.strictness == Strictness::Strict;
        let expected = format!(
            "status {} with error code {}{}",
            list_statuses(allowed),
            codes.join(" or "),
            if strict { " and no other" } else { "" }
        );
        if !allowed.contains(&self.status.as_u16()) {
            return Err(self.fail(&expected));
        }
        let found = self.error_codes();
        let expected_code = |c: &String| codes.contains(&c.as_str());
        let read = if strict {
            !found.is_empty() && found.iter().all(expected_code)
        } else {
            found.iter().any(expected_code)
        };
        if read { Ok(()) } else { Err(self.fail(&expected)) }
    }

    /// Fails unless the status is 404; in a strict run a GET's error body must also carry `code`
    /// (and no other), where the specification asks only for the status.
    pub(crate) fn expect_not_found(&self, code: &str) -> Result<(), String> {
        if self.strictness == Strictness::Strict && !self.what.starts_with("HEAD ") {
            self.expect_error(&[404], &[code])
        } else {
            self.expect_status(&[404])
        }
    }

    /// The `code`s of a `{"errors":[{"code":...}]}` body (empty when the body is not one).
    pub(crate) fn error_codes(&self) -> Vec<String> {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&self.body) else {
            return Vec::new();
        };
        value
            .get("errors")
            .and_then(|e| e.as_array())
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e.get("code").and_then(|c| c.as_str()).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A header's value as text, if present and valid text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header (e.g. several `Link`s).
    pub(crate) fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
    }

    /// A header that must be present.
    pub(crate) fn require_header(&self, name: &str) -> Result<&str, String> {
        self.header(name).ok_or_else(|| {
            format!("{}: expected a {name} header, got none (status {})", self.what, self.status)
        })
    }

    /// Fails unless `name` is present and equal to `expected`.
    pub(crate) fn expect_header(&self, name: &str, expected: &str) -> Result<(), String> {
        match self.header(name) {
            Some(v) if v == expected => Ok(()),
            Some(v) => Err(format!("{}: expected {name}: {expected}, got {name}: {v}", self.what)),
            None => {
                Err(format!("{}: expected {name}: {expected}, got no {name} header", self.what))
            }
        }
    }

    /// Fails if `name` is present with a value other than one of `allowed` (absence is fine).
    pub(crate) fn expect_optional_header(
        &self,
        name: &str,
        allowed: &[&str],
    ) -> Result<(), String> {
        match self.header(name) {
            Some(v) if !allowed.contains(&v) => Err(format!(
                "{}: expected no {name} or one of {allowed:?}, got {name}: {v}",
                self.what
            )),
            _ => Ok(()),
        }
    }

    /// Fails unless the media type of `Content-Type` (parameters ignored, as clients must) is
    /// `expected`.
    pub(crate) fn expect_content_type(&self, expected: &str) -> Result<(), String> {
        let got = self.require_header("Content-Type")?;
        let base = got.split(';').next().unwrap_or_default().trim();
        if base.eq_ignore_ascii_case(expected) {
            Ok(())
        } else {
            Err(format!(
                "{}: expected Content-Type: {expected}, got Content-Type: {got}",
                self.what
            ))
        }
    }

    /// Fails unless `Content-Length` is present and equal to `expected`.
    pub(crate) fn expect_content_length(&self, expected: usize) -> Result<(), String> {
        self.expect_header("Content-Length", &expected.to_string())
    }

    /// Fails unless the body is exactly `expected`.
    pub(crate) fn expect_body(&self, expected: &[u8]) -> Result<(), String> {
        if self.body == expected {
            return Ok(());
        }
        let first_difference = self
            .body
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(self.body.len().min(expected.len()));
        Err(format!(
            "{}: expected a body of exactly the {} bytes pushed, got {} bytes \
             (first difference at byte {first_difference})",
            self.what,
            expected.len(),
            self.body.len()
        ))
    }

    /// The `Location` header resolved against the registry.
    pub(crate) fn location(&self, registry: &Registry) -> Result<Url, String> {
        let location = self.require_header("Location")?;
        registry.resolve(location)
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!("{}: expected a JSON body, got {} ({e})", self.what, self.summary())
        })
    }
}

/// `201`, `201 or 202`, `200, 201 or 202`.
fn list_statuses(allowed: &[u16]) -> String {
    match allowed {
        [] => "(none)".to_owned(),
        [one] => one.to_string(),
        [rest @ .., last] => {
            format!("{} or {last}", rest.iter().map(u16::to_string).collect::<Vec<_>>().join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(strictness: Strictness, status: u16, body: &str) -> Response {
        Response {
            what: "GET /v2/x".to_owned(),
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
            strictness,
        }
    }

    #[test]
    fn a_strict_run_wants_only_the_expected_codes() {
        let one = r#"{"errors":[{"code":"NAME_INVALID","message":"m"}]}"#;
        let many = r#"{"errors":[{"code":"NAME_UNKNOWN"},{"code":"NAME_INVALID"}]}"#;
        for strictness in [Strictness::Lenient, Strictness::Strict] {
            let r = response(strictness, 400, one);
            assert!(r.expect_error(&[400], &["NAME_INVALID"]).is_ok());
            assert!(r.expect_error(&[404], &["NAME_INVALID"]).is_err());
            assert!(r.expect_error(&[400], &["TAG_INVALID"]).is_err());
            assert!(response(strictness, 400, "{}").expect_error(&[400], &["X"]).is_err());
        }
        assert!(
            response(Strictness::Lenient, 400, many)
                .expect_error(&[400], &["NAME_INVALID"])
                .is_ok()
        );
        let err = response(Strictness::Strict, 400, many)
            .expect_error(&[400], &["NAME_INVALID"])
            .unwrap_err();
        assert!(err.contains("with error code NAME_INVALID and no other"), "{err}");
    }

    #[test]
    fn statuses_read_as_a_list() {
        assert_eq!(list_statuses(&[201]), "201");
        assert_eq!(list_statuses(&[201, 202]), "201 or 202");
        assert_eq!(list_statuses(&[400, 404, 405]), "400, 404 or 405");
    }
}
