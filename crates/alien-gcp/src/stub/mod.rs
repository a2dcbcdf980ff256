//! An in-process contract stub of the Google APIs that have no emulator: Cloud Run Admin v2,
//! Secret Manager v1, IAM Credentials v1, Artifact Registry v1 and Resource Manager v3, and the
//! OAuth token endpoint a service-account key exchanges its JWTs at.
//!
//! One axum server on `127.0.0.1:0` serves all of them (their paths do not collide). It answers
//! with the request and response shapes of the public API references (each handler names the
//! page it follows), records every request (method, path, query, JSON body, bearer token) and
//! keeps state a test can inspect and steer: projects and their numbers, refused service
//! accounts, revisions that fail, long-running operations that finish only on a later read,
//! one-off errors.
//!
//! What it proves: that the clients send what Google documents and read what Google documents
//! back. What it cannot: Google's authorization decisions (any bearer token is accepted, and
//! the stub only says which identity it was minted for), that images exist or start, quota and
//! org-policy refusals, and timing beyond "not done on the first read".

mod iam;
mod oauth;
mod projects;
mod registry;
mod run;
mod secrets;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::TokenSource;
use crate::config::{GcpSettings, Service};

pub use iam::{SIGNING_KEY_ID, verify_signed_blob};
pub use run::FAILING_IMAGE_MARKER;

/// One request the stub received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `POST`...
    pub method: String,
    /// The decoded path, e.g. `/v2/projects/p/locations/l/services/s`.
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// The bearer token, if any.
    pub token: Option<String>,
}

/// A one-off error the next matching request gets instead of its answer.
#[derive(Debug, Clone)]
struct Injected {
    path_contains: String,
    http: u16,
    status: String,
}

/// Everything the stub knows.
#[derive(Debug, Default)]
struct StubState {
    requests: Vec<Recorded>,
    injected: Vec<Injected>,
    /// Project id -> project number.
    projects: BTreeMap<String, String>,
    run: run::RunState,
    secrets: secrets::SecretState,
    iam: iam::IamState,
    registry: registry::RegistryState,
    operations: BTreeMap<String, Operation>,
    /// Reads of an operation that answer "not done" before it finishes.
    operation_reads: u32,
    next_id: u64,
}

/// A long-running operation (`google.longrunning.Operation`) that is done after
/// `reads_left` more reads.
#[derive(Debug, Clone)]
struct Operation {
    name: String,
    reads_left: u32,
    /// Applied when it finishes: the Cloud Run service it settles, if any.
    settles: Option<String>,
    /// The result once done: `response` or `error`.
    result: Option<Result<Value, Value>>,
    /// The response type (`@type`) of the result.
    response_type: &'static str,
    metadata: Value,
}

impl StubState {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A new operation under `projects/{p}/locations/{l}`, done after the configured reads.
    fn operation(
        &mut self,
        parent: &str,
        settles: Option<String>,
        response_type: &'static str,
        result: Option<Result<Value, Value>>,
        target: &str,
    ) -> Value {
        let id = self.id();
        let name = format!("{parent}/operations/op-{id:08}");
        let operation = Operation {
            name: name.clone(),
            reads_left: self.operation_reads,
            settles,
            result,
            response_type,
            metadata: json!({"target": target, "createTime": now()}),
        };
        self.operations.insert(name.clone(), operation.clone());
        operation_json(&operation)
    }

    /// Reads operation `name`: one read closer to done; finishing applies its effect.
    fn read_operation(&mut self, name: &str) -> Option<Value> {
        let mut operation = self.operations.get(name)?.clone();
        if operation.reads_left > 0 {
            operation.reads_left -= 1;
            self.operations.insert(name.to_owned(), operation.clone());
            return Some(
                json!({"name": operation.name, "metadata": operation.metadata, "done": false}),
            );
        }
        if operation.result.is_none() {
            let result = match &operation.settles {
                Some(service) => run::settle(self, service),
                None => Ok(json!({})),
            };
            operation.result = Some(result);
            self.operations.insert(name.to_owned(), operation.clone());
        }
        Some(operation_json(&operation))
    }

    /// `projects/{number}` when the project is known by id, else `projects/{p}` as given.
    fn project_key(&self, project: &str) -> String {
        self.projects.get(project).cloned().unwrap_or_else(|| project.to_owned())
    }
}

