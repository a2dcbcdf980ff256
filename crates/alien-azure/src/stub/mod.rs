//! An in-process contract stub of the Azure services the Entra ID / ARM side of this crate
//! calls and that have no emulator: the managed-identity endpoint (`IDENTITY_ENDPOINT`), IMDS,
//! Entra ID's v2.0 token endpoint, Resource Manager (Container Apps, role assignments, their
//! operations) and ACR's token exchange.
//!
//! One axum server on `127.0.0.1:0` serves all of them (their paths do not collide). It answers
//! with the request and response shapes of the public references (each handler names the one it
//! follows), records every request (method, path, query, body, bearer token, the
//! `X-IDENTITY-HEADER` / `Metadata` headers) and which identity each token it issued belongs
//! to, and keeps state a test can inspect and steer: refused clients, revisions that fail,
//! operations that finish only on a later read, one-off errors.
//!
//! What it proves: that the clients send what Azure documents and read what Azure documents
//! back. What it cannot: Entra ID's and ARM's authorization decisions (any bearer token is
//! accepted; federated credentials are trusted unless a test says otherwise), that images exist
//! or start, quota and policy refusals, and timing beyond "not done on the first read".

mod acr;
mod apps;
mod entra;
mod roles;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub use apps::FAILING_IMAGE_MARKER;
pub use entra::{IDENTITY_HEADER, MANAGED_IDENTITY_TENANT, SYSTEM_ASSIGNED};

/// One request the stub received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `PUT`...
    pub method: String,
    /// The decoded path.
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// The form body (token endpoints), if any.
    pub form: BTreeMap<String, String>,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// Headers that carry identity proofs: `x-identity-header`, `metadata`.
    pub headers: BTreeMap<String, String>,
}

/// Whom a token issued by the stub belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The client (application) id of the identity, or [`SYSTEM_ASSIGNED`].
    pub client_id: String,
    /// The tenant it was issued in (`None` for managed-identity endpoints).
    pub tenant: Option<String>,
    /// Its audience (`https://management.azure.com/`, `api://AzureADTokenExchange`...).
    pub resource: String,
    /// The identity whose token was the client assertion, for federated exchanges.
    pub via: Option<String>,
}

/// A one-off error the next matching request gets instead of its answer.
#[derive(Debug, Clone)]
struct Injected {
    path_contains: String,
    http: u16,
    code: String,
}

/// Everything the stub knows.
#[derive(Debug, Default)]
struct StubState {
    base: String,
    requests: Vec<Recorded>,
    injected: Vec<Injected>,
    tokens: BTreeMap<String, TokenInfo>,
    /// Client ids Entra ID refuses.
    denied: BTreeSet<String>,
    /// Client id -> identities whose tokens its federated credentials trust (absent: any).
    trusts: BTreeMap<String, BTreeSet<String>>,
    apps: apps::AppsState,
    roles: roles::RoleState,
    acr: acr::AcrState,
    operations: BTreeMap<String, Operation>,
    /// Client id -> (principal (object) id, resource id) of managed identities.
    identities: BTreeMap<String, (String, Option<String>)>,
    /// Storage accounts by lower-cased ARM id: their `GET` body.
    storage_accounts: BTreeMap<String, Value>,
    /// Reads of an operation that answer "InProgress" before it ends.
    operation_reads: u32,
    next_id: u64,
}

/// An ARM asynchronous operation that ends after `reads_left` more reads.
#[derive(Debug, Clone)]
struct Operation {
    id: String,
    reads_left: u32,
    /// Applied when it ends: the container app it settles or deletes.
    effect: apps::Effect,
    /// The status body once ended.
    result: Option<Value>,
}

impl StubState {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A new operation whose status URL is returned (`Azure-AsyncOperation`).
    fn operation(&mut self, subscription: &str, location: &str, effect: apps::Effect) -> String {
        let id = format!("op-{:08}", self.id());
        let url = format!(
            "{}/subscriptions/{subscription}/providers/Microsoft.App/locations/{location}/containerappOperationStatuses/{id}?api-version={}",
            self.base,
            apps::API_VERSION
        );
        let reads_left = self.operation_reads;
        self.operations
            .insert(id.clone(), Operation { id: id.clone(), reads_left, effect, result: None });
        url
    }

    /// Reads operation `id`: one read closer to its end; ending applies its effect.
    fn read_operation(&mut self, id: &str) -> Option<Value> {
        let mut operation = self.operations.get(id)?.clone();
        if operation.reads_left > 0 {
            operation.reads_left -= 1;
            self.operations.insert(id.to_owned(), operation.clone());
            return Some(json!({"id": operation.id, "name": operation.id, "status": "InProgress"}));
        }
        if operation.result.is_none() {
            let outcome = apps::settle(self, &operation.effect);
            let mut body = json!({"id": operation.id, "name": operation.id, "startTime": now()});
            match outcome {
                Ok(()) => body["status"] = json!("Succeeded"),
                Err(error) => {
                    body["status"] = json!("Failed");
                    body["error"] = error;
                }
            }
            operation.result = Some(body);
            self.operations.insert(id.to_owned(), operation.clone());
        }
        operation.result
    }

