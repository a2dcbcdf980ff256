//! The pull-mode agent's sync loop ([`Agent`], spec/deployer.md "Pull mode: agents"). The agent
//! runs in the customer environment, registers its deployment with a deployment-group token
//! (`POST /v1/initialize`) or uses a deployment token directly, then syncs every interval
//! (`POST /v1/sync`): it reports what it runs and gets back the release it should run, which it
//! applies with an [`AgentPlatform`], the same
//! [`PlatformDeployer`](alien_deployer::PlatformDeployer) the manager uses in push mode. It talks
//! to the manager over HTTP only: it never opens the manager's store, and links no database or
//! command engine.
//!
//! Everything it needs to resume lives in its state directory (mode 0700): the deployment token
//! (`deployment.token`, 0600) and `agent.json` (0600: the target carries decrypted variables), written
//! after every step. A restarted agent re-reads both and adopts what runs; a manager outage only
//! delays its reports (it keeps running and refreshing what it runs, and retries with backoff).
//!
//! Retries and redeploys: after a failed apply the agent keeps reporting the failure and does not
//! apply that release again until the manager's status leaves the failed one (a user's `retry`
//! or `redeploy`), or a different release is targeted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alien_client::{ApiKey, Client, ClientError};
use alien_core::sync::{
    AgentState, InitializeRequest, Initialized, SyncRequest, SyncResponse, SyncTarget,
};
use alien_core::{Deployment, DeploymentEvent, DeploymentStatus, Id, Platform, TokenType};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use alien_deployer::AgentPlatform;
use alien_deployer::{
    Credentials, DeployRequest, StepOutcome, reachable_from_containers, stack_env,
};

/// How the agent runs.
#[derive(Clone)]
pub struct AgentOptions {
    /// The manager's URL as the agent reaches it.
    pub manager_url: String,
    /// A deployment-group token (registers with `name`) or a deployment token.
    pub token: String,
    /// The deployment's name in its group (needed with a group token).
    pub name: Option<String>,
    /// Where the token and the agent's state are kept.
    pub state_dir: PathBuf,
    /// Time between syncs (the heartbeat the manager expects).
    pub interval: Duration,
    /// The platform it deploys to.
    pub platform: Platform,
}

impl std::fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentOptions")
            .field("manager_url", &self.manager_url)
            .field("name", &self.name)
            .field("state_dir", &self.state_dir)
            .field("interval", &self.interval)
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

/// Why the agent stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A usage or configuration problem (bad token, missing name, unreadable state dir).
    #[error("{0}")]
    Config(String),
    /// The manager refused the agent for good (token revoked, deployment forgotten).
    #[error("{0}")]
    Refused(String),
    /// The state directory could not be written.
    #[error("state directory: {0}")]
    State(String),
}

/// How [`Agent::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentExit {
    /// Asked to stop: what runs keeps running; a restart resumes.
    Shutdown,
    /// The deployment was deleted and everything it ran removed.
    Deleted,
}

/// What goes wrong talking to the manager.
#[derive(Debug)]
enum CallError {
    /// No answer, or a 5xx / 429: try again later.
    Transient(String),
    /// A 4xx answer, with its status and message.
    Refused { status: u16, message: String },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transient(m) => write!(f, "{m}"),
            Self::Refused { status, message } => write!(f, "{status}: {message}"),
        }
    }
}

impl From<ClientError> for CallError {
    fn from(error: ClientError) -> Self {
        match error.status() {
            Some(status) if !error.is_transient() => {
                CallError::Refused { status, message: error.to_string() }
            }
            _ => CallError::Transient(error.to_string()),
        }
    }
}

/// What the agent keeps in `agent.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    deployment_id: Id,
    /// The deployment as the manager described it (its id and name go into container env).
    #[serde(default)]
    deployment: Option<Deployment>,
    /// What the agent reports: status, release, platform state, error.
    report: AgentState,
    /// The release being applied, or the last one applied.
    #[serde(default)]
    target: Option<SyncTarget>,
    /// A release whose apply failed: not applied again until the manager asks.
    #[serde(default)]
    failed_release: Option<Id>,
}

