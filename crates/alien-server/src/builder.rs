//! [`ManagerBuilder`]: assembles the HTTP application from configuration and trait objects, and
//! serves it with graceful shutdown. Later subsystems (store, registry, commands, telemetry,
//! deployer) add themselves here as trait objects; the binary only chooses implementations.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alien_config::ManagerConfig;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, StatusCode};
use axum::routing::get;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use alien_store::Store;

use crate::HttpError;
use crate::api::ApiState;
use crate::auth::{Authenticator, TokenUses};
use crate::error::{json_error_bodies, panic_response};
use crate::metrics::{MetricsRegistry, track_http};
use crate::ops::{self, ReadinessCheck};

/// How often token last-use times are written.
const TOKEN_USE_FLUSH: Duration = Duration::from_secs(5);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Errors of starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS files cannot be served.
    #[error("TLS: {0}")]
    Tls(String),
    /// Serving stopped abnormally.
    #[error("serving: {0}")]
    Serve(String),
}

/// Shared state of the built-in routes.
pub struct AppState {
    /// The effective configuration.
    pub config: ManagerConfig,
    /// Checks behind `/ready`.
    pub readiness: Vec<Arc<dyn ReadinessCheck>>,
    /// Prometheus registry behind `/metrics`.
    pub metrics: MetricsRegistry,
}

/// Builds a manager from its configuration and the implementations of its seams.
pub struct ManagerBuilder {
    config: ManagerConfig,
    store: Option<Arc<dyn Store>>,
    registry: Option<Arc<dyn alien_registry::BlobStore>>,
    registries: Option<alien_registry::ArtifactRegistries>,
    authz: Arc<dyn crate::policy::Authz>,
    impersonator: Option<Arc<dyn alien_impersonation::Impersonator>>,
    commands: Option<(Arc<alien_commands::CommandEngine>, Arc<dyn alien_commands::PayloadStore>)>,
    telemetry: Option<(Arc<alien_telemetry::Ingestor>, Arc<alien_telemetry::RecentLogs>)>,
    deployment_loop: Option<Arc<alien_deployer::DeploymentLoop>>,
    signals: Option<Arc<dyn alien_core::signal::Signals>>,
    heartbeat_loop: Option<Arc<alien_deployer::HeartbeatLoop>>,
    readiness: Vec<Arc<dyn ReadinessCheck>>,
    api_routes: Vec<Router>,
    raw_routes: Vec<Router>,
}

impl ManagerBuilder {
    /// A builder for `config` with no subsystems yet.
    pub fn new(config: ManagerConfig) -> Self {
        Self {
            config,
            store: None,
            registry: None,
            registries: None,
            authz: Arc::new(crate::policy::PolicyTable),
            impersonator: None,
            commands: None,
            telemetry: None,
            deployment_loop: None,
            signals: None,
            heartbeat_loop: None,
            readiness: Vec::new(),
            api_routes: Vec::new(),
            raw_routes: Vec::new(),
        }
    }

