//! The [`DeploymentLoop`]: every interval, and at once when woken (a new release, retry,
//! redeploy, delete), it leases due push-mode deployments from the store, up to its concurrency,
//! and steps each toward its target with the deployer of its platform:
//!
//! - `pending` (with a desired release) -> `provisioning`, `update-pending` -> `updating`,
//!   `delete-pending` -> `deleting`, then one `apply` (or `destroy`) step;
//! - the state a step returns is saved before anything else (so a delete requested meanwhile
//!   knows what to remove, and a crash repeats the step from it);
//! - `Done` -> `running` on that release (or `deleted`, the row removed), `Wait` -> the lease is
//!   released with `nextStepAfter`, `Failed` -> the matching `*-failed` with the error;
//! - a release that arrived during an update makes the deployment `update-pending` again.
//!
//! The lease is renewed while a step runs; a step never blocks the loop on a platform that is
//! still converging (deployers return `Wait`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alien_core::{Deployment, DeploymentError, DeploymentEvent, DeploymentStatus, Id, Platform};
use alien_store::{DeploymentPatch, Store, StoreError};
use chrono::Utc;
use serde_json::Value;
use tokio::sync::Notify;

use crate::env::{ContainerEnv, stack_env};
use crate::lifecycle::{self, Advanced, AfterStep};
use crate::platform::{Credentials, DeployRequest, PlatformDeployer, StepOutcome};
use alien_impersonation::{Impersonator, PerCloudImpersonator};

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// This replica's lease owner name (unique per process).
    pub owner: String,
    /// Time between ticks when nothing wakes the loop (`deployment-interval-secs`).
    pub interval: Duration,
    /// Deployments stepped at once.
    pub concurrency: u32,
    /// A lease older than this is taken over (its holder died).
    pub stale_after: Duration,
    /// The manager's URL as containers reach it (`ALIEN_COMMANDS_URL`, OTLP endpoint).
    pub manager_url: String,
    /// The manager's URL for the containers of a platform that reach it otherwise (the local
    /// platform's containers reach a loopback manager through the engine's host gateway).
    pub platform_urls: std::collections::HashMap<alien_core::Platform, String>,
}