impl Saved {
    /// A registered agent that runs nothing yet.
    fn new(deployment_id: Id, platform: Platform) -> Saved {
        let report = AgentState {
            status: DeploymentStatus::Pending,
            platform,
            current_release: None,
            stack_state: None,
            error: None,
        };
        Saved { deployment_id, deployment: None, report, target: None, failed_release: None }
    }

    /// Records the outcome of an apply or (`destroying`) destroy step begun while the agent
    /// reported `before`. `Some(wait)`: step again after it; `None`: the work is over.
    fn record(
        &mut self,
        before: DeploymentStatus,
        destroying: bool,
        outcome: StepOutcome,
    ) -> Option<Duration> {
        match outcome {
            StepOutcome::Done { state } => {
                self.report.stack_state = Some(state);
                self.report.error = None;
                if destroying {
                    self.report.status = DeploymentStatus::Deleted;
                } else {
                    self.report.status = DeploymentStatus::Running;
                    self.report.current_release = self
                        .target
                        .as_ref()
                        .map(|t| alien_core::sync::ReleaseRef { release_id: t.release_id.clone() });
                }
                None
            }
            StepOutcome::Wait { state, wait } => {
                self.report.stack_state = Some(state);
                Some(wait)
            }
            StepOutcome::Failed { state, error } => {
                if state.is_some() {
                    self.report.stack_state = state;
                }
                tracing::warn!(code = %error.code, resource = ?error.resource_id, message = %error.message, "step failed");
                // The status it reported when the work began (provisioning, updating, deleting)
                // fails as the transition table says.
                self.report.status = match before.transition(DeploymentEvent::StepFailed) {
                    Ok(failed) => failed,
                    Err(refused) => {
                        tracing::warn!(%refused, "a failed step from a status that was not work");
                        before
                    }
                };
                self.report.error = Some(error);
                if !destroying {
                    self.failed_release = self.target.as_ref().map(|t| t.release_id.clone());
                }
                None
            }
        }
    }
}

/// What the agent does between syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Idle,
    Apply,
    Destroy,
}

/// What a sync answer asks of the agent.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    /// Nothing new: keep going.
    Keep,
    /// Apply this release (start, or go on).
    Apply(Box<SyncTarget>),
    /// Remove everything.
    Destroy,
    /// Stop working: a failed operation waits for a user's retry.
    Hold,
}

/// What to do after a sync, from what the agent reports and what the manager answered.
fn decide(saved: &Saved, work: Work, answer: &SyncResponse) -> Decision {
    use DeploymentStatus as S;
    let manager = answer.current_state.status;
    if matches!(manager, S::DeletePending | S::Deleting | S::DeleteFailed) {
        let failed_here = saved.report.status == S::DeleteFailed && manager == S::DeleteFailed;
        return if failed_here { Decision::Hold } else { Decision::Destroy };
    }
    let Some(target) = &answer.target else {
        return if work == Work::Destroy { Decision::Hold } else { Decision::Keep };
    };
    let failed_before = saved.failed_release.as_ref() == Some(&target.release_id);
    if failed_before && manager.is_failed() {
        return Decision::Hold;
    }
    let same = saved.target.as_ref() == Some(target);
    if work == Work::Apply && same {
        return Decision::Keep;
    }
    Decision::Apply(Box::new(target.clone()))
}

/// The pull-mode agent.
pub struct Agent {
    options: AgentOptions,
    /// Events to report with the next sync (the platform's autoscaling steps).
    events: EventQueue,
    /// Calls the manager with the deployment token.
    client: Client,
    platform: Arc<dyn AgentPlatform>,
    token: String,
    saved: Saved,
    work: Work,
    next_sync: Instant,
    next_step: Instant,
    failures: u32,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("deployment", &self.saved.deployment_id)
            .field("status", &self.saved.report.status)
            .field("work", &self.work)
            .finish_non_exhaustive()
    }
}