    /// Uses `store` for persistent state: enables the `/v1` API and adds it to `/ready`.
    #[must_use]
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.readiness.push(Arc::new(StoreReady(store.clone())));
        self.store = Some(store);
        self
    }

    /// Serves the embedded OCI registry at `/v2/` over `blobs` (needs a store for its tokens).
    #[must_use]
    pub fn registry(mut self, blobs: Arc<dyn alien_registry::BlobStore>) -> Self {
        self.registry = Some(blobs);
        self
    }

    /// Where each platform's release images live (`/v1/build-config`, the pull credentials of
    /// sync targets). Default: the embedded registry as `[artifact-registry.*]` names it
    /// ([`crate::registry::local_artifact_registries`]).
    #[must_use]
    pub fn artifact_registries(mut self, registries: alien_registry::ArtifactRegistries) -> Self {
        self.registries = Some(registries);
        self
    }

    /// Decides access with `authz` instead of the policy of the API document
    /// ([`crate::policy::PolicyTable`]).
    #[must_use]
    pub fn authz(mut self, authz: Arc<dyn crate::policy::Authz>) -> Self {
        self.authz = authz;
        self
    }

    /// Mints deployments' cloud credentials with `impersonator` (`POST /v1/credentials/mint`).
    /// Default: no cloud configured (a cloud target is 501 `IMPERSONATION_NOT_CONFIGURED`);
    /// targets that are not in a cloud get the ambient identity.
    #[must_use]
    pub fn impersonator(
        mut self,
        impersonator: Arc<dyn alien_impersonation::Impersonator>,
    ) -> Self {
        self.impersonator = Some(impersonator);
        self
    }

    /// Serves the remote-commands protocol with `engine` over `kv` and `payloads` (needs a store
    /// for its tokens); `/ready` then also asks the KV and the payload store.
    #[must_use]
    pub fn commands(
        mut self,
        engine: Arc<alien_commands::CommandEngine>,
        kv: Arc<dyn alien_commands::Kv>,
        payloads: Arc<dyn alien_commands::PayloadStore>,
    ) -> Self {
        self.readiness.push(Arc::new(KvReady(kv.clone())));
        self.readiness.push(Arc::new(PayloadsReady(payloads.clone())));
        self.commands = Some((engine, payloads));
        self
    }

    /// Receives OTLP from deployments with `ingestor` (which forwards to its sink) and serves
    /// their recent logs from `recent` (needs a store for tokens and identities). The sink is
    /// flushed when the server stops.
    #[must_use]
    pub fn telemetry(
        mut self,
        ingestor: Arc<alien_telemetry::Ingestor>,
        recent: Arc<alien_telemetry::RecentLogs>,
    ) -> Self {
        self.telemetry = Some((ingestor, recent));
        self
    }

    /// Tells the other replicas through `signals` when deployments have work, and wakes this
    /// replica's deployment loop when they do (the commands engine takes them separately).
    #[must_use]
    pub fn signals(mut self, signals: Arc<dyn alien_core::signal::Signals>) -> Self {
        self.signals = Some(signals);
        self
    }

    /// Runs `deployment_loop` while serving; API calls that give deployments work wake it.
    #[must_use]
    pub fn deployment_loop(mut self, deployment_loop: Arc<alien_deployer::DeploymentLoop>) -> Self {
        self.deployment_loop = Some(deployment_loop);
        self
    }

    /// Runs `heartbeat_loop` while serving (silent agents' deployments become stale).
    #[must_use]
    pub fn heartbeat_loop(mut self, heartbeat_loop: Arc<alien_deployer::HeartbeatLoop>) -> Self {
        self.heartbeat_loop = Some(heartbeat_loop);
        self
    }

    /// Adds a check that `/ready` runs.
    #[must_use]
    pub fn readiness_check(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.readiness.push(check);
        self
    }

    /// Adds JSON API routes (`/v1/...`): they get the JSON body limit and the request timeout.
    #[must_use]
    pub fn api_routes(mut self, routes: Router) -> Self {
        self.api_routes.push(routes);
        self
    }

    /// Adds routes that manage their own bodies and time (registry, long polls, OTLP ingest).
    #[must_use]
    pub fn raw_routes(mut self, routes: Router) -> Self {
        self.raw_routes.push(routes);
        self
    }

    /// Assembles the application.
    pub fn build(self) -> Manager {
        let server = &self.config.server;
        let body_limit = usize::try_from(server.max_body_bytes).unwrap_or(usize::MAX);
        let timeout = Duration::from_secs(server.request_timeout_secs);

        let state = Arc::new(AppState {
            config: self.config.clone(),
            readiness: self.readiness,
            metrics: MetricsRegistry::global(),
        });
        let ops = Router::new()
            .route("/health", get(ops::health))
            .route("/ready", get(ops::ready))
            .route("/metrics", get(ops::metrics))
            .route("/install/agent.sh", get(crate::install::agent))
            .with_state(state);
        let token_uses = TokenUses::default();
        let deployments_changed = crate::api::DeploymentsChanged::new(
            self.deployment_loop
                .as_ref()
                .map_or_else(|| Arc::new(tokio::sync::Notify::new()), |l| l.waker()),
            self.signals.clone(),
        );
        let registries = self
            .registries
            .clone()
            .unwrap_or_else(|| crate::registry::local_artifact_registries(&self.config));
        let impersonator = self.impersonator.clone().unwrap_or_else(|| {
            Arc::new(alien_impersonation::PerCloudImpersonator::new())
                as Arc<dyn alien_impersonation::Impersonator>
        });
        let deployers =
            Arc::new(self.deployment_loop.as_ref().map(|l| l.platforms()).unwrap_or_default());
        let mut api = Router::new().route("/openapi.json", get(openapi));
        if let Some(store) = &self.store {
            let state = ApiState {
                store: store.clone(),
                config: Arc::new(self.config.clone()),
                authz: self.authz.clone(),
                impersonator: impersonator.clone(),
                deployers: deployers.clone(),
                registries: registries.clone(),
                deployments_changed: deployments_changed.clone(),
            };
            api = api.merge(crate::api::router(
                state,
                Authenticator::new(store.clone(), token_uses.clone()),
            ));
        }
        let mut raw_routes = self.raw_routes;
        if let (Some(store), Some(blobs)) = (&self.store, &self.registry) {
            let access = crate::registry::TokenRegistryAccess::new(
                Authenticator::new(store.clone(), token_uses.clone()),
                store.clone(),
                self.authz.clone(),
            );
            raw_routes.push(alien_registry::router(blobs.clone(), Arc::new(access)));
        }
        if let (Some(store), Some((engine, payloads))) = (&self.store, &self.commands) {
            let auth = Authenticator::new(store.clone(), token_uses.clone());
            let state = ApiState {
                store: store.clone(),
                config: Arc::new(self.config.clone()),
                authz: self.authz.clone(),
                impersonator: impersonator.clone(),
                deployers: deployers.clone(),
                registries: registries.clone(),
                deployments_changed: deployments_changed.clone(),
            };
            let commands = crate::api::commands::CommandsState {
                engine: engine.clone(),
                payloads: payloads.clone(),
                store: store.clone(),
                containers: Arc::new(crate::api::commands::ReleaseContainers::new(store.clone())),
                authz: self.authz.clone(),
                auth: auth.clone(),
            };
            raw_routes.push(crate::api::commands_router(commands, state, auth));
        }
        if let (Some(store), Some((ingestor, recent))) = (&self.store, &self.telemetry) {
            let auth = Authenticator::new(store.clone(), token_uses.clone());
            let state = crate::api::telemetry::TelemetryState {
                ingestor: ingestor.clone(),
                recent: recent.clone(),
                store: store.clone(),
                authz: self.authz.clone(),
            };
            raw_routes.push(crate::api::telemetry::router(state, auth));
        }
        for routes in self.api_routes {
            api = api.merge(routes);
        }
        let api = api.layer(
            ServiceBuilder::new()
                .layer(RequestBodyLimitLayer::new(body_limit))
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
                .layer(DefaultBodyLimit::max(body_limit)),
        );
        let mut app = Router::new().merge(ops).merge(api);
        for routes in raw_routes {
            app = app.merge(routes);
        }
        let router = app
            .fallback(|| async { StatusCode::NOT_FOUND })
            .method_not_allowed_fallback(|| async { StatusCode::METHOD_NOT_ALLOWED })
            .layer(
                ServiceBuilder::new()
                    .layer(SetSensitiveRequestHeadersLayer::new([axum::http::header::AUTHORIZATION]))
                    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                    .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                        let id = request
                            .headers()
                            .get(REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id)
                    }))
                    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                    .layer(axum::middleware::from_fn(track_http))
                    .layer(CompressionLayer::new().compress_when(compressible))
                    .layer(axum::middleware::from_fn(json_error_bodies))
                    .layer(CatchPanicLayer::custom(panic_response)),
            );
        let engine = self.commands.map(|(engine, _)| engine);
        let sink = self.telemetry.map(|(ingestor, _)| ingestor.sink().clone());
        Manager {
            config: self.config,
            router,
            store: self.store,
            registry: self.registry,
            engine,
            sink,
            deployment_loop: self.deployment_loop,
            heartbeat_loop: self.heartbeat_loop,
            token_uses,
        }
    }
}

