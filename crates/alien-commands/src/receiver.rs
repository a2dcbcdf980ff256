//! The receiver library (feature `receiver`): what runs in (or beside) a container to execute the
//! commands vendors send it. Register handlers by command name, then [`Receiver::run`] long-polls
//! `POST {commands_url}/commands/leases` for as many commands as it has free capacity, runs each
//! handler under a budget of `min(deadline, leaseExpiresAt - 5 s)`, and submits the response to
//! the envelope's presigned `submitResponseUrl` (inline up to `maxInlineBytes`, otherwise uploaded
//! to `storageUploadRequest` first). Failures become error responses with the codes
//! [`UNKNOWN_COMMAND`], [`HANDLER_ERROR`], [`HANDLER_TIMEOUT`], [`PARAMS_UNAVAILABLE`] and
//! [`RESPONSE_UPLOAD_FAILED`]. A manager that cannot be reached is retried with backoff, never
//! fatal; on shutdown the receiver stops leasing, lets running handlers finish within their
//! budgets, submits their responses and returns.
//!
//! ```no_run
//! use alien_commands::receiver::{CommandContext, HandlerError, Receiver, ReceiverConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! Receiver::new(ReceiverConfig::from_env()?)
//!     .handle("echo", |ctx: CommandContext| async move { Ok::<_, HandlerError>(ctx.into_params()) })
//!     .run(tokio::signal::ctrl_c())
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod transport;