const TOKEN_FILE: &str = "deployment.token";
const STATE_FILE: &str = "agent.json";

/// Events an agent reports with its next sync ([`SyncRequest::events`]): filled by the
/// platform (its autoscaler), emptied by each sync, put back when the sync fails. Bounded: past
/// [`EventQueue::CAPACITY`] the oldest are dropped.
#[derive(Clone, Default, Debug)]
pub struct EventQueue(
    Arc<std::sync::Mutex<std::collections::VecDeque<alien_core::sync::SyncEvent>>>,
);

impl EventQueue {
    /// Most events kept between syncs.
    pub const CAPACITY: usize = 1000;

    /// Queues `event` for the next sync.
    pub fn push(&self, event: alien_core::sync::SyncEvent) {
        let mut queue = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if queue.len() >= Self::CAPACITY {
            queue.pop_front();
            tracing::warn!("more events than a sync can catch up with; dropping the oldest");
        }
        queue.push_back(event);
    }

    /// The oldest events, as many as one sync carries.
    fn take(&self) -> Vec<alien_core::sync::SyncEvent> {
        let mut queue = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = queue.len().min(alien_core::sync::MAX_SYNC_EVENTS);
        queue.drain(..n).collect()
    }

    /// Puts events a failed sync did not deliver back in front.
    fn put_back(&self, events: Vec<alien_core::sync::SyncEvent>) {
        let mut queue = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for event in events.into_iter().rev() {
            queue.push_front(event);
        }
        while queue.len() > Self::CAPACITY {
            queue.pop_back();
        }
    }
}

impl Agent {
    /// Reports what `events` collects with each sync.
    #[must_use]
    pub fn with_events(mut self, events: EventQueue) -> Self {
        self.events = events;
        self
    }

    /// Opens the state directory and, on a first start, registers with the manager (retrying
    /// while it is unreachable). A token or name the manager refuses is an error at once.
    pub async fn start(
        options: AgentOptions,
        platform: Arc<dyn AgentPlatform>,
    ) -> Result<Agent, AgentError> {
        create_private_dir(&options.state_dir)?;
        // Proxies from the environment apply (customer networks often need them).
        let client = Client::new(&options.manager_url, ApiKey::new(options.token.clone()))
            .map_err(|e| AgentError::Config(format!("--manager-url: {e}")))?;
        let token_file = options.state_dir.join(TOKEN_FILE);
        let state_file = options.state_dir.join(STATE_FILE);
        let saved_token = read_optional(&token_file)?;
        let saved_state = read_optional(&state_file)?;
        let (token, saved) = match (saved_token, saved_state) {
            (Some(token), Some(state)) => {
                let saved: Saved = serde_json::from_str(&state).map_err(|e| {
                    AgentError::State(format!("{} is not agent state: {e}", state_file.display()))
                })?;
                tracing::info!(deployment = %saved.deployment_id, status = %saved.report.status, "resuming");
                (token.trim().to_owned(), saved)
            }
            (Some(token), None) => {
                // Stopped between saving its token and its first state: resume with the token.
                let token = token.trim().to_owned();
                let resume = AgentOptions { token: token.clone(), ..options.clone() };
                let (deployment_id, _) = register(&client, &resume).await?;
                (token, Saved::new(deployment_id, options.platform))
            }
            (None, _) => {
                let (deployment_id, token) = register(&client, &options).await?;
                write_private(&token_file, token.as_bytes())?;
                (token, Saved::new(deployment_id, options.platform))
            }
        };
        let client = client.with_key(ApiKey::new(token.clone()));
        let work = match saved.report.status {
            DeploymentStatus::Provisioning | DeploymentStatus::Updating => Work::Apply,
            DeploymentStatus::Deleting => Work::Destroy,
            _ => Work::Idle,
        };
        let now = Instant::now();
        let agent = Agent {
            options,
            events: EventQueue::default(),
            client,
            platform,
            token,
            saved,
            work,
            next_sync: now,
            next_step: now,
            failures: 0,
        };
        agent.persist()?;
        Ok(agent)
    }