/// Only JSON and text are compressed: blobs and manifests go out as stored, so their length and
/// digest headers stay true and large downloads spend no CPU on gzip.
fn compressible(
    _: StatusCode,
    _: axum::http::Version,
    headers: &axum::http::HeaderMap,
    _: &axum::http::Extensions,
) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/"))
}

async fn openapi() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], crate::api::openapi::openapi_json())
}

/// `/ready` asks the store.
struct StoreReady(Arc<dyn Store>);

#[async_trait::async_trait]
impl ReadinessCheck for StoreReady {
    fn name(&self) -> &str {
        "store"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

/// An assembled manager, ready to bind.
pub struct Manager {
    config: ManagerConfig,
    router: Router,
    store: Option<Arc<dyn Store>>,
    registry: Option<Arc<dyn alien_registry::BlobStore>>,
    engine: Option<Arc<alien_commands::CommandEngine>>,
    sink: Option<Arc<dyn alien_telemetry::TelemetrySink>>,
    deployment_loop: Option<Arc<alien_deployer::DeploymentLoop>>,
    heartbeat_loop: Option<Arc<alien_deployer::HeartbeatLoop>>,
    token_uses: TokenUses,
}

impl Manager {
    /// The application, for in-process tests and embedders.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Binds `[server] host:port`.
    pub async fn bind(self) -> Result<BoundManager, ServerError> {
        let listener = bind_listener(&self.config.server).await?;
        self.on(listener)
    }

    /// Serves on a listener bound beforehand (see [`bind_listener`]).
    pub fn on(self, listener: TcpListener) -> Result<BoundManager, ServerError> {
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: format!("{}:{}", self.config.server.host, self.config.server.port),
            source,
        })?;
        Ok(BoundManager { manager: self, listener, local_addr })
    }
}