    /// Records that `token` belongs to `info` and returns it.
    fn issue(&mut self, prefix: &str, info: TokenInfo) -> String {
        let token = format!("{prefix}.{}.{}", info.client_id, self.id());
        self.tokens.insert(token.clone(), info);
        token
    }
}

/// RFC 3339 now.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An answer: status, extra headers and JSON body (`Value::Null`: no body).
type Answer = (StatusCode, Vec<(&'static str, String)>, Value);

/// ARM's error body (`{"error": {"code", "message"}}`, the common error response of the
/// Resource Manager RPC).
fn error(http: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    (http, Vec::new(), json!({"error": {"code": code, "message": message.into()}}))
}

fn ok(body: Value) -> Answer {
    (StatusCode::OK, Vec::new(), body)
}

/// A request as handlers see it.
struct Call<'a> {
    method: &'a Method,
    segments: Vec<String>,
    query: &'a BTreeMap<String, String>,
    body: &'a Value,
    form: &'a BTreeMap<String, String>,
    headers: &'a HeaderMap,
}

impl Call<'_> {
    fn segment(&self, i: usize) -> &str {
        self.segments.get(i).map_or("", String::as_str)
    }
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
    /// Starts a stub on a free loopback port. Operations end on their second read.
    pub async fn start() -> std::io::Result<ContractStub> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(StubState {
            base: base.clone(),
            operation_reads: 1,
            ..Default::default()
        }));
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

    /// The base URL, e.g. `http://127.0.0.1:40123`: Resource Manager, the Entra ID authority
    /// (`AZURE_AUTHORITY_HOST`), IMDS (`AZURE_POD_IDENTITY_AUTHORITY_HOST`) and ACR's login
    /// server.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The managed-identity endpoint (`IDENTITY_ENDPOINT`); its secret is [`IDENTITY_HEADER`].
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.base)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The requests whose path contains `part`.
    pub fn requests_to(&self, part: &str) -> Vec<Recorded> {
        self.state().requests.iter().filter(|r| r.path.contains(part)).cloned().collect()
    }

    /// How many reads of a new operation answer `InProgress` (default 1).
    pub fn set_operation_reads(&self, reads: u32) {
        self.state().operation_reads = reads;
    }

    /// The next request whose path contains `path_contains` gets `http` with error code `code`
    /// instead of its answer.
    pub fn fail_next(&self, path_contains: &str, http: u16, code: &str) {
        self.state().injected.push(Injected {
            path_contains: path_contains.to_owned(),
            http,
            code: code.to_owned(),
        });
    }

    /// Whom a token the stub issued belongs to.
    pub fn token_info(&self, token: &str) -> Option<TokenInfo> {
        self.state().tokens.get(token).cloned()
    }

    /// The client id a token the stub issued belongs to.
    pub fn identity_of(&self, token: &str) -> Option<String> {
        self.token_info(token).map(|i| i.client_id)
    }

    /// Entra ID refuses client `client_id` (as for an application not found in the tenant).
    pub fn deny(&self, client_id: &str) {
        self.state().denied.insert(client_id.to_owned());
    }

    /// The federated credentials of `client_id` trust only tokens of `identities`.
    pub fn trust_only(&self, client_id: &str, identities: &[&str]) {
        self.state()
            .trusts
            .insert(client_id.to_owned(), identities.iter().map(|i| (*i).to_owned()).collect());
    }

    /// New revisions of container app `name` fail to provision until
    /// [`ContractStub::heal_revisions_of`].
    pub fn fail_revisions_of(&self, name: &str) {
        self.state().apps.failing.insert(name.to_owned());
    }

    /// New revisions of `name` provision again.
    pub fn heal_revisions_of(&self, name: &str) {
        self.state().apps.failing.remove(name);
    }

    /// The container app with ARM id `id` as a GET would show it.
    pub fn app(&self, id: &str) -> Option<Value> {
        self.state().apps.apps.get(&id.to_ascii_lowercase()).map(|a| a.body.clone())
    }

    /// ARM ids of every container app.
    pub fn apps(&self) -> Vec<String> {
        self.state().apps.apps.values().map(|a| a.id.clone()).collect()
    }

    /// Revision names of the container app `id`, oldest first.
    pub fn revisions(&self, id: &str) -> Vec<String> {
        self.state()
            .apps
            .apps
            .get(&id.to_ascii_lowercase())
            .map(|a| {
                a.revisions.iter().map(|r| r["name"].as_str().unwrap_or("").to_owned()).collect()
            })
            .unwrap_or_default()
    }

    /// The managed identity `client_id` has principal (object) id `principal_id` and ARM id
    /// `resource_id`: its tokens carry them as `oid` and `xms_mirid` (unregistered identities
    /// get a principal id derived from the client id and no `xms_mirid`).
    pub fn set_identity(&self, client_id: &str, principal_id: &str, resource_id: Option<&str>) {
        self.state().identities.insert(
            client_id.to_owned(),
            (principal_id.to_owned(), resource_id.map(str::to_owned)),
        );
    }

    /// A storage account `name` in `group` of `subscription` whose `primaryEndpoints` are
    /// `table` and `blob` (e.g. Azurite's), as "Storage Accounts - Get Properties" answers.
    pub fn add_storage_account(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        table: &str,
        blob: &str,
    ) {
        let id = format!(
            "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{name}"
        );
        let body = json!({
            "id": id, "name": name, "type": "Microsoft.Storage/storageAccounts",
            "kind": "StorageV2", "location": "westeurope",
            "properties": {"provisioningState": "Succeeded", "primaryEndpoints": {
                "table": format!("{}/", table.trim_end_matches('/')),
                "blob": format!("{}/", blob.trim_end_matches('/')),
            }},
        });
        self.state().storage_accounts.insert(id.to_ascii_lowercase(), body);
    }

    /// Every role assignment: (ARM id, properties).
    pub fn role_assignments(&self) -> Vec<(String, Value)> {
        self.state()
            .roles
            .assignments
            .values()
            .map(|a| (a.id.clone(), a.properties.clone()))
            .collect()
    }

    /// What the ACR access token `token` was issued for: (identity, scopes).
    pub fn acr_token(&self, token: &str) -> Option<(String, Vec<String>)> {
        self.state().acr.access.get(token).cloned()
    }
}