    /// The deployment this agent runs.
    pub fn deployment_id(&self) -> &Id {
        &self.saved.deployment_id
    }

    /// Syncs and works until `shutdown` completes or the deployment is deleted.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<AgentExit, AgentError> {
        tokio::pin!(shutdown);
        loop {
            if Instant::now() >= self.next_sync {
                if let Some(exit) = self.sync().await? {
                    return Ok(exit);
                }
                // A new status is reported before the work that follows it (the manager learns
                // that a retry or redeploy was taken up before it can be done).
                if Instant::now() >= self.next_sync {
                    continue;
                }
            }
            if self.work != Work::Idle && Instant::now() >= self.next_step {
                self.step().await?;
            }
            let wake = match self.work {
                Work::Idle => self.next_sync,
                _ => self.next_sync.min(self.next_step),
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = &mut shutdown => return Ok(AgentExit::Shutdown),
            }
        }
    }

    /// One sync: refresh what runs (when idle), report, act on the answer.
    async fn sync(&mut self) -> Result<Option<AgentExit>, AgentError> {
        if self.work == Work::Idle {
            self.refresh().await?;
        }
        let events = self.events.take();
        let request = SyncRequest {
            deployment_id: self.saved.deployment_id.clone(),
            current_state: Some(self.saved.report.clone()),
            events: events.clone(),
        };
        let mut answer = self.client.sync(&request).await.map_err(CallError::from);
        if let Err(CallError::Refused { status: 409, message }) = &answer {
            // The manager refuses the report (e.g. a deletion was requested meanwhile): a plain
            // heartbeat gets its view.
            tracing::info!(%message, "report refused; syncing without it");
            let heartbeat = SyncRequest { current_state: None, ..request };
            answer = self.client.sync(&heartbeat).await.map_err(CallError::from);
        }
        let answer: SyncResponse = match answer {
            Ok(answer) => answer,
            Err(CallError::Refused { status: 401 | 403 | 404, .. })
                if self.saved.report.status == DeploymentStatus::Deleted =>
            {
                return Ok(Some(AgentExit::Deleted));
            }
            Err(CallError::Refused { status: status @ (401 | 403 | 404), message }) => {
                return Err(AgentError::Refused(format!(
                    "the manager no longer accepts this agent ({status}: {message}); its deployment was forgotten or its token revoked. What runs is left running."
                )));
            }
            Err(err) => {
                // Not recorded: sent again with the next sync.
                self.events.put_back(events);
                self.failures = self.failures.saturating_add(1);
                let backoff = Duration::from_secs(1 << self.failures.min(6));
                let wait = backoff.min(self.options.interval);
                tracing::warn!(error = %err, retry_in = ?wait, "sync failed; what runs keeps running");
                self.next_sync = Instant::now() + wait;
                return Ok(None);
            }
        };
        self.failures = 0;
        self.next_sync = Instant::now() + self.options.interval;
        if answer.current_state.status == DeploymentStatus::Deleted {
            return Ok(Some(AgentExit::Deleted));
        }
        match decide(&self.saved, self.work, &answer) {
            Decision::Keep => {}
            Decision::Hold => self.work = Work::Idle,
            Decision::Apply(target) => {
                tracing::info!(release = %target.release_id, "applying a release");
                let updating = self.saved.report.current_release.is_some();
                self.saved.report.status = if updating {
                    DeploymentStatus::Updating
                } else {
                    DeploymentStatus::Provisioning
                };
                self.saved.report.error = None;
                self.saved.failed_release = None;
                self.saved.target = Some(*target);
                self.start_work(Work::Apply)?;
            }
            Decision::Destroy => {
                if self.work != Work::Destroy {
                    tracing::info!("the deployment is being deleted: removing what it runs");
                    self.saved.report.status = DeploymentStatus::Deleting;
                    self.saved.report.error = None;
                    self.start_work(Work::Destroy)?;
                }
            }
        }
        Ok(None)
    }

    fn start_work(&mut self, work: Work) -> Result<(), AgentError> {
        self.work = work;
        self.next_step = Instant::now();
        // Report the new status at once.
        self.next_sync = Instant::now();
        self.persist()
    }

    /// The deployment as the manager describes it (fetched once, kept in the state).
    async fn deployment(&mut self) -> Option<Deployment> {
        if self.saved.deployment.is_none() {
            match self.client.get_deployment(self.saved.deployment_id.as_str()).await {
                Ok(deployment) => self.saved.deployment = Some(deployment),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the deployment yet");
                    return None;
                }
            }
        }
        self.saved.deployment.clone()
    }

    /// One apply or destroy step.
    async fn step(&mut self) -> Result<(), AgentError> {
        let Some(deployment) = self.deployment().await else {
            self.next_step = Instant::now() + Duration::from_secs(1);
            return Ok(());
        };
        let before = self.saved.report.status;
        let outcome = match self.work {
            Work::Apply => match self.saved.target.clone() {
                Some(target) => self.apply(&deployment, &target).await,
                None => {
                    self.work = Work::Idle;
                    return Ok(());
                }
            },
            Work::Destroy => {
                let state = self.saved.report.stack_state.clone();
                self.platform
                    .destroy(&deployment, state.as_ref(), true, &Credentials::Ambient)
                    .await
            }
            Work::Idle => return Ok(()),
        };
        let destroying = self.work == Work::Destroy;
        match self.saved.record(before, destroying, outcome) {
            Some(wait) => self.next_step = Instant::now() + wait,
            None => self.work = Work::Idle,
        }
        self.persist()?;
        if self.saved.report.status != before {
            self.next_sync = Instant::now();
        }
        Ok(())
    }

    async fn apply(&mut self, deployment: &Deployment, target: &SyncTarget) -> StepOutcome {
        // Release images name the manager's registry as the CLI that pushed them saw it: its
        // public host (plain HTTP when the manager says so), or the address this agent reaches
        // the manager at.
        let registry = &target.config.registry;
        self.platform.trust_registry(&registry.host, registry.plain_http);
        if let Some(host) = host_port(&self.options.manager_url) {
            let insecure = self.options.manager_url.starts_with("http://");
            self.platform.trust_registry(&host, insecure);
        }
        let manager_url =
            reachable_from_containers(&target.config.manager_url, &self.platform.host_gateway());
        let mut deployment = deployment.clone();
        deployment.name.clone_from(&target.config.deployment_name);
        let variables = &target.config.environment_variables;
        let env = stack_env(&target.stack, &deployment, variables, &manager_url, &self.token);
        let secret_names = alien_deployer::secret_names(variables);
        self.platform
            .apply(DeployRequest {
                deployment: &deployment,
                release_id: &target.release_id,
                stack: &target.stack,
                env: &env,
                secret_names: &secret_names,
                platform_target: None,
                state: self.saved.report.stack_state.as_ref(),
                // The agent runs in the customer environment, as its own identity.
                credentials: &Credentials::Ambient,
            })
            .await
    }

    /// Reads what runs (between operations): a failing resource is reported as
    /// `refresh-failed`, a healthy refresh brings the report back to `running`.
    async fn refresh(&mut self) -> Result<(), AgentError> {
        use DeploymentStatus as S;
        if !matches!(self.saved.report.status, S::Running | S::RefreshFailed) {
            return Ok(());
        }
        let Some(deployment) = self.deployment().await else { return Ok(()) };
        let report = self
            .platform
            .refresh(&deployment, self.saved.report.stack_state.as_ref(), &Credentials::Ambient)
            .await;
        if let Some(state) = report.state {
            self.saved.report.stack_state = Some(state);
        }
        match report.failing {
            Some(error) => {
                if self.saved.report.status == S::Running {
                    tracing::warn!(code = %error.code, resource = ?error.resource_id, message = %error.message, "a resource is failing");
                }
                self.saved.report.status = S::RefreshFailed;
                self.saved.report.error = Some(error);
            }
            None if self.saved.report.status == S::RefreshFailed => {
                tracing::info!("every resource is healthy again");
                self.saved.report.status = S::Running;
                self.saved.report.error = None;
            }
            None => {}
        }
        self.persist()
    }

    fn persist(&self) -> Result<(), AgentError> {
        let json = serde_json::to_vec_pretty(&self.saved)
            .map_err(|e| AgentError::State(format!("cannot encode the agent state: {e}")))?;
        write_private(&self.options.state_dir.join(STATE_FILE), &json)
    }
}