/// Points the envelope's manager-issued URLs (response submission, payload GET and PUT) at the
/// address this receiver reaches the manager at, when they name a loopback host and
/// `ALIEN_COMMANDS_URL` does not: a manager on `http://localhost:8080` signs URLs for itself, while
/// a container on the same machine reaches it at the host gateway (`10.0.2.2`,
/// `host.docker.internal`). Signatures cover the path and query, not the host, so they still hold.
fn reach_through(envelope: &mut Envelope, commands_url: &str) {
    let Ok(base) = reqwest::Url::parse(commands_url) else { return };
    if is_loopback(&base) {
        return;
    }
    let rewrite = |url: &mut String| {
        if let Ok(mut parsed) = reqwest::Url::parse(url)
            && is_loopback(&parsed)
            && parsed.set_scheme(base.scheme()).is_ok()
            && parsed.set_host(base.host_str()).is_ok()
            && parsed.set_port(base.port()).is_ok()
        {
            *url = parsed.to_string();
        }
    };
    let handling = &mut envelope.response_handling;
    rewrite(&mut handling.submit_response_url);
    rewrite(&mut handling.storage_upload_request.backend.url);
    if let BodySpec::Storage { storage_get_request: Some(get), .. } = &mut envelope.params {
        rewrite(&mut get.backend.url);
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use alien_core::command::wire::{
    BodySpec, CommandResponse, CommandTarget, Envelope, Lease, LeaseRequest, LeaseResponse,
};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;

use transport::{TransportError, error_chain};

/// Error code: no handler is registered for the command's name.
pub const UNKNOWN_COMMAND: &str = "UNKNOWN_COMMAND";
/// Error code: the handler returned an error (or panicked).
pub const HANDLER_ERROR: &str = "HANDLER_ERROR";
/// Error code: the handler did not finish within its budget.
pub const HANDLER_TIMEOUT: &str = "HANDLER_TIMEOUT";
/// Error code: the parameters could not be downloaded or decoded.
pub const PARAMS_UNAVAILABLE: &str = "PARAMS_UNAVAILABLE";
/// Error code: a large output could not be uploaded to the envelope's `storageUploadRequest`.
pub const RESPONSE_UPLOAD_FAILED: &str = "RESPONSE_UPLOAD_FAILED";

/// How long before its lease ends a handler's budget ends, so the response lands in time.
pub const LEASE_SAFETY_MARGIN: Duration = Duration::from_secs(5);
/// Most commands one lease request may ask for (the manager's limit).
const MAX_LEASES_PER_REQUEST: usize = 100;
/// Longest long poll the manager accepts.
const MAX_WAIT_SECONDS: u64 = 30;
/// Extra time a long poll's HTTP request gets beyond `waitSeconds`.
const LEASE_REQUEST_SLACK: Duration = Duration::from_secs(15);
/// TCP connect timeout of every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after an empty answer that came back well before `waitSeconds` (a manager that does not
/// long-poll), so the receiver does not spin.
const IDLE_PAUSE: Duration = Duration::from_secs(1);

/// Why a receiver could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// A required environment variable is not set (or empty).
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    /// An environment variable holds something unusable.
    #[error("environment variable {var}: {message}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A configuration value is out of range.
    #[error("receiver configuration: {field}: {message}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the receiver's HTTP client: {0}")]
    Client(String),
}

/// How requests that can be repeated are retried (response submissions, payload transfers) and
/// how lease requests back off while the manager is unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (lease requests retry without limit).
    pub attempts: u32,
    /// Delay before the first retry; it doubles each retry.
    pub initial_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// Where the receiver leases commands and how it runs them.
#[derive(Clone)]
pub struct ReceiverConfig {
    /// The manager's API base, e.g. `http://host:port/v1` (`ALIEN_COMMANDS_URL`).
    pub commands_url: String,
    /// The deployment's token, sent as a bearer token on lease requests (`ALIEN_COMMANDS_TOKEN`).
    pub token: String,
    /// The deployment (`ALIEN_DEPLOYMENT_ID`).
    pub deployment_id: String,
    /// The container this receiver serves (`ALIEN_COMMANDS_TARGET_RESOURCE_ID` and `_TYPE`).
    pub target: CommandTarget,
    /// Most handlers running at once (default 4).
    pub capacity: usize,
    /// Lease length asked for, in seconds, 6..=3600 (default 60); budgets end 5 s before it.
    pub lease_seconds: u64,
    /// Long-poll wait, in seconds, 0..=30 (default 20).
    pub wait_seconds: u64,
    /// Retries and backoff.
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for ReceiverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverConfig")
            .field("commands_url", &self.commands_url)
            .field("token", &"<redacted>")
            .field("deployment_id", &self.deployment_id)
            .field("target", &self.target)
            .field("capacity", &self.capacity)
            .field("lease_seconds", &self.lease_seconds)
            .field("wait_seconds", &self.wait_seconds)
            .field("retry", &self.retry)
            .finish()
    }
}

/// The environment variables [`ReceiverConfig::from_env`] reads.
pub mod env {
    /// The manager's API base, e.g. `http://host:port/v1`.
    pub const COMMANDS_URL: &str = "ALIEN_COMMANDS_URL";
    /// The deployment's token.
    pub const COMMANDS_TOKEN: &str = "ALIEN_COMMANDS_TOKEN";
    /// The deployment id.
    pub const DEPLOYMENT_ID: &str = "ALIEN_DEPLOYMENT_ID";
    /// The container's resource id.
    pub const TARGET_RESOURCE_ID: &str = "ALIEN_COMMANDS_TARGET_RESOURCE_ID";
    /// The container's resource type (default `container`).
    pub const TARGET_RESOURCE_TYPE: &str = "ALIEN_COMMANDS_TARGET_RESOURCE_TYPE";
}

impl ReceiverConfig {
    /// A configuration with the default capacity (4), lease (60 s), wait (20 s) and retries.
    pub fn new(
        commands_url: impl Into<String>,
        token: impl Into<String>,
        deployment_id: impl Into<String>,
        target: CommandTarget,
    ) -> Self {
        Self {
            commands_url: commands_url.into().trim_end_matches('/').to_owned(),
            token: token.into(),
            deployment_id: deployment_id.into(),
            target,
            capacity: 4,
            lease_seconds: 60,
            wait_seconds: 20,
            retry: RetryPolicy::default(),
        }
    }