/// Every request: recorded, then answered by the service its path belongs to.
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
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form: BTreeMap<String, String> = if is_form {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        BTreeMap::new()
    };
    let parsed: Option<Value> =
        if body.is_empty() || is_form { None } else { serde_json::from_slice(&body).ok() };
    let recorded_headers: BTreeMap<String, String> = ["x-identity-header", "metadata"]
        .iter()
        .filter_map(|h| {
            headers.get(*h).and_then(|v| v.to_str().ok()).map(|v| ((*h).to_owned(), v.to_owned()))
        })
        .collect();
    let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    state.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: parsed.clone(),
        form: form.clone(),
        token: token.clone(),
        headers: recorded_headers,
    });
    let (status, extra, value) =
        answer(&mut state, &method, &path, &query, &headers, &body, is_form, parsed, &form, token);
    let mut response = if value.is_null() {
        status.into_response()
    } else {
        (status, axum::Json(value)).into_response()
    };
    for (name, value) in extra {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[allow(clippy::too_many_arguments)]
fn answer(
    state: &mut StubState,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    raw: &Bytes,
    is_form: bool,
    body: Option<Value>,
    form: &BTreeMap<String, String>,
    token: Option<String>,
) -> Answer {
    if let Some(i) = state.injected.iter().position(|i| path.contains(&i.path_contains)) {
        let injected = state.injected.remove(i);
        let http = StatusCode::from_u16(injected.http).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return error(http, &injected.code, "injected by the test");
    }
    let segments: Vec<String> =
        path.trim_start_matches('/').split('/').map(str::to_owned).collect();
    let body = body.unwrap_or(Value::Null);
    let call = Call { method, segments, query, body: &body, form, headers };
    let s: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    // Token endpoints authenticate with what they are sent, not a bearer token.
    match s.as_slice() {
        ["msi", "token"] => return entra::managed_identity(state, &call),
        ["metadata", "identity", "oauth2", "token"] => return entra::imds(state, &call),
        [_, "oauth2", "v2.0", "token"] => return entra::token(state, &call),
        ["oauth2", "exchange"] => return acr::exchange(state, &call),
        ["oauth2", "token"] => return acr::token(state, &call),
        _ => {}
    }
    if token.as_deref().is_none_or(str::is_empty) {
        return error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        );
    }
    if !raw.is_empty() && !is_form && call.body.is_null() {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        );
    }
    let lower: Vec<String> = s.iter().map(|p| p.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lower.as_slice() {
        [
            "subscriptions",
            _,
            "providers",
            "microsoft.app",
            "locations",
            _,
            "containerappoperationstatuses",
            _,
        ] => {
            let id = call.segment(7).to_owned();
            match state.read_operation(&id) {
                Some(body) => ok(body),
                None => {
                    error(StatusCode::NOT_FOUND, "NotFound", format!("operation {id} not found"))
                }
            }
        }
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.app",
            "containerapps",
            ..,
        ] => apps::handle(state, &call),
        [.., "providers", "microsoft.authorization", "roleassignments", _] => {
            roles::handle(state, &call)
        }
        // "Storage Accounts - Get Properties" (Microsoft.Storage, 2023-05-01).
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.storage",
            "storageaccounts",
            name,
        ] if *method == Method::GET => {
            match state.storage_accounts.get(&path.trim_end_matches('/').to_ascii_lowercase()) {
                Some(body) => ok(body.clone()),
                None => error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    format!(
                        "The Resource 'Microsoft.Storage/storageAccounts/{name}' under resource \
                         group '{}' was not found.",
                        call.segment(3)
                    ),
                ),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "NotFound", format!("the stub does not serve {path}")),
    }
}