/// Binds `host:port` of `server`. Binding before building lets a manager started with port 0
/// learn its port first, so the URLs it hands out (presigned payloads, response URLs) name it.
pub async fn bind_listener(
    server: &alien_config::ServerConfig,
) -> Result<TcpListener, ServerError> {
    let (host, port) = (&server.host, server.port);
    // An IPv6 literal needs brackets before the port.
    let addr = if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    TcpListener::bind(&addr).await.map_err(|source| ServerError::Bind { addr, source })
}

/// A manager with its listening socket.
pub struct BoundManager {
    manager: Manager,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl BoundManager {
    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// for at most `[server] shutdown-timeout-secs`, and returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let early = serve_early(self.listener, &self.manager.config.server, shutdown)?;
        early.run(self.manager).await
    }
}

/// A listener served before the manager is assembled ([`serve_early`]), so that a starting
/// process answers `GET /health` as soon as its port is bound, while the store opens and
/// migrates and the backends are probed: until [`EarlyServer::run`] hands the manager over,
/// `/health` answers 200, `/ready` and every other path 503 `UNAVAILABLE` ("starting") with
/// `Retry-After: 1`. Connections opened meanwhile are served by the manager afterwards.
pub struct EarlyServer {
    slot: Arc<std::sync::OnceLock<Router>>,
    server: tokio::task::JoinHandle<()>,
}