    /// Reads `ALIEN_COMMANDS_URL`, `ALIEN_COMMANDS_TOKEN`, `ALIEN_DEPLOYMENT_ID`,
    /// `ALIEN_COMMANDS_TARGET_RESOURCE_ID` and `ALIEN_COMMANDS_TARGET_RESOURCE_TYPE` (default
    /// `container`); an error names the variable that is missing or wrong.
    pub fn from_env() -> Result<Self, ReceiverError> {
        Self::from_vars(|var| match std::env::var(var) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(ReceiverError::InvalidEnv { var, message: "is not valid UTF-8".into() })
            }
        })
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    fn from_vars<F>(get: F) -> Result<Self, ReceiverError>
    where
        F: Fn(&'static str) -> Result<Option<String>, ReceiverError>,
    {
        let optional = |var: &'static str| -> Result<Option<String>, ReceiverError> {
            Ok(get(var)?.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()))
        };
        let required = |var: &'static str| optional(var)?.ok_or(ReceiverError::MissingEnv(var));
        let commands_url = required(env::COMMANDS_URL)?;
        if !(commands_url.starts_with("http://") || commands_url.starts_with("https://")) {
            return Err(ReceiverError::InvalidEnv {
                var: env::COMMANDS_URL,
                message: format!(
                    "expected an http(s) URL like http://host:port/v1, got {commands_url:?}"
                ),
            });
        }
        let config = Self::new(
            commands_url,
            required(env::COMMANDS_TOKEN)?,
            required(env::DEPLOYMENT_ID)?,
            CommandTarget {
                resource_id: required(env::TARGET_RESOURCE_ID)?,
                resource_type: optional(env::TARGET_RESOURCE_TYPE)?
                    .unwrap_or_else(|| "container".to_owned()),
            },
        );
        Ok(config)
    }

    /// Checks the ranges the manager and the budget rule need.
    fn validate(&self) -> Result<(), ReceiverError> {
        let invalid = |field, message: &str| {
            Err(ReceiverError::InvalidConfig { field, message: message.into() })
        };
        if !(self.commands_url.starts_with("http://") || self.commands_url.starts_with("https://"))
        {
            return invalid("commands_url", "must be an http(s) URL like http://host:port/v1");
        }
        if self.capacity == 0 {
            return invalid("capacity", "must be at least 1");
        }
        if !(LEASE_SAFETY_MARGIN.as_secs() + 1..=3600).contains(&self.lease_seconds) {
            return invalid(
                "lease_seconds",
                "must be 6..=3600 (budgets end 5 s before the lease does)",
            );
        }
        if self.wait_seconds > MAX_WAIT_SECONDS {
            return invalid("wait_seconds", "must be 0..=30");
        }
        Ok(())
    }
}

/// What a handler returns instead of output; submitted as `HANDLER_ERROR` with its message and
/// details.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    message: String,
    details: Option<serde_json::Value>,
}