fn operation_json(operation: &Operation) -> Value {
    let done = operation.reads_left == 0 && operation.result.is_some();
    let mut value = json!({"name": operation.name, "metadata": operation.metadata});
    if done {
        value["done"] = json!(true);
        match &operation.result {
            Some(Ok(response)) => {
                let mut response = response.clone();
                if let Some(object) = response.as_object_mut() {
                    object.insert("@type".into(), json!(operation.response_type));
                }
                value["response"] = response;
            }
            Some(Err(error)) => value["error"] = error.clone(),
            None => {}
        }
    }
    value
}

/// RFC 3339 now, as Google writes timestamps.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// An answer: status and JSON body.
type Answer = (StatusCode, Value);

/// Google's error body (`google.rpc.Status` in JSON: `{"error": {code, message, status}}`).
fn error(http: StatusCode, status: &str, message: impl Into<String>) -> Answer {
    let message = message.into();
    (http, json!({"error": {"code": http.as_u16(), "message": message, "status": status}}))
}

fn not_found(what: &str) -> Answer {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("Resource '{what}' was not found"))
}

fn invalid(message: impl Into<String>) -> Answer {
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

/// A request as handlers see it.
struct Call<'a> {
    method: &'a Method,
    segments: Vec<String>,
    query: &'a BTreeMap<String, String>,
    body: &'a Value,
}

/// The running stub. Dropping it stops the server.
pub struct ContractStub {
    base: String,
    state: Arc<Mutex<StubState>>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ContractStub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractStub").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Drop for ContractStub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ContractStub {
    /// Starts a stub on a free loopback port. Operations finish on their second read.
    pub async fn start() -> std::io::Result<ContractStub> {
        let state = Arc::new(Mutex::new(StubState { operation_reads: 1, ..Default::default() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "contract stub stopped");
            }
        });
        Ok(ContractStub { base, state, server })
    }

    fn state(&self) -> MutexGuard<'_, StubState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The OAuth token endpoint (a key file's `token_uri`).
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base)
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Settings calling every stubbed API (Run, IAM Credentials, Artifact Registry, Secret
    /// Manager, Resource Manager) here, as `tokens`.
    pub fn settings(&self, tokens: Arc<dyn TokenSource>) -> GcpSettings {
        let mut settings = GcpSettings { tokens, endpoints: Vec::new() };
        for service in [
            Service::Run,
            Service::IamCredentials,
            Service::ArtifactRegistry,
            Service::SecretManager,
            Service::ResourceManager,
        ] {
            settings = settings.with_endpoint(service, Some(&self.base));
        }
        settings
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The requests whose path contains `part`.
    pub fn requests_to(&self, part: &str) -> Vec<Recorded> {
        self.state().requests.iter().filter(|r| r.path.contains(part)).cloned().collect()
    }

    /// Makes project `id` known with `number` (Resource Manager answers 403 for others, as
    /// Google does for projects that do not exist or cannot be seen).
    pub fn add_project(&self, id: &str, number: &str) {
        self.state().projects.insert(id.to_owned(), number.to_owned());
    }

    /// How many reads of a new operation answer "not done" (default 1).
    pub fn set_operation_reads(&self, reads: u32) {
        self.state().operation_reads = reads;
    }

    /// The next request whose path contains `path_contains` gets `http` with Google status
    /// `status` (e.g. 503 `UNAVAILABLE`) instead of its answer.
    pub fn fail_next(&self, path_contains: &str, http: u16, status: &str) {
        self.state().injected.push(Injected {
            path_contains: path_contains.to_owned(),
            http,
            status: status.to_owned(),
        });
    }

    /// IAM Credentials refuses (403 `PERMISSION_DENIED`) tokens of `email`, and calls that
    /// delegate through it.
    pub fn deny(&self, email: &str) {
        self.state().iam.denied.insert(email.to_owned());
    }

    /// Only `emails` exist: IAM Credentials answers 404 for any other service account.
    pub fn only_accounts(&self, emails: &[&str]) {
        self.state().iam.known = Some(emails.iter().map(|e| (*e).to_owned()).collect());
    }

    /// The service account a token from this stub's `generateAccessToken` was minted for.
    pub fn identity_of(&self, token: &str) -> Option<String> {
        self.state().iam.tokens.get(token).cloned()
    }

    /// New revisions of Cloud Run service `service_id` fail to become ready until
    /// [`ContractStub::heal_revisions_of`].
    pub fn fail_revisions_of(&self, service_id: &str) {
        self.state().run.failing.insert(service_id.to_owned());
    }

    /// New revisions of `service_id` become ready again.
    pub fn heal_revisions_of(&self, service_id: &str) {
        self.state().run.failing.remove(service_id);
    }

    /// The Cloud Run service `projects/{p}/locations/{l}/services/{s}` as a GET would show it
    /// (without counting as a read of its operation).
    pub fn service(&self, name: &str) -> Option<Value> {
        self.state().run.services.get(name).map(|s| s.body.clone())
    }

    /// Names of every Cloud Run service.
    pub fn services(&self) -> Vec<String> {
        self.state().run.services.keys().cloned().collect()
    }

    /// Every revision name of the Cloud Run service `name`, oldest first.
    pub fn revisions(&self, name: &str) -> Vec<String> {
        self.state().run.services.get(name).map(|s| s.revisions.clone()).unwrap_or_default()
    }

    /// Names of every secret (`projects/{number}/secrets/{id}`).
    pub fn secrets(&self) -> Vec<String> {
        self.state().secrets.secrets.keys().cloned().collect()
    }

    /// The payloads of secret `name`'s versions, oldest first (`name` with the project id or
    /// number).
    pub fn secret_versions(&self, name: &str) -> Vec<Vec<u8>> {
        let state = self.state();
        let key = secrets::key_of(&state, name);
        state.secrets.secrets.get(&key).map(|s| s.versions.clone()).unwrap_or_default()
    }

    /// The Artifact Registry repository `projects/{p}/locations/{l}/repositories/{r}`.
    pub fn repository(&self, name: &str) -> Option<Value> {
        self.state().registry.repositories.get(name).cloned()
    }

    /// Creates repository `name` directly (as if someone else had).
    pub fn add_repository(&self, name: &str) {
        let mut state = self.state();
        registry::insert_repository(&mut state, name, &json!({"format": "DOCKER"}));
    }

    /// The IAM policy of repository `name` (`{version, etag, bindings?}`).
    pub fn policy(&self, name: &str) -> Value {
        self.state().registry.policy(name)
    }

    /// Replaces the bindings of repository `name`'s policy (someone else's change: the etag
    /// moves on).
    pub fn set_bindings(&self, name: &str, bindings: Value) {
        self.state().registry.set_bindings(name, bindings);
    }
}

/// Every request: recorded, then answered by the API its path belongs to.
async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<StubState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy().into_owned();
    let query: BTreeMap<String, String> = uri
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let parsed: Option<Value> =
        if body.is_empty() { None } else { serde_json::from_slice(&body).ok() };
    let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    state.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: parsed.clone(),
        token: token.clone(),
    });
    let (status, value) = answer(&mut state, &method, &path, &query, &body, parsed, token);
    (status, axum::Json(value)).into_response()
}