/// Starts serving `listener` with `server`'s connection limits and TLS; see [`EarlyServer`].
pub fn serve_early(
    listener: TcpListener,
    server: &alien_config::ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<EarlyServer, ServerError> {
    let limits = crate::connections::ConnectionLimits {
        max_connections: usize::try_from(server.max_connections).unwrap_or(usize::MAX),
        header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
        bodies: crate::connections::BodyLimits {
            idle: Duration::from_secs(server.body_idle_timeout_secs),
            min_bytes_per_sec: server.min_body_bytes_per_sec,
            grace: BODY_RATE_GRACE,
        },
    };
    let tls =
        crate::tls::Reloading::from_config(server).map_err(|e| ServerError::Tls(e.to_string()))?;
    let grace = Duration::from_secs(server.shutdown_timeout_secs);
    let slot: Arc<std::sync::OnceLock<Router>> = Arc::default();
    let router = switch_router(slot.clone());
    let server =
        tokio::spawn(crate::connections::serve(listener, router, limits, tls, shutdown, grace));
    Ok(EarlyServer { slot, server })
}

/// Hands every request to the router in `slot` once it is there; before, answers as a
/// starting manager does.
fn switch_router(slot: Arc<std::sync::OnceLock<Router>>) -> Router {
    use tower::ServiceExt as _;
    let service = tower::service_fn(move |request: Request<axum::body::Body>| {
        let slot = slot.clone();
        async move {
            match slot.get() {
                Some(router) => router.clone().oneshot(request).await,
                None => Ok(starting(request.uri().path())),
            }
        }
    });
    Router::new().fallback_service(service)
}

/// The answer of a manager that is still starting.
fn starting(path: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if path == "/health" {
        return crate::ops::healthy().into_response();
    }
    let error = alien_core::ApiError::new(
        alien_core::ErrorCode::Unavailable,
        "starting: the store and backends are not open yet",
    )
    .with_hint("retry in a moment; /ready answers 200 once the manager serves");
    let mut response = HttpError(error).into_response();
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    response
}

impl EarlyServer {
    /// Serves `manager` from now on, with its background tasks, until the shutdown given to
    /// [`serve_early`] completes; then flushes what it holds (token uses, telemetry) and
    /// returns.
    pub async fn run(self, manager: Manager) -> Result<(), ServerError> {
        self.hand_over(manager).wait().await
    }

    /// Serves `manager` from now on (every request, on old connections too) and starts its
    /// background tasks; [`Serving::wait`] waits for the shutdown.
    pub fn hand_over(self, manager: Manager) -> Serving {
        // Set once: `hand_over` takes `self`.
        let _ = self.slot.set(manager.router.clone());
        let store = manager.store.clone();
        let token_uses = manager.token_uses.clone();
        let flusher = store.as_ref().map(|s| token_uses.spawn_flusher(s.clone(), TOKEN_USE_FLUSH));
        let collector =
            manager.registry.clone().map(|blobs| spawn_registry_gc(blobs, REGISTRY_GC_EVERY));
        let reaper = manager.engine.as_ref().map(|e| e.spawn_reaper(COMMAND_REAPER_EVERY));
        let deployments = manager.deployment_loop.clone().map(|l| l.spawn());
        let heartbeats = manager.heartbeat_loop.clone().map(|l| l.spawn());
        let tasks =
            [flusher, collector, reaper, deployments, heartbeats].into_iter().flatten().collect();
        Serving { server: self.server, tasks, store, token_uses, sink: manager.sink.clone() }
    }
}

/// A manager being served ([`EarlyServer::hand_over`]).
pub struct Serving {
    server: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    store: Option<Arc<dyn Store>>,
    token_uses: TokenUses,
    sink: Option<Arc<dyn alien_telemetry::TelemetrySink>>,
}

impl Serving {
    /// Waits until the shutdown given to [`serve_early`] completed and the requests in flight
    /// finished; then stops the background tasks and flushes what the manager holds (token
    /// uses, telemetry).
    pub async fn wait(self) -> Result<(), ServerError> {
        let served = self.server.await;
        for task in self.tasks {
            task.abort();
        }
        if let Some(store) = self.store {
            self.token_uses.flush(store.as_ref()).await;
        }
        if let Some(sink) = self.sink {
            // What deployments sent and the manager acknowledged is forwarded before exit.
            let report = sink.shutdown(TELEMETRY_FLUSH).await;
            tracing::info!(?report, "telemetry forwarder flushed");
        }
        served.map_err(|e| ServerError::Serve(format!("the server task failed: {e}")))
    }
}

/// How long a request body may arrive slower than `[server] min-body-bytes-per-sec`.
const BODY_RATE_GRACE: Duration = Duration::from_secs(10);

/// How long the telemetry forwarder may take to deliver its queue at shutdown.
const TELEMETRY_FLUSH: Duration = Duration::from_secs(10);

/// How often command deadlines and lease expiries are enforced.
const COMMAND_REAPER_EVERY: Duration = Duration::from_secs(1);

/// `/ready` asks the commands KV.
struct KvReady(Arc<dyn alien_commands::Kv>);

#[async_trait::async_trait]
impl ReadinessCheck for KvReady {
    fn name(&self) -> &str {
        "commands-kv"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

/// `/ready` asks the payload store.
struct PayloadsReady(Arc<dyn alien_commands::PayloadStore>);

#[async_trait::async_trait]
impl ReadinessCheck for PayloadsReady {
    fn name(&self) -> &str {
        "commands-payloads"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

/// How often the registry's garbage is collected in the background.
const REGISTRY_GC_EVERY: Duration = Duration::from_secs(60 * 60);

/// Collects registry garbage every `every` (the first pass after one interval).
fn spawn_registry_gc(
    blobs: Arc<dyn alien_registry::BlobStore>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = std::time::SystemTime::now();
            match alien_registry::gc::collect_garbage(
                blobs.as_ref(),
                now,
                alien_registry::gc::DEFAULT_GRACE,
                alien_registry::gc::DEFAULT_UPLOAD_TTL,
            )
            .await
            {
                Ok(report) => tracing::info!(?report, "registry garbage collected"),
                Err(err) => tracing::warn!(error = %err, "registry garbage collection failed"),
            }
        }
    })
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called, not
/// when the future is first polled, so call it before announcing readiness: a signal that comes
/// right after must not find the default action (which kills the process) still in place.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            let term = async {
                match term {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match int {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = int => tracing::info!("received SIGINT"),
                () = term => tracing::info!("received SIGTERM"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("received Ctrl-C");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test: a failed unwrap is a failed test")]
    use std::time::SystemTime;

    use alien_registry::{BlobStore, Digest, ObjectBlobStore};
    use futures_util::StreamExt;

    use super::*;

    async fn upload(store: &dyn BlobStore, data: &'static [u8]) -> Digest {
        let id = store.start_upload().await.unwrap();
        let body = futures_util::stream::iter(vec![Ok(bytes::Bytes::from_static(data))]).boxed();
        store.append_upload(&id, 0, body, None).await.unwrap();
        let digest = Digest::sha256_of(data);
        store.finish_upload(&id, &digest).await.unwrap();
        digest
    }

    /// The background pass removes a blob unreferenced for longer than the grace period and
    /// keeps a fresh one (a push in progress), without anyone asking.
    #[tokio::test]
    async fn the_background_pass_collects_old_unreferenced_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ObjectBlobStore::local(dir.path()).unwrap());
        let old = upload(store.as_ref(), b"unreferenced for two hours").await;
        let fresh = upload(store.as_ref(), b"just pushed").await;
        let file = dir.path().join(format!("blobs/sha256/{}", old.hex()));
        let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 60 * 60);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();

        let collector = spawn_registry_gc(store.clone(), Duration::from_millis(50));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while store.blob_size(&old).await.unwrap().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "no background pass removed the old blob"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        collector.abort();
        assert!(store.blob_size(&fresh).await.unwrap().is_some(), "a fresh blob stays");
    }
}