impl HandlerError {
    /// An error with this message.
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self { message: message.to_string(), details: None }
    }

    /// Adds machine-readable details (the response's `details`).
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The details, if any.
    pub fn details(&self) -> Option<&serde_json::Value> {
        self.details.as_ref()
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        Self { message, details: None }
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// One leased command, as its handler sees it.
#[derive(Debug, Clone)]
pub struct CommandContext {
    command_id: String,
    command: String,
    deployment_id: String,
    target: CommandTarget,
    attempt: u32,
    params: Vec<u8>,
    deadline: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
    budget_ends: Instant,
}

impl CommandContext {
    /// The command's id (`cmd_...`).
    pub fn command_id(&self) -> &str {
        &self.command_id
    }

    /// The command's name (the handler's key).
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The deployment it runs on.
    pub fn deployment_id(&self) -> &str {
        &self.deployment_id
    }

    /// The container it runs in.
    pub fn target(&self) -> &CommandTarget {
        &self.target
    }

    /// Delivery attempt, 1 for the first (delivery is at least once: a handler may see a command
    /// again after a lease ran out).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The parameters, already downloaded when they were in storage.
    pub fn params(&self) -> &[u8] {
        &self.params
    }

    /// The parameters, by value.
    pub fn into_params(self) -> Vec<u8> {
        self.params
    }

    /// The command's deadline, if it has one.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        self.deadline
    }

    /// When the lease ends (the command is redelivered after that if no response arrived).
    pub fn lease_expires_at(&self) -> Option<DateTime<Utc>> {
        self.lease_expires_at
    }

    /// When the budget ends: `min(deadline, leaseExpiresAt - 5 s)`; the handler is dropped then.
    pub fn budget_ends(&self) -> Instant {
        self.budget_ends
    }

    /// Time left in the budget.
    pub fn remaining(&self) -> Duration {
        self.budget_ends.saturating_duration_since(Instant::now())
    }

    /// Whether the budget is spent.
    pub fn is_cancelled(&self) -> bool {
        Instant::now() >= self.budget_ends
    }

    /// Completes when the budget is spent (to stop work the handler started elsewhere, e.g. in
    /// `spawn_blocking`, which dropping the handler does not stop).
    pub async fn cancelled(&self) {
        tokio::time::sleep_until(self.budget_ends).await;
    }
}

/// A handler's future.
type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, HandlerError>> + Send>>;
/// A registered handler.
type Handler = Arc<dyn Fn(CommandContext) -> HandlerFuture + Send + Sync>;

/// A receiver: handlers by command name, and the lease loop.
pub struct Receiver {
    config: ReceiverConfig,
    handlers: HashMap<String, Handler>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.handlers.keys().collect();
        names.sort();
        f.debug_struct("Receiver").field("config", &self.config).field("handlers", &names).finish()
    }
}

impl Receiver {
    /// A receiver with no handlers yet.
    pub fn new(config: ReceiverConfig) -> Self {
        Self { config, handlers: HashMap::new() }
    }

    /// Registers `handler` for commands named `command` (replacing an earlier one). It gets a
    /// [`CommandContext`] and returns the output bytes or a [`HandlerError`].
    pub fn handle<F, Fut>(mut self, command: impl Into<String>, handler: F) -> Self
    where
        F: Fn(CommandContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, HandlerError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |ctx| Box::pin(handler(ctx)) as HandlerFuture);
        self.handlers.insert(command.into(), handler);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ReceiverConfig {
        &self.config
    }