fn answer(
    state: &mut StubState,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    raw: &Bytes,
    body: Option<Value>,
    token: Option<String>,
) -> Answer {
    if let Some(i) = state.injected.iter().position(|i| path.contains(&i.path_contains)) {
        let injected = state.injected.remove(i);
        let http = StatusCode::from_u16(injected.http).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return error(http, &injected.status, "injected by the test");
    }
    if *method == Method::POST && path == "/token" {
        return oauth::token(state, raw);
    }
    if token.as_deref().is_none_or(str::is_empty) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request is missing required authentication credential.",
        );
    }
    if !raw.is_empty() && body.is_none() {
        return invalid("Invalid JSON payload received.");
    }
    let body = body.unwrap_or(Value::Null);
    let segments: Vec<String> =
        path.trim_start_matches('/').split('/').map(str::to_owned).collect();
    let call = Call { method, segments, query, body: &body };
    let s: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["v2", "projects", _, "locations", _, "services", ..] => run::handle(state, &call),
        [_, "projects", _, "locations", _, "operations", _] => {
            let name = call.segments[1..].join("/");
            if *method != Method::GET {
                return error(StatusCode::METHOD_NOT_ALLOWED, "UNIMPLEMENTED", "only GET");
            }
            match state.read_operation(&name) {
                Some(op) => (StatusCode::OK, op),
                None => not_found(&name),
            }
        }
        ["v1", "projects", "-", "serviceAccounts", _] => iam::handle(state, &call),
        ["v1", "projects", _, "secrets", ..] => secrets::handle(state, &call),
        ["v1", "projects", _, "locations", _, "repositories", ..] => registry::handle(state, &call),
        ["v3", "projects", _] => projects::handle(state, &call),
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("the stub does not serve {path}")),
    }
}