/// The deployment and token of a first start: `initialize` with a group token, `whoami` with
/// a deployment token. Retries while the manager is unreachable.
async fn register(client: &Client, options: &AgentOptions) -> Result<(Id, String), AgentError> {
    let client = client.with_key(ApiKey::new(options.token.clone()));
    let kind = first_start_token(options)?;
    let mut failures = 0u32;
    loop {
        let result = match kind {
            TokenType::DeploymentGroup => {
                let body = InitializeRequest {
                    name: options.name.clone().unwrap_or_default(),
                    platform: Some(options.platform),
                    deployment_group_id: None,
                };
                client
                    .initialize(&body)
                    .await
                    .map(|i: Initialized| (i.deployment_id, i.token))
                    .map_err(CallError::from)
            }
            TokenType::Deployment => {
                client.whoami().await.map_err(CallError::from).and_then(|who| {
                    who.scope.deployment_id.map(|id| (id, options.token.clone())).ok_or_else(|| {
                        CallError::Transient("whoami: the token names no deployment".to_owned())
                    })
                })
            }
            // Refused by `first_start_token` already.
            TokenType::Admin => {
                return Err(AgentError::Config("--token: an admin token is not for agents".into()));
            }
        };
        match result {
            Ok(registered) => {
                tracing::info!(deployment = %registered.0, "registered");
                return Ok(registered);
            }
            Err(CallError::Refused { status, message }) => {
                return Err(AgentError::Refused(format!(
                    "the manager refused to register this agent ({status}): {message}"
                )));
            }
            Err(CallError::Transient(message)) => {
                failures = failures.saturating_add(1);
                let wait = Duration::from_secs(1 << failures.min(5)).min(options.interval);
                tracing::warn!(%message, retry_in = ?wait, "cannot register yet");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// `host:port` of a URL (the port only when it is not the scheme's default).
fn host_port(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// Checks the options before anything starts: on a first start (no deployment token in the
/// state directory) `--token` must be a deployment-group token with `--name`, or a deployment
/// token. A usage error says which flag is wrong.
pub fn check_options(options: &AgentOptions) -> Result<(), AgentError> {
    if options.state_dir.join(TOKEN_FILE).is_file() {
        return Ok(());
    }
    first_start_token(options).map(|_| ())
}

/// The kind of a first start's `--token`, or what is wrong with the flags.
fn first_start_token(options: &AgentOptions) -> Result<TokenType, AgentError> {
    if options.token.is_empty() {
        return Err(AgentError::Config(format!(
            "--token is required on the first start (no agent state in {})",
            options.state_dir.display()
        )));
    }
    match TokenType::of_raw(&options.token) {
        None => Err(AgentError::Config(
            "--token: expected a deployment-group token (ax_dg_...) or a deployment token (ax_deploy_...)"
                .into(),
        )),
        Some(TokenType::Admin) => Err(AgentError::Config(
            "--token: an admin token is not for agents; use a deployment-group or deployment token"
                .into(),
        )),
        Some(TokenType::DeploymentGroup) if options.name.is_none() => Err(AgentError::Config(
            "--name is required with a deployment-group token".into(),
        )),
        Some(kind) => Ok(kind),
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, AgentError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::State(format!("cannot read {}: {e}", path.display()))),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), AgentError> {
    alien_store::private_fs::create_dir(dir)
        .map_err(|e| AgentError::State(format!("cannot create {}: {e}", dir.display())))
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file and a rename, so a crash
/// leaves the old contents or the new ones.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let fail =
        |e: std::io::Error| AgentError::State(format!("cannot write {}: {e}", path.display()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = alien_store::private_fs::new_file_options().open(&tmp).map_err(fail)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alien_core::IdKind;
    use alien_core::sync::{RegistryCredentials, TargetConfig};

    fn target(release: &Id) -> SyncTarget {
        let stack =
            serde_json::from_value(serde_json::json!({"id": "s", "resources": {}})).unwrap();
        SyncTarget {
            release_id: release.clone(),
            stack,
            config: TargetConfig {
                deployment_name: "a".into(),
                environment_variables: Vec::new(),
                manager_url: "http://127.0.0.1:1".into(),
                registry: RegistryCredentials {
                    host: "127.0.0.1:1".into(),
                    username: "deployment".into(),
                    password: "x".into(),
                    plain_http: true,
                },
            },
        }
    }

    fn state(status: DeploymentStatus) -> AgentState {
        AgentState {
            status,
            platform: Platform::Local,
            current_release: None,
            stack_state: None,
            error: None,
        }
    }

    fn saved(status: DeploymentStatus, failed: Option<&Id>) -> Saved {
        Saved {
            deployment_id: Id::new(IdKind::Deployment),
            deployment: None,
            report: state(status),
            target: None,
            failed_release: failed.cloned(),
        }
    }

    fn answer(status: DeploymentStatus, target: Option<SyncTarget>) -> SyncResponse {
        SyncResponse { target, current_state: state(status), commands_url: String::new() }
    }

    #[test]
    fn a_failed_release_waits_for_a_retry_and_a_new_release_goes_ahead() {
        use DeploymentStatus as S;
        let r1 = Id::new(IdKind::Release);
        let r2 = Id::new(IdKind::Release);
        let failed = saved(S::UpdateFailed, Some(&r1));
        // The manager still sees the failure: hold.
        let held = decide(&failed, Work::Idle, &answer(S::UpdateFailed, Some(target(&r1))));
        assert_eq!(held, Decision::Hold);
        // A user retried (the manager moved on): apply again.
        let retried = decide(&failed, Work::Idle, &answer(S::Updating, Some(target(&r1))));
        assert!(matches!(retried, Decision::Apply(t) if t.release_id == r1));
        // A new release: apply it even though the manager's status is still failed.
        let newer = decide(&failed, Work::Idle, &answer(S::UpdateFailed, Some(target(&r2))));
        assert!(matches!(newer, Decision::Apply(t) if t.release_id == r2));
    }

    /// A failed step fails the status the agent reported when the work began, as the transition
    /// table says; an apply's release is remembered as failed, a destroy's is not.
    #[test]
    fn a_failed_step_fails_the_status_it_began_in() {
        use DeploymentStatus as S;
        let r1 = Id::new(IdKind::Release);
        let error = || alien_core::DeploymentError {
            code: "BOOM".into(),
            message: "the engine said no".into(),
            resource_id: Some("api".into()),
        };
        let failed = || StepOutcome::Failed { state: None, error: error() };
        for (before, destroying, after) in [
            (S::Provisioning, false, S::ProvisioningFailed),
            (S::Updating, false, S::UpdateFailed),
            (S::Deleting, true, S::DeleteFailed),
        ] {
            let mut saved = saved(before, None);
            saved.target = Some(target(&r1));
            assert_eq!(saved.record(before, destroying, failed()), None, "{before}");
            assert_eq!(saved.report.status, after, "{before}");
            assert_eq!(saved.report.error, Some(error()));
            let remembered = if destroying { None } else { Some(&r1) };
            assert_eq!(saved.failed_release.as_ref(), remembered, "{before}");
        }
        // A failure from a status that was not work keeps the status, with the error.
        let mut running = saved(S::Running, None);
        assert_eq!(running.record(S::Running, false, failed()), None);
        assert_eq!((running.report.status, running.report.error), (S::Running, Some(error())));
        // Progress keeps the work going; done runs the target's release (or is deleted).
        let mut applying = saved(S::Provisioning, None);
        applying.target = Some(target(&r1));
        let state = serde_json::json!({"replicas": 1});
        let wait = Duration::from_secs(2);
        let progress = StepOutcome::Wait { state: state.clone(), wait };
        assert_eq!(applying.record(S::Provisioning, false, progress), Some(wait));
        assert_eq!(applying.report.stack_state.as_ref(), Some(&state));
        let done = StepOutcome::Done { state: state.clone() };
        assert_eq!(applying.record(S::Provisioning, false, done), None);
        assert_eq!(applying.report.status, S::Running);
        assert_eq!(applying.report.current_release.map(|r| r.release_id), Some(r1.clone()));
        let mut deleting = saved(S::Deleting, None);
        assert_eq!(deleting.record(S::Deleting, true, StepOutcome::Done { state }), None);
        assert_eq!(deleting.report.status, S::Deleted);
    }

    #[test]
    fn deletion_wins_and_an_apply_in_progress_goes_on() {
        use DeploymentStatus as S;
        let r1 = Id::new(IdKind::Release);
        let mut applying = saved(S::Provisioning, None);
        applying.target = Some(target(&r1));
        assert_eq!(
            decide(&applying, Work::Apply, &answer(S::Provisioning, Some(target(&r1)))),
            Decision::Keep
        );
        assert_eq!(
            decide(&applying, Work::Apply, &answer(S::DeletePending, Some(target(&r1)))),
            Decision::Destroy
        );
        let delete_failed = saved(S::DeleteFailed, None);
        assert_eq!(
            decide(&delete_failed, Work::Idle, &answer(S::DeleteFailed, None)),
            Decision::Hold
        );
        assert_eq!(
            decide(&delete_failed, Work::Idle, &answer(S::Deleting, None)),
            Decision::Destroy
        );
        assert_eq!(
            decide(&saved(S::Running, None), Work::Idle, &answer(S::Running, None)),
            Decision::Keep
        );
    }

    #[test]
    fn the_event_queue_hands_out_a_sync_at_a_time_keeps_undelivered_ones_and_is_bounded() {
        use alien_core::sync::{MAX_SYNC_EVENTS, SyncEvent};
        let event = |n: usize| SyncEvent {
            reason: "autoscale".into(),
            detail: serde_json::json!({"n": n}),
        };
        let n_of = |events: &[SyncEvent]| -> Vec<u64> {
            events.iter().map(|e| e.detail["n"].as_u64().unwrap()).collect()
        };
        let queue = EventQueue::default();
        for n in 0..MAX_SYNC_EVENTS + 5 {
            queue.push(event(n));
        }
        let first = queue.take();
        assert_eq!(first.len(), MAX_SYNC_EVENTS, "one sync carries at most the limit");
        // The sync failed: they go back in front, in order.
        queue.put_back(first);
        let again = queue.take();
        assert_eq!(n_of(&again)[..3], [0, 1, 2]);
        let rest: Vec<u64> = (MAX_SYNC_EVENTS as u64..MAX_SYNC_EVENTS as u64 + 5).collect();
        assert_eq!(n_of(&queue.take()), rest);
        assert!(queue.take().is_empty());
        for n in 0..EventQueue::CAPACITY + 10 {
            queue.push(event(n));
        }
        let mut kept = Vec::new();
        loop {
            let batch = queue.take();
            if batch.is_empty() {
                break;
            }
            kept.extend(n_of(&batch));
        }
        assert_eq!(kept.len(), EventQueue::CAPACITY, "bounded");
        assert_eq!(kept[0], 10, "the oldest were dropped");
    }
}