    /// Leases and runs commands until `shutdown` completes, then drains: no new leases, running
    /// handlers finish within their budgets and their responses are submitted before it returns.
    /// Only an invalid configuration is an error; an unreachable manager is retried with backoff.
    pub async fn run<S: Future>(self, shutdown: S) -> Result<(), ReceiverError> {
        self.config.validate()?;
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ReceiverError::Client(error_chain(&e)))?;
        let capacity = self.config.capacity;
        let shared = Arc::new(Shared { config: self.config, handlers: self.handlers, client });
        let permits = Arc::new(Semaphore::new(capacity));
        let mut tasks = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failures: u32 = 0;
        tracing::info!(
            deployment = %shared.config.deployment_id,
            target = %shared.config.target.resource_id,
            capacity,
            "command receiver started"
        );
        loop {
            while let Some(done) = tasks.try_join_next() {
                log_task_end(done);
            }
            // A free slot first: maxLeases is what is free once one is.
            let first = tokio::select! {
                biased;
                () = wait_for(&mut shutdown) => break,
                permit = permits.clone().acquire_owned() => permit,
            };
            let Ok(first) = first else { break };
            let free = (1 + permits.available_permits()).min(MAX_LEASES_PER_REQUEST);
            let asked_at = Instant::now();
            let leased = tokio::select! {
                biased;
                leased = shared.lease(free) => leased,
                () = wait_for(&mut shutdown) => break,
            };
            match leased {
                Ok(leases) if leases.is_empty() => {
                    failures = 0;
                    drop(first);
                    // No long poll (waitSeconds 0, or a manager that answers at once): pause.
                    let wait = Duration::from_secs(shared.config.wait_seconds);
                    if wait.is_zero() || asked_at.elapsed() < wait / 2 {
                        tokio::select! {
                            biased;
                            () = wait_for(&mut shutdown) => break,
                            () = tokio::time::sleep(IDLE_PAUSE) => {}
                        }
                    }
                }
                Ok(leases) => {
                    failures = 0;
                    let received_at = Instant::now();
                    let mut first = Some(first);
                    for lease in leases {
                        let permit = match first.take() {
                            Some(permit) => permit,
                            None => match permits.clone().try_acquire_owned() {
                                Ok(permit) => permit,
                                // The manager never returns more than asked; if it did, wait.
                                Err(_) => match permits.clone().acquire_owned().await {
                                    Ok(permit) => permit,
                                    Err(_) => break,
                                },
                            },
                        };
                        let span = tracing::info_span!(
                            "command",
                            command_id = %lease.command_id,
                            command = %lease.envelope.command,
                            attempt = lease.attempt,
                        );
                        tasks.spawn(
                            shared.clone().process(lease, received_at, permit).instrument(span),
                        );
                    }
                }
                Err(err) => {
                    drop(first);
                    let delay = shared.config.retry.delay(failures.min(30));
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %err, failures, ?delay, "lease request failed; retrying");
                    tokio::select! {
                        biased;
                        () = wait_for(&mut shutdown) => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        if !tasks.is_empty() {
            tracing::info!(running = tasks.len(), "command receiver draining");
        }
        while let Some(done) = tasks.join_next().await {
            log_task_end(done);
        }
        tracing::info!("command receiver stopped");
        Ok(())
    }
}

/// Completes when `shutdown` does, whatever it yields.
async fn wait_for<S: Future>(shutdown: &mut Pin<&mut S>) {
    shutdown.as_mut().await;
}

/// Logs a processing task that panicked (processing itself never panics on purpose).
fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(err) = done {
        tracing::error!(error = %err, "command processing task failed");
    }
}

/// What the lease loop and the processing tasks share.
struct Shared {
    config: ReceiverConfig,
    handlers: HashMap<String, Handler>,
    client: reqwest::Client,
}

/// What came of running a command.
enum Outcome {
    /// The handler's output.
    Output(Vec<u8>),
    /// An error response.
    Failed(CommandResponse),
}

fn failure(code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Failed(CommandResponse::Error {
        code: code.to_owned(),
        message: message.into(),
        details: None,
    })
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// When a handler's budget ends: `min(deadline, leaseExpiresAt - margin)`, with the lease end
/// also bounded by `received + lease_seconds - margin` on the local monotonic clock (so a
/// receiver whose wall clock lags the manager's cannot overrun its lease). Wall-clock times are
/// turned into instants relative to (`now`, `now_wall`).
fn budget_end(
    received: Instant,
    lease_seconds: u64,
    lease_expires_at: Option<DateTime<Utc>>,
    deadline: Option<DateTime<Utc>>,
    now: Instant,
    now_wall: DateTime<Utc>,
) -> Instant {
    let until = |at: DateTime<Utc>, minus: Duration| {
        let left = (at - now_wall).to_std().unwrap_or(Duration::ZERO);
        now + left.saturating_sub(minus)
    };
    let mut end = received + Duration::from_secs(lease_seconds).saturating_sub(LEASE_SAFETY_MARGIN);
    if let Some(expires) = lease_expires_at {
        end = end.min(until(expires, LEASE_SAFETY_MARGIN));
    }
    if let Some(deadline) = deadline {
        end = end.min(until(deadline, Duration::ZERO));
    }
    end
}

/// The message of a handler task that did not complete.
fn join_failure(err: tokio::task::JoinError) -> String {
    if err.is_panic() {
        let payload = err.into_panic();
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-text panic".to_owned());
        format!("the handler panicked: {text}")
    } else {
        "the handler was cancelled".to_owned()
    }
}

impl Shared {
    /// One lease request (a long poll of `wait_seconds`).
    async fn lease(&self, max: usize) -> Result<Vec<Lease>, String> {
        let request = LeaseRequest {
            deployment_id: self.config.deployment_id.clone(),
            target: self.config.target.clone(),
            max_leases: Some(u32::try_from(max).unwrap_or(1)),
            lease_seconds: Some(self.config.lease_seconds),
            wait_seconds: Some(self.config.wait_seconds),
        };
        let url = format!("{}/commands/leases", self.config.commands_url);
        let response = self
            .client
            .post(&url)
            .bearer_auth(&self.config.token)
            .timeout(Duration::from_secs(self.config.wait_seconds) + LEASE_REQUEST_SLACK)
            .json(&request)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {}", error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = transport::snippet(response).await;
            if status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN
            {
                tracing::error!(%status, body, "the manager refuses this receiver's token");
            }
            return Err(format!("POST {url}: HTTP {}: {body}", status.as_u16()));
        }
        let parsed: LeaseResponse = response
            .json()
            .await
            .map_err(|e| format!("POST {url}: bad answer: {}", error_chain(&e)))?;
        Ok(parsed.leases)
    }

    /// Runs one leased command and submits its response.
    async fn process(
        self: Arc<Self>,
        lease: Lease,
        received: Instant,
        permit: OwnedSemaphorePermit,
    ) {
        let lease_expires_at = parse_time(&lease.lease_expires_at);
        if lease_expires_at.is_none() {
            tracing::warn!(lease_expires_at = %lease.lease_expires_at, "unreadable lease expiry");
        }
        let mut envelope = lease.envelope;
        reach_through(&mut envelope, &self.config.commands_url);
        let deadline = envelope.deadline.as_deref().and_then(|d| {
            let parsed = parse_time(d);
            if parsed.is_none() {
                tracing::warn!(deadline = d, "unreadable deadline; ignored");
            }
            parsed
        });
        let budget_ends = budget_end(
            received,
            self.config.lease_seconds,
            lease_expires_at,
            deadline,
            Instant::now(),
            Utc::now(),
        );
        let outcome = self.execute(&envelope, lease_expires_at, deadline, budget_ends).await;
        // The slot is free once the handler is done; submitting does not hold it.
        drop(permit);
        self.respond(&envelope, outcome).await;
    }

    /// Fetches the parameters and runs the handler under its budget.
    async fn execute(
        &self,
        envelope: &Envelope,
        lease_expires_at: Option<DateTime<Utc>>,
        deadline: Option<DateTime<Utc>>,
        budget_ends: Instant,
    ) -> Outcome {
        let Some(handler) = self.handlers.get(&envelope.command) else {
            let mut known: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
            known.sort_unstable();
            return failure(
                UNKNOWN_COMMAND,
                format!(
                    "no handler for command {:?}; this receiver handles {known:?}",
                    envelope.command
                ),
            );
        };
        if Instant::now() >= budget_ends {
            return failure(
                HANDLER_TIMEOUT,
                "no time left to run the handler: the deadline or the lease (minus 5 s) has passed",
            );
        }
        let params = match tokio::time::timeout_at(budget_ends, self.params(&envelope.params)).await
        {
            Err(_) => {
                return failure(HANDLER_TIMEOUT, "the budget ran out while downloading the params");
            }
            Ok(Err(message)) => return failure(PARAMS_UNAVAILABLE, message),
            Ok(Ok(params)) => params,
        };
        let ctx = CommandContext {
            command_id: envelope.command_id.clone(),
            command: envelope.command.clone(),
            deployment_id: envelope.deployment_id.clone(),
            target: envelope.target.clone(),
            attempt: envelope.attempt,
            params,
            deadline,
            lease_expires_at,
            budget_ends,
        };
        let budget = budget_ends.saturating_duration_since(Instant::now());
        let mut task = tokio::spawn(handler(ctx));
        match tokio::time::timeout_at(budget_ends, &mut task).await {
            Err(_) => {
                task.abort();
                failure(
                    HANDLER_TIMEOUT,
                    format!(
                        "the handler did not finish within its budget of {} ms (the deadline, or the lease end minus 5 s)",
                        budget.as_millis()
                    ),
                )
            }
            Ok(Err(err)) => failure(HANDLER_ERROR, join_failure(err)),
            Ok(Ok(Err(err))) => Outcome::Failed(CommandResponse::Error {
                code: HANDLER_ERROR.to_owned(),
                message: err.message,
                details: err.details,
            }),
            Ok(Ok(Ok(output))) => Outcome::Output(output),
        }
    }

    /// The parameter bytes, decoded or downloaded.
    async fn params(&self, params: &BodySpec) -> Result<Vec<u8>, String> {
        match params {
            BodySpec::Inline { inline_base64 } => base64::engine::general_purpose::STANDARD
                .decode(inline_base64)
                .map_err(|e| format!("the inline params are not base64: {e}")),
            BodySpec::Storage { size, storage_get_request: Some(get), .. } => {
                let bytes = transport::download(
                    &self.client,
                    &self.config.retry,
                    get,
                    "downloading the params",
                )
                .await
                .map_err(|e| e.to_string())?;
                if bytes.len() as u64 != *size {
                    return Err(format!(
                        "the params download holds {} bytes, the envelope says {size}",
                        bytes.len()
                    ));
                }
                Ok(bytes.to_vec())
            }
            BodySpec::Storage { storage_get_request: None, .. } => {
                Err("the params are in storage but the envelope has no storageGetRequest".into())
            }
        }
    }

    /// Turns the outcome into a response (uploading large output) and submits it.
    async fn respond(&self, envelope: &Envelope, outcome: Outcome) {
        let handling = &envelope.response_handling;
        let response = match outcome {
            Outcome::Failed(response) => response,
            Outcome::Output(output) if output.len() as u64 <= handling.max_inline_bytes => {
                CommandResponse::Success {
                    response: BodySpec::Inline {
                        inline_base64: base64::engine::general_purpose::STANDARD.encode(&output),
                    },
                }
            }
            Outcome::Output(output) => {
                let size = output.len() as u64;
                match transport::upload(
                    &self.client,
                    &self.config.retry,
                    &handling.storage_upload_request,
                    Bytes::from(output),
                    "uploading the response",
                )
                .await
                {
                    Ok(()) => CommandResponse::Success {
                        response: BodySpec::Storage {
                            size,
                            storage_get_request: None,
                            storage_put_used: Some(true),
                        },
                    },
                    Err(err) => {
                        tracing::warn!(error = %err, size, "response upload failed");
                        CommandResponse::Error {
                            code: RESPONSE_UPLOAD_FAILED.to_owned(),
                            message: format!("the {size}-byte output could not be stored: {err}"),
                            details: None,
                        }
                    }
                }
            }
        };
        if let CommandResponse::Error { code, message, .. } = &response {
            tracing::info!(code, message, "command failed");
        }
        match transport::submit(
            &self.client,
            &self.config.retry,
            &handling.submit_response_url,
            &response,
            "submitting the response",
        )
        .await
        {
            Ok(()) => tracing::debug!("response submitted"),
            Err(err @ TransportError::Refused { .. }) => {
                tracing::warn!(error = %err, "the manager refused the response");
            }
            Err(err) => tracing::error!(
                error = %err,
                "response lost; the command is redelivered when its lease runs out"
            ),
        }
    }
}