impl LoopConfig {
    /// Defaults of deployer.md: 10 s interval, 8 at once, leases stale after 5 minutes.
    pub fn new(owner: impl Into<String>, manager_url: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            interval: Duration::from_secs(10),
            concurrency: 8,
            stale_after: alien_store::LEASE_STALE_AFTER,
            manager_url: manager_url.into(),
            platform_urls: std::collections::HashMap::new(),
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Deployments leased and stepped.
    pub stepped: usize,
    /// Of those, updates their group's rollout held back (nothing was done).
    pub held: usize,
    /// Steps that ended in a store error (logged; the lease runs out and another tick retries).
    pub errors: usize,
    /// The soonest a deployment stepped here asked to be stepped again (a rollout waiting for
    /// health, a held update): the loop wakes then rather than after a whole interval.
    pub next_due: Option<Duration>,
}

/// The shortest wait between two ticks that a step's own due time can cause (a step asking to
/// be stepped again at once does not spin the loop).
const SOONEST_RETICK: Duration = Duration::from_millis(50);

/// The deployment loop of one manager replica.
pub struct DeploymentLoop {
    store: Arc<dyn Store>,
    impersonator: Arc<dyn Impersonator>,
    deployers: HashMap<Platform, Arc<dyn PlatformDeployer>>,
    config: LoopConfig,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for DeploymentLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentLoop")
            .field("config", &self.config)
            .field("platforms", &self.deployers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Error code of a step whose platform has no deployer in this manager.
pub const NO_DEPLOYER: &str = crate::codes::PLATFORM_NOT_SUPPORTED;
/// Error code of a step whose release has no stack for the deployment's platform.
pub const NO_STACK: &str = lifecycle::NO_STACK;

impl DeploymentLoop {
    /// A loop over `store` with one deployer per platform.
    pub fn new(
        store: Arc<dyn Store>,
        deployers: HashMap<Platform, Arc<dyn PlatformDeployer>>,
        config: LoopConfig,
    ) -> Self {
        let impersonator = Arc::new(PerCloudImpersonator::new());
        Self { store, impersonator, deployers, config, wake: Arc::new(Notify::new()) }
    }

    /// Mints each step's credentials for the deployment's target with `impersonator` (default:
    /// no cloud configured; targets outside a cloud get the ambient identity).
    #[must_use]
    pub fn with_impersonator(mut self, impersonator: Arc<dyn Impersonator>) -> Self {
        self.impersonator = impersonator;
        self
    }

    /// The credentials of a step, or why there are none.
    async fn credentials(
        &self,
        deployment: &Deployment,
        purpose: &str,
    ) -> Result<Result<Credentials, DeploymentError>, StoreError> {
        let impersonator = self.impersonator.as_ref();
        lifecycle::credentials(self.store.as_ref(), impersonator, deployment, purpose).await
    }

    /// The platforms it deploys to, with what deploys each.
    pub fn platforms(&self) -> Vec<(Platform, String)> {
        let mut out: Vec<_> = self.deployers.iter().map(|(p, d)| (*p, d.describe())).collect();
        out.sort_by_key(|(p, _)| Platform::ALL.iter().position(|q| q == p));
        out
    }

    /// Notifying it makes the loop tick at once (API handlers call it after a release, retry,
    /// redeploy or delete).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until the task is aborted: a tick, then wait for the interval or a wake-up.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // Leases this owner held before a restart died with that process.
            match self.store.release_leases_of(&self.config.owner).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    leases = n,
                    "took back the leases of this replica's previous run"
                ),
                Err(err) => {
                    tracing::warn!(error = %err, "releasing this replica's old leases failed")
                }
            }
            loop {
                let notified = self.wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let mut wait = self.config.interval;
                match self.tick().await {
                    // A full tick may have left more due work: go again at once.
                    Ok(report)
                        if (report.stepped - report.held) as u32 >= self.config.concurrency =>
                    {
                        continue;
                    }
                    Ok(report) => {
                        if let Some(due) = report.next_due {
                            wait = wait.min(due.max(SOONEST_RETICK));
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "deployment loop tick failed"),
                }
                let _ = tokio::time::timeout(wait, notified).await;
            }
        })
    }

    /// Leases due deployments (up to the concurrency) and steps them concurrently.
    pub async fn tick(&self) -> Result<TickReport, StoreError> {
        let started = Instant::now();
        let due = self
            .store
            .acquire_due(
                &self.config.owner,
                Utc::now(),
                self.config.concurrency,
                self.config.stale_after,
            )
            .await?;
        let steps = due.into_iter().map(|deployment| async move {
            let id = deployment.id.clone();
            let result = self.step(deployment).await;
            if let Err(err) = &result {
                tracing::warn!(deployment = %id, error = %err, "deployment step failed in the store");
            }
            result
        });
        let results = futures_util::future::join_all(steps).await;
        let report = TickReport {
            stepped: results.len(),
            held: results.iter().filter(|r| matches!(r, Ok((true, _)))).count(),
            errors: results.iter().filter(|r| r.is_err()).count(),
            next_due: results.iter().filter_map(|r| r.as_ref().ok().and_then(|(_, n)| *n)).min(),
        };
        metrics::histogram!("deployment_loop_tick_seconds").record(started.elapsed().as_secs_f64());
        Ok(report)
    }

    /// One step of a leased deployment; the lease is released at the end in every case but a
    /// store failure (then it runs out).
    #[tracing::instrument(name = "deployment.step", skip_all, fields(deployment = %deployment.id, status = %deployment.status))]
    /// Returns whether the group's rollout held the update back, and when the deployment is due
    /// again (`None`: when something changes).
    async fn step(&self, deployment: Deployment) -> Result<(bool, Option<Duration>), StoreError> {
        let renewing = self.renew_while_stepping(&deployment.id);
        let result = self.step_leased(deployment.clone()).await;
        renewing.abort();
        let (next, held) = match result {
            Ok(Next::After(next)) => (next, false),
            Ok(Next::Held(wait)) => (Some(wait), true),
            Err(err) => return Err(err),
        };
        let due = next.map(|wait| Utc::now() + wait);
        // The row is gone after a completed delete: nothing to release then.
        self.store.release_lease(&deployment.id, &self.config.owner, due).await?;
        Ok((held, next))
    }

    fn renew_while_stepping(&self, id: &Id) -> tokio::task::JoinHandle<()> {
        let (store, id, owner) = (self.store.clone(), id.clone(), self.config.owner.clone());
        let every = self.config.stale_after / 3;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(err) = store.renew_lease(&id, &owner, Utc::now()).await {
                    tracing::warn!(deployment = %id, error = %err, "renewing a deployment lease failed");
                }
            }
        })
    }

    /// When the deployment is next due (`None`: when something changes), or that its group's
    /// rollout holds its update back.
    async fn step_leased(&self, deployment: Deployment) -> Result<Next, StoreError> {
        match lifecycle::advance(self.store.as_ref(), deployment, "step").await? {
            Advanced::Ready(deployment) => self.step_begun(deployment).await.map(Next::After),
            Advanced::Held { deployment, until, reason } => {
                tracing::debug!(deployment = %deployment.id, %reason, "update held by the rollout");
                metrics::counter!("deployment_updates_held_total").increment(1);
                // Within an interval (another deployment of the group may finish any time).
                let wait = until
                    .and_then(|u| (u - Utc::now()).to_std().ok())
                    .map_or(self.config.interval, |w| w.min(self.config.interval));
                Ok(Next::Held(wait))
            }
        }
    }

    async fn step_begun(&self, mut deployment: Deployment) -> Result<Option<Duration>, StoreError> {
        let begin = match deployment.status {
            DeploymentStatus::Pending if deployment.desired_release_id.is_none() => {
                // Nothing to deploy yet: a release for its platform wakes the loop.
                return Ok(Some(self.config.interval));
            }
            DeploymentStatus::Pending => Some(DeploymentEvent::BeginProvisioning),
            DeploymentStatus::DeletePending => Some(DeploymentEvent::BeginDelete),
            _ => None,
        };
        if let Some(event) = begin {
            deployment = self.transition(&deployment.id, event, patch("step")).await?;
        }
        let Some(deployer) = self.deployers.get(&deployment.platform).cloned() else {
            let error = DeploymentError {
                code: NO_DEPLOYER.into(),
                message: format!(
                    "this manager has no deployer for platform {}; run it with that platform's backend",
                    deployment.platform
                ),
                resource_id: None,
            };
            self.fail(&deployment, None, error).await?;
            return Ok(None);
        };
        match deployment.status {
            DeploymentStatus::Provisioning | DeploymentStatus::Updating => {
                self.apply(deployment, deployer.as_ref()).await
            }
            DeploymentStatus::Deleting => self.destroy(deployment, deployer.as_ref()).await,
            // A retry of `refresh-failed` (now `running` with the retry flag): apply the release
            // it runs again, replacing exited or unhealthy replicas.
            // (`refresh-failed` with the flag: the heartbeat found it failing again meanwhile.)
            DeploymentStatus::Running | DeploymentStatus::RefreshFailed
                if deployment.retry_requested =>
            {
                self.heal(deployment, deployer.as_ref()).await
            }
            // Leased for a retry flag on a status the loop does not step: look again after an
            // interval rather than at every tick.
            _ => Ok(Some(self.config.interval)),
        }
    }

    /// One apply step of the deployment's desired release: the release id and the outcome, or
    /// why there is nothing to apply.
    async fn apply_step(
        &self,
        deployment: &Deployment,
        deployer: &dyn PlatformDeployer,
    ) -> Result<Result<(Id, StepOutcome), DeploymentError>, StoreError> {
        let target = match lifecycle::target(self.store.as_ref(), deployment).await? {
            Ok(target) => target,
            Err(none) => return Ok(Err(none.error(deployment))),
        };
        let impersonator = self.impersonator.as_ref();
        let stored = target.platform_target.as_ref();
        let credentials =
            match lifecycle::credentials_for(impersonator, deployment, stored, "deploy").await {
                Ok(credentials) => credentials,
                Err(error) => return Ok(Err(error)),
            };
        let env = self.environment(deployment, &target);
        let secret_names = crate::env::secret_names(&target.variables);
        let outcome = deployer
            .apply(DeployRequest {
                deployment,
                release_id: &target.release_id,
                stack: &target.stack,
                env: &env,
                secret_names: &secret_names,
                platform_target: target.platform_target.as_ref(),
                state: deployment.stack_state.as_ref(),
                credentials: &credentials,
            })
            .await;
        Ok(Ok((target.release_id, outcome)))
    }

    async fn apply(
        &self,
        deployment: Deployment,
        deployer: &dyn PlatformDeployer,
    ) -> Result<Option<Duration>, StoreError> {
        let (release_id, outcome) = match self.apply_step(&deployment, deployer).await? {
            Ok(step) => step,
            Err(error) => {
                self.fail(&deployment, None, error).await?;
                return Ok(None);
            }
        };
        self.record(&deployment, Some(&release_id), outcome, "done").await
    }

    /// A retried `refresh-failed`: the running release applied again; `running` when it is
    /// healthy, `refresh-failed` again when it is not.
    async fn heal(
        &self,
        deployment: Deployment,
        deployer: &dyn PlatformDeployer,
    ) -> Result<Option<Duration>, StoreError> {
        let (event, state, error) = match self.apply_step(&deployment, deployer).await? {
            Ok((_, StepOutcome::Wait { state, wait })) => {
                self.save(&deployment, &state).await?;
                return Ok(Some(wait));
            }
            Ok((_, StepOutcome::Done { state })) => {
                (DeploymentEvent::RefreshHealthy, Some(state), None)
            }
            Ok((_, StepOutcome::Failed { state, error })) => {
                (DeploymentEvent::RefreshFailed, state, Some(error))
            }
            Err(error) => (DeploymentEvent::RefreshFailed, None, Some(error)),
        };
        metrics::counter!("deployment_steps_total", "outcome" => if error.is_some() { "failed" } else { "done" })
            .increment(1);
        let patch = DeploymentPatch {
            stack_state: state,
            error: Some(error),
            retry_requested: Some(false),
            last_heartbeat_at: Some(Utc::now()),
            ..patch("retry")
        };
        self.transition(&deployment.id, event, patch).await?;
        Ok(None)
    }

    async fn destroy(
        &self,
        deployment: Deployment,
        deployer: &dyn PlatformDeployer,
    ) -> Result<Option<Duration>, StoreError> {
        let credentials = match self.credentials(&deployment, "delete").await? {
            Ok(credentials) => credentials,
            Err(error) => {
                self.fail(&deployment, None, error).await?;
                return Ok(None);
            }
        };
        let state = deployment.stack_state.as_ref();
        let outcome = deployer.destroy(&deployment, state, true, &credentials).await;
        // Done: deleted, and the row goes with its tokens.
        self.record(&deployment, None, outcome, "deleted").await
    }

    /// Records a step's outcome through the lifecycle, counting it (`done` names a success).
    async fn record(
        &self,
        deployment: &Deployment,
        release_id: Option<&Id>,
        outcome: StepOutcome,
        done: &'static str,
    ) -> Result<Option<Duration>, StoreError> {
        let counted = match &outcome {
            StepOutcome::Done { .. } => done,
            StepOutcome::Wait { .. } => "wait",
            StepOutcome::Failed { .. } => "failed",
        };
        metrics::counter!("deployment_steps_total", "outcome" => counted).increment(1);
        let owner = &self.config.owner;
        let after =
            lifecycle::record_outcome(self.store.as_ref(), owner, deployment, release_id, outcome)
                .await?;
        Ok(match after {
            AfterStep::Finished => None,
            AfterStep::Wait(wait) => Some(wait),
        })
    }

    /// The manager's URL as `platform`'s containers reach it.
    fn manager_url(&self, platform: alien_core::Platform) -> &str {
        self.config.platform_urls.get(&platform).unwrap_or(&self.config.manager_url)
    }

    /// The environment of each container of the target's stack.
    fn environment(
        &self,
        deployment: &Deployment,
        target: &lifecycle::Target,
    ) -> BTreeMap<String, ContainerEnv> {
        let (variables, url, token) =
            (&target.variables, self.manager_url(deployment.platform), target.token.expose());
        stack_env(&target.stack, deployment, variables, url, token)
    }

    async fn save(&self, deployment: &Deployment, state: &Value) -> Result<(), StoreError> {
        lifecycle::save(self.store.as_ref(), &self.config.owner, deployment, state).await
    }

    async fn fail(
        &self,
        deployment: &Deployment,
        state: Option<&Value>,
        error: DeploymentError,
    ) -> Result<(), StoreError> {
        metrics::counter!("deployment_steps_total", "outcome" => "failed").increment(1);
        let owner = &self.config.owner;
        lifecycle::record_failure(self.store.as_ref(), owner, deployment, state, error).await
    }

    async fn transition(
        &self,
        id: &Id,
        event: DeploymentEvent,
        patch: DeploymentPatch,
    ) -> Result<Deployment, StoreError> {
        self.store.transition(id, event, patch).await
    }
}

/// What a step leaves for later.
enum Next {
    /// Due again after this (`None`: when something changes).
    After(Option<Duration>),
    /// The group's rollout held the update back; look again after this.
    Held(Duration),
}

fn patch(reason: &str) -> DeploymentPatch {
    DeploymentPatch { reason: reason.to_owned(), ..Default::default() }
}
